"""The bundled default detector: where it is, what it was trained on, and loading it offline.

``data/default_model.pt`` holds the weights (the safe format of :mod:`models.base`); ``data/default_model.json``
says what they were trained on, how, and their leave-source-out validation AUC. Both are written by
``scripts/train_default_model.py``. ``detect``, ``evaluate`` and ``analyze`` use this model when no
``--model`` is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import DATA_DIR

DEFAULT_MODEL_PATH = DATA_DIR / "default_model.pt"
DEFAULT_MODEL_INFO = DATA_DIR / "default_model.json"


def default_model_info() -> dict[str, Any]:
    """The default model's description (training data, options, validation AUC); {} when absent."""
    try:
        return json.loads(DEFAULT_MODEL_INFO.read_text())
    except (OSError, ValueError):
        return {}


def load_default_model(expected_config=None):
    """Load the bundled default detector (no network access).

    Parameters
    ----------
    expected_config : FeatureConfig, optional
        The pipeline's configuration; a model made with another raises ``FeatureConfigMismatch``.

    Returns
    -------
    Detector

    Raises
    ------
    DetectorError
        If the model file is missing (a checkout without it) or cannot be read.
    """
    from models.base import DetectorError, load_detector

    if not DEFAULT_MODEL_PATH.exists():
        raise DetectorError(
            f"the default model {DEFAULT_MODEL_PATH} is missing; train one with "
            f"`python scripts/train_default_model.py`, or give --model"
        )
    return load_detector(DEFAULT_MODEL_PATH, expected_config)


def default_model_path() -> Path:
    """Path of the bundled default model file (it may not exist in a bare checkout)."""
    return DEFAULT_MODEL_PATH
