"""Find the recordings to process: files, directory trees, or text files listing paths."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from scatterbird.pipeline.frontend.audio import AUDIO_EXTENSIONS


@dataclass
class InputScan:
    """What a scan found: the audio files in a deterministic order, and the problems met on the way."""

    files: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    roots: dict[Path, Path] = field(default_factory=dict)  # file -> the directory it was found under

    def with_roots(self) -> list[tuple[Path, Path | None]]:
        """Each file with the input directory it was found under (None for files given directly)."""
        return [(f, self.roots.get(f)) for f in self.files]


def _norm_exts(extensions: Iterable[str] | None) -> tuple[str, ...]:
    exts = extensions or AUDIO_EXTENSIONS
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)


def find_audio(
    inputs: Sequence[str | os.PathLike], extensions: Iterable[str] | None = None, *, list_files: bool = True
) -> InputScan:
    """Expand inputs into audio files.

    Parameters
    ----------
    inputs : sequence of path
        Files (taken as they are, whatever the extension), directories (searched recursively for files with
        one of ``extensions``), or, when ``list_files`` is true, ``.txt``/``.lst`` files listing one path per
        line (``#`` starts a comment; relative paths are relative to the list file).
    extensions : iterable of str, optional
        Extensions to keep in directories (case-insensitive). Defaults to ``AUDIO_EXTENSIONS``.

    Returns
    -------
    InputScan
        Files sorted within each directory, duplicates removed (first occurrence kept); missing paths,
        unreadable directories and symlink loops are reported in ``problems``, never raised.
    """
    exts = _norm_exts(extensions)
    scan = InputScan()
    seen: set[Path] = set()

    def add(p: Path, root: Path | None = None) -> None:
        key = p.resolve() if p.exists() else p.absolute()
        if key not in seen:
            seen.add(key)
            scan.files.append(p)
            if root is not None:
                scan.roots[p] = root

    def walk(root: Path) -> None:
        visited: set[tuple[int, int]] = set()

        def onerror(err: OSError) -> None:
            scan.problems.append((str(err.filename or root), f"unreadable directory ({err.strerror})"))

        for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
            d = Path(dirpath)
            try:
                st = d.stat()
            except OSError as exc:
                scan.problems.append((str(d), f"unreadable directory ({exc.strerror})"))
                dirnames[:] = []
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in visited:  # a symlink loop (or a second link to a visited directory)
                scan.problems.append((str(d), "symlink loop: directory already visited, skipped"))
                dirnames[:] = []
                continue
            visited.add(ident)
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith(exts):
                    add(d / name, root)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            walk(p)
        elif p.is_file() and list_files and p.suffix.lower() in (".txt", ".lst"):
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                scan.problems.append((str(p), f"unreadable list file ({exc})"))
                continue
            for line in lines:
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                q = Path(line)
                if not q.is_absolute():
                    q = p.parent / q
                if q.is_dir():
                    walk(q)
                elif q.exists():
                    add(q)
                else:
                    scan.problems.append((str(q), f"listed in {p} but not found"))
        elif p.exists():
            add(p)
        else:
            scan.problems.append((str(p), "not found"))
    return scan
