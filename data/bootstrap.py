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
   random times at a random SNR: bird calls (and bird soundscapes) in positive clips, other sounds as
   distractors in both, drawn preferentially from the categories a detector confuses with birds (music and
   whistles, speech and song, other animals, beeps, weather, vehicles, machines). Labels are "any audible
   bird", as the challenge data's, and honest: a negative clip holds no bird sound at all, real or synthetic;
   a positive one holds a main bird at least ``snr_floor_db`` over the background (measured after its
   augmentations, on its part inside the clip) with at least 70 % of it inside the clip, and maybe fainter
   or partial birds besides. Augmentations (:mod:`data.augment`) are drawn for every event of either class
   alike, so none gives the class away: pitch (speed) shifts, slow time warps, random EQ, band-limiting (many
   sources are 11 kHz files, so bandwidth must not mark a class), room reverberation, distance, truncation
   and cuts at the clip's edge; then an overall gain; and a share of clips whose only birds are synthetic.

Each fold is written in the Bird Audio Detection layout (``folds/fold<k>/wav/<itemid>.wav`` and
``folds/fold<k>/fold<k>.csv``), so ``scatterbird train``, ``evaluate`` and ``crossval`` read it directly; the
leave-source-out validation is ``crossval`` over the folds. ``recipe.csv`` in each fold says what each clip
is made of and the category of its loudest bird (or, in a negative, of its loudest distractor).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scatterbird.data import DATA_DIR, augment, synthetic
from scatterbird.data.augment import active_power
from scatterbird.data.synthetic import background, bird_call
from scatterbird.errors import BootstrapError, OptionError

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
        """A long cut, laid under a whole clip (looped and cropped), not placed as an event: a listed segment
        of at least ``BED_MIN_S``, or a whole file that long (the training list's ambiences, music tracks and
        bird soundscapes give no ``dur``)."""
        if self.row.dur is not None:
            return self.row.dur >= BED_MIN_S
        return self.audio.size >= BED_MIN_S * self.sr

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
        a = round(r.start * src_sr)
        b = x.size if r.dur is None else min(x.size, a + round(r.dur * src_sr))
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
#: How often each sound category is picked, relative to the others, when a distractor draw is "hard"
#: (:attr:`MixOptions.p_hard_negative`): the sounds a bird detector confuses with birds come first.
#: Categories not listed weigh :data:`DEFAULT_CATEGORY_WEIGHT`.
HARD_CATEGORY_WEIGHTS: dict[str, float] = {
    "music": 3.0,  # whistles, flutes, tonal instruments: bird-like pitch tracks
    "other_animal": 3.0,  # frogs, insects, mammals
    "speech_song": 2.0,
    "ui": 2.0,  # beeps and chimes
    "weather": 1.5,  # rain, wind
    "water": 1.5,
    "vehicle": 1.5,
    "machine": 1.5,
    "household": 1.0,
    "human": 1.0,
    "other": 0.5,
}
DEFAULT_CATEGORY_WEIGHT = 1.0

#: Kinds of synthetic call used when data.synthetic does not list its own.


