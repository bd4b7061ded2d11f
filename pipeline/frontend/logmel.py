"""Log-mel spectrograms of clips: the baseline front end that the scattering features are measured against.

A clip becomes one float32 sequence of shape ``(T, n_mels)``, frames by channels, the layout of the
scattering sequences (:func:`scatterbird.pipeline.clip_features.compute_sequences`), so the same detectors
train on either. With the defaults a frame is 512 samples (``2**J`` of the default :class:`FeatureConfig`)
and a 10 s clip at 22,050 Hz gives T = 431 frames, as its scattering sequence does. :func:`logmel_clips`
reads clips as the pipeline reads any recording (mono, resampled with soxr), and caches each clip's
spectrogram under ``CACHE/<LogMelConfig.hash>/`` keyed by the file's path, size and modification time.

Choices (window, centring, bands, log offset) and what they are compared with: docs/logmel-baseline.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import librosa
import numpy as np
from tqdm import tqdm

from scatterbird.errors import AudioError, ConfigError
from scatterbird.pipeline.executor import open_executor, run_each
from scatterbird.pipeline.frontend.audio import load_audio
from scatterbird.pipeline.frontend.features import failure_reason

#: Bumped when the meaning of a field (or of a fixed choice below) changes, so old cache entries never match.
LOGMEL_SCHEMA = 1

# Fixed choices, part of the schema rather than fields: librosa's defaults, written out so that a change of
# librosa's defaults cannot change the features silently.
WINDOW = "hann"  # periodic Hann (librosa's and scipy's get_window)
CENTER = True  # frame t is centred on sample t * hop, as the scattering frames are
PAD_MODE = "constant"  # zeros beyond both ends
POWER = 2.0  # power spectrogram
MEL_NORM = "slaney"  # each triangle has unit area in Hz: a band's value is a power density, whatever its width
HTK = False  # Slaney's mel scale (linear below 1 kHz)

#: Clips per job: a job's clips are computed one after another in one process; the bar moves job by job.
CLIPS_PER_JOB = 16


@dataclass(frozen=True)
class LogMelConfig:
    """Everything that determines the numbers of a log-mel spectrogram.

    Parameters
    ----------
    sample_rate : int
        Rate in Hz every clip is resampled to (the pipeline's).
    n_fft : int
        FFT length and window length in samples.
    hop : int
        Samples between frames; 512 is ``2**J`` of the default scattering configuration, same frame rate.
    n_mels : int
        Mel bands (channels).
    fmin : float
        Lower edge of the lowest band in Hz.
    fmax : float or None
        Upper edge of the highest band in Hz; None: the Nyquist frequency.
    log_eps : float
        Offset of the log compression, ``log(M + log_eps)`` (natural log, as the scattering features).
    schema : int
        Version of the fields' meaning (``LOGMEL_SCHEMA``).
    """

    sample_rate: int = 22050
    n_fft: int = 1024
    hop: int = 512
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float | None = None
    log_eps: float = 1e-6
    schema: int = field(default=LOGMEL_SCHEMA)

    def __post_init__(self) -> None:
        if not 1000 <= int(self.sample_rate) <= 384000:
            raise ConfigError(f"sample_rate must be between 1000 and 384000 Hz, got {self.sample_rate}")
        if int(self.n_fft) < 16:
            raise ConfigError(f"n_fft must be >= 16 samples, got {self.n_fft}")
        if not 1 <= int(self.hop) <= int(self.n_fft):
            raise ConfigError(f"hop must be between 1 and n_fft={self.n_fft} samples, got {self.hop}")
        if int(self.n_mels) < 1:
            raise ConfigError(f"n_mels must be >= 1, got {self.n_mels}")
        if not 0 <= self.fmin < self.f_max <= self.sample_rate / 2:
            raise ConfigError(
                f"need 0 <= fmin < fmax <= {self.sample_rate / 2:g} Hz (Nyquist), got fmin={self.fmin}, "
                f"fmax={self.f_max}"
            )
        if not self.log_eps > 0:
            raise ConfigError(f"log_eps must be > 0, got {self.log_eps}")
        if int(self.schema) != LOGMEL_SCHEMA:
            raise ConfigError(f"log-mel schema must be {LOGMEL_SCHEMA}, got {self.schema}")

    @property
    def f_max(self) -> float:
        """Upper edge in Hz (``fmax``, or the Nyquist frequency when it is None)."""
        return float(self.sample_rate / 2 if self.fmax is None else self.fmax)

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop

    def n_frames(self, n_samples: int) -> int:
        """Frames of a clip of ``n_samples`` samples (centred frames: ``1 + n_samples // hop``)."""
        return 1 + int(n_samples) // int(self.hop)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dictionary of every field, with ``"kind": "logmel"``."""
        return {"kind": "logmel", **dataclasses.asdict(self)}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the text the hash is taken of."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LogMelConfig:
        """Rebuild a configuration; unknown keys are an error, so a newer file is never misread."""
        values = dict(values)
        if values.pop("kind", "logmel") != "logmel":
            raise ConfigError("not a log-mel configuration")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown log-mel config fields: {', '.join(unknown)}")
        return cls(**values)

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit hash of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]


def mel_filters(config: LogMelConfig) -> np.ndarray:
    """The mel filter bank, shape ``(n_mels, n_fft // 2 + 1)`` (librosa's, with this module's fixed choices)."""
    return librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                               fmin=config.fmin, fmax=config.f_max, htk=HTK, norm=MEL_NORM)


