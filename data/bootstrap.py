"""A training set from real recordings that ship in two Debian packages, mixed into field-like 10 s clips.

No challenge audio can be downloaded where the default model is built, but real recordings of birds and of
other sounds ship inside Debian packages. ``data/bootstrap_sources.csv`` lists labelled sound files from two
of them, ``qabcs-data`` and ``scorched3d-data`` (package, version, path inside the package, segment,
``hasbird``, category): 37 bird cuts from 34 files and 54 other sounds. Nothing else from Debian's
sound-carrying packages is used: the others are reserved for independent evaluation.

The recipe (each step skips what is already done under ``WORKDIR``, by default
``~/.cache/scatterbird/bootstrap``; nothing is written into the repository):

1. **fetch**: ``apt-get download PACKAGE=VERSION`` into ``WORKDIR/debs`` (apt checks the archive's
   signatures); the ``.deb`` files' SHA-256 are recorded.
2. **unpack**: ``dpkg-deb --fsys-tarfile`` piped to ``tar`` extracts only the listed members.
3. **cut**: each listed segment (``start``, ``dur``; empty ``dur``: to the end) is read, mixed to mono and
   resampled to the build rate; short sound effects are trimmed of leading and trailing silence.
4. **split by source file**: every *file* (not clip, not cut: the three cuts of ``birds1.wav`` travel together)
   goes to one of ``K`` folds, birds and others dealt separately so each fold has both.
5. **mix**: each fold's 10 s clips are made only from that fold's sources. Sound effects are short and clean,
   field recordings long and noisy, so a clip is a background (synthetic noise from :mod:`data.synthetic`,
   often with a long non-bird ambience under it: rain, waves, frogs, engines, crowds) with events placed at
   random times at a random SNR: bird calls (and bird soundscapes) in positive clips, other animals,
   instruments, whistles and vehicles as distractors in both. Labels are "any audible bird", as the
   challenge data's. Augmentations that real recorders impose are applied to both classes alike: random
   band-limiting (many sources are 11 kHz files, so bandwidth must not give the class away), overall gain,
   and a share of clips whose only bird is a synthetic call.

Each fold is written in the Bird Audio Detection layout (``folds/fold<k>/wav/<itemid>.wav`` and
``folds/fold<k>/fold<k>.csv``), so ``scatterbird train``, ``evaluate`` and ``crossval`` read it directly; the
leave-source-out validation is ``crossval`` over the folds. ``recipe.csv`` in each fold says what each clip
is made of.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from scatterbird.data import DATA_DIR
from scatterbird.data.synthetic import BACKGROUNDS, background, bird_call
from scatterbird.errors import BootstrapError

SOURCES_CSV = DATA_DIR / "bootstrap_sources.csv"
DEFAULT_WORKDIR = Path(os.environ.get("SCATTERBIRD_BOOTSTRAP", Path.home() / ".cache" / "scatterbird" / "bootstrap"))

#: The only packages this recipe may take sound from (the issue reserves every other for evaluation).
ALLOWED_PACKAGES = ("qabcs-data", "scorched3d-data")

#: Cuts longer than this are ambiences ("beds") laid under a whole clip; shorter ones are events.
BED_MIN_S = 6.0


@dataclass(frozen=True)
class SourceRow:
    """One row of the sources list."""

    hasbird: int
    package: str
    version: str
    member: str
    start: float
    dur: float | None
    category: str
    note: str

    @property
    def file_key(self) -> str:
        """The source *file* (the unit of the split)."""
        return f"{self.package}:{self.member}"


def read_sources(path: str | os.PathLike = SOURCES_CSV) -> list[SourceRow]:
    """Read ``bootstrap_sources.csv``; refuse any package outside :data:`ALLOWED_PACKAGES`."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for i, r in enumerate(csv.DictReader(f), start=2):
            if r["source_package"] not in ALLOWED_PACKAGES:
                raise BootstrapError(f"{path}, line {i}: package {r['source_package']!r} is not one of {ALLOWED_PACKAGES}")
            if r["hasbird"] not in ("0", "1"):
                raise BootstrapError(f"{path}, line {i}: hasbird must be 0 or 1, got {r['hasbird']!r}")
            rows.append(
                SourceRow(
                    hasbird=int(r["hasbird"]),
                    package=r["source_package"],
                    version=r["version"],
                    member=r["member"].lstrip("./"),
                    start=float(r["start"] or 0.0),
                    dur=float(r["dur"]) if r["dur"] else None,
                    category=r["category"],
                    note=r.get("note", ""),
                )
            )
    return rows


