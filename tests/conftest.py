"""Fixtures shared by the detect tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from simple_detector import train_simple_detector


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The small test detector (tests/simple_detector.py), trained once per test module."""
    path = tmp_path_factory.mktemp("model") / "simple.pt"
    train_simple_detector(path)
    return path