def logmel(x: np.ndarray, config: LogMelConfig) -> np.ndarray:
    """The log-mel spectrogram of mono audio at ``config.sample_rate``.

    Parameters
    ----------
    x : ndarray, shape (n_samples,)
    config : LogMelConfig

    Returns
    -------
    ndarray, float32, shape (config.n_frames(n_samples), n_mels)
        ``log(mel power + log_eps)``, frames by channels.
    """
    x = np.asarray(x)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected mono samples of shape (n,), got {x.shape}")
    with warnings.catch_warnings():
        # a clip shorter than n_fft is zero-padded like any clip's ends (centred frames); nothing to warn of
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large for input signal", category=UserWarning)
        # float64: the power of quiet bands is then exact to well below log_eps
        mel = librosa.feature.melspectrogram(
            y=x.astype(np.float64, copy=False), sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop,
            window=WINDOW, center=CENTER, pad_mode=PAD_MODE, power=POWER, n_mels=config.n_mels,
            fmin=config.fmin, fmax=config.f_max, htk=HTK, norm=MEL_NORM,
        )
    return np.ascontiguousarray(np.log(mel + config.log_eps).T, dtype=np.float32)


# -- many clips, cached -------------------------------------------------------------------------------
def _cache_dir(root: str | os.PathLike, config: LogMelConfig) -> Path:
    d = Path(root) / config.hash
    d.mkdir(parents=True, exist_ok=True)
    info = d / "config.json"
    if not info.exists():  # says what the hash stands for, to whoever looks in the folder
        info.write_text(config.to_json() + "\n")
    return d


def _key(path: Path) -> str:
    """The cache key of a file: its absolute path, size and modification time (an edit changes it)."""
    st = path.stat()
    ident = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def _read_cached(f: Path) -> np.ndarray | None:
    try:
        return np.load(f, allow_pickle=False)
    except (OSError, ValueError):  # absent or damaged: recompute
        return None


def _write_cached(f: Path, spec: np.ndarray) -> None:
    tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, spec, allow_pickle=False)
        os.replace(tmp, f)  # a crash never leaves a half-written entry under the real name
    except OSError:  # the cache only saves time: a full disk must not lose the spectrogram computed
        tmp.unlink(missing_ok=True)


def _clip_logmel(path: Path, config: LogMelConfig, cache: Path | None) -> np.ndarray:
    """One clip's log-mel spectrogram, from the cache or computed (raises AudioError, OSError, ValueError)."""
    # keyed by the stat taken before reading: a file edited during the read leaves an entry that never matches
    entry = cache / f"{_key(path)}.npy" if cache is not None else None
    spec = _read_cached(entry) if entry is not None else None
    if spec is None:
        spec = logmel(load_audio(path, config.sample_rate), config)
        if entry is not None:
            _write_cached(entry, spec)
    return spec


def _logmel_job(paths: Sequence[Path], config: LogMelConfig, cache: Path | None) -> dict[str, np.ndarray | str]:
    """Each clip's spectrogram, or the reason it has none (a string); run by any executor."""
    out: dict[str, np.ndarray | str] = {}
    for path in paths:
        try:
            out[str(path)] = _clip_logmel(path, config, cache)
        except AudioError as exc:
            out[str(path)] = exc.reason
        except OSError as exc:  # the file vanished, or cannot be stat'ed
            out[str(path)] = f"cannot be read ({exc.strerror or exc})"
        except ValueError as exc:
            out[str(path)] = str(exc)
    return out


def logmel_clips(
    paths: Sequence[str | os.PathLike],
    config: LogMelConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    progress: bool = True,
    desc: str = "log-mel",
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Log-mel spectrograms of many clips, cached, aligned with ``paths``.

    Parameters
    ----------
    paths : sequence of paths
        Clips in any format the pipeline reads; mixed to mono and resampled to ``config.sample_rate``.
    config : LogMelConfig
    cache_dir : path, optional
        Cache root; entries go to ``cache_dir/<config.hash>/<key>.npy``. None: no cache.
    workers : int
        Local worker processes (:func:`scatterbird.pipeline.executor.open_executor`); 1: this process.
    progress : bool
        A tqdm bar on stderr.
    desc : str
        The bar's label.

    Returns
    -------
    (spectrograms, reasons) : two lists aligned with ``paths``
        ``(T, n_mels)`` float32 arrays; an unreadable clip gives ``None`` and its reason, never an exception.
    """
    paths = [Path(p) for p in paths]
    cache = _cache_dir(cache_dir, config) if cache_dir is not None else None
    jobs = [paths[i : i + CLIPS_PER_JOB] for i in range(0, len(paths), CLIPS_PER_JOB)]
    results: dict[str, np.ndarray | str] = {}
    job = partial(_logmel_job, config=config, cache=cache)
    with (tqdm(total=len(paths), desc=desc, unit="file", disable=not progress, leave=False) as bar,
          open_executor(workers if len(jobs) > 1 else 1) as ex):
        for batch, res, error in run_each(ex, job, jobs):
            if error is not None:  # the job itself failed (a worker died): every clip of it
                results.update((str(p), failure_reason(error)) for p in batch)
            else:
                results.update(res)
            bar.update(len(batch))
    specs = [r if isinstance(r, np.ndarray) else None for r in (results[str(p)] for p in paths)]
    reasons = [r if isinstance(r, str) else None for r in (results[str(p)] for p in paths)]
    return specs, reasons
