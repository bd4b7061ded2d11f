"""The real-sound training corpus: labelled files from 52 Debian packages, verified, cut, and dealt to folds by package.

:mod:`data.bootstrap` builds a small set from two packages. This module scales its recipe to the corpus of
issue 14: ``data/bootstrap_sources.csv`` (``qabcs-data``, ``scorched3d-data``) plus
``data/training_sources.csv`` (50 more packages, listed with their versions and ``.deb`` sizes in
``data/training_packages.csv``). Only packages in these lists are ever opened: every other sound-carrying
package is reserved for independent evaluation.

Steps (each reuses what an earlier run left under ``WORKDIR``, by default ``~/.cache/scatterbird/corpus`` or
``$SCATTERBIRD_CORPUS``):

1. **fetch**: ``apt-get download PACKAGE=VERSION`` into ``WORKDIR/debs`` (a ``.deb`` already there, or in the
   bootstrap set's ``debs`` folder, is used as is); each ``.deb``'s SHA-256 and size are recorded and the size
   is compared with the packages list.
2. **unpack**: only the listed members, into ``WORKDIR/extract``.
3. **verify**: every file of the training list must match its SHA-256 in
   ``data/training_sources_sha256.csv``; a changed, missing or unlisted file is reported and left out, never
   used. The bootstrap list has no hash list: its files' hashes are recorded in ``build.json``.
4. **cut**: as :func:`data.bootstrap.cut_segments` (mono, resampled, trimmed). A file that cannot be read or
   is silent is reported and left out. Cuts are cached as ``.npy`` files (memory-mapped when mixing, so the
   corpus need not fit in memory).
5. **folds**: two schemes. *package* (the one models are chosen on): no package is in two folds; the five
   packages that hold birds are dealt round-robin (one per fold when ``K = 5``), then the others greedily so
   that every category's cuts are spread evenly. *source*: as the bootstrap set, by source file.
6. **mix**: each fold's 10 s clips only from that fold's cuts, with :func:`data.bootstrap.write_fold`, into
   ``WORKDIR/folds/<scheme>/fold<k>/`` (and unlabelled ones into ``WORKDIR/unlabeled/<scheme>/fold<k>/``).
   A fold folder records its parameters in ``corpus-fold.json``; one made with the same parameters, cuts
   and mixing code is kept, so a rerun mixes nothing.

``WORKDIR/build.json`` describes the result (read it with :func:`load_build`, :func:`fold_dirs`,
:func:`unlabeled_dirs`) and ``WORKDIR/segments/segments.csv`` lists every cut with its folds.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from scatterbird.data import DATA_DIR, bootstrap
from scatterbird.data.bootstrap import BED_MIN_S, MixOptions, Segment, SourceRow, cut_segments, write_fold
from scatterbird.errors import BootstrapError

TRAINING_SOURCES_CSV = DATA_DIR / "training_sources.csv"
TRAINING_SHA256_CSV = DATA_DIR / "training_sources_sha256.csv"
TRAINING_PACKAGES_CSV = DATA_DIR / "training_packages.csv"
DEFAULT_WORKDIR = Path(os.environ.get("SCATTERBIRD_CORPUS", Path.home() / ".cache" / "scatterbird" / "corpus"))

#: The validation schemes: folds that share no package, and folds that share no source file.
SCHEMES = ("package", "source")
#: Bumped when the cutting changes, so cached cuts are not reused.
CUT_VERSION = 1
#: Added to the seed of unlabelled clips (as the bootstrap set), so they differ from the labelled ones.
UNLABELED_SEED_OFFSET = 7919

#: ``download(package, version, folder)`` leaves ``package``'s ``.deb`` in ``folder``.
Download = Callable[[str, str, Path], None]


@dataclass(frozen=True)
class CorpusLists:
    """Where the lists are.

    Attributes
    ----------
    sources : tuple of paths
        Source lists (columns as ``bootstrap_sources.csv``).
    sha256 : path or None
        Per-file hashes (``source_package,version,member,sha256``).
    packages : path or None
        Packages whose files must all match a listed hash (``package,version,deb_size_bytes,...``).
    base_packages : tuple of str
        Packages allowed without being in ``packages`` (the bootstrap set's; no per-file hashes).
    """

    sources: tuple[Path, ...] = (bootstrap.SOURCES_CSV, TRAINING_SOURCES_CSV)
    sha256: Path | None = TRAINING_SHA256_CSV
    packages: Path | None = TRAINING_PACKAGES_CSV
    base_packages: tuple[str, ...] = bootstrap.ALLOWED_PACKAGES


@dataclass
class SourceList:
    """The lists, read and checked: rows, expected hashes and package versions."""

    rows: list[SourceRow]
    expected: dict[str, str]  # file_key -> SHA-256
    versions: dict[str, str]  # package -> version
    deb_sizes: dict[str, int]  # package -> the listed .deb size
    hashed: frozenset[str]  # packages whose every file needs a listed hash

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(self.versions)


# -- reading the lists ---------------------------------------------------------------------------------------
def _member(name: str) -> str:
    return name.lstrip("./")  # as data.bootstrap: the lists may or may not write the tar's leading "./"


def read_rows(path: str | os.PathLike, allowed: Iterable[str]) -> list[SourceRow]:
    """Read one sources list; a package outside ``allowed`` or a bad ``hasbird`` raises :class:`BootstrapError`."""
    allowed = frozenset(allowed)
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for i, r in enumerate(csv.DictReader(f), start=2):
            if r["source_package"] not in allowed:
                raise BootstrapError(f"{path}, line {i}: package {r['source_package']!r} is not on the allowlist")
            if r["hasbird"] not in ("0", "1"):
                raise BootstrapError(f"{path}, line {i}: hasbird must be 0 or 1, got {r['hasbird']!r}")
            try:
                start, dur = float(r["start"] or 0.0), float(r["dur"]) if r["dur"] else None
            except ValueError:
                raise BootstrapError(f"{path}, line {i}: start/dur must be numbers") from None
            rows.append(SourceRow(int(r["hasbird"]), r["source_package"], r["version"], _member(r["member"]),
                                  start, dur, r["category"], r.get("note") or ""))
    return rows


def read_lists(lists: CorpusLists | None = None) -> SourceList:
    """Read and cross-check the sources, hash and packages lists.

    The allowlist is ``lists.base_packages`` plus the packages list's packages; every package keeps one
    version across all lists.
    """
    lists = lists or CorpusLists()
    versions: dict[str, str] = {}
    sizes: dict[str, int] = {}
    if lists.packages is not None:
        with open(lists.packages, newline="", encoding="utf-8") as f:
            for i, r in enumerate(csv.DictReader(f), start=2):
                if r["package"] in versions:
                    raise BootstrapError(f"{lists.packages}, line {i}: package {r['package']!r} listed twice")
                versions[r["package"]] = r["version"]
                if r.get("deb_size_bytes"):
                    sizes[r["package"]] = int(r["deb_size_bytes"])
    hashed = frozenset(versions)
    allowed = hashed | frozenset(lists.base_packages)
    rows: list[SourceRow] = []
    for path in lists.sources:
        for i, r in enumerate(read_rows(path, allowed), start=2):
            if versions.setdefault(r.package, r.version) != r.version:
                raise BootstrapError(f"{path}, line {i}: {r.package} version {r.version}, elsewhere {versions[r.package]}")
            rows.append(r)
    expected: dict[str, str] = {}
    if lists.sha256 is not None:
        with open(lists.sha256, newline="", encoding="utf-8") as f:
            for i, r in enumerate(csv.DictReader(f), start=2):
                pkg = r["source_package"]
                if pkg not in allowed:
                    raise BootstrapError(f"{lists.sha256}, line {i}: package {pkg!r} is not on the allowlist")
                if versions.get(pkg, r["version"]) != r["version"]:
                    raise BootstrapError(f"{lists.sha256}, line {i}: {pkg} version {r['version']}, elsewhere {versions[pkg]}")
                expected[f"{pkg}:{_member(r['member'])}"] = r["sha256"].strip().lower()
    used = {r.package for r in rows}
    return SourceList(rows, expected, {p: v for p, v in versions.items() if p in used},
                      {p: s for p, s in sizes.items() if p in used}, hashed & used)


# -- hashing (cached by size, mtime and inode, so a rerun reads nothing twice) ----------------------------------
class _Hashes:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.cache: dict[str, list] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.cache = {}

    def __call__(self, file: Path) -> str:
        st = file.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = self.cache.get(str(file))
        if hit and hit[:3] == stamp:
            return hit[3]
        digest = bootstrap._sha256(file)
        self.cache[str(file)] = [*stamp, digest]
        return digest

    def forget(self, file: Path) -> None:
        self.cache.pop(str(file), None)

    def save(self) -> None:
        _write_atomic(self.path, json.dumps(self.cache))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- 1. fetch ------------------------------------------------------------------------------------------------
def deb_patterns(package: str, version: str) -> list[str]:
    """Glob patterns of ``package``'s ``.deb`` as apt names it (epoch colon escaped as ``%3a``), then others."""
    forms = [version.replace(":", "%3a"), version, version.split(":")[-1]]
    return [f"{glob.escape(package)}_{glob.escape(v)}_*.deb" for v in dict.fromkeys(forms)]


def find_deb(package: str, version: str, folders: Sequence[Path]) -> Path | None:
    """The first ``.deb`` of ``package=version`` in ``folders``, or None."""
    for folder in folders:
        for pattern in deb_patterns(package, version):
            found = sorted(Path(folder).glob(pattern))
            if found:
                return found[0]
    return None


def apt_download(package: str, version: str, folder: Path) -> None:
    """``apt-get download package=version`` in ``folder`` (apt checks the archive's signatures)."""
    cmd = ["apt-get", "download", f"{package}={version}"]
    print(f"corpus: {' '.join(cmd)}", file=sys.stderr)
    try:
        subprocess.run(cmd, cwd=folder, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BootstrapError(f"could not download {package}={version} ({exc}); on Debian/Ubuntu run `apt-get update` "
                             f"first, or put its .deb into {folder} by hand") from None


def fetch_debs(versions: dict[str, str], folder: Path, *, download: Download | None = None,
               search: Sequence[Path] = ()) -> dict[str, Path]:
    """Each package's ``.deb``: found in ``folder`` or ``search``, else downloaded into ``folder``.

    Parameters
    ----------
    versions : dict
        Package -> version.
    folder : Path
        Where downloads go.
    download : callable, optional
        ``download(package, version, folder)``; default :func:`apt_download`.
    search : sequence of Path
        Other folders holding ``.deb`` files to use in place (not copied).
    """
    download = download or apt_download
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for package, version in sorted(versions.items()):
        deb = find_deb(package, version, [folder, *search])
        if deb is None:
            download(package, version, folder)
            deb = find_deb(package, version, [folder])
            if deb is None:
                raise BootstrapError(f"downloading {package}={version} left no .deb in {folder}")
        out[package] = deb
    return out


# -- 2-3. unpack and verify -------------------------------------------------------------------------------------
def unpack_members(members: dict[str, list[str]], debs: dict[str, Path], dest: Path) -> dict[str, str]:
    """Extract the listed members (package -> member paths) not yet in ``dest``.

    Returns
    -------
    dict
        ``file_key`` -> why it is not there (not in the package, or the package could not be unpacked).
    """
    dest.mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    work = {p: [m for m in names if not (dest / m).exists()] for p, names in sorted(members.items())}
    for package, todo in _progress([(p, t) for p, t in work.items() if t], "unpack", "package"):
        deb = debs[package]
        tar = subprocess.Popen(["tar", "-x", "-C", str(dest), *[f"./{m}" for m in todo]],
                               stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)  # "Not found": refusals below
        unpack = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=tar.stdin, stderr=subprocess.PIPE)
        assert tar.stdin is not None and unpack.stderr is not None
        tar.stdin.close()
        tar.wait()
        deb_err = unpack.stderr.read()
        unpack.wait()
        for m in todo:
            if (dest / m).is_file():
                continue
            if (dest / m).is_symlink():
                failed[f"{package}:{m}"] = f"a symbolic link in {deb.name}, not a file"
            elif unpack.returncode not in (0, -13):  # -13: SIGPIPE after tar stopped reading, harmless
                failed[f"{package}:{m}"] = f"unpacking {deb.name} failed: {deb_err.decode(errors='replace').strip()}"
            else:
                failed[f"{package}:{m}"] = f"not in {deb.name}"
    return failed


def _refusal(row: SourceRow, reason: str, expected: str | None = None, actual: str | None = None) -> dict:
    out = {"package": row.package, "member": row.member, "reason": reason}
    if expected is not None or actual is not None:
        out.update(expected=expected, actual=actual)
    return out


def verify_files(files: dict[str, SourceRow], extract: Path, lists: SourceList, hashes: _Hashes,
                 failed: dict[str, str]) -> tuple[dict[str, str], list[dict]]:
    """Hash every extracted file and compare with the list.

    Returns
    -------
    (dict, list)
        ``file_key`` -> SHA-256 of the files that may be used, and the refusals (reason, expected, actual).
    """
    ok: dict[str, str] = {}
    refused: list[dict] = []
    for key, row in _progress(files.items(), "verify", "file"):
        if key in failed:
            refused.append(_refusal(row, failed[key], lists.expected.get(key)))
            continue
        actual = hashes(extract / row.member)
        want = lists.expected.get(key)
        if want is not None and want != actual:
            refused.append(_refusal(row, "SHA-256 differs from the list", want, actual))
        elif want is None and row.package in lists.hashed:
            refused.append(_refusal(row, "no SHA-256 listed", None, actual))
        else:
            ok[key] = actual
    for r in refused:
        extra = f" (expected {r['expected']}, got {r['actual']})" if r.get("expected") and r.get("actual") else ""
        print(f"corpus: refused {r['package']}:{r['member']}: {r['reason']}{extra}", file=sys.stderr)
    return ok, refused


# -- 4. cut ----------------------------------------------------------------------------------------------------
def _progress(items: Iterable, desc: str, unit: str, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(items, desc=f"corpus {desc}", unit=unit, total=total, leave=False, file=sys.stderr)


def cut_key(row: SourceRow, sha256: str, sr: int) -> str:
    """The cache name of a cut: its file's content, its segment and the rate."""
    return hashlib.sha256(f"{CUT_VERSION}:{sha256}:{row.start}:{row.dur}:{sr}".encode()).hexdigest()[:32]


def cut_all(rows: Sequence[SourceRow], extract: Path, sr: int, hashes: dict[str, str],
            cache: Path) -> tuple[list[Segment], list[dict]]:
    """Cut every row whose file is in ``hashes`` (the verified ones), reusing cuts cached in ``cache``.

    A cut that cannot be read, is empty or silent is refused (left out), not raised. The returned
    segments' audio is memory-mapped from ``cache``.
    """
    cache.mkdir(parents=True, exist_ok=True)
    index_path = cache / "index.json"
    try:
        index: dict[str, dict] = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    count: Counter[str] = Counter()
    segments: list[Segment] = []
    refused: list[dict] = []
    todo = [r for r in rows if r.file_key in hashes]
    for r in _progress(todo, "cut", "cut"):
        name = cut_key(r, hashes[r.file_key], sr)
        path = cache / f"{name}.npy"
        if name not in index or not path.exists():
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")  # an empty cut warns on its mean; it is refused below
                    [seg] = cut_segments([r], extract, sr)
                if seg.audio.size == 0 or not np.isfinite(seg.audio).all():
                    raise BootstrapError(f"{extract / r.member} [{r.start}+{r.dur}]: empty segment")
            except (BootstrapError, ValueError, RuntimeError, OSError) as exc:
                refused.append(_refusal(r, f"cannot be cut: {exc}"))
                print(f"corpus: refused {r.file_key} [{r.start}+{r.dur}]: {exc}", file=sys.stderr)
                continue
            tmp = cache / f"{name}.tmp.npy"
            np.save(tmp, seg.audio)
            os.replace(tmp, path)
            index[name] = {"source_sr": seg.source_sr, "samples": int(seg.audio.size), "file": r.file_key}
        audio = np.load(path, mmap_mode="r")
        segments.append(Segment(r, count[r.file_key], audio, sr, int(index[name]["source_sr"])))
        count[r.file_key] += 1
    _write_atomic(index_path, json.dumps(index))
    return segments, refused


def segment_id(seg: Segment) -> str:
    """A unique name of a cut (``Segment.name`` repeats when two folders of a package hold the same file name)."""
    return f"{seg.row.file_key}#{seg.index}"


# -- 5. folds ----------------------------------------------------------------------------------------------------
def _check_k(k: int) -> None:
    if k < 2:
        raise BootstrapError(f"need at least 2 folds, got {k}")


def package_folds(rows: Sequence[SourceRow], k: int, seed: int = 0) -> dict[str, int]:
    """Deal *packages* to ``k`` folds, one row per cut.

    Packages with birds go round-robin, most bird cuts first (one per fold when there are ``k`` of them).
    The others follow, largest first (ties in a seeded order), each to the fold where it least increases the
    sum of squared per-category shares, so every category's cuts spread evenly.

    Returns
    -------
    dict
        Package -> fold (0..k-1). No package is in two folds.
    """
    _check_k(k)
    cats = sorted({r.category for r in rows})
    col = {c: i for i, c in enumerate(cats)}
    per: dict[str, np.ndarray] = {}
    birds: Counter[str] = Counter()
    for r in rows:
        v = per.setdefault(r.package, np.zeros(len(cats) + 1))
        v[col[r.category]] += 1
        v[-1] += 1  # the fold's total size is balanced too
        birds[r.package] += r.hasbird
    bird_pkgs = sorted((p for p in per if birds[p]), key=lambda p: (-birds[p], p))
    if len(bird_pkgs) < k:
        raise BootstrapError(f"only {len(bird_pkgs)} packages hold birds ({', '.join(bird_pkgs)}): "
                             f"use at most {len(bird_pkgs)} package folds")
    rng = np.random.default_rng(seed)
    weight = 1.0 / np.sum(list(per.values()), axis=0) ** 2
    load = np.zeros((k, len(cats) + 1))
    fold_of: dict[str, int] = {}
    for i, p in enumerate(bird_pkgs):
        fold_of[p] = i % k
        load[i % k] += per[p]
    others = sorted(p for p in per if not birds[p])
    tie = dict(zip(others, rng.permutation(len(others))))
    for p in sorted(others, key=lambda p: (-per[p][-1], tie[p])):
        cost = np.round(load @ (per[p] * weight), 12)
        f = int(np.lexsort((rng.random(k), load[:, -1], cost))[0])
        fold_of[p] = f
        load[f] += per[p]
    return fold_of


def source_folds(rows: Sequence[SourceRow], k: int, seed: int = 0) -> dict[str, int]:
    """Deal source *files* to ``k`` folds (as :func:`data.bootstrap.assign_folds`, also stratified by category).

    Files are grouped by (``hasbird``, long ambience or not, category, from their first cut); each group
    is dealt in a seeded order, continuing where the previous group stopped, so folds stay even.

    Returns
    -------
    dict
        ``file_key`` -> fold. All cuts of a file share it; packages may be split.
    """
    _check_k(k)
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list[str]] = {}
    seen: set[str] = set()
    for r in rows:
        if r.file_key not in seen:
            seen.add(r.file_key)
            bed = r.dur is not None and r.dur >= BED_MIN_S
            groups.setdefault((r.hasbird, bed, r.category), []).append(r.file_key)
    folds: dict[str, int] = {}
    offset = 0
    for key in sorted(groups):
        files = sorted(groups[key])
        for i, f in enumerate(rng.permutation(files)):
            folds[str(f)] = (offset + i) % k
        offset += len(files)
    return folds


def fold_of_segments(segments: Sequence[Segment], scheme: str, k: int, seed: int) -> list[int]:
    """The fold of each segment under ``scheme`` (``"package"`` or ``"source"``)."""
    rows = [s.row for s in segments]
    if scheme == "package":
        by = package_folds(rows, k, seed)
        return [by[r.package] for r in rows]
    if scheme == "source":
        by = source_folds(rows, k, seed)
        return [by[r.file_key] for r in rows]
    raise BootstrapError(f"unknown fold scheme {scheme!r} (one of {SCHEMES})")


# -- 6. mix ----------------------------------------------------------------------------------------------------
def _fingerprint(segments: Sequence[Segment], hashes: dict[str, str]) -> str:
    h = hashlib.sha256()
    for s in segments:  # in order: the mixing draws segments by index
        h.update(f"{hashes[s.row.file_key]}:{s.row.start}:{s.row.dur}:{s.row.hasbird}:{s.row.category}\n".encode())
    return h.hexdigest()


def _mix_code() -> str:
    """The hash of the mixing code (``data/bootstrap.py`` and the ``scatterbird.data`` modules it uses, and
    theirs): clips made by older code are not reused."""
    seen: dict[str, ModuleType] = {}
    todo: list[ModuleType] = [bootstrap]
    while todo:
        mod = todo.pop()
        if mod.__name__ in seen or not mod.__name__.startswith("scatterbird.data.") or mod.__name__ == __name__:
            continue
        seen[mod.__name__] = mod
        for v in vars(mod).values():
            m = v if isinstance(v, ModuleType) else sys.modules.get(getattr(v, "__module__", None) or "")
            if isinstance(m, ModuleType):
                todo.append(m)
    h = hashlib.sha256()
    for name in sorted(seen):
        if getattr(seen[name], "__file__", None):
            h.update(f"{name}:{bootstrap._sha256(Path(seen[name].__file__))}\n".encode())
    return h.hexdigest()


FOLD_PARAMS = "corpus-fold.json"


def _fold_is_done(outdir: Path, params: dict) -> bool:
    try:
        old = json.loads((outdir / FOLD_PARAMS).read_text())
    except (OSError, ValueError):
        return False
    wavs = outdir / "wav"
    return (old == params and (outdir / f"{outdir.name}.csv").is_file()
            and sum(1 for _ in wavs.glob("*.wav")) == params["clips"])


def mix_fold(outdir: Path, fold: int, segments: Sequence[Segment], n_clips: int, sr: int, seed: int,
             opts: MixOptions, *, prefix: str, fingerprint: str) -> bool:
    """Mix one fold with :func:`data.bootstrap.write_fold` unless ``outdir`` already holds it.

    Returns
    -------
    bool
        True when clips were written, False when the folder was kept.
    """
    params = json.loads(json.dumps({
        "fold": fold, "clips": n_clips, "sr": sr, "seed": seed, "prefix": prefix, "mix": dataclasses.asdict(opts),
        "segments": fingerprint, "n_segments": len(segments), "mix_code": _mix_code(),
    }))
    if _fold_is_done(outdir, params):
        return False
    if outdir.exists():  # a stale or half-written fold: start clean, so no old clip lingers
        shutil.rmtree(outdir)
    write_fold(outdir, fold, segments, n_clips, sr, seed, opts, prefix=prefix)
    _write_atomic(outdir / FOLD_PARAMS, json.dumps(params, indent=1))
    return True


# -- the whole build ------------------------------------------------------------------------------------------
def _fold_record(k: int, segs: Sequence[Segment], bird_packages: set[str]) -> dict:
    pkgs = sorted({s.row.package for s in segs})
    return {
        "name": f"fold{k}",
        "dir": None,
        "unlabeled_dir": None,
        "packages": pkgs,
        "bird_packages": [p for p in pkgs if p in bird_packages],
        "source_files": sorted({s.row.file_key for s in segs}),
        "birds": sum(s.hasbird for s in segs),
        "others": sum(1 - s.hasbird for s in segs),
        "counts": dict(sorted(Counter(s.row.category for s in segs).items())),
    }


def build_corpus(
    workdir: str | os.PathLike = DEFAULT_WORKDIR,
    *,
    folds: int = 5,
    clips_per_fold: int = 1100,
    unlabeled_per_fold: int = 300,
    source_clips_per_fold: int = 0,
    sr: int = 22050,
    seed: int = 0,
    opts: MixOptions | None = None,
    download: Download | None = None,
    lists: CorpusLists | None = None,
    deb_folders: Sequence[str | os.PathLike] | None = None,
) -> dict:
    """Fetch, unpack, verify, cut, fold and mix; return (and write to ``WORKDIR/build.json``) what was built.

    Parameters
    ----------
    workdir : path
        Everything goes here (packages, extracted files, cuts, folds); outside the repository.
    folds : int
        Folds of each scheme.
    clips_per_fold : int
        Labelled 10 s clips per package fold (0: none mixed; the folds are still described).
    unlabeled_per_fold : int
        Unlabelled clips per fold of each mixed scheme (``unlabeled/<scheme>/fold<k>/``).
    source_clips_per_fold : int
        Labelled clips per source-file fold (0: that scheme is described, not mixed).
    sr, seed : int
        Rate of the clips; seed of the folds and the mixing.
    opts : MixOptions, optional
    download : callable, optional
        ``download(package, version, folder)`` for a missing ``.deb`` (default ``apt-get download``).
    lists : CorpusLists, optional
        The lists (default: the shipped ones).
    deb_folders : sequence of paths, optional
        Other folders whose ``.deb`` files are used in place (default: the bootstrap set's).
    """
    opts = opts or MixOptions()
    lists = lists or CorpusLists()
    work = Path(workdir).expanduser()
    src = read_lists(lists)
    hashes = _Hashes(work / "hashes.json")
    search = [Path(d).expanduser() for d in (deb_folders if deb_folders is not None else [bootstrap.DEFAULT_WORKDIR / "debs"])]

    # 1. fetch
    debs = fetch_debs(src.versions, work / "debs", download=download, search=search)
    packages = {}
    for p, deb in debs.items():
        size = deb.stat().st_size
        packages[p] = {"version": src.versions[p], "deb": str(deb), "sha256": hashes(deb), "size": size}
        if p in src.deb_sizes:
            packages[p]["expected_size"] = src.deb_sizes[p]
            if src.deb_sizes[p] != size:
                packages[p]["size_mismatch"] = True
                print(f"corpus: {deb.name} is {size} bytes, the packages list says {src.deb_sizes[p]}", file=sys.stderr)

    # 2-3. unpack and verify; a stale extracted file (changed since) is removed and unpacked again
    extract = work / "extract"
    files = {r.file_key: r for r in src.rows}
    for key, row in files.items():
        path = extract / row.member
        if key in src.expected and path.is_file() and hashes(path) != src.expected[key]:
            hashes.forget(path)
            path.unlink()
    members: dict[str, list[str]] = {}
    for row in files.values():
        members.setdefault(row.package, []).append(row.member)
    failed = unpack_members(members, debs, extract)
    ok, refused = verify_files(files, extract, src, hashes, failed)
    hashes.save()

    # 4. cut
    segments, cut_refused = cut_all(src.rows, extract, sr, ok, work / "segments" / f"sr{sr}")
    refused += cut_refused
    if not segments:
        raise BootstrapError("no usable cut: every listed file was refused")
    bird_packages = {s.row.package for s in segments if s.hasbird}

    # 5. folds of both schemes (the source scheme is described even when not mixed)
    fold_lists = {scheme: fold_of_segments(segments, scheme, folds, seed) for scheme in SCHEMES}
    clips = {"package": clips_per_fold, "source": source_clips_per_fold}
    prefixes = {"package": "pkg-", "source": "src-"}
    schemes: dict[str, dict] = {}
    jobs = []
    for scheme in SCHEMES:
        records = []
        for k in range(folds):
            segs = [s for s, f in zip(segments, fold_lists[scheme]) if f == k]
            rec = _fold_record(k, segs, bird_packages)
            records.append(rec)
            if not clips[scheme]:
                continue
            if not (rec["birds"] and rec["others"]):
                raise BootstrapError(f"{scheme} fold {k} lacks birds or others; use fewer folds")
            fp = _fingerprint(segs, ok)
            rec["dir"] = str(work / "folds" / scheme / f"fold{k}")
            jobs.append((Path(rec["dir"]), k, segs, clips[scheme], seed, prefixes[scheme], fp))
            if unlabeled_per_fold:
                rec["unlabeled_dir"] = str(work / "unlabeled" / scheme / f"fold{k}")
                jobs.append((Path(rec["unlabeled_dir"]), k, segs, unlabeled_per_fold,
                             seed + UNLABELED_SEED_OFFSET, prefixes[scheme] + "u", fp))
        schemes[scheme] = {"k": folds, "clips_per_fold": clips[scheme], "folds": records}
    _write_segments_csv(work / "segments" / "segments.csv", segments, fold_lists, ok)

    # 6. mix (each fold only from its own cuts)
    mixed = 0
    bar = _progress(jobs, "mix", "fold")
    for outdir, k, segs, n, s, prefix, fp in bar:
        bar.set_postfix_str(f"{outdir.parent.parent.name}/{outdir.parent.name}/{outdir.name}")
        mixed += mix_fold(outdir, k, segs, n, sr, s, opts, prefix=prefix, fingerprint=fp)

    info = {
        "workdir": str(work),
        "lists": {str(p): bootstrap._sha256(Path(p)) for p in (*lists.sources, lists.sha256, lists.packages) if p},
        "packages": packages,
        "refused": refused,
        "files": dict(sorted(ok.items())),
        "segments": len(segments),
        "segments_csv": str(work / "segments" / "segments.csv"),
        "bird_packages": sorted(bird_packages),
        "folds": folds,
        "clips_per_fold": clips_per_fold,
        "unlabeled_per_fold": unlabeled_per_fold,
        "source_clips_per_fold": source_clips_per_fold,
        "sr": sr,
        "seed": seed,
        "mix": dataclasses.asdict(opts),
        "folds_mixed_now": int(mixed),
        "schemes": schemes,
    }
    _write_atomic(work / "build.json", json.dumps(info, indent=1))
    return info


def _write_segments_csv(path: Path, segments: Sequence[Segment], fold_lists: dict[str, list[int]], hashes: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["segment", "package_fold", "source_fold", "hasbird", "category", "package", "member", "start",
                    "dur", "seconds", "source_sr", "bed", "sha256"])
        for i, s in enumerate(segments):
            w.writerow([segment_id(s), fold_lists["package"][i], fold_lists["source"][i], s.hasbird, s.row.category, s.row.package, s.row.member, s.row.start,
                        s.row.dur or "", f"{s.audio.size / s.sr:.2f}", s.source_sr, int(s.is_bed),
                        hashes[s.row.file_key]])
    os.replace(tmp, path)


# -- reading a build ------------------------------------------------------------------------------------------
def load_build(workdir: str | os.PathLike = DEFAULT_WORKDIR) -> dict:
    """``WORKDIR/build.json`` of a built corpus."""
    path = Path(workdir).expanduser() / "build.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BootstrapError(f"{path}: no corpus built there; run scripts/build_corpus.py") from None
    except ValueError as exc:
        raise BootstrapError(f"{path}: not a build description ({exc})") from None


def _dirs(info: dict, scheme: str, key: str) -> list[Path]:
    if scheme not in SCHEMES:
        raise BootstrapError(f"unknown fold scheme {scheme!r} (one of {SCHEMES})")
    records = info.get("schemes", {}).get(scheme, {}).get("folds", [])
    dirs = [r[key] for r in records]
    if not dirs or any(d is None for d in dirs):
        raise BootstrapError(f"the {scheme} folds of {info.get('workdir')} have no {key.replace('_', ' ')}s "
                             f"(built with no clips of that kind)")
    return [Path(d) for d in dirs]


def fold_dirs(info: dict, scheme: str = "package") -> list[Path]:
    """The labelled fold folders of ``scheme`` (``"package"`` or ``"source"``), fold 0 first."""
    return _dirs(info, scheme, "dir")


def unlabeled_dirs(info: dict, scheme: str = "package") -> list[Path]:
    """The unlabelled fold folders of ``scheme``, fold 0 first."""
    return _dirs(info, scheme, "unlabeled_dir")
