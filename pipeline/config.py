"""The one feature configuration of the pipeline, and its stable hash.

Every output (feature files, trained models, result stores) carries the configuration that made it, so
features of one shape or scale can never be fed by mistake to a model trained on another.

Hash and schema history: docs/feature-config.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from scatterbird.errors import ConfigError

#: Bumped when the meaning of a field changes, so that old hashes never match new features (history:
#: docs/feature-config.md).
CONFIG_SCHEMA = 3

#: Schema before the `grid` field: such configurations were computed on kymatio's grid, and their
#: canonical JSON (hence their hash) has no `grid` key.
_SCHEMA_BEFORE_GRID = 2

THRESHOLD_MODES = ("none", "universal-hard", "universal-soft", "risk")

#: Sampling grids of the wavelet coefficients (docs/scattering-grid.md).
GRIDS = ("bandwidth", "kymatio")


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that determines the numbers in a scattergram.

    Parameters
    ----------
    sample_rate : int
        Pipeline sample rate in Hz; every recording is resampled to it.
    J : int
        Log2 of the averaging scale in samples: frames are ``2**J`` samples apart
        (J=9 at 22,050 Hz gives 23.2 ms frames).
    Q1, Q2 : int
        Wavelets per octave at the first and second order.
    max_order : int
        1 or 2.
    log_eps : float
        Offset of the log compression, ``log(S + log_eps)``.
    threshold : str
        Thresholding of the complex first-order wavelet coefficients, one of
        ``THRESHOLD_MODES``.
    threshold_order2 : bool
        Also threshold the second-order wavelet coefficients.
    pool_s : float
        Step in seconds to which frames are average-pooled before they reach a detector that works on
        coarse sequences (the RNTK: 0.25 s turns a 10 s clip into 40 steps). 0 keeps the native frames.
    grid : str
        Where the wavelet coefficients are sampled: ``"bandwidth"`` (each at a rate matched to its filter's
        bandwidth, the default) or ``"kymatio"`` (kymatio's grid, equal to ``kymatio.Scattering1D``).
    schema : int
        Version of the fields' meaning (``CONFIG_SCHEMA``); configurations read from older files keep
        theirs, with the grid they were computed on.
    """

    sample_rate: int = 22050
    J: int = 9
    Q1: int = 8
    Q2: int = 1
    max_order: int = 2
    log_eps: float = 1e-5
    # "none" and "risk" validated alike on the real-sound corpus (README, "The bundled default model"); none
    # costs a third as much
    threshold: str = "none"
    threshold_order2: bool = False
    pool_s: float = 0.0
    grid: str = "bandwidth"
    schema: int = field(default=CONFIG_SCHEMA)

    def __post_init__(self) -> None:
        if not 1000 <= int(self.sample_rate) <= 384000:
            raise ConfigError(f"sample_rate must be between 1000 and 384000 Hz, got {self.sample_rate}")
        if not 1 <= int(self.J) <= 16:
            raise ConfigError(f"J must be between 1 and 16, got {self.J}")
        if int(self.Q1) < 1 or int(self.Q2) < 1:
            raise ConfigError(f"Q1 and Q2 must be >= 1, got Q1={self.Q1}, Q2={self.Q2}")
        if self.max_order not in (1, 2):
            raise ConfigError(f"max_order must be 1 or 2, got {self.max_order}")
        if not self.log_eps > 0:
            raise ConfigError(f"log_eps must be > 0, got {self.log_eps}")
        if self.pool_s < 0:
            raise ConfigError(f"pool_s must be >= 0 seconds, got {self.pool_s}")
        if self.threshold not in THRESHOLD_MODES:
            raise ConfigError(
                f"threshold must be one of {', '.join(THRESHOLD_MODES)}; got {self.threshold!r}"
            )
        if self.grid not in GRIDS:
            raise ConfigError(f"grid must be one of {', '.join(GRIDS)}; got {self.grid!r}")
        if not 1 <= int(self.schema) <= CONFIG_SCHEMA:
            raise ConfigError(f"schema must be between 1 and {CONFIG_SCHEMA}, got {self.schema}")
        if self.schema <= _SCHEMA_BEFORE_GRID and self.grid != "kymatio":
            raise ConfigError(
                f"schema {self.schema} predates the bandwidth grid: its features were computed on grid='kymatio'"
            )

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dictionary of every field (without ``grid`` before schema 3, as then written)."""
        values = dataclasses.asdict(self)
        if self.schema <= _SCHEMA_BEFORE_GRID:  # the text, hence the hash, of older files stays as it was
            del values["grid"]
        return values

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the text the hash is taken of."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "FeatureConfig":
        """Rebuild a configuration; unknown keys are an error, so a newer file is never misread."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown feature-config fields: {', '.join(unknown)}")
        values = dict(values)
        if int(values.get("schema", 1)) <= _SCHEMA_BEFORE_GRID:
            values.setdefault("grid", "kymatio")  # computed before the grid was a choice
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "FeatureConfig":
        return cls.from_dict(json.loads(text))

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit hash of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]

    @property
    def hop_samples(self) -> int:
        """Samples between consecutive frames."""
        return 2 ** int(self.J)

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop_samples

    def replace(self, **changes: Any) -> "FeatureConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
