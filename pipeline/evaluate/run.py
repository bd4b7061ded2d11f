"""Evaluation on labelled challenge data: find the clips, score them, measure ROC AUC, leave one dataset out.

Three parts, each usable alone:

* **Loading** (:func:`load_dataset`): a Bird Audio Detection dataset as its users have it on disk, a folder of
  ``<itemid>.wav`` clips and a CSV ``itemid,datasetid,hasbird``, in the published layouts of
  :mod:`data.manifest` or any other (``audio=DIR, labels=CSV``). What is found is checked against the
  label file and the manifest's expected counts; missing clips and bad rows are listed, never fatal.
* **Metrics** (:func:`roc_auc`, :func:`bootstrap_auc_ci`, :func:`harmonic_mean`): ROC AUC with a stratified
  bootstrap 95 % interval, and the harmonic mean of per-dataset AUCs (the DCASE 2018 Task 3 score).
* **Runs** (:func:`evaluate`, :func:`crossval`): score every clip with a detector, or train and test in the
  DCASE 2018 leave-one-dataset-out protocol, and write ``metrics.json``, ``predictions.csv`` (``itemid,prob``,
  the challenge's submission form), ``scores.csv`` and the HTML report of :mod:`pipeline.report`.

A clip is one sequence for the detector, computed and cached exactly as ``scatterbird train`` does
(:func:`pipeline.training.compute_features`: the whole scattergram pooled to ``FeatureConfig.pool_s``;
the cache is keyed by the feature-config hash and the file's path, size and modification time).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from scatterbird.pipeline.frontend.audio import AUDIO_EXTENSIONS, AudioError
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.errors import DatasetError
from scatterbird.models.registry import build_detector, describe_model, load_detector

#: Item ids shown in a message before "and N more".
_SHOW = 5


# =====================================================================================================
# Loading
# =====================================================================================================
@dataclass(frozen=True)
class Clip:
    """One labelled (or, for the evaluation sets, unlabelled) clip.

    Attributes
    ----------
    itemid : str
        As in the label file.
    path : Path
        The audio file.
    label : int or None
        1 bird, 0 no bird, None where the labels are hidden.
    dataset : str
        The dataset's name in this run.
    """

    itemid: str
    path: Path
    label: int | None
    dataset: str


@dataclass
class LabelRows:
    """What a label CSV holds: good rows, and each bad row with its line number and the reason."""

    path: Path
    rows: list[tuple[str, str, int | None]] = field(default_factory=list)  # (itemid, datasetid, label)
    bad: list[tuple[int, str]] = field(default_factory=list)
    has_labels: bool = True


def _parse_label(text: str) -> int | None:
    """0/1 (also '0.0', '1.0', 'true'/'false'); '' means hidden; anything else raises ValueError."""
    t = text.strip().lower()
    if t == "":
        return None
    if t in ("1", "1.0", "true", "yes"):
        return 1
    if t in ("0", "0.0", "false", "no"):
        return 0
    raise ValueError(t)


def read_labels(path: str | os.PathLike) -> LabelRows:
    """Read a label CSV ``itemid,datasetid,hasbird``.

    The header must name an ``itemid`` column (any case, any column order); ``datasetid`` and ``hasbird``
    are optional. A file without ``hasbird``, or with every ``hasbird`` empty, has hidden labels (an
    evaluation set). Item ids given with an audio extension (``abc.wav``) are taken without it.

    Parameters
    ----------
    path : str or Path
        The CSV (UTF-8, with or without a byte-order mark).

    Returns
    -------
    LabelRows
        Good rows in file order; bad rows (wrong field count, empty item id, a label other than 0/1, an
        empty label in a labelled file, a duplicate item id) as ``(line number, reason)``.

    Raises
    ------
    DatasetError
        If the file cannot be read, is empty, or has no ``itemid`` column.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{p}: label file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{p}: cannot read the label file ({exc})") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise DatasetError(f"{p}: empty label file; expected a header line 'itemid,datasetid,hasbird'")
    cols = [h.strip().lower() for h in header]
    if "itemid" not in cols:
        raise DatasetError(
            f"{p}: no 'itemid' column in the header {header!r}; expected 'itemid,datasetid,hasbird'"
        )
    i_item = cols.index("itemid")
    i_ds = cols.index("datasetid") if "datasetid" in cols else None
    i_y = cols.index("hasbird") if "hasbird" in cols else None
    out = LabelRows(p)
    raw: list[tuple[int, str, str, str]] = []
    for lineno, row in enumerate(reader, start=2):
        if not row or not any(c.strip() for c in row):
            continue  # blank lines are harmless
        if len(row) != len(cols):
            out.bad.append((lineno, f"expected {len(cols)} fields ({','.join(cols)}), got {len(row)}: {','.join(row)!r}"))
            continue
        item = row[i_item].strip()
        for ext in AUDIO_EXTENSIONS:
            if item.lower().endswith(ext):
                item = item[: -len(ext)]
                break
        if not item:
            out.bad.append((lineno, "empty itemid"))
            continue
        raw.append((lineno, item, row[i_ds].strip() if i_ds is not None else "", row[i_y] if i_y is not None else ""))
    labels_given = i_y is not None and any(r[3].strip() for r in raw)
    out.has_labels = labels_given
    seen: dict[str, tuple[int, int | None]] = {}
    for lineno, item, ds, ytext in raw:
        if labels_given:
            try:
                y = _parse_label(ytext)
            except ValueError:
                out.bad.append((lineno, f"{item}: hasbird must be 0 or 1, got {ytext.strip()!r}"))
                continue
            if y is None:
                out.bad.append((lineno, f"{item}: empty hasbird"))
                continue
        else:
            y = None
        if item in seen:
            first, y0 = seen[item]
            what = "same label" if y0 == y else f"conflicting label {y} (line {first} has {y0})"
            out.bad.append((lineno, f"{item}: duplicate itemid, first on line {first}; {what}; kept line {first}"))
            continue
        seen[item] = (lineno, y)
        out.rows.append((item, ds, y))
    out.bad.sort()  # in file order, whichever check found them
    return out


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return [h.strip().lower() for h in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _audio_index(directory: Path) -> dict[str, Path]:
    """Audio files directly in ``directory`` by stem (one scan: 20,000 ``exists`` calls would be slower)."""
    index: dict[str, Path] = {}
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"{directory}: cannot list the audio folder ({exc.strerror})") from None
    for e in entries:
        stem, ext = os.path.splitext(e.name)
        if ext.lower() in AUDIO_EXTENSIONS and (e.is_file() or e.is_symlink()):
            # .wav wins over another format of the same clip (the published sets are WAV)
            if stem not in index or ext.lower() == ".wav":
                index[stem] = Path(e.path)
    return index


