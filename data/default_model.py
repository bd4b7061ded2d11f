"""The bundled default detector: where it is, what it was trained on, and loading it offline.

``data/default_model.pt`` holds the weights (the safe format of :mod:`scatterbird.models.base`); ``data/default_model.json``
says what they were trained on (the corpus's packages and hashes), the recipe, and every validation number
(leave-package-out and leave-source-out). Both are written by ``scripts/validate_detection.py --final``. ``detect``, ``evaluate`` and ``analyze`` use this model when no
``--model`` is given; :func:`scatterbird.models.registry.default_detector` loads it.
"""

from __future__ import annotations

import json
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
