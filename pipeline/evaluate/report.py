"""The HTML report of an evaluation or cross-validation run, and its PNG figures.

One self-contained folder: ``report.html`` refers only to files written next to it (``roc.png``,
``hist_<dataset>.png``, ``clips/*.png``) by relative paths, so the folder can be copied, zipped or served
as it is. Figures are drawn with matplotlib's object API on the Agg canvas: no display, and no change to
the global pyplot backend of the process that calls it.
"""

from __future__ import annotations

import html
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # imported for annotations only (evaluate imports this module)
    from scatterbird.pipeline.evaluate.run import Clip, DatasetResult, RunResult
    from scatterbird.pipeline.frontend.scattering import Scattergram

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def plot_roc(results: Sequence["DatasetResult"], path: str | os.PathLike) -> bool:
    """ROC curves of every labelled dataset in one plot (AUC and interval in the legend).

    Returns
    -------
    bool
        False (nothing written) when no dataset has labels of both classes.
    """
    from sklearn.metrics import roc_curve

    fig = _figure(5.2, 4.6)
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
    fig.savefig(path, dpi=90)
    return True


def plot_histogram(result: "DatasetResult", path: str | os.PathLike) -> bool:
    """Score histograms of one dataset, per class (or all clips together where labels are hidden)."""
    ok = result.ok
    if not ok.any():
        return False
    s = result.scores[ok]
    fig = _figure(4.2, 2.6)
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
    fig.savefig(path, dpi=80)
    return True


def plot_scattergram(sg: "Scattergram", path: str | os.PathLike) -> None:
    """A small image of a clip's first-order scattering channels (frequency up, time across)."""
    rows = np.flatnonzero(sg.order == 1)
    if rows.size == 0:
        rows = np.arange(sg.S.shape[0])
    img = sg.S[rows]
    freqs = sg.frequency[rows]
    order = np.argsort(freqs)  # low frequency at the bottom
    img, freqs = img[order], freqs[order]
    lo, hi = np.percentile(img, [2, 99.5])
    fig = _figure(3.4, 1.5)
    ax = fig.add_axes((0.14, 0.22, 0.84, 0.72))
    t0, t1 = sg.start_time, sg.start_time + sg.n_frames / sg.frame_rate
    ax.imshow(img, aspect="auto", origin="lower", cmap="magma", vmin=lo, vmax=hi, extent=(t0, t1, 0, img.shape[0]), interpolation="nearest")
    ticks = [i for i in np.linspace(0, img.shape[0] - 1, 3).astype(int)]
    ax.set_yticks([i + 0.5 for i in ticks])
    ax.set_yticklabels([f"{freqs[i] / 1000:.1f}k" if freqs[i] >= 1000 else f"{freqs[i]:.0f}" for i in ticks], fontsize=6)
    ax.tick_params(axis="x", labelsize=6)
    ax.set_xlabel("s", fontsize=6, labelpad=1)
    fig.savefig(path, dpi=80)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:72em;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