def _has_audio(directory: Path) -> bool:
    try:
        return any(os.path.splitext(n)[1].lower() in AUDIO_EXTENSIONS for n in os.listdir(directory))
    except OSError:
        return False


def locate(path: str | os.PathLike, name: str | None = None) -> tuple[Path, Path]:
    """Find a dataset's label CSV and audio folder from one path.

    ``path`` may be the folder an archive was unpacked into (holding ``wav/`` and the label CSV, possibly
    one folder further down), the label CSV itself (the audio next to it, in ``wav/`` or beside it), or a
    folder of clips with the CSV beside it.

    The label file is, in order: a published name of this dataset (:mod:`data.manifest`), ``<name>.csv``,
    another published name, ``<folder name>.csv``, or the one CSV whose header has ``itemid`` and
    ``hasbird`` (a CSV with ``itemid`` only, where no other is found: an evaluation set).

    Returns
    -------
    (labels_csv, audio_dir) : tuple of Path

    Raises
    ------
    DatasetError
        When no label file or no audio folder is found, or when several CSVs could be the label file.
    """
    from scatterbird.data.manifest import DATASETS, all_label_file_names, lookup

    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: not found")
    entry = lookup(name) if name else None
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DatasetError(f"{p}: give the dataset's folder or its label CSV, not {p.suffix or 'this'} file")
        labels = p
        roots = [p.parent]
    else:
        roots = [p] + sorted(q for q in p.iterdir() if q.is_dir() and q.name.lower() != "wav")
        # a folder of clips: its label file may sit beside it
        search = roots + ([p.parent] if _has_audio(p) else [])
        labels = None

        def first(names: Sequence[str]) -> list[Path]:
            return [d / n for n in names for d in search if (d / n).is_file()]

        found = first(entry.label_files) if entry else []
        if not found:
            found = first([f"{name}.csv"] if name else [])
        if not found:
            published = first(all_label_file_names())  # in manifest order: a 2018 file before an older one
            owners = {d.name for d in DATASETS for c in published if c.name in d.label_files}
            if len(owners) > 1:
                raise DatasetError(
                    f"{p}: label files of several datasets are here ({', '.join(c.name for c in published)}); "
                    f"name the one to use, e.g. --dataset ff1010bird=PATH, or give PATH/TO/labels.csv"
                )
            found = published
        if not found:
            found = first([f"{p.name}.csv"])  # ROOT/<x>/<x>.csv, as data.synthetic.write_dataset lays a set out
        if found:
            labels = found[0]
        if labels is None:
            csvs = sorted({c for root in roots for c in root.glob("*.csv")} | set(p.parent.glob("*.csv")))
            full = [c for c in csvs if {"itemid", "hasbird"} <= set(_csv_header(c))]
            ids = [c for c in csvs if "itemid" in _csv_header(c) and c not in full]
            within = [c for c in full if p in c.parents]
            pick = within or full or [c for c in ids if c.name != "events.csv"]
            if len(pick) > 1:
                raise DatasetError(
                    f"{p}: several CSV files could hold the labels ({', '.join(c.name for c in pick)}); "
                    f"give the one to use with NAME=PATH/TO/labels.csv, or --labels"
                )
            if not pick:
                raise DatasetError(
                    f"{p}: no label CSV found (a file with a header 'itemid,datasetid,hasbird'"
                    + (f", published as {entry.label_files[0]}" if entry else "")
                    + ")"
                )
            labels = pick[0]
    # audio: <root>/wav, <root>/<one level>/wav, or clips beside the CSV / in the folder given
    base = labels.parent
    candidates = [base / "wav", *(r / "wav" for r in roots), *(q / "wav" for r in roots for q in sorted(r.glob("*")) if q.is_dir()), base, *roots]
    for cand in candidates:
        if cand.is_dir() and _has_audio(cand):
            return labels, cand
    raise DatasetError(
        f"{p}: no audio folder found (expected the clips in {base / 'wav'}"
        + (f", as {entry.archives[0]} unpacks" if entry else "")
        + ")"
    )