# -- 1-2. fetch and unpack ---------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_packages(rows: Sequence[SourceRow], workdir: Path) -> dict[str, Path]:
    """``apt-get download`` each (package, version) into ``workdir/debs`` unless already there.

    Returns
    -------
    dict
        Package name -> its ``.deb``.
    """
    debs = workdir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for package, version in sorted({(r.package, r.version) for r in rows}):
        name = f"{package}_{version.split(':')[-1]}_all.deb"
        target = debs / name
        if not target.exists():
            cmd = ["apt-get", "download", f"{package}={version}"]
            print(f"bootstrap: {' '.join(cmd)}", file=sys.stderr)
            try:
                subprocess.run(cmd, cwd=debs, check=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise BootstrapError(
                    f"could not download {package}={version} ({exc}); on Debian/Ubuntu run `apt-get update` first, "
                    f"or put {name} into {debs} by hand"
                ) from None
            if not target.exists():
                found = sorted(debs.glob(f"{package}_*.deb"))
                if not found:
                    raise BootstrapError(f"apt-get download {package}={version} left no .deb in {debs}")
                target = found[-1]
        out[package] = target
    return out


def unpack_members(rows: Sequence[SourceRow], debs: dict[str, Path], workdir: Path) -> Path:
    """Extract the listed members of each package into ``workdir/extract`` (only those)."""
    dest = workdir / "extract"
    dest.mkdir(parents=True, exist_ok=True)
    for package, deb in debs.items():
        members = sorted({r.member for r in rows if r.package == package})
        todo = [m for m in members if not (dest / m).exists()]
        if not todo:
            continue
        tar = subprocess.Popen(["tar", "-x", "-C", str(dest), *[f"./{m}" for m in todo]], stdin=subprocess.PIPE)
        deb_proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=tar.stdin)
        assert tar.stdin is not None
        tar.stdin.close()
        if deb_proc.wait() != 0 or tar.wait() != 0:
            raise BootstrapError(f"unpacking {deb} failed (dpkg-deb {deb_proc.returncode}, tar {tar.returncode})")
        missing = [m for m in todo if not (dest / m).exists()]
        if missing:
            raise BootstrapError(f"{deb} does not hold {missing[0]} (and {len(missing) - 1} more)")
    return dest


# -- 3. cut ------------------------------------------------------------------------------------------------
@dataclass
class Segment:
    """A cut of a source file, mono at the build rate."""

    row: SourceRow
    index: int  # the cut's number within its file
    audio: np.ndarray
    sr: int
    source_sr: int

    @property
    def name(self) -> str:
        stem = Path(self.row.member).stem
        return f"{self.row.package.split('-')[0]}_{stem}_{self.index}"

    @property
    def is_bed(self) -> bool:
        return self.row.dur is not None and self.row.dur >= BED_MIN_S

    @property
    def hasbird(self) -> int:
        return self.row.hasbird


def _frame_rms(x: np.ndarray, n: int) -> np.ndarray:
    m = x.size // n
    return np.sqrt(np.mean(x[: m * n].reshape(m, n) ** 2, axis=1) + 1e-20) if m else np.array([np.sqrt(np.mean(x**2) + 1e-20)])


def trim_silence(x: np.ndarray, sr: int, floor_db: float = -45.0) -> np.ndarray:
    """Drop leading and trailing 10 ms frames quieter than ``floor_db`` below the loudest frame."""
    n = max(1, int(0.01 * sr))
    rms = _frame_rms(x, n)
    on = np.flatnonzero(20 * np.log10(rms / rms.max()) > floor_db)
    if on.size == 0:
        return x
    return x[on[0] * n : min(x.size, (on[-1] + 1) * n)]


