"""The installed version of scatterbird: one string, read from the package metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scatterbird")
except PackageNotFoundError:  # a checkout imported without being installed
    __version__ = "0+unknown"