@dataclass
class Dataset:
    """A dataset found on disk, and how it compares with its label file and its manifest entry.

    Attributes
    ----------
    name : str
        The name in this run (the manifest's canonical name for a published dataset).
    labels_path, audio_dir : Path
    clips : list of Clip
        Listed in the label file and present on disk, in the label file's order.
    missing : list of str
        Item ids listed in the label file with no audio file.
    unlisted : list of str
        Audio files in the folder that the label file does not list (not used).
    bad_rows : list of (int, str)
        Label-file lines that could not be used, with the reason.
    has_labels : bool
        False for a label file with hidden labels (an evaluation set).
    expected_items, expected_positive : int or None
        From the manifest, for a published dataset.
    """

    name: str
    labels_path: Path
    audio_dir: Path
    clips: list[Clip] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    has_labels: bool = True
    n_listed: int = 0
    expected_items: int | None = None
    expected_positive: int | None = None

    @property
    def incomplete(self) -> bool:
        """True when listed clips have no audio or label rows were bad."""
        return bool(self.missing or self.bad_rows)

    @property
    def positives(self) -> int:
        return sum(1 for c in self.clips if c.label == 1)

    @property
    def labels(self) -> np.ndarray:
        return np.array([-1 if c.label is None else c.label for c in self.clips], dtype=np.int64)

    def problems(self) -> list[str]:
        """Messages about what is missing, extra or malformed (empty when the copy is complete)."""
        msgs: list[str] = []

        def some(ids: Sequence[str]) -> str:
            more = f" and {len(ids) - _SHOW} more" if len(ids) > _SHOW else ""
            return ", ".join(ids[:_SHOW]) + more

        if self.bad_rows:
            shown = "; ".join(f"line {ln}: {why}" for ln, why in self.bad_rows[:_SHOW])
            more = f"; and {len(self.bad_rows) - _SHOW} more" if len(self.bad_rows) > _SHOW else ""
            msgs.append(f"{self.name}: {len(self.bad_rows)} bad row(s) in {self.labels_path.name} skipped: {shown}{more}")
        if self.missing:
            msgs.append(
                f"{self.name}: {len(self.missing)} clip(s) listed in {self.labels_path.name} have no audio in "
                f"{self.audio_dir}: {some(self.missing)}"
            )
        if self.unlisted:
            msgs.append(
                f"{self.name}: {len(self.unlisted)} audio file(s) in {self.audio_dir} are not in "
                f"{self.labels_path.name} and are not used: {some(self.unlisted)}"
            )
        if self.expected_items is not None and len(self.clips) != self.expected_items:
            msgs.append(
                f"{self.name}: the published dataset has {self.expected_items:,} clips; {len(self.clips):,} were "
                f"found ("
                + (f"{self.expected_items - len(self.clips):,} missing" if len(self.clips) < self.expected_items else f"{len(self.clips) - self.expected_items:,} more than published")
                + ")"
                + (f", {self.n_listed:,} listed in {self.labels_path.name}" if self.n_listed != len(self.clips) else "")
            )
        if (
            self.expected_positive is not None
            and self.expected_items
            and self.has_labels
            and len(self.clips) == self.expected_items
            and self.positives != self.expected_positive
        ):
            msgs.append(
                f"{self.name}: {self.positives:,} clips labelled hasbird=1; the published labels have "
                f"{self.expected_positive:,} (another label version?)"
            )
        if not self.has_labels:
            msgs.append(f"{self.name}: labels are hidden in {self.labels_path.name}; clips are scored, no AUC")
        return msgs

    def summary(self) -> str:
        """One line: name, clips found, positives, where."""
        pos = f", {self.positives:,} with birds ({self.positives / max(1, len(self.clips)):.0%})" if self.has_labels else ", labels hidden"
        return f"{self.name}: {len(self.clips):,} clip(s){pos} — {self.labels_path} + {self.audio_dir}"


def load_dataset(
    path: str | os.PathLike | None = None,
    name: str | None = None,
    *,
    audio: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
) -> Dataset:
    """Find a dataset on disk and match its label file with its audio.

    Parameters
    ----------
    path : str or Path, optional
        The dataset's folder (as its archive unpacks) or its label CSV; see :func:`locate`.
    name : str, optional
        A published dataset's name or alias (``ff1010bird``, ``freefield1010``, ``warblrb10k``, ``BirdVox``,
        ...) or any name of the user's. Defaults to the manifest dataset the label file or its
        ``datasetid`` column belongs to, else the label file's stem.
    audio, labels : str or Path, optional
        The audio folder and label CSV, for any other layout (both, instead of ``path``).

    Returns
    -------
    Dataset
        With ``problems()`` listing anything missing or malformed.

    Raises
    ------
    DatasetError
        When there is no usable label file or audio folder, or no clip is both listed and present.
    """
    from scatterbird.data.manifest import DATASETS, lookup

    if audio is not None or labels is not None:
        if audio is None or labels is None:
            raise DatasetError("give both --audio DIR and --labels CSV (or one dataset folder)")
        labels_path, audio_dir = Path(labels), Path(audio)
        if not audio_dir.is_dir():
            raise DatasetError(f"{audio_dir}: audio folder not found")
    elif path is not None:
        labels_path, audio_dir = locate(path, name)
    else:
        raise DatasetError("no dataset given")
    rows = read_labels(labels_path)
    entry = lookup(name) if name else None
    if entry is None:  # recognise a published set by its label file or datasetid column
        ids = {ds.lower() for _, ds, _ in rows.rows[:50] if ds}
        for d in DATASETS:
            if labels_path.name in d.label_files[:1] or (len(ids) == 1 and ids <= {x.lower() for x in d.datasetids} and d.role == ("development" if rows.has_labels else "evaluation")):
                entry = d
                break
    ds_name = name or (entry.name if entry else labels_path.stem)
    if entry is not None and name and lookup(name) is entry:
        ds_name = entry.name
    if entry is not None:
        # one CSV for several datasets (e.g. the challenge's example submission): keep this one's rows
        ids = {ds.lower() for _, ds, _ in rows.rows if ds}
        mine = {x.lower() for x in entry.datasetids}
        if len(ids) > 1 and ids & mine:
            rows.rows = [r for r in rows.rows if r[1].lower() in mine]
    index = _audio_index(audio_dir)
    data = Dataset(ds_name, labels_path, audio_dir, bad_rows=rows.bad, has_labels=rows.has_labels, n_listed=len(rows.rows))
    if entry is not None:
        data.expected_items = entry.n_items
        data.expected_positive = entry.n_positive
    listed = set()
    for item, _ds, y in rows.rows:
        listed.add(item)
        f = index.get(item)
        if f is None:
            data.missing.append(item)
        else:
            data.clips.append(Clip(item, f, y, ds_name))
    data.unlisted = sorted(set(index) - listed)
    if not data.clips:
        raise DatasetError(
            f"{ds_name}: none of the {len(rows.rows):,} clips listed in {labels_path} was found in {audio_dir}"
            + (f" (its files are named e.g. {next(iter(index))}.wav)" if index else " (no audio files there)")
        )
    return data