@dataclass
class MixOptions:
    """How clips are mixed (``build.json`` records the options of each build). Every augmentation has its own
    probability, so an ablation can switch it off (set it to 0); each is drawn per event, for bird and
    non-bird events alike.

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
    snr_floor_db : float
        The main bird of a positive clip has at least this SNR, measured on its part inside the clip after
        its augmentations (its SNR is drawn from ``[max(snr_floor_db, snr_db[0]), snr_db[1]]``).
    calls_per_clip : (int, int)
        Bird events in a positive clip (inclusive range; a bird soundscape ends the list).
    distractors_positive, distractors_negative : (int, int)
        Non-bird events in a positive / negative clip (inclusive ranges).
    p_pitch, pitch_semitones : float, (float, float)
        Chance and range of a pitch shift by resampling (tempo moves with it).
    p_warp, warp_semitones : float, float
        Chance and depth of a slow random time warp (tempo and frequency modulation).
    p_eq, eq_bands, eq_gain_db : float, (int, int), (float, float)
        Chance of a random EQ, its number of biquads and their gains.
    p_bandlimit, highpass_hz : float, (float, float)
        Chance of a high-pass (corner log-uniform in ``highpass_hz``; half the time also a low-pass at
        4-8 kHz, i.e. a band-pass).
    p_distance, distance_m : float, (float, float)
        Chance of air absorption at a distance drawn log-uniform in ``distance_m`` (the level is set by the
        SNR draw, so only the spectral tilt remains).
    max_filter_loss_db : float
        The spectral steps (low-pass, band-limit, EQ, distance) are undone when together they would remove
        more than this of an event's power: a call filtered away would be a label error.
    p_reverb, rt60_s, drr_db : float, (float, float), (float, float)
        Chance of synthetic room reverberation, its RT60 and direct-to-reverberant ratio ranges.
    p_partial, partial_keep : float, (float, float)
        Chance that an event other than the main bird is partial: truncated, or cut by the clip's edge
        (even odds), keeping a share in ``partial_keep`` of it.
    p_faint, faint_snr_db : float, (float, float)
        Chance that an event other than the main bird is faint: its SNR is drawn from ``faint_snr_db``.
    p_hard_negative : float
        Chance that a distractor is drawn by category (weights ``category_weights`` over the categories
        present) rather than uniformly over the segments.
    category_weights : dict
        Category -> weight for the hard draws (default :data:`HARD_CATEGORY_WEIGHTS`).
    """

    duration: float = 10.0
    positive_rate: float = 0.5
    snr_db: tuple[float, float] = (-3.0, 20.0)
    noise_dbfs: tuple[float, float] = (-50.0, -25.0)
    p_bed: float = 0.5
    p_lowpass: float = 0.35
    p_synthetic_bird: float = 0.1
    gain_db: tuple[float, float] = (-12.0, 0.0)
    snr_floor_db: float = 0.0
    calls_per_clip: tuple[int, int] = (1, 4)
    distractors_positive: tuple[int, int] = (0, 2)
    distractors_negative: tuple[int, int] = (0, 3)
    p_pitch: float = 0.5
    pitch_semitones: tuple[float, float] = (-3.0, 3.0)
    p_warp: float = 0.3
    warp_semitones: float = 1.0
    p_eq: float = 0.5
    eq_bands: tuple[int, int] = (1, 3)
    eq_gain_db: tuple[float, float] = (-12.0, 12.0)
    p_bandlimit: float = 0.15
    highpass_hz: tuple[float, float] = (150.0, 1500.0)
    p_distance: float = 0.3
    distance_m: tuple[float, float] = (2.0, 100.0)
    max_filter_loss_db: float = 15.0
    p_reverb: float = 0.4
    rt60_s: tuple[float, float] = (0.1, 1.5)
    drr_db: tuple[float, float] = (-3.0, 15.0)
    p_partial: float = 0.2
    partial_keep: tuple[float, float] = (0.2, 0.7)
    p_faint: float = 0.2
    faint_snr_db: tuple[float, float] = (-12.0, 0.0)
    p_hard_negative: float = 0.7
    category_weights: dict[str, float] = field(default_factory=lambda: dict(HARD_CATEGORY_WEIGHTS))

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise OptionError(f"MixOptions.{name} is a probability, got {value}")
            if isinstance(value, (tuple, list)) and (len(value) != 2 or value[0] > value[1]):
                raise OptionError(f"MixOptions.{name} must be a (low, high) range, got {value}")
        if not 0.0 <= self.positive_rate <= 1.0:
            raise OptionError(f"MixOptions.positive_rate is a share, got {self.positive_rate}")
        if self.duration <= 0:
            raise OptionError(f"MixOptions.duration must be positive, got {self.duration}")
        if self.snr_floor_db > self.snr_db[1]:
            raise OptionError(f"MixOptions.snr_floor_db ({self.snr_floor_db}) is above snr_db's top ({self.snr_db[1]})")
        if self.calls_per_clip[0] < 1 or self.distractors_positive[0] < 0 or self.distractors_negative[0] < 0:
            raise OptionError("MixOptions: a positive clip needs at least one call, and event counts are >= 0")
        if self.distance_m[0] <= 0 or self.rt60_s[0] <= 0 or self.highpass_hz[0] <= 0:
            raise OptionError("MixOptions: distances, RT60 and corner frequencies must be positive")
        if any(w < 0 for w in self.category_weights.values()):
            raise OptionError("MixOptions.category_weights must be >= 0")


