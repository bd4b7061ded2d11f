"""Write an :class:`~pipeline.analysis.Analysis` to a directory: ``analysis.json``, PNG figures
(matplotlib, drawn without pyplot) and ``index.html`` (the jinja2 template ``pipeline/templates/analysis.html``)
showing them with the main numbers.

Only figures whose stage ran are written, and the page links only to files that were written.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from scatterbird.pipeline.analysis.report_generative import (
    GENERATIVE_FIGURES,
    generative_figure_makers,
    generative_page,
)
from scatterbird.pipeline.html_report import new_figure, render, save_png, table, written_at

#: Figure files, by the stage that feeds them.
FIGURES = {
    "templates.png": "templates",
    "codes.png": "codes",
    "hamming.png": "codes",
    "regions_path.png": "power_diagram",
    "region_slice.png": "power_diagram",
    "beta_sweep.png": "beta_sweep",
    "rugosity.png": "rugosity",
    **GENERATIVE_FIGURES,
}

#: Columns of the codes table and of the beta-sweep tables, in order (those present are shown).
CODE_KEYS = [
    "layer", "part", "units", "unique_codes", "unique_regions", "code_entropy_bits", "unit_entropy_bits",
    "unit_entropy_normalised", "mean_hamming", "same_class_shared_region", "diff_class_shared_region",
    "hamming_within", "hamming_between", "knn1_accuracy",
]
BETA_KEYS = ["beta", "eta", "auc", "accuracy", "ece", "nll", "brier", "agreement", "mean_abs_dp", "mean_p"]


def _jsonable(v: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays converted, NaN and infinities as null."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def _layout(fig) -> None:
    """Fixed margins (tight_layout measures every tick label: seconds per figure on a busy machine)."""
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.12, top=0.9, wspace=0.35, hspace=0.55)


def _first_order_view(img: np.ndarray, order: np.ndarray | None, frequency: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The first-order channels of a (channels, frames) image sorted by frequency (ascending), with their
    frequencies; the whole image when there is no channel metadata."""
    if order is None or frequency is None or len(order) != img.shape[0] or not (np.asarray(order) == 1).any():
        return img, None
    idx = np.nonzero(np.asarray(order) == 1)[0]
    idx = idx[np.argsort(np.asarray(frequency)[idx])]
    return img[idx], np.asarray(frequency)[idx]