def cut_segments(rows: Sequence[SourceRow], extract: Path, sr: int) -> list[Segment]:
    """Read, mix to mono, resample and cut every listed segment."""
    import soundfile as sf
    import soxr

    count: dict[str, int] = {}
    out = []
    for r in rows:
        path = extract / r.member
        try:
            x, src_sr = sf.read(path, dtype="float32", always_2d=True)
        except (OSError, RuntimeError) as exc:
            raise BootstrapError(f"{path}: cannot read ({exc})") from None
        x = x.mean(axis=1)
        a = int(round(r.start * src_sr))
        b = x.size if r.dur is None else min(x.size, a + int(round(r.dur * src_sr)))
        x = x[a:b]
        if src_sr != sr:
            x = soxr.resample(x, src_sr, sr).astype(np.float32)
        if r.dur is None:  # a whole sound effect: trim its silences
            x = trim_silence(x, sr)
        x = x - x.mean()
        peak = float(np.abs(x).max())
        if peak <= 0:
            raise BootstrapError(f"{path} [{r.start}+{r.dur}]: silent segment")
        k = count.get(r.file_key, 0)
        count[r.file_key] = k + 1
        out.append(Segment(r, k, (x / peak).astype(np.float32), sr, int(src_sr)))
    return out


# -- 4. split by source file -------------------------------------------------------------------------------
def assign_folds(rows: Sequence[SourceRow], k: int, seed: int = 0) -> dict[str, int]:
    """Deal source *files* to ``k`` folds: birds and others separately, beds and events separately, in a
    seeded random order, so each fold holds both classes and a share of the long ambiences.

    Returns
    -------
    dict
        ``file_key`` -> fold number (0..k-1). All cuts of one file share its fold.
    """
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, bool], list[str]] = {}
    for r in rows:
        bed = r.dur is not None and r.dur >= BED_MIN_S
        key = (r.hasbird, bed)
        if r.file_key not in {f for g in groups.values() for f in g}:
            groups.setdefault(key, []).append(r.file_key)
    folds: dict[str, int] = {}
    offset = 0
    for key in sorted(groups):
        files = sorted(groups[key])
        for i, f in enumerate(rng.permutation(files)):
            folds[str(f)] = (offset + i) % k
        offset += len(files)  # the next group starts where this one stopped: folds stay even
    return folds


# -- 5. mix ------------------------------------------------------------------------------------------------
@dataclass
class MixOptions:
    """How clips are mixed (the defaults are those of the shipped model).

    Attributes
    ----------
    duration : float
        Clip length in seconds.
    positive_rate : float
        Share of clips with birds.
    snr_db : (float, float)
        Range of each event's SNR (its power over its active frames, against the background's power).
    noise_dbfs : (float, float)
        Range of the synthetic noise floor's RMS, in dB re full scale.
    p_bed : float
        Chance of a non-bird ambience under the clip.
    p_lowpass : float
        Chance that an event (either class) is band-limited to 3.5-5.5 kHz.
    p_synthetic_bird : float
        Chance that a positive clip's birds are synthetic calls only (data.synthetic).
    gain_db : (float, float)
        Overall gain applied last.
    """

    duration: float = 10.0
    positive_rate: float = 0.5
    snr_db: tuple[float, float] = (-3.0, 20.0)
    noise_dbfs: tuple[float, float] = (-50.0, -25.0)
    p_bed: float = 0.5
    p_lowpass: float = 0.35
    p_synthetic_bird: float = 0.1
    gain_db: tuple[float, float] = (-12.0, 0.0)


def _active_power(x: np.ndarray, sr: int) -> float:
    """Mean power over the 20 ms frames within 30 dB of the loudest (an event's, not its silences')."""
    rms = _frame_rms(x, max(1, int(0.02 * sr)))
    on = rms > rms.max() * 10 ** (-30 / 20)
    return float(np.mean(rms[on] ** 2))


def _lowpass(x: np.ndarray, sr: int, cutoff: float) -> np.ndarray:
    from scipy import signal

    sos = signal.butter(8, min(cutoff, 0.45 * sr), "lowpass", fs=sr, output="sos")
    return signal.sosfiltfilt(sos, x).astype(np.float32)