# The level measure of events (kept under its old name).


def _loop_crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of ``x`` from a random offset, looped when ``x`` is shorter."""
    if x.size >= n:
        a = int(rng.integers(0, x.size - n + 1))
        return x[a : a + n].copy()
    reps = int(np.ceil(n / x.size)) + 1
    y = np.tile(x, reps)
    a = int(rng.integers(0, x.size))
    return y[a : a + n].copy()


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``n`` samples of ``x``, from a random offset when it is longer."""
    if x.size <= n:
        return x
    a = int(rng.integers(0, x.size - n + 1))
    return x[a : a + n]


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def _augment(x: np.ndarray, sr: int, rng: np.random.Generator, opts: MixOptions, *,
             ambience: bool) -> tuple[np.ndarray, str, int]:
    """One event's (or, ``ambience``, one clip-long sound's) augmentations; returns it, a tag suffix and its
    length before the reverberation (the sound itself: the rest is its tail).

    The same draws for either class: nothing here may tell a bird clip from another. An ambience gets only
    what does not change its length meaningfully or smear it (pitch, low-pass, band-limit, EQ).
    """
    tags = []
    if rng.random() < opts.p_pitch:
        st = float(rng.uniform(*opts.pitch_semitones))
        x = augment.pitch_shift(x, st)
        tags.append(f"p{st:+.1f}")
    if not ambience and rng.random() < opts.p_warp:
        x = augment.time_warp(x, sr, rng, opts.warp_semitones)
        tags.append("w")
    y, spectral = x, []
    if rng.random() < opts.p_lowpass:
        cut = 50.0 * round(rng.uniform(3500.0, 5500.0) / 50)  # on a grid: the filter designs are cached
        y = augment.band_limit(y, sr, high=cut)
        spectral.append(f"lp{cut / 1000:.1f}k")
    if rng.random() < opts.p_bandlimit:
        low = 10.0 * round(np.exp(rng.uniform(*np.log(opts.highpass_hz))) / 10)
        high = 100.0 * round(rng.uniform(4000.0, 8000.0) / 100) if rng.random() < 0.5 else None
        y = augment.band_limit(y, sr, low=low, high=high)
        spectral.append(f"hp{low / 1000:.2f}k" + (f"-{high / 1000:.1f}k" if high else ""))
    if rng.random() < opts.p_eq:
        y = augment.random_eq(y, sr, rng, n_bands=tuple(opts.eq_bands), gain_db=tuple(opts.eq_gain_db))
        spectral.append("eq")
    if not ambience and rng.random() < opts.p_distance:
        d = float(np.exp(rng.uniform(*np.log(opts.distance_m))))
        y = augment.at_distance(y, sr, d) * np.float32(d)  # spreading undone: the SNR draw sets the level
        spectral.append(f"d{d:.0f}m")
    if spectral:
        if _power(y) < _power(x) * 10 ** (-opts.max_filter_loss_db / 10):
            spectral = ["flat"]  # it would filter the sound away: keep it unfiltered (either class alike)
        else:
            x = y
        tags += spectral
    dry = x.size
    if not ambience and rng.random() < opts.p_reverb:
        rt60, drr = float(rng.uniform(*opts.rt60_s)), float(rng.uniform(*opts.drr_db))
        x = augment.reverberate(x, augment.reverb_ir(sr, rt60, drr, rng))
        tags.append(f"rv{rt60:.1f}s")
    return x, "".join("/" + t for t in tags), dry