def _show_tf(ax, img: np.ndarray, freqs: np.ndarray | None, title: str, symmetric: bool) -> None:
    if symmetric:
        v = float(np.abs(img).max()) or 1.0
        im = ax.imshow(img, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
    else:
        im = ax.imshow(img, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("frame", fontsize=7)
    if freqs is not None:
        ticks = np.linspace(0, len(freqs) - 1, min(5, len(freqs))).astype(int)
        ax.set_yticks(ticks)
        ax.set_yticklabels([f"{freqs[t] / 1000:.1f}" for t in ticks], fontsize=6)
        ax.set_ylabel("kHz (order 1)", fontsize=7)
    else:
        ax.set_ylabel("channel", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.figure.colorbar(im, ax=ax, fraction=0.04)


def _fig_templates(a: dict, arrays: dict, path: Path) -> None:
    order, freq = arrays.get("order"), arrays.get("frequency")
    X, T, C = a["inputs"], a["log_odds_templates"], a["centroid_layer1"]
    names, labels = arrays["names"], arrays.get("labels")
    k = min(2, X.shape[0])
    extra = [key for key in ("mean_template_bird", "mean_template_nobird") if key in a]
    rows = k + (1 if extra else 0)
    fig = new_figure(13, 2.6 * rows)
    axes = fig.subplots(rows, 3, squeeze=False)
    for i in range(k):
        lab = "" if labels is None else (" (bird)" if labels[i] == 1 else " (no bird)")
        img, f = _first_order_view(X[i], order, freq)
        _show_tf(axes[i, 0], img, f, f"input {names[i]}{lab}", symmetric=False)
        img, f = _first_order_view(T[i], order, freq)
        _show_tf(axes[i, 1], img, f, "template of the bird log-odds A[x]", symmetric=True)
        img, f = _first_order_view(C[i], order, freq)
        _show_tf(axes[i, 2], img, f, "layer-1 centroid J^T 1", symmetric=True)
    if extra:
        for j, key in enumerate(extra):
            img, f = _first_order_view(a[key], order, freq)
            _show_tf(axes[rows - 1, j], img, f, key.replace("_", " ") + " (mean over clips)", symmetric=True)
        for j in range(len(extra), 3):
            axes[rows - 1, j].axis("off")
    _layout(fig)
    save_png(fig, path, dpi=90)


def _fig_codes(stats: list[dict], nearest: list[np.ndarray] | None, path: Path) -> None:
    """Left: how far apart the clips' codes are per layer; right: the code statistics in [0, 1].

    The count of cells occupied is not drawn: with a few dozen clips in a space of thousands of units every
    clip has a cell of its own at every layer, and the curve is a flat line at the clip count; the distance
    to the nearest other clip's code says how far from sharing a cell they are. The counts go in the title.
    """
    layers = [s["layer"] for s in stats]
    fig = new_figure(11, 3.6)
    axes = fig.subplots(1, 2)
    ax = axes[0]
    if nearest is not None and len(nearest) == len(layers) and all(len(v) for v in nearest):
        med = np.array([np.median(v) for v in nearest])
        lo = np.array([np.min(v) for v in nearest])
        hi = np.array([np.max(v) for v in nearest])
        ax.errorbar(layers, med, yerr=[med - lo, hi - med], marker="o", capsize=3,
                    label="to the nearest other clip (median, min-max)")
    for key, lab in (("hamming_within", "mean, same class"), ("hamming_between", "mean, other class"),
                     ("mean_hamming", "mean, all pairs")):
        vals = [s.get(key) for s in stats]
        if all(v is not None and np.isfinite(v) for v in vals):
            ax.plot(layers, vals, marker="o", ls="--" if key == "mean_hamming" else "-", label=lab)
            if key == "hamming_between":
                break  # with both classes, the pooled mean adds nothing
    ax.set_xlabel("layer")
    ax.set_ylabel("Hamming distance (fraction of units)")
    ax.set_ylim(-0.02, 1.02)
    cells = ", ".join(str(s["unique_regions"]) for s in stats)
    ax.set_title(f"distance between the clips' codes\n(cells occupied, layers 1..l: {cells})", fontsize=9)
    ax.legend(fontsize=7)
    for key, lab in (
        ("unit_entropy_normalised", "mean unit entropy / log2(pieces)"),
        ("same_class_shared_region", "same-class pairs sharing a region"),
        ("knn1_accuracy", "1-NN accuracy (Hamming)"),
    ):
        vals = [s.get(key) for s in stats]
        if all(v is not None for v in vals):
            axes[1].plot(layers, vals, marker="o", label=lab)
    axes[1].set_xlabel("layer")
    axes[1].set_ylim(-0.02, 1.02)
    for a in axes:
        a.set_xticks(layers)
    axes[1].set_title("code statistics", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.14, top=0.85, wspace=0.3)
    save_png(fig, path, dpi=90)


def _fig_hamming(a: dict, labels: np.ndarray | None, path: Path, n_layers: int) -> None:
    order = np.argsort(labels, kind="stable") if labels is not None else np.arange(a["hamming_first"].shape[0])
    fig = new_figure(10, 4.2)
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "hamming_first", "layer 1"), (axes[1], "hamming_last", f"layer {n_layers}")):
        D = a[key][np.ix_(order, order)]
        im = ax.imshow(D, cmap="viridis", interpolation="nearest")
        ax.set_title(f"Hamming VQ distance, {title}", fontsize=9)
        if labels is not None:
            cut = int((labels == 0).sum()) - 0.5
            ax.axhline(cut, color="w", lw=0.8)
            ax.axvline(cut, color="w", lw=0.8)
            ax.set_xlabel("clips (no bird | bird)", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
    _layout(fig)
    save_png(fig, path, dpi=90)


def _fig_path(p: dict, path: Path) -> None:
    fig = new_figure(9, 4.8)
    ax, bx = fig.subplots(2, 1, sharex=True)
    ax.plot(p["u"], p["log_odds"], lw=0.8, color="k")
    ax.set_ylabel("bird log-odds")
    ax.set_title(f"exact path through {len(p['u']) - 1} linear regions along x -> time_shift(x) (one clip)", fontsize=9)
    layers = np.asarray(p["layer"])
    bu = np.asarray(p["u"])[1:-1]
    groups = [bu[layers == l] for l in np.unique(layers)]
    if groups:
        bx.hist(groups, bins=50, range=(0, 1), stacked=True,
                label=[f"layer {l} ({(layers == l).sum()})" for l in np.unique(layers)])
        bx.legend(fontsize=7)
    bx.set_xlabel("u")
    bx.set_ylabel("region changes")
    fig.subplots_adjust(left=0.09, right=0.97, bottom=0.12, top=0.92, hspace=0.15)
    save_png(fig, path, dpi=90)


def _slice_ticks(ax) -> None:
    """At most five ticks per axis, small values as mantissas with a shared power of ten (the zoomed slice
    spans about 1e-3 of the clip distance: written out in full, its tick labels run into each other)."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=5))
        fmt = ScalarFormatter(useMathText=True)
        fmt.set_powerlimits((-2, 3))
        axis.set_major_formatter(fmt)


def _slice_panel(ax, sl: dict, names: list[str], title: str) -> None:
    region = sl["region"]
    s, t = sl["s"], sl["t"]
    ext = [s[0], s[-1], t[0], t[-1]]
    lo = sl["log_odds"]
    if lo.min() < 0 < lo.max():  # both decisions in view: diverging around the boundary
        v = float(np.abs(lo).max())
        im = ax.imshow(lo, origin="lower", extent=ext, cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest", aspect="auto")
    else:  # one decision: the local variation of the (piecewise-linear) log-odds
        im = ax.imshow(lo, origin="lower", extent=ext, cmap="viridis", interpolation="nearest", aspect="auto")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, label="bird log-odds")
    n_regions = int(region.max()) + 1
    if n_regions < 0.25 * region.size:  # boundaries are only readable when regions span several grid cells
        edge = np.zeros(region.shape, dtype=bool)  # a grid point whose right or upper neighbour differs
        edge[:, :-1] |= region[:, 1:] != region[:, :-1]
        edge[:-1, :] |= region[1:, :] != region[:-1, :]
        overlay = np.zeros((*region.shape, 4))
        overlay[edge] = (0, 0, 0, 0.55)
        ax.imshow(overlay, origin="lower", extent=ext, interpolation="nearest", aspect="auto")
    else:
        title = f"{title} (boundaries finer than the grid)"
    if lo.min() < 0 < lo.max():
        ax.contour(s, t, lo, levels=[0.0], colors="lime", linewidths=1.5)
    for (x, y), n in zip(((0, 0), (1, 0), (0, 1)), names):
        if s[0] <= x <= s[-1] and t[0] <= y <= t[-1]:
            ax.plot(x, y, "o", color="yellow", mec="k")
            ax.annotate(n, (x, y), fontsize=7, color="k", xytext=(4, 4), textcoords="offset points",
                        bbox={"boxstyle": "round", "fc": "w", "alpha": 0.7})
    _slice_ticks(ax)
    ax.set_xlabel("s")
    ax.set_ylabel("t")
    ax.set_title(f"{title}: {int(region.max()) + 1} regions on the {region.shape[0]}x{region.shape[1]} grid", fontsize=8)


def _fig_slice(slices: dict, names: list[str], path: Path) -> None:
    keys = [k for k in ("wide", "zoom") if k in slices]
    fig = new_figure(6.2 * len(keys), 5.4)
    axes = fig.subplots(1, len(keys), squeeze=False)
    titles = {"wide": "plane through the three clips", "zoom": f"zoom on {names[0]}"}
    for ax, k in zip(axes[0], keys):
        _slice_panel(ax, slices[k], names, titles[k])
    fig.suptitle("partition on x0 + s (x1 - x0) + t (x2 - x0)  (dark: region boundaries; green: decision boundary)", fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.93, bottom=0.1, top=0.88, wspace=0.45)
    save_png(fig, path, dpi=90)


def _fig_beta(rows: list[dict], path: Path, rows_act: list[dict] | None = None) -> None:
    fig = new_figure(8, 3.8)
    ax = fig.subplots()
    colours = {"auc": "C0", "accuracy": "C1", "ece": "C2", "agreement": "C3", "mean_abs_dp": "C4"}
    for data, style, tag in ((rows, "-o", "all"), (rows_act, "--s", "activations only")):
        if not data:
            continue
        b = [r["beta"] for r in data]
        for key, col in colours.items():
            vals = [r.get(key) for r in data]
            if all(v is not None and np.isfinite(v) for v in vals):
                ax.plot(b, vals, style, color=col, ms=3, label=f"{key} ({tag})")
    ax.set_xlabel("beta (1 = hard network, 0.5 = swish, 0 = linear)")
    ax.invert_xaxis()
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title("post-hoc beta-VQ sweep (no retraining)", fontsize=9)
    _layout(fig)
    save_png(fig, path, dpi=90)


def _fig_rugosity(values: dict[str, list[float]], regions: dict | None, path: Path) -> None:
    dirs = [k for k in values if not k.startswith("random@")]
    x = np.arange(len(dirs))
    fig = new_figure(11 if regions else 6, 3.6)
    axes = fig.subplots(1, 2 if regions else 1, squeeze=False)
    ax = axes[0, 0]
    aud = [np.mean(values[d]) for d in dirs]
    rnd = [np.mean(values[f"random@{d}"]) for d in dirs]
    ax.bar(x - 0.2, aud, 0.4, label="audio direction")
    ax.bar(x + 0.2, rnd, 0.4, label="random, same step")
    ax.set_xticks(x)
    ax.set_xticklabels(dirs, fontsize=7)
    if min(aud + rnd) > 0:
        ax.set_yscale("log")
    ax.set_ylabel("||J(x+eps v) - J(x)|| / eps")
    ax.set_title("rugosity per direction (mean over clips)", fontsize=9)
    ax.legend(fontsize=7)
    if regions:
        ax = axes[0, 1]
        aud = [regions[d]["regions"]["mean"] for d in dirs if d in regions]
        rnd = [regions[f"random@{d}"]["regions"]["mean"] for d in dirs if f"random@{d}" in regions]
        ax.bar(x - 0.2, aud, 0.4, label="audio direction")
        ax.bar(x + 0.2, rnd, 0.4, label="random, same step")
        ax.set_xticks(x)
        ax.set_xticklabels(dirs, fontsize=7)
        ax.set_ylabel("linear regions crossed")
        ax.set_title("exact regions along x -> aug(x)", fontsize=9)
        ax.legend(fontsize=7)
    _layout(fig)
    save_png(fig, path, dpi=90)


def _page(summary: dict, figures: list[str]) -> dict[str, Any]:
    """The data ``analysis.html`` lays out: the summary's numbers as tables, by stage."""
    s = _jsonable(summary)
    m = s.get("model")
    page: dict[str, Any] = {
        "title": "scatterbird spline analysis",
        "heading": "Spline analysis of a detector",
        "provenance": {
            "model": {"kind": str(m["kind"]), "hash": m["model_hash"], "path": str(m["path"]), "note": m.get("note")} if m else None,
            "config": {"hash": m["feature_config_hash"], "details": None} if m and m.get("feature_config_hash") else None,
            "written": written_at(),
        },
        "figures": figures,
        "layers": ", ".join(s["layers"]),
        **{k: s[k] for k in ("n_clips", "labelled", "n_frames", "n_channels", "input_dim")},
        "n_bird": s.get("n_bird"),
        "problems": table(s["problems"], ["path", "reason"]) if s.get("problems") else None,
    }
    if "templates" in s:
        t = s["templates"]
        row = {
            "bias share per logit": t["bias_share_mean_per_logit"],
            "template overlap |cos|": t["template_overlap"],
            "cos(template of predicted class, x)": t["predicted_template_input_cosine"],
            "cos(log-odds template, x)": t["log_odds_template_input_cosine"],
        }
        page["templates"] = table([row], list(row))
    if "codes" in s:
        per_layer = s["codes"]["per_layer"]
        page["codes"] = {
            "per_layer": table(per_layer, [k for k in CODE_KEYS if k in per_layer[0]]),
            "retrieval": table(
                s["codes"]["retrieval"], ["layer", "query", "query_label", "neighbours", "neighbour_labels", "distances"]
            ),
        }
    if "power_diagram" in s:
        p = s["power_diagram"]
        page["power_diagram"] = {
            "centroids": table(p["centroids"], ["layer", "centroid_norm", "radius", "centroid_input_cosine"]),
            "regions_along": table(
                [{"path": k, **v} for k, v in p["regions_along"].items()],
                ["path", "regions", "regions_per_unit_distance", "decision_flips", "new_breakpoints_per_layer_mean"],
            ),
            "local_complexity": table(p["local_complexity"]["per_layer"], ["layer", "cut_units", "cut_fraction"]),
            "slices": [
                {
                    "what": what,
                    "extent": [round(e, 4) for e in p["slice"][key]["extent"]],
                    "regions": p["slice"][key]["regions"],
                    "grid": p["slice"]["grid"],
                    "regions_per_layer": p["slice"][key]["regions_per_layer"],
                }
                for key, what in (("wide", "plane through the three clips"), ("zoom", "zoom on the first clip"))
                if key in p["slice"]
            ],
        }
    if "beta_sweep" in s:
        act = s.get("beta_sweep_activations")
        page["beta_sweep"] = {
            "all": table(s["beta_sweep"], [k for k in BETA_KEYS if k in s["beta_sweep"][0]]),
            "activations": table(act, [k for k in BETA_KEYS if k in act[0]]) if act else None,
        }
    if "rugosity" in s:
        r = s["rugosity"]
        page["rugosity"] = {
            "per_direction": table(
                [{"direction": k, **v} for k, v in r["per_direction"].items()], ["direction", "mean", "median", "p90", "eps_mean"]
            ),
            "ratio": table(
                [{"direction": k, "ratio to random": v} for k, v in r["ratio_to_random"].items()], ["direction", "ratio to random"]
            ),
        }
    for stage in ("templates", "codes", "power_diagram", "beta_sweep", "rugosity"):
        page.setdefault(stage, None)
    page.update(generative_page(s))
    return page


def write_report(outdir: str | os.PathLike, analysis: Any) -> list[Path]:
    """Write ``analysis.json``, the figures of the stages that ran, and ``index.html``.

    Returns
    -------
    list of Path
        Every file written.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    s, a = analysis.summary, analysis.arrays
    written: list[Path] = []
    makers: dict[str, Callable[[Path], None]] = {}
    if "templates" in a:
        makers["templates.png"] = lambda p: _fig_templates(a["templates"], a, p)
    if "codes" in a:
        makers["codes.png"] = lambda p: _fig_codes(s["codes"]["per_layer"], a["codes"].get("nearest_hamming"), p)
        makers["hamming.png"] = lambda p: _fig_hamming(a["codes"], a.get("labels"), p, len(s["codes"]["per_layer"]))
    if "power_diagram" in a:
        if a["power_diagram"].get("path") is not None:
            makers["regions_path.png"] = lambda p: _fig_path(a["power_diagram"]["path"], p)
        makers["region_slice.png"] = lambda p: _fig_slice(a["power_diagram"]["slice"], s["power_diagram"]["slice"]["anchors"], p)
    if "beta_sweep" in s:
        makers["beta_sweep.png"] = lambda p: _fig_beta(s["beta_sweep"], p, s.get("beta_sweep_activations"))
    if "rugosity" in a:
        regions = s.get("power_diagram", {}).get("regions_along")
        makers["rugosity.png"] = lambda p: _fig_rugosity(a["rugosity"]["values"], regions, p)
    makers.update(generative_figure_makers(s, a))
    figures = []
    for name, make in makers.items():
        make(out / name)
        written.append(out / name)
        figures.append(name)
    with open(out / "analysis.json", "w") as f:
        json.dump(_jsonable(s), f, indent=1, allow_nan=False)
    written.append(out / "analysis.json")
    written.append(render("analysis.html", out / "index.html", **_page(s, figures)))
    return written
