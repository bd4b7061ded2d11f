"""What ships with scatterbird: the default model, the challenge manifest, the synthetic-data generator,
sample recordings made on demand, and the recipe of the training corpus. Imports no pipeline stage."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DATA_DIR = Path(__file__).resolve().parent


def user_cache_dir() -> Path:
    """scatterbird's cache folder: ``$SCATTERBIRD_CACHE`` if set, else the platform's user cache folder.

    Generated samples, feature caches of the bundled model and the training corpus go here, never into
    the installed package.
    """
    return Path(os.environ.get("SCATTERBIRD_CACHE") or platformdirs.user_cache_dir("scatterbird"))