def parse_dataset_arg(text: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); a bare ``PATH`` -> (None, PATH).

    A path that itself holds ``=`` is taken whole when it exists.
    """
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        name = name.strip()
        if not name or not path:
            raise DatasetError(f"--dataset {text!r}: expected NAME=PATH")
        return name, path
    return None, text


def load_datasets(
    specs: Sequence[str] = (),
    audio: Sequence[str] = (),
    labels: Sequence[str] = (),
) -> list[Dataset]:
    """The datasets of a command line: ``NAME=PATH`` (or bare ``PATH``) specs, then ``audio``/``labels`` pairs.

    Raises
    ------
    DatasetError
        When none is given, when ``audio`` and ``labels`` differ in number, or when one cannot be loaded.
    """
    if len(audio) != len(labels):
        raise DatasetError(f"--audio and --labels go in pairs; got {len(audio)} --audio and {len(labels)} --labels")
    out = []
    for spec in specs:
        name, path = parse_dataset_arg(spec)
        out.append(load_dataset(path, name))
    for a, lab in zip(audio, labels):
        out.append(load_dataset(audio=a, labels=lab))
    if not out:
        raise DatasetError("no dataset given: use --dataset NAME=PATH (repeatable) or --audio DIR --labels CSV")
    _check_names(out)
    return out


def load_model(path: str | os.PathLike | None):
    """A trained detector from ``path``, or the bundled default model when ``path`` is None.

    Returns
    -------
    (detector, description) : the Detector and the path it came from (or "default model (...)")
    """
    return load_detector(path), describe_model(path)


# =====================================================================================================
# Metrics
# =====================================================================================================
def _check_scores(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of one length, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(np.int64), s


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve: the probability that a random positive outranks a random negative, ties
    counting one half (the Mann-Whitney U statistic over ``n_pos * n_neg``).

    Parameters
    ----------
    labels : sequence of int, 0/1, shape (n,)
    scores : sequence of float, shape (n,)

    Returns
    -------
    float
        NaN when one class is absent.

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    from scipy.stats import rankdata

    y, s = _check_scores(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # mid-ranks for ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_aucs(labels: Sequence[int], scores: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """ROC AUCs of ``n_boot`` stratified bootstrap replicates.

    Positives and negatives are resampled separately, each with replacement to its own count, so every
    replicate has both classes and the class balance of the data. A replicate is a vector of multiplicities
    (multinomial draws: positives first, then negatives, per block of replicates), and its AUC is computed
    from them directly, without copying the data.

    Returns
    -------
    ndarray, shape (n_boot,)
        Empty when one class is absent.
    """
    y, s = _check_scores(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0)
    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # tie groups
    pos_sorted = np.flatnonzero(y_sorted == 1)
    neg_sorted = np.flatnonzero(y_sorted == 0)
    # draws are made over the clips in data order, so the replicates do not depend on the scores' order
    pos_rank = np.searchsorted(np.flatnonzero(y == 1), order[pos_sorted])  # column of each in the draws
    neg_rank = np.searchsorted(np.flatnonzero(y == 0), order[neg_sorted])
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    chunk = max(1, min(n_boot, 4_000_000 // y.size))  # bounds memory at a few tens of MB
    for b0 in range(0, n_boot, chunk):
        b = min(chunk, n_boot - b0)
        cp = rng.multinomial(n_pos, np.full(n_pos, 1.0 / n_pos), size=b)  # (b, n_pos), data order
        cn = rng.multinomial(n_neg, np.full(n_neg, 1.0 / n_neg), size=b)
        wp = np.zeros((b, y.size))
        wn = np.zeros((b, y.size))
        wp[:, pos_sorted] = cp[:, pos_rank]
        wn[:, neg_sorted] = cn[:, neg_rank]
        gp = np.add.reduceat(wp, starts, axis=1)
        gn = np.add.reduceat(wn, starts, axis=1)
        below = np.cumsum(gn, axis=1) - gn  # negatives strictly below each tie group
        aucs[b0 : b0 + b] = (gp * (below + 0.5 * gn)).sum(axis=1) / (n_pos * n_neg)
    return aucs


def bootstrap_auc_ci(
    labels: Sequence[int],
    scores: Sequence[float],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the ROC AUC over stratified bootstrap replicates (:func:`bootstrap_aucs`).

    Parameters
    ----------
    labels, scores : sequence, shape (n,)
    n_boot : int
        Replicates.
    level : float
        Coverage of the interval.
    seed : int
        Seeds the resampling (the interval is reproducible).

    Returns
    -------
    (low, high) : tuple of float
        NaN, NaN when one class is absent.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    aucs = bootstrap_aucs(labels, scores, n_boot=n_boot, seed=seed)
    if aucs.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(aucs, [alpha, 1 - alpha])
    return float(lo), float(hi)


def harmonic_mean(values: Iterable[float]) -> float:
    """Harmonic mean of positive values: the DCASE 2018 Task 3 combination of per-dataset AUCs.

    It is pulled towards the worst dataset (one AUC near 0.5 costs more than the arithmetic mean shows),
    which rewards a detector that generalises to every dataset.

    Returns
    -------
    float
        NaN when ``values`` is empty or holds a NaN; 0 when a value is 0.
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0 or np.isnan(v).any():
        return float("nan")
    if (v < 0).any():
        raise ValueError("harmonic mean of negative values")
    if (v == 0).any():
        return 0.0
    return float(v.size / np.sum(1.0 / v))


