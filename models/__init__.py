"""Detectors on scattering sequences, and analyses of trained networks. Knows nothing of files."""

from scatterbird.errors import DetectorError, FeatureConfigMismatch
from scatterbird.models.base import Detector
from scatterbird.models.registry import available_detectors, build_detector, default_detector, load_detector

__all__ = [
    "Detector",
    "DetectorError",
    "FeatureConfigMismatch",
    "available_detectors",
    "build_detector",
    "default_detector",
    "load_detector",
]
