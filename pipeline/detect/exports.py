"""Exports of a run from the results store, in the tables bioacousticians' tools open.

Formats (``--format``, comma-separated; ``all`` for every one):

``csv``
    ``windows.csv`` (every scored window) and ``detections.csv`` (the events), one combined table each, with
    columns ``file,start_s,end_s,score`` (+ ``peak_s`` for detections) and the provenance columns
    ``run_id,model_hash,config_hash``.
``raven``
    One Raven Pro selection table per recording, ``raven/<name>.selections.txt``: tab-separated, one selection
    per event, with Raven's columns ``Selection, View, Channel, Begin Time (s), End Time (s), Low Freq (Hz),
    High Freq (Hz)`` and the annotations ``Score, Peak Time (s), Begin Path, File Offset (s)``. A recording
    without events gets a table with the header only (it was processed; nothing was found).
``audacity``
    One Audacity label file per recording, ``audacity/<name>.labels.txt``: ``start<TAB>end<TAB>label`` per
    event, the label being ``bird p=<score>``.
``json``
    ``detections.json``: the run (parameters, hashes, feature configuration, version, times), then every file
    with its status, error, duration, windows and events.

``<name>`` is the recording's path relative to the run's common directory, ``/`` replaced by ``__`` and the
extension kept after ``_`` (``site1/dawn.wav`` -> ``site1__dawn_wav``), so names never collide.

Times are written with Python's shortest round-trip representation: reading an export back gives exactly
the times in the store. Scores are written with 6 significant digits (:func:`score_text`): a detector's
probability carries no more meaning than that, and 17-digit columns only hide it.

Every file is written to a temporary name and renamed, so an export is never seen half-written; a write
that fails (a read-only folder, a full disk) removes its temporary file and raises
:class:`~scatterbird.errors.OutputError`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from scatterbird.errors import OptionError
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.detect.store import STORE_NAME, ResultsStore, RunInfo
from scatterbird.pipeline.output_files import prepare_output_dir, write_text_atomic

FORMATS = ("csv", "raven", "audacity", "json")

#: Raven Pro's selection-table columns, then scatterbird's annotation columns.
RAVEN_COLUMNS = (
    "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
    "Score", "Peak Time (s)", "Begin Path", "File Offset (s)",
)


def parse_formats(text: str | Sequence[str] | None, option: str = "--format") -> list[str]:
    """``"csv,raven"`` / ``["csv", "json"]`` / ``"all"`` -> a list of known formats, in FORMATS order.

    None (the option not given) means no exports; a given but empty list (``--format ''``) is an
    :class:`~scatterbird.errors.OptionError` naming ``option``, as is an unknown format: either would
    otherwise write nothing without a word.
    """
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else [t for x in text for t in x.split(",")]
    items = [i.strip().lower() for i in items if i.strip()]
    if not items:
        raise OptionError(f"{option} is empty; choose from {', '.join(FORMATS)} or all")
    if "all" in items:
        return list(FORMATS)
    unknown = sorted(set(items) - set(FORMATS))
    if unknown:
        raise OptionError(f"{option}: unknown export format(s) {', '.join(unknown)}; "
                          f"choose from {', '.join(FORMATS)} or all")
    return [f for f in FORMATS if f in items]


#: Significant digits of the scores in every export.
SCORE_DIGITS = 6


def _num(x: float) -> str:
    return repr(float(x))


def score_value(x: float) -> float:
    """A score rounded to :data:`SCORE_DIGITS` significant digits (what JSON writes)."""
    return float(f"{float(x):.{SCORE_DIGITS}g}")


def score_text(x: float) -> str:
    """A score as the exports write it: 6 significant digits, shortest form (``0.5``, ``0.123457``)."""
    return repr(score_value(x))


def export_names(paths: Iterable[str]) -> dict[str, str]:
    """A flat, collision-free name for each recording (see the module notes)."""
    paths = list(paths)
    if not paths:
        return {}
    base = os.path.commonpath([os.path.dirname(p) for p in paths])
    names = {}
    for p in paths:
        rel = Path(os.path.relpath(p, base))
        names[p] = "__".join(rel.with_suffix("").parts) + rel.suffix.replace(".", "_")
    return names


def _write_atomic(path: Path, text: str) -> Path:
    # a temporary file renamed into place, removed on any failure (OutputError: read-only, disk full, ...)
    return write_text_atomic(path, text)


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[object]], delimiter: str = ",") -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def export_run(
    store: ResultsStore, run_id: int, outdir: str | os.PathLike, formats: Sequence[str]
) -> list[Path]:
    """Write the exports of one run of ``store`` into ``outdir``.

    Parameters
    ----------
    store : ResultsStore
    run_id : int
    outdir : path
    formats : sequence of str
        Any of ``FORMATS``.

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(outdir)
    run = store.run(run_id)
    files = store.files(run_id)
    windows = store.windows(run_id)
    events = store.events(run_id)
    prov = [run.id, run.model_hash, run.config_hash]
    written: list[Path] = []
    fmts = parse_formats(list(formats))
    if "csv" in fmts:
        written.append(_write_atomic(out / "windows.csv", _csv_text(
            ["file", "start_s", "end_s", "score", "run_id", "model_hash", "config_hash"],
            ([p, _num(a), _num(b), score_text(s), *prov] for p, a, b, s in windows),
        )))
        written.append(_write_atomic(out / "detections.csv", _csv_text(
            ["file", "start_s", "end_s", "score", "peak_s", "run_id", "model_hash", "config_hash"],
            ([p, _num(a), _num(b), score_text(s), _num(t), *prov] for p, a, b, s, t in events),
        )))
    done = [f for f in files if f["status"] == "done"]
    names = export_names(f["path"] for f in done)
    by_file: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for p, a, b, s, t in events:
        by_file[p].append((a, b, s, t))
    if "raven" in fmts:
        sr = FeatureConfig.from_json(run.config_json).sample_rate
        for f in done:
            top = min(sr, f["source_rate"] or sr) / 2.0  # the detector sees up to the lower Nyquist
            rows = [
                [i, "Spectrogram 1", 1, _num(a), _num(b), _num(0.0), _num(top), score_text(s), _num(t), f["path"],
                 _num(a)]
                for i, (a, b, s, t) in enumerate(by_file.get(f["path"], []), start=1)
            ]
            written.append(_write_atomic(
                out / "raven" / f"{names[f['path']]}.selections.txt", _csv_text(RAVEN_COLUMNS, rows, "\t")
            ))
    if "audacity" in fmts:
        for f in done:
            text = "".join(
                f"{_num(a)}\t{_num(b)}\tbird p={score_text(s)}\n" for a, b, s, _ in by_file.get(f["path"], [])
            )
            written.append(_write_atomic(out / "audacity" / f"{names[f['path']]}.labels.txt", text))
    if "json" in fmts:
        written.append(_write_atomic(out / "detections.json", json.dumps(_json_doc(store, run, files), indent=1)))
    return written


