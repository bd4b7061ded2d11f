"""The HTML report of a detection run, rebuilt from the results store at any time.

``OUTDIR/report.html`` and its folder ``OUTDIR/report_files/`` (figures, sound clips, ``files.csv``) refer to
each other by relative paths, so the pair can be copied or served as it is. The page shows:

* the run's totals (files, hours, windows, events, failed files) and provenance (model, feature
  configuration, options, scatterbird version);
* the top events of the run by peak score, each with the clip cut from its source recording around the
  event (``event_NNN.wav``, mono at the pipeline rate, what the detector heard) and the scattergram of that
  clip (``event_NNN.png``, the run's feature configuration);
* for the files with the most events, a strip of the window scores over time with the events marked, and
  their events, each with a link to the source at its time offset;
* a table of every file's totals, cut at a number of rows (the rest is in ``files.csv``), the failed files
  and the input problems.

The cost is bounded whatever the size of the run: windows are read only for the files that get a strip,
and clips are cut and scattered only for the top events. A source recording missing or unreadable since the
run is noted on the page, never fatal. The page is the jinja2 template ``pipeline/templates/detect.html``
(autoescaped: file names are shown as they are, never interpreted).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf

from scatterbird.errors import OptionError, OutputError
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.detect.store import STORE_NAME, ResultsStore, RunInfo
from scatterbird.pipeline.frontend.audio import mono_at_rate, read_span
from scatterbird.pipeline.frontend.clips import MAX_BATCH_SAMPLES, scatter_clips
from scatterbird.pipeline.frontend.features import scattering_for
from scatterbird.pipeline.frontend.scattering import Scattergram, concatenate
from scatterbird.pipeline.html_report import new_figure, render, save_png, written_at
from scatterbird.version import __version__

#: The page, and the folder of everything it refers to, inside the output directory.
REPORT_NAME = "report.html"
REPORT_DIR = "report_files"

#: The note of an event whose recording is gone.
MISSING = "the recording is missing since the run"


@dataclass(frozen=True)
class ReportOptions:
    """How much the report shows.

    Parameters
    ----------
    n_files : int
        Files that get a score strip: those with the most events.
    n_events : int
        Top events (by peak score) that get a sound clip and a scattergram.
    max_rows : int
        Rows of the table of every file's totals; all rows are in ``report_files/files.csv``.
    events_per_file : int
        Events listed under each strip (the highest peaks, shown in time order).
    max_failures : int
        Rows of the failed-files and input-problems tables; ``scatterbird failures OUTDIR`` lists them all.
    margin_s : float
        Audio kept before and after an event in its clip.
    max_clip_s : float
        Longest clip: a longer event is cut around its peak.
    """

    n_files: int = 50
    n_events: int = 20
    max_rows: int = 500
    events_per_file: int = 10
    max_failures: int = 100
    margin_s: float = 1.0
    max_clip_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("n_files", "n_events", "max_rows", "events_per_file", "max_failures"):
            if getattr(self, name) < 0:
                raise OptionError(f"report: {name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.margin_s < 0 or self.max_clip_s <= 0:
            raise OptionError(f"report: need margin >= 0 and clip length > 0 s, got {self.margin_s}, {self.max_clip_s}")


@dataclass
class ReportSummary:
    """What :func:`write_report` wrote."""

    path: Path
    run: RunInfo
    strips: int = 0
    clips: int = 0
    notes: list[str] = field(default_factory=list)  # sources missing or unreadable since the run


# -- formatting ------------------------------------------------------------------------------------
def clock(t: float) -> str:
    """Seconds as ``m:ss.s`` (``h:mm:ss.s`` from an hour on): how a recording's time reads in a player."""
    t = max(0.0, float(t))
    h, rest = divmod(t, 3600.0)
    m, s = divmod(rest, 60.0)
    if s >= 59.95:  # rounding to tenths must not print 60.0
        s, m = 0.0, m + 1
        if m == 60:
            m, h = 0, h + 1
    return f"{int(h)}:{int(m):02d}:{s:04.1f}" if h else f"{int(m)}:{s:04.1f}"