def _draw_distractor(events: Sequence[Segment], rng: np.random.Generator, opts: MixOptions) -> Segment:
    """A uniform draw, or, with chance ``p_hard_negative``, a category by weight and then a segment of it."""
    if rng.random() < opts.p_hard_negative:
        cats = sorted({s.row.category for s in events})
        w = np.array([opts.category_weights.get(c, DEFAULT_CATEGORY_WEIGHT) for c in cats], dtype=float)
        if w.sum() > 0:
            cat = cats[int(rng.choice(len(cats), p=w / w.sum()))]
            pool = [s for s in events if s.row.category == cat]
            return pool[int(rng.integers(len(pool)))]
    return events[int(rng.integers(len(events)))]


def _bird_kinds() -> tuple[str, ...]:
    return tuple(synthetic.BIRD_KINDS)


@dataclass
class PlacedEvent:
    """One sound placed in a clip.

    Attributes
    ----------
    tag : str
        What it is and its augmentations (as in ``ClipRecipe.parts``).
    category : str
        Its source's category (``synthetic_bird`` for a synthetic call).
    snr_db : float
        Its SNR against the background: for the main bird, of its part inside the clip; for the others, of
        the whole (augmented) event, of which the clip may hold only a part.
    start, stop : int
        Its span in clip samples; ``start < 0`` or ``stop > n`` when the clip's edge cuts it.
    bird : bool
    main : bool
        The bird that makes the clip's label (the first of a positive clip).
    """

    tag: str
    category: str
    snr_db: float
    start: int
    stop: int
    bird: bool
    main: bool = False
    body: int = 0  # samples of the sound itself from ``start``, before its reverberation tail (0: stop - start)


@dataclass
class ClipRecipe:
    """What a clip is made of. ``background`` and ``components`` (each event's clip-long contribution,
    aligned with ``events``) are kept only when asked: ``mix == gain * (background + sum(components))``."""

    itemid: str
    hasbird: int
    parts: list[str] = field(default_factory=list)
    events: list[PlacedEvent] = field(default_factory=list)
    category: str = "noise"
    bed_category: str = ""
    gain: float = 1.0
    background: np.ndarray | None = None
    components: list[np.ndarray] | None = None

    @property
    def main(self) -> PlacedEvent | None:
        """The main bird (None in a negative clip)."""
        return next((e for e in self.events if e.main), None)

    @property
    def snr_db(self) -> float | None:
        """The SNR of the event that names the clip's category (None when there is none)."""
        return self._named.snr_db if self._named else None

    @property
    def _named(self) -> PlacedEvent | None:
        pool = [e for e in self.events if e.bird == bool(self.hasbird)]
        return max(pool, key=lambda e: e.snr_db) if pool else None


