"""Fixtures shared by the tests, and the import path they run with."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from simple_detector import train_simple_detector

ROOT = Path(__file__).resolve().parents[1]
# `python -m pytest` puts the checkout on sys.path, where its folders would import as top-level `cli`,
# `pipeline`, ...: the tests must exercise the installed `scatterbird` package only.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]

# The front end's filter cache (pipeline/frontend/filter_cache.py) goes to a folder of this run, never the
# user's cache folder; set here, at import, so that worker processes the tests start inherit it.
if "SCATTERBIRD_FILTER_CACHE" not in os.environ:
    _FILTERS = tempfile.mkdtemp(prefix="scatterbird-test-filters-")
    os.environ["SCATTERBIRD_FILTER_CACHE"] = _FILTERS
    atexit.register(shutil.rmtree, _FILTERS, ignore_errors=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The small test detector (tests/simple_detector.py), trained once per test module."""
    path = tmp_path_factory.mktemp("model") / "simple.pt"
    train_simple_detector(path)
    return path