def _loop_crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of ``x`` from a random offset, looped when ``x`` is shorter."""
    if x.size >= n:
        a = int(rng.integers(0, x.size - n + 1))
        return x[a : a + n].copy()
    reps = int(np.ceil(n / x.size)) + 1
    y = np.tile(x, reps)
    a = int(rng.integers(0, x.size))
    return y[a : a + n].copy()


@dataclass
class ClipRecipe:
    itemid: str
    hasbird: int
    parts: list[str] = field(default_factory=list)


def mix_clip(
    itemid: str,
    hasbird: bool,
    birds: Sequence[Segment],
    others: Sequence[Segment],
    sr: int,
    rng: np.random.Generator,
    opts: MixOptions,
) -> tuple[np.ndarray, ClipRecipe]:
    """One clip: background, then events at random times and SNRs (see the module docstring)."""
    n = int(round(opts.duration * sr))
    recipe = ClipRecipe(itemid, int(hasbird))
    kind = str(rng.choice(BACKGROUNDS))
    level = 10 ** (rng.uniform(*opts.noise_dbfs) / 20)
    bg = background(kind, n, sr, rng) * level
    recipe.parts.append(f"noise:{kind}@{20 * np.log10(level):.0f}dBFS")
    # a recorder's own white hiss under everything: no band is ever digitally silent, as in the field
    hiss = 10 ** (rng.uniform(-30.0, -10.0) / 20)
    bg = bg + hiss * level * rng.standard_normal(n).astype(np.float32)
    beds = [s for s in others if s.is_bed]
    if beds and rng.random() < opts.p_bed:
        bed = beds[int(rng.integers(len(beds)))]
        rel = rng.uniform(0.0, 15.0)  # the ambience sits above the noise floor
        x = _loop_crop(bed.audio, n, rng)
        x *= level * 10 ** (rel / 20) / (np.sqrt(np.mean(x**2)) + 1e-12)
        bg = bg + x
        recipe.parts.append(f"bed:{bed.name}@+{rel:.0f}dB")
    p_bg = float(np.mean(bg**2))
    mix = bg.astype(np.float64)

    def place(x: np.ndarray, snr: float, tag: str, whole: bool = False) -> None:
        nonlocal mix
        if rng.random() < opts.p_lowpass:
            cut = rng.uniform(3500.0, 5500.0)
            x = _lowpass(x, sr, cut)
            tag += f"/lp{cut / 1000:.1f}k"
        if whole:
            x = _loop_crop(x, n, rng)
            start = 0
        else:
            x = x[:n]
            # at least 70 % of the event inside the clip: a bird at the very edge would be a label error
            lo = -int(0.3 * x.size)
            hi = n - int(0.7 * x.size)
            start = int(rng.integers(lo, max(lo + 1, hi + 1)))
        gain = np.sqrt(p_bg * 10 ** (snr / 10) / (_active_power(x, sr) + 1e-20))
        a, b = max(0, start), min(n, start + x.size)
        mix[a:b] += gain * x[a - start : b - start] * (1 if rng.random() < 0.5 else -1)
        recipe.parts.append(f"{tag}@{snr:+.0f}dB")

    if hasbird:
        if rng.random() < opts.p_synthetic_bird or not birds:
            for _ in range(int(rng.integers(1, 4))):
                kind_b = str(rng.choice(("chirp", "trill", "harmonic")))
                call, _, _ = bird_call(kind_b, sr, rng)
                place(call, rng.uniform(*opts.snr_db), f"synthetic-{kind_b}")
        else:
            for _ in range(int(rng.integers(1, 4))):
                s = birds[int(rng.integers(len(birds)))]
                place(s.audio, rng.uniform(*opts.snr_db), f"bird:{s.name}", whole=s.is_bed)
                if s.is_bed:
                    break  # a soundscape fills the clip
        n_other = int(rng.integers(0, 3))
    else:
        n_other = int(rng.choice([0, 1, 1, 2, 2, 3]))
    events = [s for s in others if not s.is_bed] or list(others)
    for _ in range(n_other):
        s = events[int(rng.integers(len(events)))]
        place(s.audio, rng.uniform(*opts.snr_db), f"other:{s.name}")
    mix *= 10 ** (rng.uniform(*opts.gain_db) / 20)
    peak = float(np.abs(mix).max())
    if peak > 0.98:
        mix *= 0.98 / peak
        recipe.parts.append("limited")
    return mix.astype(np.float32), recipe


def write_fold(
    outdir: Path,
    fold: int,
    segments: Sequence[Segment],
    n_clips: int,
    sr: int,
    seed: int,
    opts: MixOptions,
    *,
    prefix: str = "",
) -> Path:
    """Mix ``n_clips`` clips from ``segments`` (one fold's) into ``outdir`` in the Bird Audio Detection layout."""
    import soundfile as sf

    name = outdir.name
    (outdir / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, fold])
    birds = [s for s in segments if s.hasbird]
    others = [s for s in segments if not s.hasbird]
    n_pos = int(round(opts.positive_rate * n_clips))
    labels = np.array([1] * n_pos + [0] * (n_clips - n_pos))
    rng.shuffle(labels)
    with open(outdir / f"{name}.csv", "w", newline="") as lf, open(outdir / "recipe.csv", "w", newline="") as rf:
        lw, rw = csv.writer(lf), csv.writer(rf)
        lw.writerow(["itemid", "datasetid", "hasbird"])
        rw.writerow(["itemid", "bird", "parts"])  # not "hasbird": the folder must hold one label CSV
        for i, y in enumerate(labels):
            itemid = f"{prefix}{name}_{i:04d}"
            x, rec = mix_clip(itemid, bool(y), birds, others, sr, rng, opts)
            sf.write(outdir / "wav" / f"{itemid}.wav", x, sr, subtype="PCM_16")
            lw.writerow([itemid, name, int(y)])
            rw.writerow([itemid, int(y), " ".join(rec.parts)])
    return outdir


