"""Every error scatterbird raises on purpose, under one root, :class:`ScatterbirdError`.

Catch ``ScatterbirdError`` to handle anything the tool reports as a user-facing problem; the command line
turns it into a one-line message and the documented exit code. The built-in base each error had before
the root existed (``ValueError``, ``RuntimeError``) is kept, so ``except ValueError`` still catches it.
"""

from __future__ import annotations

import os


class ScatterbirdError(Exception):
    """The root of scatterbird's errors: a problem the user can act on, described in the message."""


class ConfigError(ScatterbirdError, ValueError):
    """A feature configuration value is out of range or unknown."""


class OptionError(ScatterbirdError, ValueError):
    """An option is out of range or unknown (window, hop, event threshold, export format)."""


class AudioError(ScatterbirdError):
    """A recording could not be used. ``path`` names the file and ``reason`` says why.

    Parameters
    ----------
    path : str or Path
        The file.
    reason : str
        What went wrong, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # rebuilt from (path, reason) when it crosses a process boundary
        return type(self), (self.path, self.reason)


class DetectorError(ScatterbirdError, ValueError):
    """Bad input to a detector (shapes, values), or a model file that cannot be used."""


class FeatureConfigMismatch(DetectorError):
    """The model was trained on features made with another configuration than the pipeline's."""


class StoreError(ScatterbirdError, RuntimeError):
    """The results store cannot be opened or used (missing, locked by another run, newer schema)."""


class BatchError(ScatterbirdError, RuntimeError):
    """A batch cannot start (no model, a model without feature configuration, bad shard, no Dask)."""


class DatasetError(ScatterbirdError, ValueError):
    """A labelled dataset cannot be used: no label file, no audio, a label file without its columns."""


class TrainingError(ScatterbirdError, ValueError):
    """Unusable training input (labels, audio, options); the message says what and where."""


class AnalysisError(ScatterbirdError, ValueError):
    """The model cannot be analysed (not piecewise affine) or the inputs are unusable."""


class BootstrapError(ScatterbirdError, RuntimeError):
    """A step of the corpus recipe failed (download, checksum, unpacking, a listed file missing)."""
