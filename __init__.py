"""scatterbird: find bird activity in audio recordings.

The public API, for Python users (the command line is ``scatterbird``):

- :func:`detect`: score every window of an in-memory array or of audio files with a detector;
- :func:`train`, :func:`evaluate`: fit a detector on labelled folders, measure ROC AUC on labelled datasets;
- :class:`FeatureConfig`, :class:`Scattering`, :class:`Scattergram`: the feature configuration and the
  scattering front end;
- :func:`load_detector`, :func:`default_detector`, :func:`build_detector`, :func:`available_detectors`:
  the detector registry;
- :class:`ScatterbirdError`: the root of every error scatterbird raises on purpose.

Everything else lives in the parts, one job each: ``scatterbird.pipeline`` (``frontend``, ``detect``,
``train``, ``evaluate``, ``analysis``), ``scatterbird.models`` and ``scatterbird.data``.

The names are resolved on first use (PEP 562): importing any part of the package runs this file first, and
an eager import of the whole API here would load every stage (and its libraries) into every worker process.
"""

from importlib import import_module
from typing import Any

from scatterbird.version import __version__

#: Public name -> the module that defines it.
_API = {
    "detect": "scatterbird.api",
    "evaluate": "scatterbird.api",
    "train": "scatterbird.api",
    "adapt": "scatterbird.api",
    "ScatterbirdError": "scatterbird.errors",
    "available_detectors": "scatterbird.models.registry",
    "build_detector": "scatterbird.models.registry",
    "default_detector": "scatterbird.models.registry",
    "load_detector": "scatterbird.models.registry",
    "FeatureConfig": "scatterbird.pipeline.config",
    "Scattergram": "scatterbird.pipeline.frontend.scattering",
    "Scattering": "scatterbird.pipeline.frontend.scattering",
}

__all__ = sorted([*_API, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'scatterbird' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
