"""The HTML report of an evaluation or cross-validation run, and its PNG figures.

One self-contained folder: ``report.html`` refers only to files written next to it (``roc.png``,
``reliability.png``, ``hist_<dataset>.png``, ``clips/*.png`` and the listed clips' audio, ``clips/*.wav``) by relative paths, so
the folder can be copied, zipped or served as it is. The page is the jinja2 template ``pipeline/templates/evaluate.html``, filled with plain data
prepared here; figures are drawn on :func:`~scatterbird.pipeline.html_report.new_figure` (no pyplot).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import soundfile as sf

from scatterbird.errors import AudioError
from scatterbird.pipeline.datasets import Clip
from scatterbird.pipeline.evaluate.calibration import ECE_BINS, reliability_bins
from scatterbird.pipeline.evaluate.results import DEFAULT_PROB, DEFAULTED_FILE, DatasetResult, RunResult
from scatterbird.pipeline.frontend.audio import stream_audio
from scatterbird.pipeline.frontend.scattering import Scattergram
from scatterbird.pipeline.html_report import fixed, new_figure, render, save_png, written_at

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def plot_roc(results: Sequence[DatasetResult], path: str | os.PathLike) -> bool:
    """ROC curves of every labelled dataset in one plot (AUC and interval in the legend).

    Returns
    -------
    bool
        False (nothing written) when no dataset has labels of both classes.
    """
    # imported here: every command imports this module, and scikit-learn would weigh on each `detect` process
    from sklearn.metrics import roc_curve

    fig = new_figure(5.2, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for k, r in enumerate(results):
        m = r.metrics
        if m.auc is None or math.isnan(m.auc):
            continue
        ok = r.ok
        fpr, tpr, _ = roc_curve(r.dataset.labels[ok], r.scores[ok])
        ci = f" [{m.ci[0]:.3f}, {m.ci[1]:.3f}]" if m.ci and not math.isnan(m.ci[0]) else ""
        ax.plot(fpr, tpr, color=_COLORS[k % len(_COLORS)], lw=1.6, label=f"{m.name}: AUC {m.auc:.3f}{ci}")
        drawn += 1
    if not drawn:
        return False
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.005)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC per dataset")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=90)
    return True


def plot_reliability(
    results: Sequence[DatasetResult],
    path: str | os.PathLike,
    pooled: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> bool:
    """Reliability diagram: per equal-width bin of predicted probability, the fraction of clips with birds
    against the bin's mean score (the diagonal is perfect calibration), with the bins' clip counts below.

    Parameters
    ----------
    results : sequence of DatasetResult
        Datasets with an ECE (labelled, scores in [0, 1]) are drawn, each with its ECE in the legend.
    path : path
        The PNG written.
    pooled : (labels, scores, ece), optional
        Also drawn, as "all clips pooled" (cross-validation's out-of-fold scores), when there are several
        datasets.

    Returns
    -------
    bool
        False (nothing written) when no dataset has an ECE.
    """
    curves = []
    for k, r in enumerate(results):
        if r.metrics.ece is not None:
            ok = r.ok
            curves.append((r.metrics.name, r.metrics.ece, _COLORS[k % len(_COLORS)], "-", r.dataset.labels[ok], r.scores[ok]))
    if not curves:
        return False
    if pooled is not None and len(curves) > 1:
        y, s, ece = pooled
        curves.append(("all clips pooled", ece, "0.2", "--", y, s))
    fig = new_figure(5.2, 5.6)
    ax = fig.add_axes((0.14, 0.37, 0.82, 0.56))
    hist = fig.add_axes((0.14, 0.08, 0.82, 0.2), sharex=ax)
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="perfect calibration")
    width = 1.0 / ECE_BINS / (len(curves) + 1)
    for j, (name, ece, color, ls, y, s) in enumerate(curves):
        rel = reliability_bins(y, s, ECE_BINS)
        filled = rel.count > 0
        ax.plot(rel.mean_predicted[filled], rel.observed[filled], marker="o", ms=4, lw=1.4, ls=ls, color=color,
                label=f"{name}: ECE {ece:.3f}")
        left = rel.edges[:-1] + (j + 0.5) * width  # the bins' counts side by side within each bin
        hist.bar(left[filled], rel.count[filled], width=width, align="edge", color=color, alpha=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("fraction of clips with birds")
    ax.set_title(f"Reliability ({ECE_BINS} equal-width bins)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax.tick_params(labelbottom=False)
    hist.set_xlabel("predicted probability of bird")
    hist.set_ylabel("clips")
    hist.grid(alpha=0.3, axis="y")
    save_png(fig, path, dpi=90)
    return True


def plot_histogram(result: DatasetResult, path: str | os.PathLike) -> bool:
    """Score histograms of one dataset, per class (or all clips together where labels are hidden)."""
    ok = result.ok
    if not ok.any():
        return False
    s = result.scores[ok]
    fig = new_figure(4.2, 2.6)
    ax = fig.add_subplot(1, 1, 1)
    bins = np.linspace(0.0, 1.0, 26)
    if result.dataset.has_labels:
        y = result.dataset.labels[ok]
        ax.hist(s[y == 0], bins=bins, alpha=0.6, color=_COLORS[0], label=f"no bird (n={int((y == 0).sum())})")
        ax.hist(s[y == 1], bins=bins, alpha=0.6, color=_COLORS[1], label=f"bird (n={int((y == 1).sum())})")
        ax.legend(fontsize=7)
    else:
        ax.hist(s, bins=bins, color="0.5", label=f"labels hidden (n={s.size})")
        ax.legend(fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability of bird")
    ax.set_ylabel("clips")
    ax.set_title(result.metrics.name, fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi=80)
    return True


def plot_scattergram(sg: Scattergram, path: str | os.PathLike) -> None:
    """A small image of a clip's first-order scattering channels (frequency in kHz up, time in s across).

    Drawn at the size the page shows it (340 px wide), so that its 9-point labels stay readable.
    """
    rows = np.flatnonzero(sg.order == 1)
    if rows.size == 0:
        rows = np.arange(sg.S.shape[0])
    img = sg.S[rows]
    freqs = sg.frequency[rows]
    order = np.argsort(freqs)  # low frequency at the bottom
    img, freqs = img[order], freqs[order]
    lo, hi = np.percentile(img, [2, 99.5])
    fig = new_figure(3.4, 1.7)
    ax = fig.add_axes((0.19, 0.27, 0.77, 0.69))
    t0, t1 = sg.start_time, sg.start_time + sg.n_frames / sg.frame_rate
    ax.imshow(img, aspect="auto", origin="lower", cmap="magma", vmin=lo, vmax=hi, extent=(t0, t1, 0, img.shape[0]), interpolation="nearest")
    ticks = [i for i in np.linspace(0, img.shape[0] - 1, 3).astype(int)]
    ax.set_yticks([i + 0.5 for i in ticks])  # the rows are wavelets on a log axis: label three of them
    ax.set_yticklabels([f"{freqs[i] / 1000:.2g}" for i in ticks], fontsize=9)
    ax.set_ylabel("frequency (kHz)", fontsize=9, labelpad=2)
    ax.tick_params(axis="x", labelsize=9)
    ax.set_xlabel("time (s)", fontsize=9, labelpad=1)
    save_png(fig, path, dpi=100)


#: Longest audio excerpt written for a listed clip (the challenge clips are 10 s long).
MAX_AUDIO_S = 10.0


def clip_audio(clip: Clip, out: Path, name: str, sample_rate: int) -> str | None:
    """A relative link the report can play for a clip.

    The clip itself when it lies inside the report's folder; otherwise its first :data:`MAX_AUDIO_S` s,
    mono at ``sample_rate`` (what the detector heard), written as 16-bit WAV to ``out/name``.

    Returns
    -------
    str or None
        The link (URL-quoted, relative to ``out``); None when the clip cannot be read.
    """
    try:
        return quote(clip.path.resolve().relative_to(out.resolve()).as_posix())
    except ValueError:  # outside the folder: a link would break when the folder is copied
        pass
    take = int(MAX_AUDIO_S * sample_rate)
    parts, n = [], 0
    try:
        blocks = iter(stream_audio(clip.path, sample_rate))
    except AudioError:
        return None
    try:
        for b in blocks:
            parts.append(b)
            n += b.size
            if n >= take:
                break
    except AudioError:
        return None
    finally:
        blocks.close()  # stops the decoder early and closes the file
    if not n:
        return None
    sf.write(out / name, np.concatenate(parts)[:take], sample_rate, subtype="PCM_16")
    return quote(name)


#: Rows of the "could not be read" table shown; the rest are in metrics.json.
MAX_FAILED_ROWS = 500


def _provenance(run: RunResult) -> dict[str, Any]:
    """Model, feature configuration and time of writing, as ``base.html`` shows them."""
    m = run.model
    note = None
    if run.kind == "crossval":
        extra = m.get("unlabeled_by_dataset") or {}
        if m.get("semi_supervised"):
            unl = "the held-out dataset's audio, unlabeled"
        elif extra:
            unl = f"{sum(extra.values())} unlabeled clips belonging to the training datasets"
        else:
            unl = "none"
        note = f"retrained for each held-out dataset; unlabeled data: {unl}"
    c = run.config
    return {
        "model": {"kind": str(m.get("kind", "?")), "hash": m.get("model_hash"), "path": m.get("path"), "note": note},
        "config": {
            "hash": c.hash,
            "details": f"sr {c.sample_rate} Hz, J={c.J}, Q=({c.Q1},{c.Q2}), order {c.max_order}, "
            f"threshold {c.threshold}, pool {c.pool_s} s",
        },
        "written": written_at(),
    }


def _metrics_rows(run: RunResult) -> list[dict[str, Any]]:
    """One row of the metrics table a dataset."""
    rows = []
    for r in run.results:
        x = r.metrics
        rows.append({
            "name": x.name,
            "trained_on": " + ".join(r.train_on),
            "n": x.n,
            "scored": x.n_scored,
            "positives": "hidden" if x.positives is None else f"{x.positives} ({x.positives / max(1, x.n_scored):.0%})",
            "auc": x.auc,
            "ci": f"{fixed(x.ci[0])} – {fixed(x.ci[1])}" if x.ci else "—",
            "failed": len(x.failed),
            "warning": x.warning,
            "ece": x.ece,
        })
    return rows


def _pooled_row(p: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The table row of every held-out clip together (:meth:`RunResult.pooled`: AUC, interval, ECE)."""
    if p is None:
        return None
    ci = p["roc_auc_ci95"]
    return {
        "n": p["n"],
        "positives": f"{p['positives']} ({p['positives'] / max(1, p['n']):.0%})",
        "auc": p["roc_auc"],
        "ci": f"{fixed(ci[0])} – {fixed(ci[1])}" if ci else "—",
        "ece": p["ece"],
    }


def _worst_tables(
    out: Path, worst: Mapping[str, Mapping[str, Sequence[tuple[Clip, float, Any]]]] | None, sample_rate: int
) -> list[dict[str, Any]]:
    """Per dataset with listed clips, rows of (false positive, false negative) cells; draws their
    scattergrams and gives each an audio link (:func:`clip_audio`)."""
    tables: list[dict[str, Any]] = []
    for dname, lists in (worst or {}).items():
        fp, fn = list(lists.get("fp", [])), list(lists.get("fn", []))
        if not (fp or fn):
            continue
        (out / "clips").mkdir(exist_ok=True)
        rows = []
        for i in range(max(len(fp), len(fn))):
            cells: list[dict[str, Any] | None] = []
            for key, lst in (("fp", fp), ("fn", fn)):
                if i >= len(lst):
                    cells.append(None)
                    continue
                clip, score, sg = lst[i]
                stem = f"clips/{_safe(dname)}__{key}{i + 1}__{_safe(clip.itemid)}"
                img = None
                if sg is not None:
                    img = f"{stem}.png"
                    plot_scattergram(sg, out / img)
                audio = clip_audio(clip, out, f"{stem}.wav", sample_rate)
                cells.append({"img": img, "audio": audio, "itemid": clip.itemid, "score": score, "file": clip.path.name})
            rows.append(cells)
        tables.append({"name": dname, "rows": rows})
    return tables


def write_report(
    run: RunResult,
    outdir: str | os.PathLike,
    worst: Mapping[str, Mapping[str, Sequence[tuple[Clip, float, Any]]]] | None = None,
) -> Path:
    """Write ``report.html`` and its figures into ``outdir``.

    Parameters
    ----------
    run : RunResult
        Its results, metrics and model description.
    outdir : path
        The run's output folder (``metrics.json`` etc. are linked when present there).
    worst : mapping, optional
        Per dataset name, ``{"fp": [...], "fn": [...]}`` lists of ``(clip, score, scattergram or None)``:
        the worst false positives and false negatives, shown with a small scattergram each.

    Returns
    -------
    Path
        The HTML file.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    # figures of an earlier run in the same folder would otherwise linger, unreferenced or misleading
    for old in [*out.glob("hist_*.png"), *(out / "clips").glob("*.png"), *(out / "clips").glob("*__f[pn][0-9]*__*.wav")]:
        old.unlink()
    roc = None
    if plot_roc(run.results, out / "roc.png"):
        roc = run.files["roc"] = "roc.png"
    elif (out / "roc.png").exists():
        (out / "roc.png").unlink()  # a stale figure from an earlier run must not be shown
    reliability = None
    pooled = run.pooled() if run.kind == "crossval" else None
    pooled_curve = (*run.pooled_scores(), pooled["ece"]) if pooled and pooled["ece"] is not None else None
    if plot_reliability(run.results, out / "reliability.png", pooled_curve):
        reliability = run.files["reliability"] = "reliability.png"
    elif (out / "reliability.png").exists():
        (out / "reliability.png").unlink()
    histograms = []
    for r in run.results:
        name = f"hist_{_safe(r.metrics.name)}.png"
        if plot_histogram(r, out / name):
            run.files[f"hist:{r.metrics.name}"] = name
            histograms.append({"src": name, "name": r.metrics.name})
    failed = [
        {"dataset": r.metrics.name, "item": item, "path": path, "reason": why}
        for r in run.results
        for item, path, why in r.metrics.failed
    ]
    b = run.bootstrap
    title = "scatterbird evaluation" if run.kind == "evaluate" else "scatterbird cross-validation (leave one dataset out)"
    target = render(
        "evaluate.html",
        out / "report.html",
        title=title,
        provenance=_provenance(run),
        crossval=run.kind == "crossval",
        metrics=_metrics_rows(run),
        pooled=_pooled_row(pooled),
        ece_bins=ECE_BINS,
        harmonic_mean=run.harmonic_mean_auc,
        bootstrap={"method": b.get("method", "bootstrap"), "replicates": b.get("replicates"), "seed": b.get("seed")}
        if b
        else None,
        files=[f for f in ("metrics.json", "predictions.csv", DEFAULTED_FILE, "scores.csv") if (out / f).exists()],
        default_prob=DEFAULT_PROB,
        defaulted_file=DEFAULTED_FILE if (out / DEFAULTED_FILE).exists() else None,
        problems=[p for r in run.results for p in r.dataset.problems()],
        roc=roc,
        reliability=reliability,
        histograms=histograms,
        worst=_worst_tables(out, worst, run.config.sample_rate),
        failed=failed[:MAX_FAILED_ROWS],
        n_failed=len(failed),
    )
    run.files["report"] = "report.html"
    return target
