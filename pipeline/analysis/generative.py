"""The generative spline stages of ``scatterbird analyze``, on what the audio gives: the detector's own window
embeddings and its input (standardised log-scattering) windows.

* ``em_novelty``: a continuous piecewise-affine generator with a 1-D or 2-D latent fitted by the analytical
  EM (:mod:`models.spline.em_generator`) to the window embeddings of the no-bird clips, reduced by PCA; every
  window gets its exact log-likelihood, every clip a novelty score (minus its windows' mean log-likelihood);
* ``gan_ensemble``: generator ensembles with the coupling regulariser (:mod:`models.spline.gan_ensemble`)
  trained on the bird clips' window embeddings, one ensemble per coupling strength, scored by k-NN precision
  and recall (:mod:`models.spline.sample_quality`);
* ``group_ae``: a piecewise-affine autoencoder on input windows with and without the time / log-frequency
  shift regulariser (:mod:`models.spline.group_ae`): reconstruction error on training and held-out windows
  (the generalisation gap) at several training-set sizes.

The two embedding stages take the clips' window embeddings (:func:`window_embeddings`, computed once by the
runner), the autoencoder stage the network's input; each returns ``(summary, arrays)`` like the other stages of
:mod:`pipeline.analysis.run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scatterbird.models.spline.em_generator import fit_em
from scatterbird.models.spline.gan_ensemble import sweep_coupling
from scatterbird.models.spline.group_ae import generalisation_gap, sample_windows
from scatterbird.models.spline.network import SplineNet, iter_batches
from scatterbird.pipeline.analysis.summary import describe as _stat
from scatterbird.pipeline.evaluate.metrics import roc_auc

#: The generative stages, in the order they run.
GENERATIVE_STAGES = ("em_novelty", "gan_ensemble", "group_ae")

#: Fewest windows a generative fit is attempted on.
MIN_WINDOWS = 20

#: Floor of the EM generator's noise level, in standardised PCA units.
MIN_SIGMA_X = 1e-2


@dataclass
class Projection:
    """A PCA projection to a few standardised coordinates: ``(x - centre) @ basis / scale``."""

    centre: np.ndarray
    basis: np.ndarray
    scale: np.ndarray
    explained: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, dim: int) -> Projection:
        """Principal directions of ``x`` (n, d); ``explained`` is each kept direction's share of the variance."""
        x = np.asarray(x, dtype=np.float64)
        centre = x.mean(0)
        _, s, vt = np.linalg.svd(x - centre, full_matrices=False)
        dim = int(min(dim, vt.shape[0]))
        var = s**2
        # Keep only directions with real spread: a near-empty one would blow unseen points up.
        dim = max(1, int(min(dim, np.sum(s > 1e-6 * max(s[0], 1e-300)))))
        basis = vt[:dim].T
        scale = s[:dim] / np.sqrt(max(len(x) - 1, 1))
        scale = np.where(scale > 0, scale, 1.0)
        return cls(centre, basis, scale, var[:dim] / max(var.sum(), 1e-300))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.centre) @ self.basis / self.scale


def window_embeddings(view: SplineNet, X: torch.Tensor) -> list[np.ndarray]:
    """Per clip, the embedding of each of its windows: the frames of the last piecewise layer that still has a
    time axis (the last convolution block of the inversion network), shape (n_windows, units).

    A network whose representations lose the time axis at once (no 3-D output) gives one window per clip: its
    penultimate representation, flattened.
    """
    out: list[np.ndarray] = []
    with torch.no_grad():
        for sl in iter_batches(X.shape[0], 16):
            zs = view.layer_outputs(X[sl])[:-1]
            timed = [z for z in zs if z.dim() == 3]
            if timed:
                z = timed[-1]  # (batch, units, frames)
                out.extend(z[i].T.numpy().astype(np.float64) for i in range(z.shape[0]))
            else:
                z = zs[-1].flatten(1)
                out.extend(z[i : i + 1].numpy().astype(np.float64) for i in range(z.shape[0]))
    return out


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[np.sort(rng.choice(len(x), n, replace=False))]