h3{font-size:1.02em;margin:.9em 0 .3em}
table{border-collapse:collapse;margin:.5em 0} th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left} .muted{color:#666;font-size:.9em}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start} .warn{color:#8a4b00}
.clips td{vertical-align:top;text-align:left;font-size:.85em} code{font-size:.85em;word-break:break-all}
tr.total td{font-weight:bold;background:#fafafa}
"""


def _fmt(x: float | None, nd: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def write_report(
    run: "RunResult",
    outdir: str | os.PathLike,
    worst: Mapping[str, Mapping[str, Sequence[tuple["Clip", float, Any]]]] | None = None,
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
    for old in [*out.glob("hist_*.png"), *(out / "clips").glob("*.png")]:
        old.unlink()
    e = html.escape
    parts: list[str] = []
    title = "scatterbird evaluation" if run.kind == "evaluate" else "scatterbird cross-validation (leave one dataset out)"
    parts.append(f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style></head><body>")
    parts.append(f"<h1>{e(title)}</h1>")
    m = run.model
    desc = f"model <b>{e(str(m.get('kind', '?')))}</b>"
    if m.get("model_hash"):
        desc += f" (hash <code>{e(str(m['model_hash']))}</code>)"
    if m.get("path"):
        desc += f" from <code>{e(str(m['path']))}</code>"
    if run.kind == "crossval":
        extra = m.get("unlabeled_by_dataset") or {}
        if m.get("semi_supervised"):
            unl = "the held-out dataset's audio, unlabelled"
        elif extra:
            unl = f"{sum(extra.values())} unlabelled clips belonging to the training datasets"
        else:
            unl = "none"
        desc += f"; retrained for each held-out dataset; unlabelled data: {e(unl)}"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(
        f"<p class='muted'>{desc}<br>feature config <code>{e(run.config.hash)}</code> "
        f"(sr {run.config.sample_rate} Hz, J={run.config.J}, Q=({run.config.Q1},{run.config.Q2}), order {run.config.max_order}, "
        f"threshold {e(run.config.threshold)}, pool {run.config.pool_s} s) · written {stamp}</p>"
    )

    # -- metrics table --------------------------------------------------------------------------------
    parts.append("<h2>Metrics</h2><table><tr><th class='l'>dataset</th>")
    if run.kind == "crossval":
        parts.append("<th class='l'>trained on</th>")
    parts.append("<th>clips</th><th>scored</th><th>with bird</th><th>ROC AUC</th><th>95% interval</th><th>failed</th></tr>")
    for r in run.results:
        x = r.metrics
        ci = f"{_fmt(x.ci[0])} – {_fmt(x.ci[1])}" if x.ci else "—"
        pos = "hidden" if x.positives is None else f"{x.positives} ({x.positives / max(1, x.n_scored):.0%})"
        parts.append(f"<tr><td class='l'>{e(x.name)}</td>")
        if run.kind == "crossval":
            parts.append(f"<td class='l'>{e(' + '.join(r.train_on))}</td>")
        parts.append(f"<td>{x.n}</td><td>{x.n_scored}</td><td>{pos}</td><td>{_fmt(x.auc)}</td><td>{ci}</td><td>{len(x.failed)}</td></tr>")
    span = 7 if run.kind == "crossval" else 6
    parts.append(
        f"<tr class='total'><td class='l' colspan='{span - 2}'>harmonic mean of the AUCs (DCASE 2018 score)</td>"
        f"<td>{_fmt(run.harmonic_mean_auc)}</td><td colspan='2'></td></tr></table>"
    )
    b = run.bootstrap
    if b:
        parts.append(f"<p class='muted'>Intervals: {e(str(b.get('method', 'bootstrap')))} bootstrap, {b.get('replicates')} replicates, seed {b.get('seed')}.</p>")
    links = [f"<a href='{e(f)}'>{e(f)}</a>" for f in ("metrics.json", "predictions.csv", "scores.csv") if (out / f).exists()]
    if links:
        parts.append(f"<p>Files: {' · '.join(links)}</p>")

    # -- dataset problems -------------------------------------------------------------------------------
    problems = [(r.metrics.name, p) for r in run.results for p in r.dataset.problems()]
    if problems:
        parts.append("<h2>Data checks</h2><ul>")
        parts += [f"<li class='warn'>{e(p)}</li>" for _, p in problems]
        parts.append("</ul>")

    # -- figures ----------------------------------------------------------------------------------------
    parts.append("<h2>ROC curves and score distributions</h2><div class='figs'>")
    if plot_roc(run.results, out / "roc.png"):
        run.files["roc"] = "roc.png"
        parts.append("<img src='roc.png' alt='ROC curves per dataset' width='468'>")
    elif (out / "roc.png").exists():
        (out / "roc.png").unlink()  # a stale figure from an earlier run must not be shown
    for r in run.results:
        name = f"hist_{_safe(r.metrics.name)}.png"
        if plot_histogram(r, out / name):
            run.files[f"hist:{r.metrics.name}"] = name
            parts.append(f"<img src='{e(name)}' alt='score histogram, {e(r.metrics.name)}' width='336'>")
    parts.append("</div>")

    # -- worst clips --------------------------------------------------------------------------------------
    if worst and any(v.get("fp") or v.get("fn") for v in worst.values()):
        clipdir = out / "clips"
        clipdir.mkdir(exist_ok=True)
        parts.append("<h2>Worst mistakes</h2><p class='muted'>Per dataset, the clips without birds scored highest "
                     "(false positives) and the clips with birds scored lowest (false negatives), with their "
                     "first-order scattergram (frequency up, time across).</p>")
        for dname, lists in worst.items():
            if not (lists.get("fp") or lists.get("fn")):
                continue
            parts.append(f"<h3>{e(dname)}</h3><table class='clips'><tr><th class='l'>worst false positives (no bird, high score)</th><th class='l'>worst false negatives (bird, low score)</th></tr>")
            fp, fn = list(lists.get("fp", [])), list(lists.get("fn", []))
            for i in range(max(len(fp), len(fn))):
                cells = []
                for key, lst in (("fp", fp), ("fn", fn)):
                    if i >= len(lst):
                        cells.append("<td></td>")
                        continue
                    clip, score, sg = lst[i]
                    img = ""
                    if sg is not None:
                        fname = f"clips/{_safe(dname)}__{key}{i + 1}__{_safe(clip.itemid)}.png"
                        plot_scattergram(sg, out / fname)
                        img = f"<img src='{e(fname)}' alt='scattergram of {e(clip.itemid)}' width='272'><br>"
                    else:
                        img = "<span class='warn'>(scattergram unavailable)</span><br>"
                    cells.append(f"<td>{img}<b>{e(clip.itemid)}</b> · p = {score:.3f}<br><code>{e(clip.path.name)}</code></td>")
                parts.append("<tr>" + "".join(cells) + "</tr>")
            parts.append("</table>")

    # -- failures -----------------------------------------------------------------------------------------
    failed = [(r.metrics.name, f) for r in run.results for f in r.metrics.failed]
    if failed:
        parts.append(f"<h2>Clips that could not be read ({len(failed)})</h2><table><tr><th class='l'>dataset</th><th class='l'>item</th><th class='l'>file</th><th class='l'>reason</th></tr>")
        for dname, (item, path, why) in failed[:500]:
            parts.append(f"<tr><td class='l'>{e(dname)}</td><td class='l'>{e(item)}</td><td class='l'><code>{e(path)}</code></td><td class='l'>{e(why)}</td></tr>")
        parts.append("</table>")
        if len(failed) > 500:
            parts.append(f"<p class='muted'>… and {len(failed) - 500} more: see metrics.json.</p>")
    parts.append("</body></html>\n")
    target = out / "report.html"
    target.write_text("\n".join(parts), encoding="utf-8")
    run.files["report"] = "report.html"
    return target