@dataclass
class DatasetMetrics:
    """The scores of one dataset and their summary."""

    name: str
    n: int  # clips found
    n_scored: int
    positives: int | None
    auc: float | None
    ci: tuple[float, float] | None
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (itemid, path, reason)

    def to_json(self) -> dict[str, Any]:
        def num(x: float | None) -> float | None:
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)

        return {
            "n": self.n,
            "n_scored": self.n_scored,
            "n_failed": len(self.failed),
            "positives": self.positives,
            "roc_auc": num(self.auc),
            "roc_auc_ci95": None if self.ci is None else [num(self.ci[0]), num(self.ci[1])],
        }


# =====================================================================================================
# Features and scoring
# =====================================================================================================
def clip_scattergram(path: str | os.PathLike, config: FeatureConfig):
    """The whole-clip :class:`~pipeline.scattering.Scattergram` of one recording (raises AudioError)."""
    from scatterbird.pipeline.frontend.scattering import scatter_file
    from scatterbird.pipeline.train.training import _scattering

    return scatter_file(path, scattering=_scattering(config))


def _features_job(args: tuple[list[str], str, str | None]) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Worker: the features of a few clips through the training pipeline (and its cache)."""
    from scatterbird.pipeline.train.training import FeatureCache, compute_features

    paths, config_json, cache = args
    config = FeatureConfig.from_json(config_json)
    fs = compute_features([Path(p) for p in paths], config, FeatureCache(cache, config), progress=False)
    return {str(p): s[0] for p, s in zip(fs.paths, fs.sequences)}, fs.failed


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # N workers use N cores, not N x all


def compute_sequences(
    clips: Sequence[Clip],
    config: FeatureConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    progress: bool = True,
    desc: str = "features",
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Detector inputs of many clips; an unreadable clip gives ``None`` and its reason, never an exception.

    The features are those ``scatterbird train`` computes (:func:`pipeline.training.compute_features`: the
    whole clip scattered and pooled to ``config.pool_s``), through the same on-disk cache, so a model is
    evaluated on exactly what it was trained on, and a dataset used for training and evaluation is
    scattered once.

    Parameters
    ----------
    clips : sequence of Clip
    config : FeatureConfig
    cache_dir : path, optional
        Feature cache root (:class:`pipeline.training.FeatureCache`); None: no cache.
    workers : int
        Local worker processes (spawned, one torch thread each).
    progress : bool
        A tqdm bar on stderr.

    Returns
    -------
    (sequences, reasons) : two lists aligned with ``clips``
    """
    from tqdm import tqdm

    paths = [str(c.path) for c in clips]
    cache = str(cache_dir) if cache_dir is not None else None
    step = 16 if workers > 1 else 1  # small jobs: a steady progress bar, little lost to an uneven split
    jobs = [(paths[i : i + step], config.to_json(), cache) for i in range(0, len(paths), step)]
    found: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    bar = tqdm(total=len(paths), desc=desc, disable=not progress, unit="clip")
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as ex:
            for (ok, bad), job in zip(ex.map(_features_job, jobs), jobs):
                found.update(ok)
                failed.update(bad)
                bar.update(len(job[0]))
    else:
        for job in jobs:
            ok, bad = _features_job(job)
            found.update(ok)
            failed.update(bad)
            bar.update(len(job[0]))
    bar.close()
    seqs = [found.get(p) for p in paths]
    reasons = [None if s is not None else failed.get(p, "features could not be computed") for p, s in zip(paths, seqs)]
    return seqs, reasons


def score_sequences(detector, sequences: Sequence[np.ndarray], batch: int = 256) -> np.ndarray:
    """``detector.predict_proba`` in batches (bounds the memory of kernel detectors), as float64."""
    out = [np.asarray(detector.predict_proba(list(sequences[i : i + batch])), dtype=np.float64) for i in range(0, len(sequences), batch)]
    return np.concatenate(out) if out else np.zeros(0)


# =====================================================================================================
# Runs
# =====================================================================================================
@dataclass
class DatasetResult:
    """One dataset's clips, their scores and metrics in a run (scores NaN where a clip failed)."""

    dataset: Dataset
    scores: np.ndarray
    reasons: list[str | None]
    metrics: DatasetMetrics
    train_on: list[str] = field(default_factory=list)  # crossval: the datasets the model was trained on

    @property
    def ok(self) -> np.ndarray:
        return np.array([r is None for r in self.reasons], dtype=bool)