# -- 1. analytical EM: exact-likelihood novelty -------------------------------------------------------------
def stage_em_novelty(
    emb: list[np.ndarray],
    names: list[str],
    y: np.ndarray | None,
    log_odds: np.ndarray,
    *,
    latent_dim: int = 1,
    dim: int = 2,
    widths: Sequence[int] = (8,),
    n_iter: int = 20,
    max_windows: int = 1500,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the EM generator on the reference (no-bird) clips' windows and score every clip.

    The reference clips are the no-bird ones when labels are given, else those the detector scores below
    0.5. Every other reference clip (in the given order) is held out of the fit, so that the novelty of
    reference clips compared with bird clips is measured on clips the generator has not seen.
    """
    rng = np.random.default_rng(seed)
    by = "labels" if y is not None else "detector score < 0.5"
    ref = np.nonzero(y == 0)[0] if y is not None else np.nonzero(log_odds < 0)[0]
    if len(ref) < 2:
        ref, by = np.arange(len(names)), "all clips (fewer than two reference clips)"
    fit_clips, held_ref = ref[0::2], ref[1::2]
    fit_windows = np.concatenate([emb[i] for i in fit_clips])
    if len(fit_windows) < MIN_WINDOWS:
        return {"skipped": f"{len(fit_windows)} reference windows; at least {MIN_WINDOWS} are needed"}, {}
    proj = Projection.fit(fit_windows, dim)
    train = _subsample(proj(fit_windows), max_windows, rng)
    # The coordinates are standardised; the floor keeps repeated windows (silence, padding) from driving
    # sigma_x to zero, where the likelihood has no maximum.
    fit = fit_em(train, latent_dim=latent_dim, widths=widths, n_iter=n_iter, seed=seed, min_sigma_x=MIN_SIGMA_X)
    clip_ll = [fit.log_likelihood(proj(e)) for e in emb]
    novelty = np.array([-float(ll.mean()) for ll in clip_ll])
    role = np.full(len(names), "scored", dtype=object)
    role[fit_clips] = "fitted"
    role[held_ref] = "held-out reference"
    summary: dict[str, Any] = {
        "reference": by,
        "n_fit_clips": len(fit_clips),
        "n_held_out_reference_clips": len(held_ref),
        "n_fit_windows": len(train),
        "embedding_units": int(fit_windows.shape[1]),
        "pca_dim": int(proj.basis.shape[1]),
        "pca_explained": proj.explained.tolist(),
        "latent_dim": int(latent_dim),
        "widths": [int(w) for w in widths],
        "n_regions": int(fit.n_regions),
        "sigma_x": float(fit.sigma_x),
        "sigma_z": float(fit.sigma_z),
        "log_likelihood_history": [float(h) for h in fit.history],
        "train_mean_log_likelihood": float(fit.log_likelihood(train).mean()),
        "novelty_fitted": _stat(novelty[role == "fitted"]),
        "novelty_held_out_reference": _stat(novelty[role == "held-out reference"]),
        "novelty_other": _stat(novelty[role == "scored"]),
        "notes": "novelty = - mean over a clip's windows of the exact log p(x) (nats, in PCA coordinates)",
    }
    unseen = role != "fitted"
    if y is not None and len(set(y[unseen].tolist())) == 2:
        summary["auc_bird_vs_held_out_no_bird"] = roc_auc(y[unseen], novelty[unseen])
    top = np.argsort(-novelty)[:5]
    summary["most_novel"] = [
        {"clip": names[i], "novelty": float(novelty[i]), "label": None if y is None else int(y[i]), "role": str(role[i])}
        for i in top
    ]
    summary["per_clip"] = [
        {"clip": names[i], "novelty": float(novelty[i]), "label": None if y is None else int(y[i]), "role": str(role[i])}
        for i in range(len(names))
    ]
    arrays = {
        "train": train,
        "others": _subsample(np.concatenate([proj(emb[i]) for i in np.nonzero(unseen)[0]]), max_windows, rng)
        if unseen.any() else np.zeros((0, train.shape[1])),
        "curve": fit.curve(200) if latent_dim == 1 else None,
        "samples": fit.sample(min(len(train), 500), seed=seed),
        "novelty": novelty,
        "role": role,
        "labels": y,
        "history": np.asarray(fit.history),
    }
    return summary, arrays


# -- 2. generator ensembles for disconnected bird features -------------------------------------------------
def stage_gan_ensemble(
    emb: list[np.ndarray],
    y: np.ndarray | None,
    log_odds: np.ndarray,
    *,
    couplings: Sequence[float] = (0.0, 0.1, 1.0, 10.0),
    n_generators: int = 3,
    steps: int = 1500,
    max_windows: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one generator ensemble per coupling strength on the bird clips' window embeddings (2-D PCA)."""
    rng = np.random.default_rng(seed)
    birds = np.nonzero(y == 1)[0] if y is not None else np.nonzero(log_odds >= 0)[0]
    by = "labels" if y is not None else "detector score >= 0.5"
    if len(birds) == 0:
        return {"skipped": f"no bird clip (by {by})"}, {}
    windows = np.concatenate([emb[i] for i in birds])
    if len(windows) < MIN_WINDOWS:
        return {"skipped": f"{len(windows)} bird windows; at least {MIN_WINDOWS} are needed"}, {}
    proj = Projection.fit(windows, 2)
    x = _subsample(proj(windows), max_windows, rng)
    rows = sweep_coupling(x, couplings, n_generators=n_generators, steps=steps, seed=seed)
    table = [{k: v for k, v in r.items() if k not in ("samples", "component")} for r in rows]
    for r in table:
        p, q = r.get("precision"), r.get("recall")
        r["f1"] = float(2 * p * q / (p + q)) if p is not None and q is not None and p + q > 0 else 0.0
    best = max(range(len(table)), key=lambda i: table[i]["f1"])
    summary = {
        "birds": by,
        "n_bird_clips": len(birds),
        "n_windows": len(x),
        "pca_explained": proj.explained.tolist(),
        "n_generators": int(n_generators),
        "steps": int(steps),
        "per_coupling": table,
        "sweet_spot": table[best]["coupling"],
        "notes": "precision / recall: k-NN manifold estimates (Kynkaanniemi et al. 2019); f1 their harmonic mean; "
                 "coupling 0 = independent generators, large = one generator",
    }
    arrays = {"real": x, "samples": {float(r["coupling"]): np.asarray(r["samples"]) for r in rows}}
    return summary, arrays


# -- 3. group autoencoder: generalisation gap --------------------------------------------------------------
def _split_clips(y: np.ndarray | None, n: int, seed: int) -> tuple[list[int], list[int]]:
    """Clips in two halves (training, held out), each class halved at random, so that neither half is one class."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if y is None else [np.nonzero(y == c)[0] for c in np.unique(y)]
    train: list[int] = []
    test: list[int] = []
    for g in groups:
        g = rng.permutation(g)
        k = (len(g) + 1) // 2
        train.extend(g[:k].tolist())
        test.extend(g[k:].tolist())
    if not test:  # a single clip of every class: hold out one of the training ones
        test.append(train.pop())
    return sorted(train), sorted(test)


def stage_group_ae(
    X: torch.Tensor,
    order: np.ndarray | None,
    names: list[str],
    y: np.ndarray | None,
    *,
    width: int = 5,
    sizes: Sequence[int] = (50, 200, 1000),
    group_weight: float = 1.0,
    steps: int = 600,
    n_test: int = 500,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reconstruction error of the autoencoder with and without the group regulariser, on training windows
    and on windows of other clips, for each training-set size."""
    n, c, t = X.shape
    if t < width:
        return {"skipped": f"clips of {t} frames are shorter than the {width}-frame window"}, {}
    seqs = [X[i].numpy().T.astype(np.float64) for i in range(n)]  # (frames, channels)
    train_clips, test_clips = _split_clips(y, n, seed)
    # Without channel metadata the whole channel axis is taken as the frequency axis (as the rugosity
    # directions do).
    first_order = None if order is None or len(order) != c else np.asarray(order) == 1
    test = sample_windows([seqs[i] for i in test_clips], width, n_test, seed=seed + 1)
    pool = sample_windows([seqs[i] for i in train_clips], width, max(sizes), seed=seed)
    positions = len(train_clips) * (t - width + 1)  # distinct training windows there are
    rows = []
    for size in sizes:
        for gw in (0.0, float(group_weight)):
            r = generalisation_gap(pool[:size], test, group_weight=gw, first_order=first_order, seed=seed, steps=steps)
            rows.append({
                "train_windows": int(size), "distinct_windows": int(len(np.unique(pool[:size].reshape(size, -1), axis=0))),
                "group_weight": gw, **{k: float(v) for k, v in r.items()},
            })
    summary = {
        "window_frames": int(width),
        "steps": int(steps),
        "channels": int(c),
        "first_order_channels": None if first_order is None else int(first_order.sum()),
        "frequency_axis": "first-order channels" if first_order is not None else "all channels (no channel metadata)",
        "train_clips": [names[i] for i in train_clips],
        "held_out_clips": [names[i] for i in test_clips],
        "training_window_positions": int(positions),
        "held_out_windows": len(test),
        "rows": rows,
        "notes": "errors: mean squared error per element on the detector's standardised input; "
                 "gap = held-out error - training error; clips split in two halves, each class halved at random; "
                 "training windows are drawn with replacement when there are fewer positions than windows",
    }
    return summary, {"rows": rows}
