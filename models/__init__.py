"""Detectors on scattering sequences, and analyses of trained networks. Knows nothing of files."""

from .base import Detector, DetectorError, FeatureConfigMismatch, load_detector

__all__ = ["Detector", "DetectorError", "FeatureConfigMismatch", "load_detector"]
