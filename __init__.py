"""scatterbird: find bird activity in audio recordings.

The public API, for Python users (the command line is ``scatterbird``):

- :func:`detect`: score every window of an in-memory array or of audio files with a detector;
- :func:`train`, :func:`evaluate`: fit a detector on labelled folders, measure ROC AUC on labelled datasets;
- :class:`FeatureConfig`, :class:`Scattering`: the feature configuration and the scattering front end;
- :func:`load_detector`, :func:`default_detector`, :func:`build_detector`: the detector registry;
- :class:`ScatterbirdError`: the root of every error scatterbird raises on purpose.

Everything else lives in the parts, one job each: ``scatterbird.pipeline`` (``frontend``, ``detect``,
``train``, ``evaluate``, ``analysis``), ``scatterbird.models`` and ``scatterbird.data``.
"""

from scatterbird.api import detect, evaluate, train
from scatterbird.errors import ScatterbirdError
from scatterbird.models.registry import available_detectors, build_detector, default_detector, load_detector
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.scattering import Scattergram, Scattering
from scatterbird.version import __version__

__all__ = [
    "FeatureConfig",
    "Scattergram",
    "Scattering",
    "ScatterbirdError",
    "__version__",
    "available_detectors",
    "build_detector",
    "default_detector",
    "detect",
    "evaluate",
    "load_detector",
    "train",
]