def build(
    workdir: str | os.PathLike = DEFAULT_WORKDIR,
    *,
    sources: str | os.PathLike = SOURCES_CSV,
    folds: int = 4,
    clips_per_fold: int = 150,
    unlabeled_per_fold: int = 0,
    sr: int = 22050,
    seed: int = 0,
    opts: MixOptions | None = None,
) -> dict:
    """Run the whole recipe; return (and write to ``WORKDIR/build.json``) what was built.

    Parameters
    ----------
    workdir : path
        Everything goes here (packages, extracted files, segments, folds); outside the repository.
    sources : path
        The sources list.
    folds : int
        Source-file folds (the leave-source-out validation is over them).
    clips_per_fold : int
        Labelled 10 s clips per fold.
    unlabeled_per_fold : int
        Extra clips per fold, written to ``unlabeled/fold<k>/`` without labels (for semi-supervised training
        that never sees another fold's sources).
    sr : int
        Rate of the written clips (the pipeline's rate).
    seed : int
    """
    opts = opts or MixOptions()
    work = Path(workdir).expanduser()
    rows = read_sources(sources)
    debs = fetch_packages(rows, work)
    extract = unpack_members(rows, debs, work)
    segments = cut_segments(rows, extract, sr)
    fold_of = assign_folds(rows, folds, seed)
    import soundfile as sf

    segdir = work / "segments"
    segdir.mkdir(parents=True, exist_ok=True)
    with open(segdir / "segments.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["segment", "fold", "hasbird", "category", "package", "member", "start", "dur", "seconds", "source_sr", "bed"])
        for s in segments:
            sf.write(segdir / f"{s.name}.wav", s.audio, sr, subtype="PCM_16")
            w.writerow([s.name, fold_of[s.row.file_key], s.hasbird, s.row.category, s.row.package, s.row.member,
                        s.row.start, s.row.dur or "", f"{s.audio.size / sr:.2f}", s.source_sr, int(s.is_bed)])
    info = {
        "sources": str(sources),
        "packages": {p: {"deb": d.name, "sha256": _sha256(d)} for p, d in debs.items()},
        "folds": folds,
        "clips_per_fold": clips_per_fold,
        "unlabeled_per_fold": unlabeled_per_fold,
        "sr": sr,
        "seed": seed,
        "mix": {k: v for k, v in opts.__dict__.items()},
        "fold_files": {},
        "fold_dirs": [],
        "unlabeled_dirs": [],
    }
    for k in range(folds):
        segs = [s for s in segments if fold_of[s.row.file_key] == k]
        if not any(s.hasbird for s in segs) or all(s.hasbird for s in segs):
            raise BootstrapError(f"fold {k} lacks birds or others; use fewer folds")
        d = write_fold(work / "folds" / f"fold{k}", k, segs, clips_per_fold, sr, seed, opts)
        info["fold_dirs"].append(str(d))
        info["fold_files"][f"fold{k}"] = sorted({s.row.file_key for s in segs})
        if unlabeled_per_fold:
            u = write_fold(work / "unlabeled" / f"fold{k}", k, segs, unlabeled_per_fold, sr, seed + 7919, opts, prefix="u")
            info["unlabeled_dirs"].append(str(u))
    with open(work / "build.json", "w") as f:
        json.dump(info, f, indent=2)
    return info


def source_files_by_fold(info: dict) -> dict[str, list[str]]:
    """The source files of each fold, from ``build.json`` (for the model's description)."""
    return dict(info.get("fold_files", {}))


def iter_fold_dirs(info: dict) -> Iterable[Path]:
    return (Path(d) for d in info["fold_dirs"])