def _json_doc(store: ResultsStore, run: RunInfo, files: list[dict]) -> dict:
    w_by: dict[str, list] = defaultdict(list)
    for p, a, b, s in store.windows(run.id):
        w_by[p].append([a, b, score_value(s)])
    e_by: dict[str, list] = defaultdict(list)
    for p, a, b, s, t in store.events(run.id):
        e_by[p].append({"start_s": a, "end_s": b, "score": score_value(s), "peak_s": t})
    return {
        "format": "scatterbird-detections/1",
        "run": {
            "id": run.id, "model_hash": run.model_hash, "model_kind": run.model_kind, "model_path": run.model_path,
            "config_hash": run.config_hash, "feature_config": json.loads(run.config_json),
            "window_s": run.window_s, "hop_s": run.hop_s, "min_conf": run.min_conf,
            "package_version": run.package_version, "shard": run.shard,
            "started_at": run.started_at, "updated_at": run.updated_at, "finished_at": run.finished_at,
            "invocations": run.invocations, "parameters": json.loads(run.params_json or "{}"),
        },
        "files": [
            {
                "path": f["path"], "status": f["status"], "error": f["error"], "duration_s": f["duration_s"],
                "size": f["size"], "mtime_ns": f["mtime_ns"], "source_rate": f["source_rate"],
                "windows": w_by.get(f["path"], []), "events": e_by.get(f["path"], []),
            }
            for f in files
        ],
        "input_problems": [{"path": p, "reason": r} for p, r in store.problems(run.id)],
    }


def export_store(
    outdir: str | os.PathLike,
    formats: Sequence[str],
    *,
    run_id: int | None = None,
    to: str | os.PathLike | None = None,
    store_path: str | os.PathLike | None = None,
) -> tuple[RunInfo, list[Path]]:
    """Re-export a run (the latest by default) of ``OUTDIR/scatterbird.sqlite`` into ``to`` (default OUTDIR)."""
    with ResultsStore(store_path or Path(outdir) / STORE_NAME) as store:
        run = store.run(run_id)
        if formats:  # a file, a read-only or a missing folder: say so before writing anything
            prepare_output_dir(to or outdir)
        return run, export_run(store, run.id, to or outdir, formats)
