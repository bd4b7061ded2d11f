"""Figures and page tables of the generative stages (:mod:`pipeline.analysis.generative`), for
:mod:`pipeline.analysis.report`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scatterbird.pipeline.html_report import new_figure, save_png, table

#: Figure files, by the stage that feeds them.
GENERATIVE_FIGURES = {
    "em_novelty.png": "em_novelty",
    "gan_ensemble.png": "gan_ensemble",
    "group_ae.png": "group_ae",
}


def _layout(fig) -> None:
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.14, top=0.88, wspace=0.35, hspace=0.55)


def _fig_em(a: dict, s: dict, path: Path) -> None:
    fig = new_figure(12, 3.8)
    ax0, ax1, ax2 = fig.subplots(1, 3)
    tr, ot = a["train"], a["others"]
    if tr.shape[1] >= 2:
        if len(ot):
            ax0.scatter(ot[:, 0], ot[:, 1], s=3, c="C3", alpha=0.35, label="other windows")
        ax0.scatter(tr[:, 0], tr[:, 1], s=3, c="C0", alpha=0.5, label="fitted (reference) windows")
        smp = a.get("samples")
        if smp is not None and len(smp):
            ax0.scatter(smp[:, 0], smp[:, 1], s=2, c="0.4", alpha=0.3, label="model samples")
        if a.get("curve") is not None:
            cv = np.asarray(a["curve"])
            ax0.plot(cv[:, 0], cv[:, 1], "k-", lw=1.2, label="generator g(z)")
        ax0.set_xlabel("PC 1 (standardised)")
        ax0.set_ylabel("PC 2 (standardised)")
        ax0.legend(fontsize=6, markerscale=3)
    ax0.set_title(f"window embeddings; {s['n_regions']} latent regions", fontsize=9)
    h = a["history"]
    ax1.plot(np.arange(len(h)), h, "o-", ms=3)
    ax1.set_xlabel("EM iteration")
    ax1.set_ylabel("mean exact log p(x)")
    ax1.set_title("exact log-likelihood during EM", fontsize=9)
    nov, role, y = a["novelty"], a["role"], a.get("labels")
    groups: list[tuple[str, np.ndarray]] = []
    unseen = role != "fitted"
    if y is not None:
        groups = [("held-out no bird", unseen & (y == 0)), ("bird", unseen & (y == 1)), ("fitted", role == "fitted")]
    else:
        groups = [("held-out reference", role == "held-out reference"), ("other", role == "scored"), ("fitted", role == "fitted")]
    data = [nov[m] for _, m in groups if m.any()]
    labels = [g for g, m in groups if m.any()]
    if data:
        bins = np.linspace(min(d.min() for d in data), max(d.max() for d in data) + 1e-9, 20)
        for d, lab in zip(data, labels):
            ax2.hist(d, bins=bins, alpha=0.5, label=lab)
        ax2.legend(fontsize=7)
    ax2.set_xlabel("clip novelty (- mean log p, nats)")
    ax2.set_title("novelty per clip", fontsize=9)
    _layout(fig)
    save_png(fig, path, dpi=90)


def _fig_gan(a: dict, s: dict, path: Path) -> None:
    samples = a["samples"]
    n = len(samples)
    fig = new_figure(3.4 * n, 3.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    real = a["real"]
    if real.shape[1] < 2:  # one principal direction only: show it against the sample index
        real = np.column_stack([real[:, 0], np.zeros(len(real))])
        samples = {k: np.column_stack([v[:, 0], np.zeros(len(v))]) for k, v in samples.items()}
    rows = {float(r["coupling"]): r for r in s["per_coupling"]}
    for ax, (lam, smp) in zip(axes, samples.items()):
        ax.scatter(real[:, 0], real[:, 1], s=3, c="C0", alpha=0.4, label="bird windows")
        ax.scatter(smp[:, 0], smp[:, 1], s=3, c="C3", alpha=0.4, label="generated")
        r = rows.get(lam, {})
        ax.set_title(f"lambda {lam:g}: P {r.get('precision', float('nan')):.2f} R {r.get('recall', float('nan')):.2f}",
                     fontsize=9)
        ax.set_xlabel("PC 1")
    axes[0].set_ylabel("PC 2")
    axes[0].legend(fontsize=6, markerscale=3)
    _layout(fig)
    save_png(fig, path, dpi=90)


def _fig_group_ae(rows: list[dict], path: Path) -> None:
    fig = new_figure(10, 3.6)
    ax0, ax1 = fig.subplots(1, 2)
    sizes = sorted({r["train_windows"] for r in rows})
    for i, gw in enumerate(sorted({r["group_weight"] for r in rows})):
        sel = sorted((r for r in rows if r["group_weight"] == gw), key=lambda r: r["train_windows"])
        n = [r["train_windows"] for r in sel]
        lab = "no regulariser" if gw == 0 else f"group regulariser ({gw:g})"
        ax0.plot(n, [r["gap"] for r in sel], "o-", color=f"C{i}", label=lab)
        ax1.plot(n, [r["train_error"] for r in sel], "o--", color=f"C{i}", label=f"train, {lab}")
        ax1.plot(n, [r["test_error"] for r in sel], "o-", color=f"C{i}", label=f"held out, {lab}")
    for ax in (ax0, ax1):
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(v) for v in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training windows")
        ax.legend(fontsize=6)
    ax0.set_ylabel("held-out - train error")
    ax0.set_title("generalisation gap", fontsize=9)
    ax1.set_ylabel("reconstruction MSE")
    ax1.set_title("reconstruction error (dashed: train, solid: held out)", fontsize=9)
    _layout(fig)
    save_png(fig, path, dpi=90)


def generative_figure_makers(s: dict, a: dict) -> dict[str, Callable[[Path], None]]:
    """Figure writers of the generative stages that ran (and were not skipped)."""
    makers: dict[str, Callable[[Path], None]] = {}
    if a.get("em_novelty"):
        makers["em_novelty.png"] = lambda p: _fig_em(a["em_novelty"], s["em_novelty"], p)
    if a.get("gan_ensemble"):
        makers["gan_ensemble.png"] = lambda p: _fig_gan(a["gan_ensemble"], s["gan_ensemble"], p)
    if a.get("group_ae"):
        makers["group_ae.png"] = lambda p: _fig_group_ae(a["group_ae"]["rows"], p)
    return makers


def generative_page(s: dict) -> dict[str, Any]:
    """The page data of the generative stages (``None`` for a stage that did not run)."""
    page: dict[str, Any] = {k: None for k in ("em_novelty", "gan_ensemble", "group_ae")}
    if "em_novelty" in s:
        e = s["em_novelty"]
        if "skipped" in e:
            page["em_novelty"] = {"skipped": e["skipped"]}
        else:
            keys = ["reference", "n_fit_windows", "embedding_units", "pca_dim", "latent_dim", "n_regions",
                    "train_mean_log_likelihood", "novelty_held_out_reference", "novelty_other",
                    "auc_bird_vs_held_out_no_bird"]
            page["em_novelty"] = {
                "skipped": None,
                "summary": table([e], [k for k in keys if k in e]),
                "most_novel": table(e["most_novel"], ["clip", "novelty", "label", "role"]),
            }
    if "gan_ensemble" in s:
        g = s["gan_ensemble"]
        if "skipped" in g:
            page["gan_ensemble"] = {"skipped": g["skipped"]}
        else:
            cols = [k for k in ("coupling", "precision", "recall", "f1", "clusters_covered", "cluster_coverage", "outside",
                                "parameter_spread", "seconds")
                    if k in g["per_coupling"][0]]
            page["gan_ensemble"] = {
                "skipped": None,
                "rows": table(g["per_coupling"], cols),
                "sweet_spot": g["sweet_spot"],
                "n_windows": g["n_windows"],
                "n_generators": g["n_generators"],
            }
    if "group_ae" in s:
        r = s["group_ae"]
        if "skipped" in r:
            page["group_ae"] = {"skipped": r["skipped"]}
        else:
            page["group_ae"] = {
                "skipped": None,
                "rows": table(r["rows"], [k for k in ("train_windows", "group_weight", "train_error", "test_error", "gap")
                                          if k in r["rows"][0]]),
                "window_frames": r["window_frames"],
            }
    return page