@dataclass
class RunResult:
    """Everything an evaluation or cross-validation run produced, as written to its output folder."""

    kind: str  # "evaluate" or "crossval"
    results: list[DatasetResult]
    config: FeatureConfig
    model: dict[str, Any]
    harmonic_mean_auc: float | None
    outdir: Path | None = None
    files: dict[str, str] = field(default_factory=dict)  # role -> file name inside outdir
    bootstrap: dict[str, Any] = field(default_factory=dict)

    def pooled(self, n_boot: int | None = None) -> dict[str, Any] | None:
        """ROC AUC (and interval) of every labelled, scored clip of the run together.

        For a cross-validation over folds of one population (e.g. source-file folds) this is the usual
        out-of-fold AUC; for challenge datasets the official score is the harmonic mean instead.
        """
        ys, ss = [], []
        for r in self.results:
            if r.dataset.has_labels:
                ys.append(r.dataset.labels[r.ok])
                ss.append(r.scores[r.ok])
        if not ys:
            return None
        y, s = np.concatenate(ys), np.concatenate(ss)
        if not 0 < y.sum() < y.size:
            return None
        nb = self.bootstrap.get("replicates", 1000) if n_boot is None else n_boot
        lo, hi = bootstrap_auc_ci(y, s, n_boot=nb, seed=self.bootstrap.get("seed", 0)) if nb else (float("nan"),) * 2
        return {"n": int(y.size), "positives": int(y.sum()), "roc_auc": round(roc_auc(y, s), 6),
                "roc_auc_ci95": None if math.isnan(lo) else [round(lo, 6), round(hi, 6)]}

    @property
    def n_failed(self) -> int:
        return sum(len(r.metrics.failed) for r in self.results)

    def table(self) -> str:
        """The metrics as a plain-text table (what the CLI prints)."""
        head = f"{'dataset':<22} {'n':>7} {'pos':>7} {'AUC':>7}  95% interval"
        if self.kind == "crossval":
            head += "      trained on"
        lines = [head, "-" * len(head)]
        for r in self.results:
            m = r.metrics
            auc = "—" if m.auc is None or math.isnan(m.auc) else f"{m.auc:.3f}"
            ci = "" if m.ci is None or math.isnan(m.ci[0]) else f"[{m.ci[0]:.3f}, {m.ci[1]:.3f}]"
            pos = "hidden" if m.positives is None else str(m.positives)
            line = f"{m.name:<22} {m.n_scored:>7} {pos:>7} {auc:>7}  {ci:<16}"
            if self.kind == "crossval":
                line += " " + " + ".join(r.train_on)
            lines.append(line.rstrip())
        hm = "—" if self.harmonic_mean_auc is None else f"{self.harmonic_mean_auc:.3f}"
        lines.append(f"{'harmonic mean AUC':<22} {'':>7} {'':>7} {hm:>7}")
        return "\n".join(lines)


def _metrics_for(data: Dataset, scores: np.ndarray, reasons: list[str | None], n_boot: int, seed: int) -> DatasetMetrics:
    ok = np.array([r is None for r in reasons], dtype=bool)
    failed = [(c.itemid, str(c.path), r) for c, r in zip(data.clips, reasons) if r is not None]
    auc = ci = None
    positives = None
    if data.has_labels:
        y = data.labels[ok]
        positives = int(y.sum())
        if y.size and 0 < positives < y.size:
            auc = roc_auc(y, scores[ok])
            ci = bootstrap_auc_ci(y, scores[ok], n_boot=n_boot, seed=seed) if n_boot > 0 else None
    return DatasetMetrics(data.name, len(data.clips), int(ok.sum()), positives, auc, ci, failed)


def _harmonic(results: Sequence[DatasetResult]) -> float | None:
    aucs = [r.metrics.auc for r in results if r.metrics.auc is not None and not math.isnan(r.metrics.auc)]
    return harmonic_mean(aucs) if aucs else None


