"""The detector registry: every detector kind by name, built fresh, loaded from a file, or the bundled one.

The one place that knows which detector modules exist; detectors register themselves by subclassing
:class:`~scatterbird.models.base.Detector` with a ``kind``.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from scatterbird.data.default_model import DEFAULT_MODEL_PATH
from scatterbird.errors import DetectorError, FeatureConfigMismatch

# Imported for their side effect: each detector class registers its kind with Detector.
from scatterbird.models import ensemble, inversion, rntk  # noqa: F401
from scatterbird.models.base import MODEL_FORMAT, Detector
from scatterbird.pipeline.config import FeatureConfig

#: What torch's weights-only loader says when a file holds pickled Python objects; its own text advises
#: turning the protection off, which a command-line user must never be told.
_WEIGHTS_ONLY_REFUSAL = re.compile(r"weights.only", re.IGNORECASE)
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x00-\x1f\x7f]")

NO_DEFAULT_MODEL = (
    "no model given and the bundled default model {path} is missing; train one with `scatterbird train LABELLED_DIR -o model.pt` "
    "and give it with --model, or rebuild the bundled one (`python scripts/build_corpus.py`, then `python scripts/validate_detection.py --recipe R --final R`)"
)


def available_detectors() -> dict[str, type[Detector]]:
    """Registered detector classes by kind."""
    return dict(Detector._registry)


def build_detector(kind: str, params: Mapping[str, Any] | None = None, seed: int | None = None) -> Detector:
    """A new, unfitted detector of a registered ``kind`` with hyperparameters ``params``.

    ``seed`` is passed as ``random_state`` when the detector takes one and ``params`` does not set it.

    Raises
    ------
    DetectorError
        On an unknown kind or a hyperparameter the detector does not take.
    """
    known = available_detectors()
    cls = known.get(kind)
    if cls is None:
        raise DetectorError(f"unknown detector kind {kind!r}; available: {', '.join(sorted(known)) or '(none)'}")
    params = dict(params or {})
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    if seed is not None and "random_state" in accepted and "random_state" not in params:
        params["random_state"] = int(seed)
    unknown = [k for k in params if k not in accepted and not takes_any]
    if unknown:
        names = [k for k in accepted if k != "self"]
        raise DetectorError(f"detector {kind!r} takes no parameter {unknown[0]!r}; its parameters: {', '.join(names)}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise DetectorError(f"detector {kind!r}: {exc}") from None


def load_detector(
    path: str | os.PathLike | None = None, expected_config: FeatureConfig | None = None
) -> Detector:
    """Load a detector saved with :meth:`Detector.save`; the bundled default model when ``path`` is None.

    Files are read with ``torch.load(weights_only=True)``: a model file runs no code.

    Parameters
    ----------
    path : str or Path, optional
        The model file; None for the bundled default model.
    expected_config : FeatureConfig, optional
        The pipeline's configuration; a model made with another one raises :class:`FeatureConfigMismatch`.

    Raises
    ------
    DetectorError
        If the file is missing, not a scatterbird model, or of an unknown kind.
    """
    if path is None:
        if not DEFAULT_MODEL_PATH.is_file():
            raise DetectorError(NO_DEFAULT_MODEL.format(path=DEFAULT_MODEL_PATH))
        path = DEFAULT_MODEL_PATH
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise before the error below
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DetectorError(f"{path}: model file not found") from None
    except pickle.UnpicklingError as exc:
        if _WEIGHTS_ONLY_REFUSAL.search(str(exc)):  # weights_only refuses anything but plain data
            raise DetectorError(
                f"{path}: not a scatterbird model file (it holds Python objects, which scatterbird never "
                "unpickles: only files written by scatterbird train can be loaded)"
            ) from None
        raise DetectorError(f"{path}: not a readable scatterbird model file ({_one_line(exc)})") from None
    except Exception as exc:
        raise DetectorError(f"{path}: not a readable scatterbird model file ({_one_line(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DetectorError(f"{path}: not a scatterbird model file (format {found!r})")
    kind = payload["kind"]
    cls = Detector._registry.get(kind)
    if cls is None:
        raise DetectorError(f"{path}: unknown detector kind {kind!r}; known: {sorted(Detector._registry)}")
    config = FeatureConfig.from_json(payload["feature_config_json"]) if payload["feature_config_json"] else None
    if expected_config is not None and (config is None or config.hash != expected_config.hash):
        raise FeatureConfigMismatch(
            f"{path}: the model was trained on features with config hash "
            f"{payload['feature_config_hash'] or '(none)'} but the pipeline uses {expected_config.hash}; "
            f"model config: {config.to_json() if config else '(none)'}; "
            f"pipeline config: {expected_config.to_json()}"
        )
    det = cls(**json.loads(payload["params_json"]))
    det.feature_config = config
    det._set_state(payload["tensors"], json.loads(payload["extra_json"]))
    return det


def _one_line(exc: BaseException) -> str:
    """An exception's first line, without terminal escape codes, at most 200 characters."""
    lines = [_CONTROL.sub("", x).strip() for x in str(exc).splitlines()]
    text = next((x for x in lines if x), type(exc).__name__)
    return text if len(text) <= 200 else text[:197] + "..."


def default_detector(expected_config: FeatureConfig | None = None) -> Detector:
    """The bundled default detector (no network access); see ``data/default_model.json`` for its training."""
    return load_detector(None, expected_config)


def describe_model(path: str | os.PathLike | None) -> str:
    """How a model source is named in reports: its path, or "default model (default_model.pt)"."""
    return f"default model ({DEFAULT_MODEL_PATH.name})" if path is None else os.fspath(path)


def default_model_path() -> Path:
    """Path of the bundled default model file (it may not exist in a bare checkout)."""
    return DEFAULT_MODEL_PATH
