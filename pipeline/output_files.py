"""Output folders and files: check a folder before the work, write each file whole or not at all.

Every command that writes results goes through these, so a bad ``-o`` (a file, a read-only place, a full
disk) ends in one :class:`~scatterbird.errors.OutputError` naming the path and the cause, before hours of
work where that can be known, and never leaves a half-written file behind.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from scatterbird.errors import OutputError

#: Prefix of the temporary files: hidden, and recognisable as scatterbird's if a power cut leaves one.
TMP_PREFIX = ".scatterbird-tmp-"


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (with its parents) if needed and check that a file can be written in it.

    The check writes and removes an empty temporary file: permission bits say nothing for root, and a
    read-only mount only shows when something is written.

    Raises
    ------
    OutputError
        When ``path`` is a file, cannot be created, or is not writable.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "exists and is not a folder; give a folder for the output")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX, dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError.from_os_error(exc, out) from None
    return out


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path``, on any error it is removed.

    Parameters
    ----------
    path : path
        The file to write; its folder is created when missing.
    mode : str
        ``"w"`` (text; ``kwargs`` go to :func:`open`, e.g. ``encoding``, ``newline``) or ``"wb"``.

    Raises
    ------
    OutputError
        When the folder or the file cannot be written (read-only, disk full, ...); ``path`` is then left as
        it was, and the temporary file is gone.
    """
    target = Path(path)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # the folder is the problem: name it
        raise OutputError.from_os_error(exc, exc.filename if exc.filename is not None else target.parent) from None
    try:
        # a fresh name opened with "x" (not mkstemp, whose 0600 would ignore the user's umask)
        tmp = str(target.parent / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{target.name}")
        with open(tmp, mode.replace("w", "x"), **kwargs) as f:
            yield f
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise OutputError.from_os_error(exc, target) from None
    finally:
        if tmp is not None:  # any failure, Ctrl-C included: no partial file stays
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` whole or not at all (see :func:`atomic_open`)."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)