def _model_info(detector, path: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": detector.kind, "path": path}
    try:
        info["model_hash"] = detector.model_hash
    except Exception:  # an unfitted or foreign detector: the hash is a nicety
        info["model_hash"] = None
    cfg = getattr(detector, "feature_config", None)
    info["feature_config_hash"] = cfg.hash if cfg else None
    try:
        info["params"] = detector.get_params()
    except NotImplementedError:
        info["params"] = {}
    return info


def evaluate(
    detector,
    datasets: Sequence[Dataset],
    outdir: str | os.PathLike | None = None,
    *,
    config: FeatureConfig | None = None,
    model_path: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    n_worst: int = 5,
    progress: bool = True,
) -> RunResult:
    """Score every clip of each dataset with a trained detector and write the evaluation outputs.

    Parameters
    ----------
    detector : Detector
        Trained; its ``feature_config`` (or ``config``) makes the features.
    datasets : sequence of Dataset
        From :func:`load_dataset`; names must be distinct.
    outdir : path, optional
        Where ``metrics.json``, ``predictions.csv``, ``scores.csv``, ``roc.png``, ``report.html`` and its
        images go (created). None writes nothing.
    config : FeatureConfig, optional
        Only for a detector saved without one; otherwise it must equal the detector's.
    cache_dir : path, optional
        Feature cache (see :func:`compute_sequences`).
    workers : int
        Processes for the features.
    n_boot, seed : int
        Bootstrap replicates for the AUC intervals (0: none) and their seed.
    n_worst : int
        False positives and false negatives shown per dataset in the report.

    Returns
    -------
    RunResult
    """
    from scatterbird.models.base import FeatureConfigMismatch

    cfg = getattr(detector, "feature_config", None)
    if cfg is None:
        cfg = config or FeatureConfig()
    elif config is not None and config.hash != cfg.hash:
        raise FeatureConfigMismatch(
            f"the model's features have config hash {cfg.hash}, the run asked for {config.hash}"
        )
    _check_names(datasets)
    results = []
    for data in datasets:
        seqs, reasons = compute_sequences(data.clips, cfg, cache_dir=cache_dir, workers=workers, progress=progress, desc=data.name)
        scores = np.full(len(data.clips), np.nan)
        ok = [i for i, s in enumerate(seqs) if s is not None]
        if ok:
            scores[ok] = score_sequences(detector, [seqs[i] for i in ok])
        results.append(DatasetResult(data, scores, reasons, _metrics_for(data, scores, reasons, n_boot, seed)))
    run = RunResult("evaluate", results, cfg, _model_info(detector, model_path), _harmonic(results))
    run.bootstrap = {"replicates": n_boot, "seed": seed, "method": "stratified percentile", "level": 0.95}
    if outdir is not None:
        write_outputs(run, outdir, n_worst=n_worst)
    return run


def _check_names(datasets: Sequence[Dataset]) -> None:
    names = [d.name for d in datasets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"dataset names must be distinct, given twice: {', '.join(dup)}; use NAME=PATH")


def crossval(
    datasets: Sequence[Dataset],
    make: Callable[[], Any],
    outdir: str | os.PathLike | None = None,
    *,
    config: FeatureConfig | None = None,
    semi_supervised: bool = True,
    unlabeled_by_dataset: Mapping[str, Sequence[np.ndarray]] | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    n_worst: int = 5,
    save_models: bool = False,
    progress: bool = True,
) -> RunResult:
    """The DCASE 2018 Task 3 protocol: leave one dataset out, for each dataset.

    For each labelled dataset in turn, a fresh detector (``make()``) is trained on the labelled clips of all
    the others and scores the one left out. With ``semi_supervised``, the left-out dataset's sequences are
    also given to ``fit`` as ``unlabeled`` (their labels are never seen), as a semi-supervised detector may
    use the test domain's audio; detectors that do not use unlabelled data ignore it.

    Parameters
    ----------
    datasets : sequence of Dataset
        At least two, all with labels.
    make : callable
        Returns a new unfitted Detector (e.g. ``lambda: build_detector("inversion", params)``).
    outdir : path, optional
        Outputs as for :func:`evaluate`; ``predictions.csv`` holds every clip's held-out score.
    semi_supervised : bool
        Give the held-out dataset's sequences to ``fit`` as ``unlabeled``.
    unlabeled_by_dataset : mapping, optional
        Unlabelled sequences that belong to a dataset (e.g. more audio of the same sources): given to ``fit``
        as ``unlabeled`` whenever that dataset is in the training set, never when it is held out.
    save_models : bool
        Also write each fold's model to ``OUTDIR/models/<held-out>.pt``.

    Returns
    -------
    RunResult
        One result per held-out dataset, and the harmonic mean of their AUCs.
    """
    cfg = config or FeatureConfig()
    _check_names(datasets)
    if len(datasets) < 2:
        raise DatasetError("leave-one-dataset-out needs at least two datasets")
    hidden = [d.name for d in datasets if not d.has_labels]
    if hidden:
        raise DatasetError(f"cross-validation needs labels; hidden in: {', '.join(hidden)}")
    feats: dict[str, tuple[list, list]] = {}
    for data in datasets:
        feats[data.name] = compute_sequences(data.clips, cfg, cache_dir=cache_dir, workers=workers, progress=progress, desc=data.name)
    results = []
    model_info: dict[str, Any] = {"folds": {}}
    for held in datasets:
        train_seqs: list[np.ndarray] = []
        train_y: list[int] = []
        for other in datasets:
            if other is held:
                continue
            for clip, s in zip(other.clips, feats[other.name][0]):
                if s is not None:
                    train_seqs.append(s)
                    train_y.append(int(clip.label))
        if len(set(train_y)) < 2:
            raise DatasetError(f"leaving {held.name} out leaves a training set with one class only")
        test_seqs, reasons = feats[held.name]
        ok = [i for i, s in enumerate(test_seqs) if s is not None]
        det = make()
        det.feature_config = cfg
        unlabeled = [test_seqs[i] for i in ok] if semi_supervised and ok else []
        for other in datasets:
            if other is not held and unlabeled_by_dataset:
                unlabeled += list(unlabeled_by_dataset.get(other.name, ()))
        unlabeled = unlabeled or None
        if progress:
            print(
                f"crossval: training on {len(train_seqs)} clips ({', '.join(d.name for d in datasets if d is not held)})"
                f"{f', {len(unlabeled)} unlabelled' if unlabeled else ''}; testing on {held.name}",
                file=sys.stderr,
            )
        det.fit(train_seqs, train_y, unlabeled=unlabeled)
        scores = np.full(len(held.clips), np.nan)
        if ok:
            scores[ok] = score_sequences(det, [test_seqs[i] for i in ok])
        res = DatasetResult(held, scores, reasons, _metrics_for(held, scores, reasons, n_boot, seed))
        res.train_on = [d.name for d in datasets if d is not held]
        results.append(res)
        model_info["folds"][held.name] = _model_info(det, None)
        if save_models and outdir is not None:
            (Path(outdir) / "models").mkdir(parents=True, exist_ok=True)
            det.save(Path(outdir) / "models" / f"{_safe(held.name)}.pt")
            model_info["folds"][held.name]["path"] = f"models/{_safe(held.name)}.pt"
    first = next(iter(model_info["folds"].values()))
    model_info.update(
        kind=first["kind"], params=first.get("params", {}), semi_supervised=semi_supervised,
        unlabeled_by_dataset={k: len(v) for k, v in (unlabeled_by_dataset or {}).items()}, feature_config_hash=cfg.hash,
    )
    run = RunResult("crossval", results, cfg, model_info, _harmonic(results))
    run.bootstrap = {"replicates": n_boot, "seed": seed, "method": "stratified percentile", "level": 0.95}
    if outdir is not None:
        write_outputs(run, outdir, n_worst=n_worst)
    return run


# =====================================================================================================
# Outputs
# =====================================================================================================
def _safe(name: str) -> str:
    """A file-name-safe form of a dataset or item name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def worst_clips(result: DatasetResult, n: int) -> tuple[list[int], list[int]]:
    """The ranking mistakes that cost the most AUC.

    Worst false positives: the ``n`` highest-scored clips without birds among those that outrank some
    clip with birds; worst false negatives: the ``n`` lowest-scored clips with birds among those that some
    clip without birds outranks. A clip ranked correctly against every clip of the other class is no
    mistake, and is never shown, however few mistakes there are.

    Returns
    -------
    (fp, fn) : two lists of indices into ``result.dataset.clips``
    """
    if not result.dataset.has_labels or n <= 0:
        return [], []
    y = result.dataset.labels
    ok = result.ok
    neg = np.flatnonzero(ok & (y == 0))
    pos = np.flatnonzero(ok & (y == 1))
    if neg.size == 0 or pos.size == 0:
        return [], []
    s = result.scores
    neg = neg[s[neg] >= s[pos].min()]
    pos = pos[s[pos] <= s[neg].max()] if neg.size else pos[:0]
    fp = neg[np.argsort(-s[neg], kind="mergesort")][:n]
    fn = pos[np.argsort(s[pos], kind="mergesort")][:n]
    return fp.tolist(), fn.tolist()


def metrics_json(run: RunResult) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    out: dict[str, Any] = {
        "kind": run.kind,
        "model": run.model,
        "feature_config": run.config.to_dict(),
        "feature_config_hash": run.config.hash,
        "bootstrap": run.bootstrap,
        "datasets": {},
        "harmonic_mean_auc": None if run.harmonic_mean_auc is None else round(run.harmonic_mean_auc, 6),
        "harmonic_mean_over": [r.metrics.name for r in run.results if r.metrics.auc is not None and not math.isnan(r.metrics.auc)],
        "failed": [],
    }
    if run.kind == "crossval":
        out["pooled_out_of_fold"] = run.pooled()
    for r in run.results:
        d = r.metrics.to_json()
        d["labels"] = str(r.dataset.labels_path)
        d["audio"] = str(r.dataset.audio_dir)
        d["missing"] = len(r.dataset.missing)
        d["bad_rows"] = len(r.dataset.bad_rows)
        d["problems"] = r.dataset.problems()
        if run.kind == "crossval":
            d["trained_on"] = r.train_on
        out["datasets"][r.metrics.name] = d
        out["failed"] += [{"dataset": r.metrics.name, "itemid": i, "path": p, "reason": why} for i, p, why in r.metrics.failed]
    return out


def write_outputs(run: RunResult, outdir: str | os.PathLike, *, n_worst: int = 5) -> RunResult:
    """Write ``metrics.json``, ``predictions.csv``, ``scores.csv`` and the HTML report with its images."""
    from scatterbird.pipeline.evaluate import report

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    run.outdir = out
    with open(out / "metrics.json", "w") as f:
        json.dump(metrics_json(run), f, indent=2)
    # The challenge's submission form: every scored clip, all datasets, in label-file order.
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["itemid", "prob"])
        for r in run.results:
            for c, s, ok in zip(r.dataset.clips, r.scores, r.ok):
                if ok:
                    w.writerow([c.itemid, f"{s:.6f}"])
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "itemid", "hasbird", "prob", "path", "error"])
        for r in run.results:
            for c, s, why in zip(r.dataset.clips, r.scores, r.reasons):
                w.writerow([r.metrics.name, c.itemid, "" if c.label is None else c.label, "" if why else f"{s:.6f}", str(c.path), why or ""])
    run.files.update({"metrics": "metrics.json", "predictions": "predictions.csv", "scores": "scores.csv"})
    # Scattergrams of the worst clips only (recomputed: keeping every clip's frames would not scale).
    worst: dict[str, dict[str, list[tuple[Clip, float, Any]]]] = {}
    for r in run.results:
        fp, fn = worst_clips(r, n_worst)
        entry: dict[str, list[tuple[Clip, float, Any]]] = {"fp": [], "fn": []}
        for key, idx in (("fp", fp), ("fn", fn)):
            for i in idx:
                clip = r.dataset.clips[i]
                try:
                    sg = clip_scattergram(clip.path, run.config)
                except (AudioError, ValueError, RuntimeError):
                    sg = None
                entry[key].append((clip, float(r.scores[i]), sg))
        worst[r.metrics.name] = entry
    report.write_report(run, out, worst)
    return run