class _Clip:
    """A clip being mixed: the background, then events added one by one."""

    def __init__(self, recipe: ClipRecipe, bg: np.ndarray, sr: int, rng: np.random.Generator, opts: MixOptions,
                 keep: bool) -> None:
        self.recipe, self.sr, self.rng, self.opts = recipe, sr, rng, opts
        self.n = bg.size
        self.p_bg = float(np.mean(np.square(bg, dtype=np.float64)))
        self.mix = bg.astype(np.float64)
        if keep:
            recipe.background = self.mix.copy()
            recipe.components = []

    def place(self, x: np.ndarray, snr: float, tag: str, category: str, *, bird: bool, main: bool = False,
              whole: bool = False) -> None:
        """Augment ``x``, put it at a random time, scale it to ``snr`` dB over the background."""
        n, rng, opts = self.n, self.rng, self.opts
        if whole:  # a soundscape or ambience fills the clip
            x = _loop_crop(x, int(n * augment.semitones_to_ratio(max(opts.pitch_semitones))) + 2, rng)
            x, aug, _ = _augment(x, self.sr, rng, opts, ambience=True)
            x, start = _loop_crop(x, n, rng), 0
            body = x.size
        else:
            # cut long sounds to the clip first: the augmentations then cost what a clip costs
            x, aug, dry = _augment(_crop(x, n, rng), self.sr, rng, opts, ambience=False)
            edge = False
            if not main and rng.random() < opts.p_partial:
                if rng.random() < 0.5:
                    x = augment.truncate(x, self.sr, rng, keep=tuple(opts.partial_keep))
                    aug += "/cut"
                else:
                    edge = True
            x = x[:n]  # pitch down and reverb lengthen a sound
            size = body = x.size
            if edge:
                m = max(1, round(rng.uniform(*opts.partial_keep) * size))
                start = m - size if rng.random() < 0.5 else n - m
                aug += "/edge"
            else:
                # at least 70 % inside the clip: a bird at the very edge would be a label error. The share is of
                # the sound before its reverberation: a reverberant call pushed out must not leave only its tail
                body = min(size, dry)
                lo, hi = -int(np.floor(0.3 * body)), n - int(np.ceil(0.7 * body))
                start = int(rng.integers(lo, max(lo, hi) + 1))
        a, b = max(0, start), min(n, start + x.size)
        inside = x[a - start : b - start]
        # the main bird's level is that of what the clip holds of it: its label rests on it
        ref = active_power(inside if main else x, self.sr)
        if ref <= 1e-18:
            if main:
                raise BootstrapError(f"{self.recipe.itemid}: the main bird ({tag}) is silent inside the clip")
            return
        gain = np.sqrt(self.p_bg * 10 ** (snr / 10) / ref) * (1 if rng.random() < 0.5 else -1)
        part = gain * inside.astype(np.float64)
        self.mix[a:b] += part
        if self.recipe.components is not None:
            full = np.zeros(n)
            full[a:b] = part
            self.recipe.components.append(full)
        self.recipe.events.append(PlacedEvent(tag + aug, category, float(snr), start, start + x.size, bird, main, body))
        self.recipe.parts.append(f"{tag}{aug}@{snr:+.0f}dB")

    def finish(self) -> tuple[np.ndarray, ClipRecipe]:
        rec, mix = self.recipe, self.mix
        g = 10 ** (self.rng.uniform(*self.opts.gain_db) / 20)
        peak = float(np.abs(mix).max()) * g
        if peak > 0.98:
            g *= 0.98 / peak
            rec.parts.append("limited")
        rec.gain = float(g)
        named = rec._named
        rec.category = named.category if named else (rec.bed_category or "noise")
        return (mix * g).astype(np.float32), rec