def _source_link(path: str, start_s: float, end_s: float) -> str:
    """A link to the recording at the event (a media fragment, which browsers' players honour)."""
    try:
        uri = Path(path).as_uri()
    except ValueError:  # not absolute: leave it relative to the page
        uri = path
    return f"{uri}#t={start_s:.2f},{end_s:.2f}"


def _display_names(paths: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The folder common to every path, and each path relative to it (shorter rows in the tables)."""
    if not paths:
        return "", {}
    try:
        root = os.path.commonpath(paths)
    except ValueError:  # mixed drives or relative and absolute paths
        return "", {p: p for p in paths}
    if root in paths:  # a single file: its folder
        root = os.path.dirname(root)
    return root, {p: os.path.relpath(p, root) if root else p for p in paths}


# -- audio clips and figures -----------------------------------------------------------------------
def clip_span(start_s: float, end_s: float, peak_s: float, duration_s: float | None,
              options: ReportOptions) -> tuple[float, float]:
    """The span of a recording an event's clip holds: the event plus margins, inside the recording,
    at most ``max_clip_s`` long (then centred on the peak)."""
    a, b = start_s - options.margin_s, end_s + options.margin_s
    if b - a > options.max_clip_s:
        a, b = peak_s - options.max_clip_s / 2, peak_s + options.max_clip_s / 2
    a = max(0.0, a)
    if duration_s is not None:
        b = min(b, float(duration_s))
    return a, max(a, b)


def cut_clip(path: str, start_s: float, end_s: float, sample_rate: int | None) -> tuple[np.ndarray, int]:
    """``[start_s, end_s)`` of a recording, mixed to mono and resampled to ``sample_rate`` (None: the
    recording's own rate).

    Returns
    -------
    samples : ndarray, float32, shape (n,)
    sample_rate : int

    Raises
    ------
    Exception
        When the file is missing or cannot be decoded (soundfile's or :class:`AudioError`; the caller notes it).
    """
    data, sr = read_span(path, start_s, end_s)  # keeps the MP3 decoder's own lines off the terminal
    if data.shape[0] == 0:
        raise RuntimeError("no audio at the event's time (the file is shorter than when it was scored)")
    rate = sample_rate or sr
    return mono_at_rate(data, sr, rate), rate


def plot_strip(windows: np.ndarray, events: Sequence[tuple[float, float, str]], duration_s: float | None,
               min_conf: float, path: str | os.PathLike) -> None:
    """Window scores over a recording's time, the event threshold dashed, events shaded (and numbered where
    they have a clip in the top-events table)."""
    fig = new_figure(9.0, 1.35)
    ax = fig.add_axes((0.06, 0.3, 0.92, 0.62))
    if len(windows):
        centres = (windows[:, 0] + windows[:, 1]) / 2
        ax.plot(centres, windows[:, 2], color="#1f77b4", lw=0.9, drawstyle="steps-mid")
    for a, b, label in events:
        ax.axvspan(a, b, color="#d62728", alpha=0.25, lw=0)
        if label:
            ax.text((a + b) / 2, 1.02, label, ha="center", va="bottom", fontsize=7, color="#8b0000")
    ax.axhline(min_conf, color="0.4", lw=0.7, ls="--")
    end = duration_s if duration_s else (float(windows[-1, 1]) if len(windows) else 1.0)
    ax.set_xlim(0, max(end, 1e-3))
    ax.set_ylim(0, 1.15)
    ax.set_yticks([0, 0.5, 1])
    ax.tick_params(labelsize=8)
    ax.set_ylabel("score", fontsize=8, labelpad=1)
    ax.set_xlabel("time in the recording (s)", fontsize=8, labelpad=1)
    save_png(fig, path, dpi=80)


def plot_event(sg: Scattergram, offset_s: float, start_s: float, end_s: float, path: str | os.PathLike) -> None:
    """The first-order scattergram of an event's clip (frequency up, file time across), the event's edges
    marked."""
    rows = np.flatnonzero(sg.order == 1)
    if rows.size == 0:
        rows = np.arange(sg.S.shape[0])
    order = np.argsort(sg.frequency[rows])  # low frequencies at the bottom
    img, freqs = sg.S[rows][order], sg.frequency[rows][order]
    lo, hi = np.percentile(img, [2, 99.5])
    fig = new_figure(3.6, 1.7)
    ax = fig.add_axes((0.16, 0.26, 0.8, 0.68))
    t0 = offset_s + sg.start_time - 0.5 / sg.frame_rate
    ax.imshow(img, aspect="auto", origin="lower", cmap="magma", vmin=lo, vmax=hi,
              extent=(t0, t0 + sg.n_frames / sg.frame_rate, 0, img.shape[0]), interpolation="nearest")
    for t in (start_s, end_s):
        ax.axvline(t, color="white", lw=0.8, ls="--")
    ticks = np.linspace(0, img.shape[0] - 1, 3).astype(int)
    ax.set_yticks([i + 0.5 for i in ticks])
    ax.set_yticklabels([f"{freqs[i] / 1000:.2g}" for i in ticks], fontsize=8)
    ax.set_ylabel("kHz", fontsize=8, labelpad=1)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("s", fontsize=8, labelpad=1)
    save_png(fig, path, dpi=80)


# -- the page --------------------------------------------------------------------------------------
def _provenance(run: RunInfo, config: FeatureConfig | None) -> dict[str, Any]:
    details = None
    if config is not None:
        details = (f"sr {config.sample_rate} Hz, J={config.J}, Q=({config.Q1},{config.Q2}), order "
                   f"{config.max_order}, threshold {config.threshold}")
    return {
        "model": {"kind": run.model_kind, "hash": run.model_hash, "path": run.model_path, "note": None},
        "config": {"hash": run.config_hash, "details": details},
        "written": written_at(),
    }


def _run_rows(run: RunInfo) -> list[tuple[str, str]]:
    """The run's options and history, as (name, value) rows."""
    try:
        invocation = json.loads(run.params_json or "{}")
    except ValueError:
        invocation = {}
    rows = [
        ("run", f"{run.id} (key {run.run_key})"),
        ("window / hop", f"{run.window_s:g} s / {run.hop_s:g} s"),
        ("event threshold (min-conf)", f"{run.min_conf:g}"),
        ("model", f"{run.model_kind}, hash {run.model_hash}, {run.model_path}"),
        ("feature config hash", run.config_hash),
        ("started", run.started_at),
        ("finished", run.finished_at or "not finished: the last pass over the inputs was interrupted "
                                        "(rerun the same command to resume)"),
        ("invocations", str(run.invocations)),
        ("scatterbird version (run / report)", f"{run.package_version} / {__version__}"),
    ]
    if run.shard:
        rows.append(("shard", run.shard))
    for key in ("inputs", "extensions", "workers", "scheduler", "force", "merged_from"):
        if invocation.get(key) not in (None, [], False):
            v = invocation[key]
            rows.append((key, ", ".join(map(str, v)) if isinstance(v, list) else str(v)))
    return rows


def _write_files_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "status", "duration_s", "windows", "events", "top_score", "error"])
        for r in rows:
            top = "" if r["top"] is None else f"{r['top']:.6g}"
            dur = "" if r["duration_s"] is None else f"{r['duration_s']:.3f}"
            w.writerow([r["path"], r["status"], dur, r["n_windows"], r["events"], top, r["error"] or ""])


