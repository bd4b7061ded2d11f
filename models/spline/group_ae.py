"""A piecewise-affine autoencoder on scattergram windows with a Lie-group regulariser (time shift and
log-frequency shift), after Cosentino, Balestriero, Baraniuk & Aazhang, "Deep Autoencoders: From Understanding
to Generalization Guarantees" (MSML 2021; arXiv 2009.09525, "Provable Finite Data Generalization with Group
Autoencoder").

unverified reconstruction: only the paper's abstract was found (no full text, no authors' code; searched
2026-11-30). The abstract says that on each latent region the decoder is affine, ``g(z) = A_omega z +
b_omega``, and that two regularisations make the AE capture a Lie-group symmetry of the data. The regulariser
here is the spec's reconstruction (../shared/papers/spline-analysis.md section 7.2), with the group *given*
(the 2-torus of :mod:`models.spline.lie_shift`) rather than learned:

    R = mean over pairs of adjacent decoder regions (omega, omega') of
        min_theta ||A_omega' - T(theta) A_omega||_F^2 / (||A_omega||_F^2 + ||A_omega'||_F^2)

* pairs: each encoded window ``z`` of a batch is joined by a segment to another one; the first exit from
  ``z``'s region along it (found by bisection on the decoder's VQ codes, exact since regions are convex) gives
  the adjacent region omega', whose slope is read at the middle of its stretch of the segment;
* theta*: a grid over the whole torus refined by Newton steps (:func:`lie_shift.best_shift`); the gradient
  does not pass through the argmin (envelope theorem: at the minimiser d/dtheta = 0);
* the normalisation makes R scale-free (shrinking the slopes cannot lower it) and symmetric in the pair;
  R is in [0, 2] and exactly 0 when every adjacent slope is a group transform of its neighbour.

Only the slopes are tied. The offsets are left free: two pieces of a *continuous* map agree on their common
boundary, so ``b' = T b`` as well would force the decoded boundary points to be fixed points of T
(docs/group-autoencoder.md).

The encoder is one ``Linear(C*w, m)`` + leaky ReLU, i.e. a ``Conv1d(C, m, w)`` + leaky ReLU applied to one
window, so it can be copied into the first convolution of the inversion detector (its ``front_*``
hyperparameters). The decoder is a leaky-ReLU MLP ``m -> h -> C*w``.

Derivation and measurements: docs/group-autoencoder.md; benchmark: benchmarks/bench_group_ae.py.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .lie_shift import apply_shift, best_shift, frequency_block
from .network import SplineNet


# -- windows -----------------------------------------------------------------------------------------------
def sample_windows(sequences: Sequence[np.ndarray], width: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` windows (n, C, width) cut from (T, C) sequences at random positions.

    Every valid position (sequence, start) is equally likely; positions are drawn without replacement while
    there are enough of them, with replacement otherwise. Sequences shorter than ``width`` give none.

    Raises
    ------
    ValueError
        When no sequence holds a window of ``width`` frames, or the channel counts differ.
    """
    width, n = int(width), int(n)
    if width < 1 or n < 1:
        raise ValueError(f"width and n must be >= 1, got {width}, {n}")
    seqs = [np.asarray(s) for s in sequences]
    if len({s.shape[1] for s in seqs}) > 1:
        raise ValueError("sequences have different channel counts")
    counts = np.array([max(0, s.shape[0] - width + 1) for s in seqs], dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise ValueError(f"no sequence has {width} frames")
    rng = np.random.default_rng(seed)
    flat = rng.choice(total, size=n, replace=n > total)
    ends = np.cumsum(counts)
    which = np.searchsorted(ends, flat, side="right")
    starts = flat - (ends[which] - counts[which])
    return np.stack([seqs[i][s : s + width].T for i, s in zip(which, starts)]).astype(np.float32)


# -- the networks ------------------------------------------------------------------------------------------
def make_encoder(n_channels: int, width: int, latent: int, negative_slope: float = 0.1) -> nn.Sequential:
    """``Flatten -> Linear(C*w, latent) -> LeakyReLU``: on one window it is ``Conv1d(C, latent, w)`` + leaky
    ReLU (row ``k`` of the weight reshaped to (C, w) is output channel ``k``'s kernel)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(n_channels * width, latent), nn.LeakyReLU(negative_slope))


def make_decoder(latent: int, hidden: int, n_out: int, negative_slope: float = 0.1) -> nn.Sequential:
    """``Linear(latent, hidden) -> LeakyReLU -> Linear(hidden, n_out)``: continuous piecewise affine."""
    return nn.Sequential(nn.Linear(latent, hidden), nn.LeakyReLU(negative_slope), nn.Linear(hidden, n_out))


def encoder_as_conv(encoder: nn.Sequential, n_channels: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's ``(weight (latent, C, w), bias (latent,))`` as a ``Conv1d(C, latent, w)`` takes them."""
    lin = next(m for m in encoder if isinstance(m, nn.Linear))
    return lin.weight.detach().reshape(-1, n_channels, width).clone(), lin.bias.detach().clone()


# -- the regulariser -----------------------------------------------------------------------------------------
def _codes(view: SplineNet, z: torch.Tensor) -> torch.Tensor:
    """All VQ codes of the decoder at ``z``, one row per point."""
    return torch.cat([c.flatten(1) for c in view.codes(z)], dim=1)


def _exit(view: SplineNet, z0: torch.Tensor, d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
          code: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bisection for where ``z0 + t d`` leaves the region of ``code`` on [lo, hi] (inside at lo, outside at
    hi). A region is convex, so its trace on the segment is an interval and the bisection is exact."""
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        inside = (_codes(view, z0 + mid[:, None] * d) == code).all(1)
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    return lo, hi


def _one_hidden_layer(decoder: nn.Module) -> tuple[nn.Linear, float, nn.Linear] | None:
    """``(first Linear, leaky slope, last Linear)`` when the decoder is Linear -> (leaky) ReLU -> Linear, the
    case with closed forms for crossings and slopes; None otherwise (the generic paths are used)."""
    if not isinstance(decoder, nn.Sequential) or len(decoder) != 3:
        return None
    a, act, b = decoder
    if not (isinstance(a, nn.Linear) and isinstance(b, nn.Linear) and isinstance(act, (nn.ReLU, nn.LeakyReLU))):
        return None
    return a, float(getattr(act, "negative_slope", 0.0)), b


@torch.no_grad()
def adjacent_pairs(
    decoder: nn.Module,
    z: torch.Tensor,
    *,
    partners: torch.Tensor | None = None,
    max_pairs: int | None = None,
    generator: torch.Generator | None = None,
    bisect_steps: int = 30,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent points ``(z_a, z_b)`` in adjacent regions of a CPA decoder.

    Each ``z_i`` is joined to a partner ``z_j`` (by default a random pairing with no point its own partner);
    where their codes differ, ``z_a = z_i`` and ``z_b`` is the middle of the next region's stretch of the
    segment (the region entered when leaving ``z_i``'s). With one hidden layer the unit crossings along the
    segment are solved exactly; otherwise a bisection on the codes (exact too: regions are convex) finds them.

    Returns
    -------
    z_a, z_b : Tensor, shape (P, latent)
        P <= min(len(z), max_pairs) pairs (fewer when some segments stay in one region).
    """
    z0 = z.detach()
    n = z0.shape[0]
    if n < 2:
        return z0[:0], z0[:0]
    if partners is None:
        perm = torch.randperm(n, generator=generator)
        partners = torch.empty(n, dtype=torch.long)
        partners[perm] = perm.roll(-1)  # a random cycle: every point paired with another one
    z1 = z0[partners]
    simple = _one_hidden_layer(decoder)
    if simple is not None:
        # pre-activations are affine in z, so along the segment h(t) = h0 + t (h1 - h0): unit j flips at
        # t_j = h0_j / (h0_j - h1_j) when the signs differ; the first two flips bound the next region
        h0, h1 = simple[0](z0), simple[0](z1)
        flips = (h0 > 0) != (h1 > 0)
        keep = flips.any(1)
        t = torch.where(flips, h0 / torch.where(flips, h0 - h1, torch.ones_like(h0)), torch.full_like(h0, 2.0))
        t1 = t.min(1).values
        # units flipping together (a shared boundary) count as one crossing
        later = torch.where(t > t1[:, None] + 1e-9, t, torch.full_like(t, 2.0))
        t2 = later.min(1).values.clamp(max=1.0)
    else:
        view = SplineNet(decoder)  # shares the decoder's modules; raises TypeError on a non-CPA part
        c0, c1 = _codes(view, z0), _codes(view, z1)
        keep = ~(c0 == c1).all(1)
    if max_pairs is not None:
        keep &= torch.cumsum(keep.long(), 0) <= int(max_pairs)
    d = z1 - z0
    if simple is not None:
        return z0[keep], z0[keep] + (0.5 * (t1 + t2))[keep][:, None] * d[keep]
    z0, z1, c0, d = z0[keep], z1[keep], c0[keep], d[keep]
    if not len(z0):
        return z0, z0
    one = torch.ones(len(z0), dtype=z0.dtype)
    _, t1 = _exit(view, z0, d, 0 * one, one, c0, bisect_steps)  # first exit from z0's region
    cb = _codes(view, z0 + t1[:, None] * d)
    inside_at_end = (_codes(view, z1) == cb).all(1)
    _, t2 = _exit(view, z0, d, t1, one, cb, bisect_steps)  # exit from the next region
    t2 = torch.where(inside_at_end, one, t2)
    return z0, z0 + (0.5 * (t1 + t2))[:, None] * d


def _slopes(decoder: nn.Module, z: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The decoder's Jacobian at each point, as window-shaped columns (P, latent, C, w); differentiable with
    respect to the decoder's parameters."""
    simple = _one_hidden_layer(decoder)
    if simple is not None:  # W2 diag(slopes) W1
        first, alpha, last = simple
        s = torch.where(first(z).detach() > 0, 1.0, alpha).to(z.dtype)
        jac = torch.einsum("oh,ph,hm->pom", last.weight, s, first.weight)
    else:
        with warnings.catch_warnings():  # torch.func's first use scripts a helper with torch.jit (deprecated)
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
            jac = torch.func.vmap(torch.func.jacfwd(lambda v: decoder(v[None])[0]))(z)  # (P, C*w, latent)
    return jac.transpose(1, 2).reshape(z.shape[0], z.shape[1], *shape)


def group_regulariser(
    decoder: nn.Module,
    z: torch.Tensor,
    shape: tuple[int, int],
    first_order: np.ndarray | None = None,
    *,
    partners: torch.Tensor | None = None,
    max_pairs: int | None = 32,
    generator: torch.Generator | None = None,
    grid: int = 2,
    newton_steps: int = 8,
    return_details: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The Lie-group regulariser ``R`` of a CPA decoder around latent points ``z`` (unverified reconstruction).

    ``R = mean_pairs min_theta ||A_b - T(theta) A_a||_F^2 / (||A_a||_F^2 + ||A_b||_F^2)`` over pairs of
    adjacent regions found from ``z`` (:func:`adjacent_pairs`), with ``T`` the time / frequency-block shift
    torus (:mod:`models.spline.lie_shift`).

    Parameters
    ----------
    decoder : nn.Module
        Continuous piecewise-affine map latent -> C*w (flattened windows), made of parts
        :class:`~models.spline.network.SplineNet` knows.
    z : Tensor, shape (n, latent)
        Latent points (e.g. the encoded windows of a batch); no gradient flows through them.
    shape : (int, int)
        The window shape (C, w).
    first_order : ndarray of bool, shape (C,), optional
        Channels of the frequency axis (None: all).
    partners, max_pairs, generator
        How segments are drawn (see :func:`adjacent_pairs`).
    grid, newton_steps
        The search for theta* (see :func:`lie_shift.best_shift`).
    return_details : bool
        Also return ``theta_t``, ``theta_f`` and the per-pair values.

    Returns
    -------
    Tensor
        Scalar, differentiable with respect to the decoder's parameters; 0 when no segment leaves its region.
    """
    C, w = int(shape[0]), int(shape[1])
    za, zb = adjacent_pairs(decoder, z, partners=partners, max_pairs=max_pairs, generator=generator)
    if not len(za):
        zero = z.new_zeros(())
        return (zero, {"per_pair": z.new_zeros(0)}) if return_details else zero
    A, B = _slopes(decoder, za, (C, w)), _slopes(decoder, zb, (C, w))
    tt, tf, _ = best_shift(A.detach(), B.detach(), first_order, grid=grid, newton_steps=newton_steps)
    fi = frequency_block(first_order, C)
    TA = apply_shift(A, tt.to(A.dtype), tf.to(A.dtype), fi if len(fi) > 1 else fi[:0])
    num = (B - TA).pow(2).flatten(1).sum(1)
    den = A.pow(2).flatten(1).sum(1) + B.pow(2).flatten(1).sum(1)
    per_pair = num / den.clamp_min(torch.finfo(den.dtype).tiny)
    value = per_pair.mean()
    if return_details:
        return value, {"theta_t": tt, "theta_f": tf, "per_pair": per_pair.detach()}
    return value


# -- fitting ------------------------------------------------------------------------------------------------
@dataclass
class AEFit:
    """A fitted autoencoder on (C, w) windows.

    Attributes
    ----------
    encoder, decoder : nn.Module
        In eval mode, float32, on the CPU.
    group_weight : float
        The regulariser's weight it was trained with (0: a plain autoencoder).
    history : dict
        Per epoch: ``loss`` and ``mse`` (means over its steps) and ``group`` (the mean of R where it was
        evaluated; NaN in an epoch without, and always with weight 0); ``seconds`` (the fit's wall time) and
        ``epochs``.
    shape : (int, int)
        (C, w).
    first_order : ndarray of bool or None
        The frequency block the regulariser used.
    """

    encoder: nn.Module
    decoder: nn.Module
    group_weight: float
    history: dict = field(default_factory=dict)
    shape: tuple[int, int] = (0, 0)
    first_order: np.ndarray | None = None

    @torch.no_grad()
    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Latent codes (n, latent) of windows (n, C, w)."""
        return self.encoder(torch.as_tensor(np.asarray(windows, dtype=np.float32))).numpy()

    @torch.no_grad()
    def reconstruct(self, windows: np.ndarray) -> np.ndarray:
        """Reconstructions (n, C, w)."""
        x = torch.as_tensor(np.asarray(windows, dtype=np.float32))
        return self.decoder(self.encoder(x)).reshape(x.shape).numpy()

    def reconstruction_error(self, windows: np.ndarray) -> float:
        """Mean squared error per element of the reconstructions of ``windows`` (n, C, w)."""
        x = np.asarray(windows, dtype=np.float64)
        return float(np.mean((self.reconstruct(windows).astype(np.float64) - x) ** 2))

    def regulariser(self, windows: np.ndarray, *, max_pairs: int = 256, seed: int = 0) -> float:
        """The group regulariser R of the decoder around the encodings of ``windows`` (float64, seeded)."""
        dec = _double_copy(self.decoder)
        z = torch.as_tensor(self.encode(windows), dtype=torch.float64)
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            r = group_regulariser(dec, z, self.shape, self.first_order, max_pairs=max_pairs, generator=g)
        return float(r)


def _double_copy(m: nn.Module) -> nn.Module:
    return copy.deepcopy(m).double().eval()


def fit_group_autoencoder(
    windows: np.ndarray,
    *,
    latent: int = 16,
    hidden: int = 64,
    group_weight: float = 1.0,
    first_order: np.ndarray | None = None,
    epochs: int | None = None,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    max_pairs: int = 16,
    group_every: int = 4,
    negative_slope: float = 0.1,
    seed: int = 0,
    progress: Callable[[int, int], Any] | None = None,
) -> AEFit:
    """Train the autoencoder on windows with loss ``MSE + group_weight * R`` (Adam).

    Parameters
    ----------
    windows : ndarray, shape (n, C, w)
        Standardised windows (e.g. :func:`sample_windows` of standardised log-scattering sequences).
    latent, hidden : int
        Latent size m (the encoder's output channels) and the decoder's hidden width.
    group_weight : float
        Weight of :func:`group_regulariser` (0: a plain autoencoder; R is then not computed).
    first_order : ndarray of bool, shape (C,), optional
        The frequency block of the group action (None: every channel).
    epochs : int, optional
        Passes over the windows; default: ``steps`` gradient steps whatever n (a fair comparison across n).
    steps : int
        Gradient steps when ``epochs`` is None.
    batch_size : int
    lr, weight_decay : float
        Adam(W)'s step size and decoupled weight decay.
    max_pairs : int
        Region pairs per evaluation of R (a subsample keeps a step cheap).
    group_every : int
        R is evaluated every ``group_every``-th step with weight ``group_every * group_weight``, so that the
        objective averaged over steps is still ``MSE + group_weight * R`` (R costs ~5-10 plain steps).
    negative_slope : float
        Leaky-ReLU slope of the encoder and decoder.
    seed : int
        Seeds the initial weights, the batches and the pairs.
    progress : callable, optional
        Called as ``progress(epoch_done, n_epochs)``.

    Returns
    -------
    AEFit
    """
    x_all = torch.as_tensor(np.asarray(windows, dtype=np.float32))
    if x_all.dim() != 3 or len(x_all) < 2:
        raise ValueError(f"windows: expected shape (n >= 2, C, w), got {tuple(x_all.shape)}")
    n, C, w = x_all.shape
    if first_order is not None:
        first_order = np.asarray(first_order, dtype=bool)
        frequency_block(first_order, C)  # checks the shape
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        encoder = make_encoder(C, w, latent, negative_slope)
        decoder = make_decoder(latent, hidden, C * w, negative_slope)
    g = torch.Generator().manual_seed(int(seed))
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    bs = min(int(batch_size), n)
    per_epoch = math.ceil(n / bs)
    n_epochs = int(epochs) if epochs is not None else max(1, math.ceil(int(steps) / per_epoch))
    hist: dict[str, list[float]] = {"loss": [], "mse": [], "group": []}
    encoder.train(), decoder.train()
    every = max(1, int(group_every))
    step = 0
    for epoch in range(n_epochs):
        order = torch.randperm(n, generator=g)
        sums = {"loss": 0.0, "mse": 0.0, "group": 0.0}
        n_group = 0
        for k in range(per_epoch):
            xb = x_all[order[k * bs : (k + 1) * bs]]
            if len(xb) < 2:
                continue
            zb = encoder(xb)
            mse = (decoder(zb) - xb.flatten(1)).pow(2).mean()
            loss = mse
            reg = mse.new_zeros(())
            if group_weight and step % every == 0:
                reg = group_regulariser(decoder, zb.detach(), (C, w), first_order, max_pairs=max_pairs,
                                        generator=g, newton_steps=3)
                loss = mse + every * float(group_weight) * reg
                n_group += 1
            step += 1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["loss"] += float(loss.detach()) / per_epoch
            sums["mse"] += float(mse.detach()) / per_epoch
            sums["group"] += float(reg.detach())
        sums["group"] = sums["group"] / n_group if n_group else float("nan")
        for key, v in sums.items():
            hist[key].append(v)
        if progress is not None:
            progress(epoch + 1, n_epochs)
    encoder.eval(), decoder.eval()
    history: dict[str, Any] = {**hist, "seconds": time.perf_counter() - t0, "epochs": n_epochs}
    return AEFit(encoder, decoder, float(group_weight), history, (int(C), int(w)), first_order)


def generalisation_gap(
    train: np.ndarray,
    test: np.ndarray,
    *,
    group_weight: float,
    first_order: np.ndarray | None = None,
    seed: int = 0,
    **fit_kwargs: Any,
) -> dict[str, float]:
    """Fit on ``train`` windows and compare reconstruction errors on ``train`` and held-out ``test``.

    Returns
    -------
    dict
        ``train_error``, ``test_error`` (mean squared error per element), ``gap`` (test minus train),
        ``group`` (R of the fitted decoder around the training encodings) and ``seconds`` (the fit).
    """
    fit = fit_group_autoencoder(train, group_weight=group_weight, first_order=first_order, seed=seed, **fit_kwargs)
    tr, te = fit.reconstruction_error(train), fit.reconstruction_error(test)
    return {
        "train_error": tr,
        "test_error": te,
        "gap": te - tr,
        "group": fit.regulariser(train, seed=seed),
        "seconds": float(fit.history["seconds"]),
    }
