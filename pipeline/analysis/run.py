"""The stage runner behind ``scatterbird analyze``: every spline analysis of a trained detector over a set of
clips, as one JSON-able summary plus the arrays the figures need.

The stages (see docs/spline-analyses.md §8 for why these):

1. ``templates``: affine form, class templates, bias share, template overlap, template-input cosine;
2. ``codes``: per-layer VQ codes, code statistics, Hamming distances, nearest-neighbour retrieval;
3. ``power_diagram``: per-layer centroids and radii, exact regions crossed along audio augmentations,
   local complexity, a 2-D slice of the partition through three clips;
4. ``beta_sweep``: accuracy and calibration as every nonlinearity moves from hard (beta = 1) to linear
   (and, for networks with max-pooling, as the activations alone move);
5. ``rugosity``: finite-difference tangent Hessian along time shift, frequency shift, gain and noise, each
   against an isotropic direction of the same size;
6. ``em_novelty``, ``gan_ensemble``, ``group_ae``: the generative stages (:mod:`pipeline.analysis.generative`):
   an exact-likelihood novelty score from a piecewise-affine generator fitted by EM, generator ensembles with
   the coupling regulariser on bird features, and the group autoencoder's generalisation gap.

:func:`run_analysis` takes arrays only. :func:`load_clips` and :func:`analyze_inputs` are the file-facing
part used by the command line (audio or feature files in, an output directory written by
:mod:`scatterbird.pipeline.analysis.report`).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from scatterbird.data import user_cache_dir
from scatterbird.errors import AnalysisError, DatasetError
from scatterbird.models.ensemble import EnsembleDetector
from scatterbird.models.registry import default_model_path, load_detector
from scatterbird.models.spline.affine import template_stats
from scatterbird.models.spline.betavq import DEFAULT_BETAS, beta_sweep
from scatterbird.models.spline.codes import code_statistics, hamming, input_codes, nearest_neighbours
from scatterbird.models.spline.directions import FeatureSpace, audio_directions, random_direction
from scatterbird.models.spline.network import PointwiseHandler, SplineNet, handler_for, iter_batches, spline_view
from scatterbird.models.spline.power_diagram import centroid_radius, local_complexity, regions_on_segment, slice_regions
from scatterbird.models.spline.rugosity import jacobian_norm, tangent_rugosity
from scatterbird.pipeline import datasets
from scatterbird.pipeline.analysis.generative import (
    GENERATIVE_STAGES,
    stage_em_novelty,
    stage_gan_ensemble,
    stage_group_ae,
    window_embeddings,
)
from scatterbird.pipeline.analysis.report import write_report
from scatterbird.pipeline.analysis.summary import describe as _stat
from scatterbird.pipeline.clip_features import FeatureCache, compute_features
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.detect.windows import pool_sequence
from scatterbird.pipeline.frontend.audio import AUDIO_EXTENSIONS
from scatterbird.pipeline.frontend.features import load_scattergram, scattering_for
from scatterbird.pipeline.frontend.inputs import find_audio

#: The analyses of the trained network itself.
SPLINE_STAGES = ("templates", "codes", "power_diagram", "beta_sweep", "rugosity")
STAGES = SPLINE_STAGES + GENERATIVE_STAGES

#: Clips the analyses need at the least (a 2-D slice through three clips; nearest neighbours of each).
MIN_CLIPS = 3


# -- the model ------------------------------------------------------------------------------------------
@dataclass
class SplineModel:
    """A detector's network as a float64 spline view, with the map from a sequence to its input.

    Attributes
    ----------
    view : SplineNet
        Takes (batch, n_channels, n_frames).
    mean, std : ndarray, (n_channels,)
        Per-channel standardisation of the sequences.
    positive : int
        Index of the bird logit.
    """

    view: SplineNet
    mean: np.ndarray
    std: np.ndarray
    positive: int = 1

    def to_input(self, seq: np.ndarray) -> torch.Tensor:
        """A (n_frames, n_channels) sequence as the network input (n_channels, n_frames), float64."""
        z = (np.asarray(seq, dtype=np.float64) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(z.T))

    def log_odds(self, x: torch.Tensor) -> torch.Tensor:
        """Bird log-odds of a batch (batch,)."""
        z = self.view(x)
        if z.shape[1] == 1:
            return z[:, 0]
        other = [c for c in range(z.shape[1]) if c != self.positive]
        return z[:, self.positive] - torch.logsumexp(z[:, other], dim=1)


def spline_model(model: Any, *, n_channels: int | None = None) -> SplineModel:
    """The :class:`SplineModel` of a detector or a bare network.

    Parameters
    ----------
    model : Detector or nn.Module
        A detector with a fitted torch network ``net_`` taking (batch, n_channels, n_frames) of sequences
        standardised as ``(seq - mean_) / std_`` (the inversion detector), or a network taking that input
        directly.
    n_channels : int, optional
        Channel count of a bare network (for its identity standardisation).

    Raises
    ------
    AnalysisError
        If the model holds no torch network, or its network is not piecewise affine.
    """
    net = model if isinstance(model, nn.Module) else getattr(model, "net_", None)
    if not isinstance(net, nn.Module):
        kind = getattr(model, "kind", type(model).__name__)
        raise AnalysisError(
            f"model of kind {kind!r} holds no piecewise-affine torch network to analyse "
            "(the spline analyses need a network such as the inversion detector's)"
        )
    try:
        view = spline_view(net)
    except (TypeError, ValueError) as exc:
        raise AnalysisError(f"the model's network is not piecewise affine: {exc}") from None
    mean = getattr(model, "mean_", None)
    std = getattr(model, "std_", None)
    if mean is None or std is None:
        c = n_channels or getattr(model, "n_channels", None)
        if c is None:
            raise AnalysisError("a bare network needs n_channels")
        mean, std = np.zeros(int(c)), np.ones(int(c))
    return SplineModel(view, np.asarray(mean, np.float64), np.asarray(std, np.float64))


def analysed_detector(det: Any) -> tuple[Any, str | None]:
    """The detector whose network is analysed, and a note when it is not ``det`` itself.

    An ensemble (:class:`scatterbird.models.ensemble.EnsembleDetector`) has one network per member and no
    single spline partition: its first member is analysed.
    """
    members = getattr(det, "members_", None) if isinstance(det, EnsembleDetector) else None
    if not members:
        return det, None
    first = members[0]
    return first, (f"an ensemble of {len(members)} {first.kind} detectors: member 0 is analysed "
                   f"(hash {first.model_hash}); the ensemble scores with the mean of its members")


# -- the clips ------------------------------------------------------------------------------------------
@dataclass
class ClipSet:
    """Sequences to analyse, with what the audio directions need.

    Attributes
    ----------
    names : list of str
    sequences : list of ndarray, (n_frames, n_channels)
        Log-scattering sequences as the detector takes them.
    labels : ndarray of 0/1, optional
    order, frequency, frequency2 : ndarray, optional
        Channel metadata (for the frequency shift).
    log_eps : float
        Offset of the log compression (for gain and noise).
    """

    names: list[str]
    sequences: list[np.ndarray]
    labels: np.ndarray | None = None
    order: np.ndarray | None = None
    frequency: np.ndarray | None = None
    frequency2: np.ndarray | None = None
    log_eps: float = 1e-5
    problems: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class AnalysisOptions:
    """Sizes and parameters of the stages.

    Attributes
    ----------
    stages : sequence of str
        Subset of :data:`STAGES`.
    max_clips : int
        Clips used by the cheap stages (templates, codes, beta sweep): the first ones, classes balanced.
    detail_clips : int
        Clips used by the costly ones (regions along paths, local complexity, rugosity).
    betas : sequence of float
    shift_frames, freq_bins, gain_db, noise_db : augmentation sizes (see :mod:`~models.spline.directions`).
    lc_radius : float
        Local-complexity radius as a fraction of the clip's input norm.
    lc_vertices : int
    slice_grid : int
        Grid points per axis of the 2-D slice.
    em_latent : int
        Latent dimension (1 or 2) of the EM generator.
    em_dim : int
        PCA dimensions of the window embeddings the EM generator models.
    em_iters : int
        EM iterations.
    gan_couplings : sequence of float
        Coupling strengths (lambda) of the generator ensembles, one ensemble each.
    gan_generators : int
        Generators per ensemble.
    gan_steps : int
        Training steps per ensemble.
    ae_window : int
        Frames per autoencoder window.
    ae_sizes : sequence of int
        Training-set sizes (windows) of the generalisation-gap measurement.
    ae_group_weight : float
        Weight of the group regulariser in the regularised autoencoder.
    ae_steps : int
        Gradient steps per autoencoder fit (the same for every training-set size).
    seed : int
    """

    stages: Sequence[str] = STAGES
    max_clips: int = 64
    detail_clips: int = 4
    betas: Sequence[float] = DEFAULT_BETAS
    shift_frames: int = 1
    freq_bins: int = 1
    gain_db: float = 1.0
    noise_db: float = -20.0
    lc_radius: float = 0.01
    lc_vertices: int = 40
    slice_grid: int = 80
    em_latent: int = 1
    em_dim: int = 2
    em_iters: int = 20
    gan_couplings: Sequence[float] = (0.0, 0.1, 1.0, 10.0)
    gan_generators: int = 3
    gan_steps: int = 1500
    ae_window: int = 5
    ae_sizes: Sequence[int] = (50, 200, 1000)
    ae_group_weight: float = 1.0
    ae_steps: int = 600
    seed: int = 0


@dataclass
class Analysis:
    """``summary``: JSON-able numbers; ``arrays``: what the figures are drawn from."""

    summary: dict[str, Any]
    arrays: dict[str, Any]


def _balanced_order(labels: np.ndarray | None, n: int) -> np.ndarray:
    """Indices interleaving the classes (pos, neg, pos, ...) so that any prefix is about balanced."""
    if labels is None:
        return np.arange(n)
    pos, neg = list(np.nonzero(labels == 1)[0]), list(np.nonzero(labels != 1)[0])
    out = []
    while pos or neg:
        if pos:
            out.append(pos.pop(0))
        if neg:
            out.append(neg.pop(0))
    return np.asarray(out, dtype=np.int64)


def _log_odds(z: np.ndarray, positive: int) -> np.ndarray:
    """Bird log-odds from logits (..., n_out): the logit itself for one output, the difference for two."""
    if z.shape[-1] == 1:
        return z[..., 0]
    if z.shape[-1] == 2:
        return z[..., positive] - z[..., 1 - positive]
    others = np.delete(z, positive, axis=-1)
    m = others.max(-1, keepdims=True)
    return z[..., positive] - (m[..., 0] + np.log(np.exp(others - m).sum(-1)))


def run_analysis(
    model: SplineModel,
    clips: ClipSet,
    options: AnalysisOptions | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> Analysis:
    """Run the spline-analysis stages on a set of clips.

    Parameters
    ----------
    model : SplineModel
    clips : ClipSet
        At least 3 clips. All are cropped to the shortest one's frame count, so that codes of different
        clips are comparable unit by unit.
    options : AnalysisOptions, optional
    progress : callable, optional
        Called with a short message as each stage starts.

    Returns
    -------
    Analysis
    """
    opt = options or AnalysisOptions()
    say = progress or (lambda msg: None)
    unknown = set(opt.stages) - set(STAGES)
    if unknown:
        raise AnalysisError(f"unknown stage(s) {sorted(unknown)}; known: {', '.join(STAGES)}")
    n_all = len(clips.sequences)
    if n_all < MIN_CLIPS:
        raise AnalysisError(f"at least {MIN_CLIPS} clips are needed, got {n_all}")
    t_min = min(s.shape[0] for s in clips.sequences)
    labels_all = None if clips.labels is None else np.asarray(clips.labels).astype(int)
    order = _balanced_order(labels_all, n_all)[: opt.max_clips]
    names = [clips.names[i] for i in order]
    y = None if labels_all is None else labels_all[order]
    X = torch.stack([model.to_input(clips.sequences[i][:t_min]) for i in order])  # (n, C, T)
    n = X.shape[0]
    detail = np.arange(min(opt.detail_clips, n))  # the balanced order puts pos, neg, pos, ... first
    space = FeatureSpace(model.mean, model.std, clips.log_eps, clips.order, clips.frequency, clips.frequency2)
    view = model.view
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {
        "n_clips": int(n),
        "n_clips_given": int(n_all),
        "n_frames": int(t_min),
        "n_channels": int(X.shape[1]),
        "input_dim": int(X[0].numel()),
        "labelled": y is not None,
        "n_bird": None if y is None else int(y.sum()),
        "layers": [type(view.parts[i]).__name__ for i in view.piecewise_index],
        "clips": names,
        "detail_clips": [names[i] for i in detail],
    }
    arrays: dict[str, Any] = {"names": names, "labels": y, "order": clips.order, "frequency": clips.frequency}
    with torch.no_grad():
        log_odds = torch.cat([model.log_odds(X[sl]) for sl in iter_batches(n, 16)]).numpy()
    summary["log_odds"] = _stat(log_odds)
    arrays["log_odds"] = log_odds

    @contextmanager
    def stage(name: str, message: str | None = None) -> Iterator[None]:
        say(message or name.replace("_", " "))
        t0 = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - t0

    if "templates" in opt.stages:
        with stage("templates"):
            summary["templates"], arrays["templates"] = _stage_templates(model, X, y, detail)
    if "codes" in opt.stages:
        with stage("codes"):
            summary["codes"], arrays["codes"] = _stage_codes(view, X, y, names, detail)
    if "power_diagram" in opt.stages:
        with stage("power_diagram", "power diagram and regions"):
            summary["power_diagram"], arrays["power_diagram"] = _stage_power_diagram(model, X, names, detail, space, opt)
    if "beta_sweep" in opt.stages:
        with stage("beta_sweep"):
            batches = [X[sl] for sl in iter_batches(n, 16)]
            summary["beta_sweep"] = beta_sweep(view, batches, y, opt.betas, positive=model.positive)
            if any(not isinstance(handler_for(view.parts[i]), PointwiseHandler) for i in view.piecewise_index):
                # the same sweep with the max-poolings kept hard: which softening costs what
                summary["beta_sweep_activations"] = beta_sweep(
                    view, batches, y, opt.betas, positive=model.positive, target="activations"
                )
    if "rugosity" in opt.stages:
        with stage("rugosity"):
            summary["rugosity"], arrays["rugosity"] = _stage_rugosity(view, X, detail, space, opt)
    # one forward pass gives both embedding stages their windows
    emb = window_embeddings(view, X) if {"em_novelty", "gan_ensemble"} & set(opt.stages) else []
    generative = {
        "em_novelty": ("EM generator novelty", lambda: stage_em_novelty(
            emb, names, y, log_odds, latent_dim=opt.em_latent, dim=opt.em_dim, n_iter=opt.em_iters, seed=opt.seed)),
        "gan_ensemble": ("generator ensembles", lambda: stage_gan_ensemble(
            emb, y, log_odds, couplings=opt.gan_couplings, n_generators=opt.gan_generators, steps=opt.gan_steps,
            seed=opt.seed)),
        "group_ae": ("group autoencoder", lambda: stage_group_ae(
            X, clips.order, names, y, width=opt.ae_window, sizes=opt.ae_sizes, group_weight=opt.ae_group_weight,
            steps=opt.ae_steps, seed=opt.seed)),
    }
    for name, (message, run) in generative.items():
        if name not in opt.stages:
            continue
        with stage(name, message):
            try:
                summary[name], arrays[name] = run()
            except (ValueError, RuntimeError, ArithmeticError, np.linalg.LinAlgError) as exc:
                # A fit that fails on these clips must not lose the other stages' results: say why instead.
                summary[name], arrays[name] = {"skipped": f"failed: {exc}"}, {}
                say(f"{message} failed: {exc}")
    summary["seconds"] = timings
    return Analysis(summary, arrays)


def _stage_templates(model: SplineModel, X: torch.Tensor, y: np.ndarray | None, detail: np.ndarray):
    view = model.view
    bias, overlap, in_cos, lo_cos = [], [], [], []
    lo_templates = []
    for sl in iter_batches(X.shape[0], 8):
        st = template_stats(view, X[sl])
        pred = st.form.out.argmax(1)
        bias.append(st.bias_share.numpy())
        overlap.append(st.overlap.numpy())
        in_cos.append(st.input_cosine.gather(1, pred[:, None])[:, 0].numpy())
        A = st.form.A
        # template of the bird log-odds (for two logits, the difference of the class templates)
        if A.shape[1] == 1:
            lo_t = A[:, 0]
        elif A.shape[1] == 2:
            lo_t = A[:, model.positive] - A[:, 1 - model.positive]
        else:
            lo_t = A[:, model.positive]
        lo_templates.append(lo_t.numpy())
        xf = X[sl].flatten(1)
        lo_cos.append(((lo_t.flatten(1) * xf).sum(1) / (lo_t.flatten(1).norm(dim=1) * xf.norm(dim=1))).numpy())
    bias_a, lo_t_all = np.concatenate(bias), np.concatenate(lo_templates)
    summary = {
        "bias_share_mean_per_logit": bias_a.mean(0).tolist(),
        "template_overlap": _stat(np.concatenate(overlap)),
        "predicted_template_input_cosine": _stat(np.concatenate(in_cos)),
        "log_odds_template_input_cosine": _stat(np.concatenate(lo_cos)),
        "notes": "bias share = |B_c| / (|<A_c, x>| + |B_c|); overlap = mean |cos| between class templates",
    }
    arrays = {"inputs": X[detail].numpy(), "log_odds_templates": lo_t_all[detail]}
    if y is not None:
        lo_cos_a = np.concatenate(lo_cos)
        summary["log_odds_template_input_cosine_bird"] = _stat(lo_cos_a[y == 1])
        summary["log_odds_template_input_cosine_nobird"] = _stat(lo_cos_a[y == 0])
        for c, key in ((1, "mean_template_bird"), (0, "mean_template_nobird")):
            if (y == c).any():
                arrays[key] = lo_t_all[y == c].mean(0)
    cr = centroid_radius(view, X[detail])
    arrays["centroid_layer1"] = cr.mu[0].numpy()
    return summary, arrays


def _stage_codes(view: SplineNet, X: torch.Tensor, y: np.ndarray | None, names: list[str], detail: np.ndarray):
    codes = input_codes(view, X, batch=16)
    with torch.no_grad():
        n_pieces = [p.shape[-1] for p in view.trace(X[:1]).pieces]
    stats = code_statistics(codes, y, n_pieces)
    for rec, l in zip(stats, range(len(codes))):
        rec["part"] = type(view.parts[view.piecewise_index[l]]).__name__
    retrieval = []
    deep = len(codes) - 1
    for l in sorted({0, deep}):
        idx, dist = nearest_neighbours(codes[l], k=3)
        for i in detail:
            retrieval.append(
                {
                    "layer": l + 1,
                    "query": names[i],
                    "query_label": None if y is None else int(y[i]),
                    "neighbours": [names[j] for j in idx[i]],
                    "neighbour_labels": None if y is None else [int(y[j]) for j in idx[i]],
                    "distances": [float(d) for d in dist[i]],
                }
            )
    dists = [hamming(c) for c in codes]
    nearest = []  # per layer, each clip's distance to the nearest other clip's code
    for d in dists:
        off = d + np.diag(np.full(d.shape[0], np.inf))
        nearest.append(off.min(axis=1) if d.shape[0] > 1 else np.zeros(d.shape[0]))
    arrays = {"hamming_first": dists[0], "hamming_last": dists[deep], "nearest_hamming": nearest, "stats": stats}
    return {"per_layer": stats, "retrieval": retrieval}, arrays


def _stage_power_diagram(
    model: SplineModel, X: torch.Tensor, names: list[str], detail: np.ndarray, space: FeatureSpace, opt: AnalysisOptions
):
    view = model.view
    Xd = X[detail]
    cr = centroid_radius(view, Xd)
    xf = Xd.flatten(1)
    per_layer = []
    for l, (mu, rad) in enumerate(zip(cr.mu, cr.rad)):
        m = mu.flatten(1)
        per_layer.append(
            {
                "layer": l + 1 if l < view.n_layers else "logits",
                "centroid_norm": _stat(m.norm(dim=1).numpy()),
                "radius": _stat(rad.numpy()),
                "centroid_input_cosine": _stat(((m * xf).sum(1) / (m.norm(dim=1) * xf.norm(dim=1)).clamp_min(1e-300)).numpy()),
            }
        )
    dirs = audio_directions(space, shift_frames=opt.shift_frames, freq_bins=opt.freq_bins, gain_db=opt.gain_db, noise_db=opt.noise_db)
    g = torch.Generator().manual_seed(opt.seed)
    regions: dict[str, list[dict]] = {}
    path = None
    for i in range(Xd.shape[0]):
        x = Xd[i : i + 1]
        for name, fn in dirs.items():
            xa = fn(x[0]).unsqueeze(0)
            eps = float((xa - x).norm())
            for key, target in ((name, xa), (f"random@{name}", random_direction(x[0], eps, g).unsqueeze(0))):
                seg = regions_on_segment(view, x, target)
                regions.setdefault(key, []).append(
                    {
                        "regions": seg.n_regions,
                        "per_layer": seg.per_layer,
                        "distance": seg.length,
                        "decision_flips": seg.decision_flips(model.positive, 1 - model.positive),
                    }
                )
                if path is None and name == "time_shift" and key == name:
                    lo = _log_odds(seg.knots_logits, model.positive)
                    path = {"u": seg.knots_u, "log_odds": lo, "layer": seg.layer}
    region_summary = {
        k: {
            "regions": _stat([r["regions"] for r in v]),
            "regions_per_unit_distance": _stat([(r["regions"] - 1) / r["distance"] if r["distance"] else 0.0 for r in v]),
            "decision_flips": _stat([r["decision_flips"] for r in v]),
            "new_breakpoints_per_layer_mean": np.mean([r["per_layer"] for r in v], axis=0).tolist(),
        }
        for k, v in regions.items()
    }
    lc = []
    for i in range(Xd.shape[0]):
        x = Xd[i : i + 1]
        lc.append(local_complexity(view, x, opt.lc_radius * float(x.norm()), n_vertices=opt.lc_vertices, seed=opt.seed + i))
    lc_summary = [
        {"layer": l + 1, "cut_units": _stat([c[l]["cut_units"] for c in lc]), "cut_fraction": _stat([c[l]["cut_fraction"] for c in lc])}
        for l in range(view.n_layers)
    ]
    first = [int(i) for i in detail[:3]]  # the slice's three anchors: the first detail clips, topped up
    anchor_idx = first + [i for i in range(X.shape[0]) if i not in first][: 3 - len(first)]
    anchors = X[anchor_idx]
    wide = slice_regions(view, anchors, n=opt.slice_grid)
    # Between clips the regions are far smaller than a grid cell; zoom on anchor 0 so that about
    # grid/4 regions span the window, from the region density measured along the time shift.
    density = region_summary.get("time_shift", {}).get("regions_per_unit_distance", {}).get("mean")
    if not density:
        v = random_direction(anchors[0], 0.01 * float(anchors[0].norm()), g) - anchors[0]
        density = regions_on_segment(view, anchors[:1], anchors[:1] + v.unsqueeze(0)).density
    half = (opt.slice_grid / 8) / max(float(density), 1e-12)  # in input-norm units
    ws = half / max(float((anchors[1] - anchors[0]).norm()), 1e-12)
    wt = half / max(float((anchors[2] - anchors[0]).norm()), 1e-12)
    zoom = slice_regions(view, anchors, n=opt.slice_grid, extent=(-ws, ws, -wt, wt))
    slices = {}
    arrays_slices = {}
    for key, sl in (("wide", wide), ("zoom", zoom)):
        slices[key] = {
            "extent": [float(sl.s[0]), float(sl.s[-1]), float(sl.t[0]), float(sl.t[-1])],
            "regions": sl.n_regions,
            "regions_per_layer": sl.regions_per_layer,
        }
        arrays_slices[key] = {"s": sl.s, "t": sl.t, "region": sl.region, "log_odds": _log_odds(sl.logits, model.positive)}
    summary = {
        "centroids": per_layer,
        "regions_along": region_summary,
        "regions_per_clip": regions,
        "local_complexity": {"radius_fraction_of_norm": opt.lc_radius, "vertices": opt.lc_vertices, "per_layer": lc_summary},
        "slice": {"grid": opt.slice_grid, "anchors": [names[i] for i in anchor_idx], **slices},
    }
    arrays = {"path": path, "slice": arrays_slices}
    return summary, arrays


def _stage_rugosity(view: SplineNet, X: torch.Tensor, detail: np.ndarray, space: FeatureSpace, opt: AnalysisOptions):
    dirs = audio_directions(space, shift_frames=opt.shift_frames, freq_bins=opt.freq_bins, gain_db=opt.gain_db, noise_db=opt.noise_db)
    g = torch.Generator().manual_seed(opt.seed + 1)
    Xd = X[detail]
    values: dict[str, list[float]] = {}
    eps_of: dict[str, list[float]] = {}
    for name, fn in dirs.items():
        xa = torch.stack([fn(x) for x in Xd])
        d = xa - Xd
        eps = d.flatten(1).norm(dim=1)
        values[name] = tangent_rugosity(view, Xd, d, eps).tolist()
        u = torch.randn(Xd.shape, generator=g, dtype=Xd.dtype)
        values[f"random@{name}"] = tangent_rugosity(view, Xd, u, eps).tolist()
        eps_of[name] = eps.tolist()
    jn = jacobian_norm(view, Xd).numpy()
    summary = {
        "per_direction": {
            k: {**_stat(v), "eps_mean": float(np.mean(eps_of[k.split("@")[-1]]))} for k, v in values.items()
        },
        "ratio_to_random": {
            k: (float(np.mean(values[k]) / np.mean(values[f"random@{k}"])) if np.mean(values[f"random@{k}"]) > 0 else None)
            for k in dirs
        },
        "jacobian_norm": _stat(jn),
        "notes": "R = ||J(x + eps v) - J(x)||_F / eps with eps v = aug(x) - x; random@d: isotropic v, same eps",
    }
    return summary, {"values": values}


# -- files ----------------------------------------------------------------------------------------------
def read_labels(path: str | os.PathLike) -> dict[str, int]:
    """Labels by itemid from a Bird-Audio-Detection CSV (``itemid,hasbird``; :func:`pipeline.datasets.read_labels`)."""
    try:
        rows = datasets.read_labels(path, require_labels=True)
    except DatasetError as exc:
        raise AnalysisError(str(exc)) from None
    return {Path(item).stem: int(lab) for item, _, lab in rows.rows}


def _label_for(name: str, labels: dict[str, int]) -> int | None:
    """A clip's label by its stem, also trying the feature files' ``<dir>__<stem>_<ext>`` naming."""
    cands = [name, name.split("__")[-1]]
    for c in list(cands):
        head, _, ext = c.rpartition("_")
        if head and ext.isalnum() and len(ext) <= 5:
            cands.append(head)
    for c in cands:
        if c in labels:
            return labels[c]
    return None


def _not_used(problems: Sequence[tuple[str, str]]) -> str:
    """``; not used: N (first path: its reason, ...)`` for an error message, or ""."""
    if not problems:
        return ""
    path, why = problems[0]
    return f"; not used: {len(problems)} ({path}: {why}{', ...' if len(problems) > 1 else ''})"


def load_clips(
    inputs: Sequence[str | os.PathLike],
    config: Any,
    *,
    labels_csv: str | os.PathLike | None = None,
    extensions: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    min_clips: int = 0,
    progress: bool = False,
) -> ClipSet:
    """Sequences of audio files (through the training pipeline's feature cache) or of feature files
    (``.npz`` from ``scatterbird features``, which must have been made with ``config``).

    Parameters
    ----------
    inputs : sequence of path
        Files, directories or path lists, as for ``scatterbird features``.
    config : FeatureConfig
    labels_csv : path, optional
        ``itemid,hasbird`` labels; clips without a label are left out (and reported).
    extensions : sequence of str, optional
        Extensions looked for in directories (default: audio and ``.npz``).
    cache_dir : path, optional
        Feature cache folder (:class:`pipeline.clip_features.FeatureCache`); None computes without caching.
    limit : int, optional
        Use at most this many files.
    min_clips : int
        Fewer usable inputs than this (files found, with a label when labels are given) raise
        :class:`AnalysisError` before any feature is computed.
    progress : bool
        Progress bar on stderr while features are computed.
    """
    exts = list(extensions) if extensions else [*AUDIO_EXTENSIONS, ".npz"]
    scan = find_audio(list(inputs), exts)
    files = [Path(p) for p in scan.files[: limit or None]]
    clips = ClipSet([], [], log_eps=float(config.log_eps), problems=list(scan.problems))
    labels = read_labels(labels_csv) if labels_csv else None
    if labels is not None:  # a clip without a label is left out: known before any feature work
        clips.problems.extend((str(p), "no label in the labels file") for p in files if _label_for(p.stem, labels) is None)
        files = [p for p in files if _label_for(p.stem, labels) is not None]
    if len(files) < min_clips:
        raise AnalysisError(
            f"at least {min_clips} clips are needed, {len(files)} usable input file(s) found{_not_used(clips.problems)}"
        )
    y: list[int] = []
    found: dict[Path, np.ndarray] = {}
    audio = [p for p in files if p.suffix.lower() != ".npz"]
    if audio:
        scattering = scattering_for(config)  # the instance the features are computed with in this process
        clips.order, clips.frequency, clips.frequency2 = scattering.order, scattering.frequency, scattering.frequency2
        fs = compute_features(audio, config, FeatureCache(cache_dir, config), progress=progress)
        clips.problems.extend(fs.failed)
        found.update({p: seqs[0] for p, seqs in zip(fs.paths, fs.sequences)})
    for p in files:
        if p.suffix.lower() != ".npz":
            continue
        try:
            sg = load_scattergram(p)
        except (OSError, KeyError, ValueError) as exc:
            clips.problems.append((str(p), f"not a feature file ({exc})"))
            continue
        if sg.config_hash != config.hash:
            clips.problems.append((str(p), f"features made with config {sg.config_hash}, the model's is {config.hash}"))
            continue
        found[p] = pool_sequence(np.ascontiguousarray(sg.S.T), sg.frame_rate, config.pool_s)
        if clips.order is None:
            clips.order, clips.frequency, clips.frequency2 = sg.order, sg.frequency, sg.frequency2
    for p in files:  # the inputs' order
        if p not in found:
            continue
        if labels is not None:
            y.append(_label_for(p.stem, labels))
        clips.names.append(p.stem)
        clips.sequences.append(found[p])
    if labels is not None:
        clips.labels = np.asarray(y, dtype=np.int64)
    return clips


def analyze_inputs(
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    model_path: str | os.PathLike | None = None,
    labels_csv: str | os.PathLike | None = None,
    options: AnalysisOptions | None = None,
    extensions: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[Analysis, list[Path], ClipSet]:
    """Load a detector and clips, run every stage, write ``analysis.json``, the PNGs and ``index.html``.

    Parameters
    ----------
    model_path : path, optional
        Default: the bundled default model (``data/default_model.pt``).
    cache_dir : path, optional
        Feature cache; default: ``features/`` in the user cache folder
        (:func:`scatterbird.data.user_cache_dir`), never next to the model, which may sit inside the installed
        package. The cache keys its entries by the feature configuration's hash and each file's path, size
        and modification time.

    Returns
    -------
    analysis : Analysis
    written : list of Path
        Every file written into ``outdir``.
    clips : ClipSet
        With ``problems``: inputs that could not be used.
    """
    det = load_detector(model_path)
    model_path = Path(model_path) if model_path is not None else default_model_path()
    config = det.feature_config or FeatureConfig()
    analysed, note = analysed_detector(det)
    model = spline_model(analysed)  # refuse a model without a piecewise-affine network before any audio work
    cache = cache_dir if cache_dir is not None else user_cache_dir() / "features"
    clips = load_clips(
        inputs, config, labels_csv=labels_csv, extensions=extensions, cache_dir=cache, min_clips=MIN_CLIPS,
        progress=progress,
    )
    if len(clips.sequences) < MIN_CLIPS:  # enough inputs, but some could not be read
        raise AnalysisError(
            f"at least {MIN_CLIPS} clips are needed, {len(clips.sequences)} could be read{_not_used(clips.problems)}"
        )
    say = (lambda msg: print(f"analyze: {msg}", file=sys.stderr, flush=True)) if progress else None
    if note and say:
        say(note)
    analysis = run_analysis(model, clips, options, progress=say)
    analysis.summary["model"] = {
        "path": os.fspath(model_path),
        "kind": det.kind,
        "model_hash": det.model_hash,
        "feature_config_hash": config.hash,
    }
    if note:
        analysis.summary["model"]["note"] = note
    analysis.summary["problems"] = [{"path": p, "reason": r} for p, r in clips.problems]
    written = write_report(outdir, analysis)
    return analysis, written, clips