def _build(store: ResultsStore, run: RunInfo, config: FeatureConfig | None, folder: Path,
           options: ReportOptions, summary: ReportSummary) -> dict[str, Any]:
    """Draw the figures and cut the clips into ``folder``; return the template's data."""
    files = store.files(run.id)
    events = store.events(run.id)
    by_path: dict[str, list[tuple[float, float, float, float]]] = {}
    for p, a, b, s, t in events:
        by_path.setdefault(p, []).append((a, b, s, t))
    root, names = _display_names([f["path"] for f in files])
    rows = []
    for f in files:
        ev = by_path.get(f["path"], [])
        rows.append({**f, "name": names[f["path"]], "events": len(ev),
                     "top": max((e[2] for e in ev), default=None)})
    rows.sort(key=lambda r: (-r["events"], -(r["top"] or 0.0), r["path"]))
    row_of = {r["path"]: r for r in rows}
    done = [r for r in rows if r["status"] == "done"]
    totals = {
        "files": len(rows), "done": len(done), "failed": len(rows) - len(done),
        "hours": sum(r["duration_s"] or 0.0 for r in done) / 3600.0,
        "windows": sum(r["n_windows"] for r in done), "events": len(events),
        "with_events": sum(1 for r in done if r["events"]),
        "problems": len(store.problems(run.id)),  # paths the input scan could not use: not files of the run
    }
    _write_files_csv(folder / "files.csv", rows)

    # The top events: a clip and a scattergram each.
    ranked = sorted(events, key=lambda e: (-e[3], e[0], e[1]))[: options.n_events]
    top: list[dict[str, Any]] = []
    number: dict[tuple[str, float], int] = {}
    for k, (p, a, b, s, t) in enumerate(ranked, 1):
        f = row_of[p]
        ca, cb = clip_span(a, b, t, f["duration_s"], options)
        item = {"n": k, "path": p, "name": names[p], "start": a, "end": b, "peak": s, "peak_s": t,
                "span": f"{clock(a)} – {clock(b)}", "link": _source_link(p, a, b), "audio": None, "img": None,
                "clip_start": ca, "clip_end": cb, "note": None}
        number[(p, a)] = k
        item["note"] = _changed(p, f)
        x, sr = None, 0
        if item["note"] != MISSING:
            try:
                x, sr = cut_clip(p, ca, cb, config.sample_rate if config is not None else None)
            except Exception as exc:  # undecodable now (replaced, truncated, unreadable): the page goes on
                item["note"] = f"the recording cannot be read now ({_short(exc)})"
        if x is None:
            summary.notes.append(f"{p}: {item['note']}")
        else:
            item["audio"] = f"{REPORT_DIR}/event_{k:03d}.wav"
            sf.write(folder / f"event_{k:03d}.wav", x, sr, subtype="PCM_16")
            summary.clips += 1
            if config is not None and x.size >= 2:
                item["img"] = f"{REPORT_DIR}/event_{k:03d}.png"
                plot_event(_scatter(config, x), ca, a, b, folder / f"event_{k:03d}.png")
        top.append(item)

    # The files with most events: a strip each, and their events.
    strips = []
    for k, r in enumerate([r for r in done if r["events"]][: options.n_files], 1):
        res = store.file_result(r)
        ev = sorted(by_path.get(r["path"], []), key=lambda e: -e[2])[: options.events_per_file]
        ev.sort()
        marks = [(e[0], e[1], f"#{number[(r['path'], e[0])]}" if (r["path"], e[0]) in number else "")
                 for e in by_path.get(r["path"], [])]
        img = f"{REPORT_DIR}/strip_{k:03d}.png"
        plot_strip(res.windows, marks, r["duration_s"], run.min_conf, folder / f"strip_{k:03d}.png")
        strips.append({
            "n": k, "path": r["path"], "name": r["name"], "img": img, "events": r["events"],
            "duration": clock(r["duration_s"] or 0.0), "top": r["top"],
            "list": [{"span": f"{clock(a)} – {clock(b)}", "start": a, "end": b, "peak": s,
                      "link": _source_link(r["path"], a, b), "top": number.get((r["path"], a))}
                     for a, b, s, t in ev],
            "more": r["events"] - len(ev),
        })
    summary.strips = len(strips)

    table = [{"name": r["name"], "path": r["path"], "status": r["status"],
              "duration": clock(r["duration_s"]) if r["duration_s"] is not None else "—",
              "windows": r["n_windows"], "events": r["events"], "top": r["top"], "error": r["error"] or ""}
             for r in rows[: options.max_rows]]
    failed = [(r["path"], r["error"] or "unknown error") for r in sorted(rows, key=lambda r: r["path"])
              if r["status"] != "done"]
    problems = store.problems(run.id)
    return {
        "run": run, "root": root, "totals": totals, "run_rows": _run_rows(run), "top": top,
        "n_events_option": options.n_events, "strips": strips, "n_strip_files": options.n_files,
        "files": table, "n_files_total": len(rows), "csv": f"{REPORT_DIR}/files.csv",
        "failures": [{"path": p, "reason": why} for p, why in failed[: options.max_failures]],
        "n_failures": len(failed),
        "problems": [{"path": p, "reason": why} for p, why in problems[: options.max_failures]],
        "n_problems": len(problems), "notes": summary.notes,
    }


