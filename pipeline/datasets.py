"""Labelled datasets on disk: the one reader of label CSVs and finder of layouts, for train and evaluate alike.

A dataset is a folder of ``<itemid>.wav`` clips and a CSV ``itemid,datasetid,hasbird`` (Bird Audio Detection
style), in the published layouts of :mod:`data.manifest` or any other (``audio=DIR, labels=CSV``).

One rule for label rows: ``hasbird`` is 0 or 1, written as an integer or a float equal to 0 or 1. A bad row
(another label, an empty itemid, a duplicate itemid, a wrong field count) is skipped and reported with its
line number (:attr:`LabelRows.bad`, :meth:`Dataset.problems`); a file is refused (:class:`DatasetError`) only
when its header lacks the columns or no usable row remains.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from scatterbird.data.manifest import DATASETS, all_label_file_names, lookup
from scatterbird.errors import DatasetError
from scatterbird.pipeline.frontend.audio import AUDIO_EXTENSIONS

#: Item ids (or bad rows) shown in a message before "and N more".
_SHOW = 5


@dataclass(frozen=True)
class Clip:
    """One labelled (or, for the evaluation sets, unlabeled) clip.

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


def parse_label(text: str) -> int | None:
    """``hasbird`` as 0 or 1: an integer or a float equal to 0 or 1 (``1``, ``1.0``); ``''`` is hidden (None).

    Raises
    ------
    ValueError
        For anything else (``2``, ``0.5``, ``yes``, ``nan``).
    """
    t = text.strip()
    if t == "":
        return None
    try:
        value = float(t)
    except ValueError:
        raise ValueError(t) from None
    if value in (0.0, 1.0):
        return int(value)
    raise ValueError(t)


def _some_bad_rows(bad: Sequence[tuple[int, str]]) -> str:
    """The first few bad rows as ``line N: why; ...`` (and how many more)."""
    shown = "; ".join(f"line {ln}: {why}" for ln, why in bad[:_SHOW])
    return shown + (f"; and {len(bad) - _SHOW} more" if len(bad) > _SHOW else "")


def read_labels(path: str | os.PathLike, *, require_labels: bool = False) -> LabelRows:
    """Read a label CSV ``itemid,datasetid,hasbird``.

    The header must name an ``itemid`` column (any case, any column order); ``datasetid`` and ``hasbird``
    are optional unless ``require_labels``. A file without ``hasbird``, or with every ``hasbird`` empty, has
    hidden labels (an evaluation set). Item ids given with an audio extension (``abc.wav``) are taken
    without it.

    Parameters
    ----------
    path : str or Path
        The CSV (UTF-8, with or without a byte-order mark).
    require_labels : bool
        Refuse a file without labels (training needs them).

    Returns
    -------
    LabelRows
        Good rows in file order; bad rows (wrong field count, empty item id, a label other than 0/1, an
        empty label in a labelled file, a duplicate item id) as ``(line number, reason)``.

    Raises
    ------
    DatasetError
        If the file cannot be read, is empty, lacks a column, holds no usable row, or (with
        ``require_labels``) has hidden labels.
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
    lacking = [c for c in ("itemid", "hasbird") if c not in cols and (c == "itemid" or require_labels)]
    if lacking:
        raise DatasetError(
            f"{p}: no {' or '.join(map(repr, lacking))} column in the header {header!r}; "
            "expected 'itemid,datasetid,hasbird'"
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
                y = parse_label(ytext)
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
    if not out.rows:
        bad = f": {len(out.bad)} bad row(s): {_some_bad_rows(out.bad)}" if out.bad else ""
        raise DatasetError(f"{p}: no usable row (a header 'itemid,datasetid,hasbird', then one row per clip){bad}")
    if require_labels and not out.has_labels:
        raise DatasetError(f"{p}: every hasbird value is empty (hidden labels); labels are needed here")
    return out


def _csv_header(path: Path) -> list[str]:
    """A CSV's header, lower-cased (empty when it cannot be read)."""
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
    """True when ``directory`` directly holds an audio file."""
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
        """Clips labelled 1."""
        return sum(1 for c in self.clips if c.label == 1)

    @property
    def labels(self) -> np.ndarray:
        """Each clip's label, shape (n_clips,), int64; -1 where hidden."""
        return np.array([-1 if c.label is None else c.label for c in self.clips], dtype=np.int64)

    def problems(self) -> list[str]:
        """Messages about what is missing, extra or malformed (empty when the copy is complete)."""
        msgs: list[str] = []

        def some(ids: Sequence[str]) -> str:
            more = f" and {len(ids) - _SHOW} more" if len(ids) > _SHOW else ""
            return ", ".join(ids[:_SHOW]) + more

        if self.bad_rows:
            msgs.append(
                f"{self.name}: {len(self.bad_rows)} bad row(s) in {self.labels_path.name} skipped: "
                f"{_some_bad_rows(self.bad_rows)}"
            )
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
    require_labels: bool = False,
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
    require_labels : bool
        Refuse a label file without labels (see :func:`read_labels`).

    Returns
    -------
    Dataset
        With ``problems()`` listing anything missing or malformed.

    Raises
    ------
    DatasetError
        When there is no usable label file or audio folder, or no clip is both listed and present.
    """
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
    rows = read_labels(labels_path, require_labels=require_labels)
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
    check_distinct_names(out)
    return out


def check_distinct_names(datasets: Sequence[Dataset]) -> None:
    """Raise DatasetError when two datasets of one run share a name."""
    names = [d.name for d in datasets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"dataset names must be distinct, given twice: {', '.join(dup)}; use NAME=PATH")

