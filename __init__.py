"""scatterbird: find bird activity in audio recordings (placeholder, replaced below)."""

from scatterbird.version import __version__

__all__ = ["__version__"]