def _scatter(config: FeatureConfig, x: np.ndarray) -> Scattergram:
    """The scattergram of a clip: in one buffer of about its own length when it is short (an event's clip),
    streamed otherwise (bounded memory also for the longest clips)."""
    sc = scattering_for(config)
    if x.size <= MAX_BATCH_SAMPLES:
        return scatter_clips(sc, [x])[0]
    return concatenate(list(sc.stream([x])))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _changed(path: str, row: dict[str, Any]) -> str | None:
    """A note when the recording is not the one that was scored (gone, or another size or time)."""
    try:
        st = os.stat(path)
    except OSError:
        return MISSING
    if row["size"] is not None and (int(st.st_size), int(st.st_mtime_ns)) != (row["size"], row["mtime_ns"]):
        return "the recording changed since the run: the clip may not match the event"
    return None


def write_report(outdir: str | os.PathLike, *, run_id: int | None = None, store_path: str | os.PathLike | None = None,
                 options: ReportOptions = ReportOptions()) -> ReportSummary:
    """Write ``OUTDIR/report.html`` and ``OUTDIR/report_files/`` for one run of the store.

    Parameters
    ----------
    outdir : path
        The detect output directory.
    run_id : int, optional
        The run (default: the latest).
    store_path : path, optional
        The store (default: ``OUTDIR/scatterbird.sqlite``).
    options : ReportOptions

    Returns
    -------
    ReportSummary

    Raises
    ------
    StoreError
        No store, or no such run.
    OutputError
        The page or its files cannot be written; nothing half-written is left (the previous report, if any,
        stays as it was).
    """
    out = Path(outdir)
    store_file = Path(store_path) if store_path is not None else out / STORE_NAME
    target = out / REPORT_NAME
    folder = out / REPORT_DIR
    staging = out / f".{REPORT_DIR}.tmp-{os.getpid()}"
    page_tmp = out / f".{REPORT_NAME}.tmp-{os.getpid()}"
    with ResultsStore(store_file) as store:
        run = store.run(run_id)
        summary = ReportSummary(path=target, run=run)
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            try:
                config: FeatureConfig | None = FeatureConfig.from_json(run.config_json)
            except (ValueError, TypeError, KeyError) as exc:  # another version's store: no scattergrams
                config = None
                summary.notes.append(f"the run's feature configuration cannot be read ({_short(exc)}): "
                                     "no scattergrams")
            data = _build(store, run, config, staging, options, summary)
            render("detect.html", page_tmp, title=f"scatterbird detect: run {run.id}",
                   heading=f"Bird activity: run {run.id}", provenance=_provenance(run, config), **data)
            # Swap in the new folder, then the page: the page never points at a half-written folder.
            old = out / f".{REPORT_DIR}.old-{os.getpid()}"
            if folder.exists():
                os.replace(folder, old)
            os.replace(staging, folder)
            os.replace(page_tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        except (OSError, sf.LibsndfileError) as exc:  # libsndfile reports a full disk as its own error
            shutil.rmtree(staging, ignore_errors=True)
            page_tmp.unlink(missing_ok=True)
            where = getattr(exc, "filename", None) or out
            cause = getattr(exc, "strerror", None) or str(exc)
            raise OutputError(where, f"cannot write the report ({cause}); the results are in the store: "
                                     f"`scatterbird report {out}` writes it again",
                              getattr(exc, "errno", None)) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            page_tmp.unlink(missing_ok=True)
            raise
    return summary