def mix_clip(
    itemid: str,
    hasbird: bool,
    birds: Sequence[Segment],
    others: Sequence[Segment],
    sr: int,
    rng: np.random.Generator,
    opts: MixOptions,
    *,
    keep_components: bool = False,
) -> tuple[np.ndarray, ClipRecipe]:
    """One clip: background, then events at random times and SNRs (see the module docstring).

    A negative clip holds no bird sound at all (``others`` must hold none); a positive clip holds a main
    bird at least ``opts.snr_floor_db`` over the background and at least 70 % inside the clip, and maybe
    more birds, fainter or partial. ``keep_components`` keeps each part's signal in the recipe (tests).
    """
    if any(s.hasbird for s in others) or not all(s.hasbird for s in birds):
        raise BootstrapError("mix_clip: a bird segment among the others, or a non-bird among the birds")
    n = round(opts.duration * sr)
    recipe = ClipRecipe(itemid, int(hasbird))
    kind = str(rng.choice(synthetic.BACKGROUNDS))
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
        x = _loop_crop(bed.audio, int(n * augment.semitones_to_ratio(max(opts.pitch_semitones))) + 2, rng)
        x, aug, _ = _augment(x, sr, rng, opts, ambience=True)
        x = _loop_crop(x, n, rng)
        x *= level * 10 ** (rel / 20) / (np.sqrt(np.mean(x**2)) + 1e-12)
        bg = bg + x
        recipe.parts.append(f"bed:{bed.name}{aug}@+{rel:.0f}dB")
        recipe.bed_category = bed.row.category
    clip = _Clip(recipe, bg, sr, rng, opts, keep_components)

    def extra_snr() -> float:
        return float(rng.uniform(*(opts.faint_snr_db if rng.random() < opts.p_faint else opts.snr_db)))

    if hasbird:
        synthetic_only = rng.random() < opts.p_synthetic_bird or not birds
        kinds = _bird_kinds()
        for i in range(int(rng.integers(opts.calls_per_clip[0], opts.calls_per_clip[1] + 1))):
            main = i == 0
            snr = float(rng.uniform(max(opts.snr_floor_db, opts.snr_db[0]), opts.snr_db[1])) if main else extra_snr()
            if synthetic_only:
                kind_b = str(rng.choice(kinds))
                call, _, _ = bird_call(kind_b, sr, rng)
                clip.place(call, snr, f"synthetic-{kind_b}", "synthetic_bird", bird=True, main=main)
            else:
                s = birds[int(rng.integers(len(birds)))]
                clip.place(s.audio, snr, f"bird:{s.name}", s.row.category, bird=True, main=main, whole=s.is_bed)
                if s.is_bed:
                    break  # a soundscape fills the clip
        lo, hi = opts.distractors_positive
    else:
        lo, hi = opts.distractors_negative
    events = [s for s in others if not s.is_bed] or list(others)
    for _ in range(int(rng.integers(lo, hi + 1)) if events else 0):
        s = _draw_distractor(events, rng, opts)
        clip.place(s.audio, extra_snr(), f"other:{s.name}", s.row.category, bird=False)
    return clip.finish()


RECIPE_COLUMNS = ("itemid", "bird", "parts", "category", "snr_db")


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
    """Mix ``n_clips`` clips from ``segments`` (one fold's) into ``outdir`` in the Bird Audio Detection layout.

    ``recipe.csv`` has one row per clip: ``itemid``, ``bird`` (the label), ``parts`` (what it is made of),
    ``category`` (the category of its loudest bird, or for a negative of its loudest distractor, else of
    its ambience, else ``noise``) and ``snr_db`` (that event's SNR; empty without one).
    """
    import soundfile as sf

    name = outdir.name
    (outdir / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, fold])
    birds = [s for s in segments if s.hasbird]
    others = [s for s in segments if not s.hasbird]
    n_pos = round(opts.positive_rate * n_clips)
    labels = np.array([1] * n_pos + [0] * (n_clips - n_pos))
    rng.shuffle(labels)
    with open(outdir / f"{name}.csv", "w", newline="") as lf, open(outdir / "recipe.csv", "w", newline="") as rf:
        lw, rw = csv.writer(lf), csv.writer(rf)
        lw.writerow(["itemid", "datasetid", "hasbird"])
        rw.writerow(RECIPE_COLUMNS)  # "bird", not "hasbird": the folder must hold one label CSV
        for i, y in enumerate(labels):
            itemid = f"{prefix}{name}_{i:04d}"
            x, rec = mix_clip(itemid, bool(y), birds, others, sr, rng, opts)
            sf.write(outdir / "wav" / f"{itemid}.wav", x, sr, subtype="PCM_16")
            lw.writerow([itemid, name, int(y)])
            snr = rec.snr_db
            rw.writerow([itemid, int(y), " ".join(rec.parts), rec.category, "" if snr is None else f"{snr:.1f}"])
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
