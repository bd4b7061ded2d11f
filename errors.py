"""Every error scatterbird raises on purpose, under one root, :class:`ScatterbirdError`.

Catch ``ScatterbirdError`` to handle anything the tool reports as a user-facing problem; the command line
turns it into a one-line message and the documented exit code. The built-in base each error had before
the root existed (``ValueError``, ``RuntimeError``) is kept, so ``except ValueError`` still catches it.
"""

from __future__ import annotations

import errno
import os
import signal


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


#: What an output error says for the ``errno`` values a user can act on.
_OUTPUT_REASONS = {
    errno.ENOSPC: "disk full (no space left on the device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EEXIST: "exists and is not a folder",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EFBIG: "file too large for this file system",
}


class OutputError(ScatterbirdError, OSError):
    """An output file or folder cannot be written: not a folder, read-only, no permission, disk full.

    Also an :class:`OSError` (``errno`` kept), so ``except OSError`` still catches it.

    Parameters
    ----------
    path : str or Path
        The file or folder that could not be written.
    reason : str
        The cause, in words a user can act on.
    code : int, optional
        The ``errno`` of the underlying error.
    """

    def __init__(self, path: str | os.PathLike, reason: str, code: int | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
        self.errno = code

    def __str__(self) -> str:  # OSError's own __str__ would print "[Errno n] None"
        return f"{self.path}: {self.reason}"

    def __reduce__(self):  # rebuilt from its fields when it crosses a process boundary
        return type(self), (self.path, self.reason, self.errno)

    @classmethod
    def from_os_error(cls, exc: OSError, path: str | os.PathLike | None = None) -> "OutputError":
        """The output error of ``exc``, naming ``path`` (default: the file the OS error names)."""
        if isinstance(exc, OutputError):
            return exc
        target = path if path is not None else (exc.filename if exc.filename is not None else "(output)")
        reason = _OUTPUT_REASONS.get(exc.errno or -1) or exc.strerror or str(exc)
        return cls(target, reason, exc.errno)

    @classmethod
    def disk_full(cls, path: str | os.PathLike) -> "OutputError":
        """The error of a write that found no space left (e.g. SQLite's ``database or disk is full``)."""
        return cls(path, _OUTPUT_REASONS[errno.ENOSPC], errno.ENOSPC)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT from Ctrl-C, SIGTERM from a batch scheduler).

    A :class:`KeyboardInterrupt`, so whatever cleans up after Ctrl-C cleans up after SIGTERM too;
    ``signum`` is the signal (the command line exits with ``128 + signum``).
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
