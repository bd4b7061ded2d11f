"""The Recurrent Neural Tangent Kernel (Alemohammad et al., ICLR 2021) over scattering sequences, and a
Detector on it.

:class:`RNTK` computes the exact infinite-width NNGP kernel and RNTK of a weight-tied RNN (ReLU or erf, any
depth) between sequences of any lengths, aligned at their last step (never zero-padded), with the "last"
or "avg" readout; vectorised over the pairs of a tile, streamed over time, tiled within
``memory_budget_mb``. :class:`RNTKClassifier` is the Detector on it: standardisation, the kernel setting
and regularisation chosen by cross-validation, an SVM or kernel ridge regression on the precomputed Gram
(Nystroem features for large training sets), calibrated probabilities.

Derivation (dual activations, the recursions, end alignment, readouts, tiling): docs/rntk.md.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch

from scatterbird.models.base import Detector, DetectorError, check_labels, check_sequences
from scatterbird.models.standardize import ChannelStats, fit_channel_stats, standardize

ACTIVATIONS = ("relu", "erf")
READOUTS = ("last", "avg")
KERNELS = ("ntk", "gp")
SQRT2 = math.sqrt(2.0)

_TWO_PI = 2.0 * math.pi


# ------------------------------------------------------------------------------------------------
# Dual activations (stateless, broadcasting): the reference forms, used for each sequence's own
# trajectory and by the tests; the tile loop uses fused in-place versions of the same formulas.
# ------------------------------------------------------------------------------------------------
def relu_dual(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ReLU dual activation (arc-cosine kernels of order 1 and 0).

    For ``(u, v) ~ N(0, [[a, c], [c, b]])`` returns ``E[relu(u) relu(v)]`` and ``E[1(u>0) 1(v>0)]``.

    Parameters
    ----------
    a, b, c : Tensor
        Variances and covariance, broadcastable to one shape; ``a, b >= 0``.

    Returns
    -------
    V, V_prime : Tensor
    """
    sab = torch.sqrt(a * b)
    # Zero variance (zero input with sigma_b = 0) has c = 0 too: rho = 0 there, and V = 0 exactly.
    rho = (c / sab.clamp_min(torch.finfo(sab.dtype).tiny)).clamp(-1.0, 1.0)
    pm = math.pi - torch.acos(rho)
    V = sab / _TWO_PI * (rho * pm + torch.sqrt((1.0 - rho * rho).clamp_min(0.0)))
    return V, pm / _TWO_PI


def erf_dual(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """erf dual activation (arcsine kernel, Williams 1997).

    For ``(u, v) ~ N(0, [[a, c], [c, b]])`` returns ``E[erf(u) erf(v)]`` and ``E[erf'(u) erf'(v)]``.

    Parameters
    ----------
    a, b, c : Tensor
        Variances and covariance, broadcastable to one shape.

    Returns
    -------
    V, V_prime : Tensor
    """
    q = torch.rsqrt((1.0 + 2.0 * a) * (1.0 + 2.0 * b))
    r = (2.0 * c * q).clamp(-1.0, 1.0)
    V = (2.0 / math.pi) * torch.asin(r)
    Vp = (4.0 / math.pi) * q * torch.rsqrt((1.0 - r * r).clamp_min(torch.finfo(r.dtype).tiny))
    return V, Vp


_DUALS = {"relu": relu_dual, "erf": erf_dual}


# ------------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------------
def as_sequences(
    sequences: Sequence[np.ndarray], n_channels: int | None = None, name: str = "sequences"
) -> list[np.ndarray]:
    """Validate a list of (n_steps, n_channels) arrays, keeping float64 precision.

    Raises
    ------
    DetectorError
        On an empty list, a non-2-D or empty sequence, mismatched channel counts, or NaN/inf values;
        the message names the offending sequence.
    """
    return check_sequences(sequences, n_channels, name, dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# The kernel
# ------------------------------------------------------------------------------------------------
#: A kernel variant: (kernel, readout), e.g. ("ntk", "last"); all four come from one pass over time.
Variant = tuple[str, str]
VARIANTS: tuple[Variant, ...] = tuple(itertools.product(KERNELS, READOUTS))


@dataclass
class _Own:
    """Each sequence's own (diagonal) trajectory, right-aligned in a grid of ``T`` steps.

    ``sig[l]`` is (N, T): Sigma(l,t)(x, x) at the sequence's own time, 1.0 before its start (a dummy
    that keeps the masked-out arithmetic finite). ``self_k[variant]`` holds the self-kernels (N,),
    sample-identity term included.
    """

    lengths: np.ndarray
    sig: list[torch.Tensor]
    self_k: dict[Variant, torch.Tensor]


@dataclass(frozen=True)
class RNTK:
    """Exact NNGP kernel and RNTK of a weight-tied RNN, for sequences of (n_steps, n_channels).

    Parameters
    ----------
    activation : {"relu", "erf"}
    n_layers : int
        Number of recurrent layers L >= 1 (same sigmas in every layer).
    sigma_w, sigma_u, sigma_b, sigma_h, sigma_v : float
        Recurrent, input, bias, initial-state and readout scales. ``sigma_w = sqrt(2)`` with ReLU is the
        edge of stability: no forgetting, and kernels grow with the length (use ``normalize``).
    readout : {"last", "avg"}
        Default readout; "avg" is the follow-up work's per-step-readout kernel (docs/rntk.md).
    normalize : bool
        Return the cosine-normalised kernel ``k(x,y) / sqrt(k(x,x) k(y,y))``.
    memory_budget_mb : float
        Working memory of one tile (the output Gram not included).
    max_tile : int
        Upper bound on a tile's side: small tiles keep the per-step arrays in cache.
    dtype : {"float64", "float32"}

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.standard_normal((t, 4)) for t in (5, 3, 7)]
    >>> G = RNTK(activation="relu", n_layers=2).gram(X)
    >>> G.shape, bool(np.allclose(G, G.T))
    ((3, 3), True)
    """

    activation: str = "relu"
    n_layers: int = 1
    sigma_w: float = SQRT2
    sigma_u: float = 1.0
    sigma_b: float = 0.1
    sigma_h: float = 0.0
    sigma_v: float = 1.0
    readout: str = "last"
    normalize: bool = False
    memory_budget_mb: float = 512.0
    max_tile: int = 256
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if int(self.n_layers) != self.n_layers or self.n_layers < 1:
            raise ValueError(f"n_layers must be an integer >= 1, got {self.n_layers}")
        for k in ("sigma_w", "sigma_u", "sigma_b", "sigma_h", "sigma_v"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        if not self.memory_budget_mb > 0 or self.max_tile < 1:
            raise ValueError("memory_budget_mb must be > 0 and max_tile >= 1")

    # -- public API ------------------------------------------------------------------------------
    def gram(
        self,
        X: Sequence[np.ndarray],
        Y: Sequence[np.ndarray] | None = None,
        *,
        kernel: str = "ntk",
        readout: str | None = None,
        out: np.ndarray | None = None,
        tile: int | None = None,
    ) -> np.ndarray:
        """Kernel matrix between two sets of sequences.

        Parameters
        ----------
        X : sequence of ndarray, each (T_i, m)
        Y : sequence of ndarray, each (T_j, m), optional
            None computes the symmetric Gram of ``X`` with itself, with the sample-identity term
            ``sigma_w^2 sigma_h^2`` on its diagonal. Two sets are always treated as different samples.
        kernel : {"ntk", "gp"}
            The RNTK or the NNGP kernel.
        readout : {"last", "avg"}, optional
            Default: the kernel's ``readout``.
        out : ndarray, shape (N, M), optional
            Written in place (e.g. a ``np.memmap`` for a Gram larger than memory).
        tile : int, optional
            Tile side; default from ``memory_budget_mb`` and ``max_tile``.

        Returns
        -------
        ndarray, float64, shape (N, M)
        """
        v = (kernel, readout or self.readout)
        return self.grams(X, Y, variants=(v,), outs=None if out is None else (out,), tile=tile)[v]

    def grams(
        self,
        X: Sequence[np.ndarray],
        Y: Sequence[np.ndarray] | None = None,
        *,
        variants: Iterable[Variant] = VARIANTS,
        outs: Sequence[np.ndarray] | None = None,
        tile: int | None = None,
    ) -> dict[Variant, np.ndarray]:
        """Several kernel variants from one pass over time (the GP kernel and the "avg" readout are
        by-products of the recursion, so all four cost little more than one).

        Parameters as in :meth:`gram`; ``variants`` lists ``(kernel, readout)`` pairs.

        Returns
        -------
        dict of (kernel, readout) to ndarray, shape (N, M)
        """
        variants = tuple(variants)
        bad = [v for v in variants if v not in VARIANTS]
        if bad or not variants:
            raise ValueError(f"variants must be (kernel, readout) pairs among {VARIANTS}, got {variants}")
        X = as_sequences(X, name="X")
        sym = Y is None
        Y = X if sym else as_sequences(Y, n_channels=X[0].shape[1], name="Y")
        n, m = len(X), len(Y)
        res = {}
        for i, v in enumerate(variants):
            o = outs[i] if outs is not None else np.empty((n, m), dtype=np.float64)
            if o.shape != (n, m):
                raise ValueError(f"out has shape {o.shape}, expected {(n, m)}")
            res[v] = o
        readouts = {r for _, r in variants}
        own_x = self._own(X)
        own_y = own_x if sym else self._own(Y)
        ox = np.argsort(own_x.lengths, kind="stable")
        oy = ox if sym else np.argsort(own_y.lengths, kind="stable")
        b = tile or self.tile_size(max(own_x.lengths.max(), own_y.lengths.max()), X[0].shape[1])
        for r0 in range(0, n, b):
            rows = ox[r0 : r0 + b]
            xs = self._pack(X, rows, own_x)
            for c0 in range(r0 if sym else 0, m, b):
                cols = oy[c0 : c0 + b]
                ys = xs if (sym and c0 == r0) else self._pack(Y, cols, own_y)
                blocks = self._block(xs, ys, readouts)
                if sym and c0 == r0:  # (i, j) and (j, i) were rounded differently: make them one number
                    blocks = {v: 0.5 * (B + B.T) for v, B in blocks.items()}
                for v in variants:
                    res[v][np.ix_(rows, cols)] = blocks[v]
                    if sym and c0 != r0:
                        res[v][np.ix_(cols, rows)] = blocks[v].T
        for v in variants:
            G = res[v]
            if sym:  # a sample with itself: its own trajectory, sample-identity term included
                np.fill_diagonal(G, own_x.self_k[v].numpy())
            if self.normalize:
                G /= np.sqrt(own_x.self_k[v].numpy())[:, None]
                G /= np.sqrt(own_y.self_k[v].numpy())[None, :]
        return res

    def diag(self, X: Sequence[np.ndarray], *, kernel: str = "ntk", readout: str | None = None) -> np.ndarray:
        """Self-kernels ``k(x, x)`` (sample-identity term included; 1 when ``normalize``), shape (N,)."""
        v = (kernel, readout or self.readout)
        if v not in VARIANTS:
            raise ValueError(f"(kernel, readout) must be among {VARIANTS}, got {v}")
        X = as_sequences(X, name="X")
        if self.normalize:
            return np.ones(len(X))
        return self._own(X).self_k[v].numpy().copy()

    def tile_size(self, max_len: int, n_channels: int) -> int:
        """Tile side that keeps one tile's working memory within ``memory_budget_mb``.

        A tile of b x b pairs holds about ``2 L + 12`` arrays of b^2 numbers (two carried per layer, four
        outputs or accumulators, temporaries) and the data of 2 b sequences.
        """
        item = 8 if self.dtype == "float64" else 4
        a = (2 * self.n_layers + 12) * item
        c = 2 * max_len * (n_channels + 2 * self.n_layers) * item
        budget = self.memory_budget_mb * 2**20
        b = int((-c + math.sqrt(c * c + 4 * a * budget)) / (2 * a))
        if b < 1:
            raise ValueError(f"memory_budget_mb={self.memory_budget_mb} is too small for even one pair")
        return max(1, min(b, self.max_tile))

    # -- internals -------------------------------------------------------------------------------
    @property
    def _torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    def _right_aligned(self, X: Sequence[np.ndarray], idx: np.ndarray, T: int) -> tuple[torch.Tensor, np.ndarray]:
        """(T, len(idx), m) time-major, each sequence ending at step T-1; and start steps."""
        m = X[idx[0]].shape[1]
        buf = np.zeros((T, len(idx), m), dtype=np.float64 if self.dtype == "float64" else np.float32)
        starts = np.empty(len(idx), dtype=np.int64)
        for j, i in enumerate(idx):
            t = X[i].shape[0]
            buf[T - t :, j] = X[i]
            starts[j] = T - t
        return torch.from_numpy(buf), starts

    def _own(self, X: Sequence[np.ndarray], chunk: int = 4096) -> _Own:
        """Every sequence's own trajectory, vectorised over sequences, streamed over time."""
        lengths = np.array([x.shape[0] for x in X], dtype=np.int64)
        T, N, L = int(lengths.max()), len(X), self.n_layers
        dual = _DUALS[self.activation]
        dt = self._torch_dtype
        sw2, su2, sb2, sh2, sv2 = (
            s * s for s in (self.sigma_w, self.sigma_u, self.sigma_b, self.sigma_h, self.sigma_v)
        )
        m = X[0].shape[1]
        sig = [torch.ones(N, T, dtype=dt) for _ in range(L)]
        self_k = {v: torch.empty(N, dtype=dt) for v in VARIANTS}
        for c0 in range(0, N, chunk):  # chunks keep the packed data small for large N
            idx = np.arange(c0, min(N, c0 + chunk))
            xp, starts = self._right_aligned(X, idx, T)
            st = torch.from_numpy(starts)
            V = [torch.zeros(len(idx), dtype=dt) for _ in range(L)]  # V_phi of the previous step, per layer
            VT = [torch.zeros(len(idx), dtype=dt) for _ in range(L)]  # V_phi' * Theta of the previous step
            acc = {"gp": torch.zeros(len(idx), dtype=dt), "ntk": torch.zeros(len(idx), dtype=dt)}
            for g in range(int(starts.min()), T):
                first = st == g
                started = st <= g
                p = (xp[g] * xp[g]).sum(-1) * (su2 / m)
                for l in range(L):
                    s = (p if l == 0 else su2 * V[l - 1]) + sb2
                    # The first step has the initial state's variance (same sample) instead of the W-term.
                    s = s + torch.where(first, torch.full_like(s, sw2 * sh2), sw2 * V[l])
                    th = s + torch.where(first, torch.zeros_like(s), sw2 * VT[l])
                    if l > 0:
                        th = th + su2 * VT[l - 1]
                    sig[l][c0 : c0 + len(idx), g] = torch.where(started, s, torch.ones_like(s))
                    v, vp = dual(s, s, s)
                    V[l], VT[l] = v, vp * th
                w = started.to(dt)
                acc["gp"] += w * sv2 * V[L - 1]
                acc["ntk"] += w * sv2 * (V[L - 1] + VT[L - 1])
            ln = torch.from_numpy(lengths[idx]).to(dt)
            sl = slice(c0, c0 + len(idx))
            self_k[("gp", "last")][sl] = sv2 * V[L - 1]
            self_k[("ntk", "last")][sl] = sv2 * (V[L - 1] + VT[L - 1])
            self_k[("gp", "avg")][sl] = acc["gp"] / ln
            self_k[("ntk", "avg")][sl] = acc["ntk"] / ln
        return _Own(lengths=lengths, sig=sig, self_k=self_k)

    def _pack(self, X: Sequence[np.ndarray], idx: np.ndarray, own: _Own) -> dict[str, Any]:
        """A tile's data in its own right-aligned grid, with per-step factors of the dual activation."""
        lengths = own.lengths[idx]
        T = int(lengths.max())
        xp, starts = self._right_aligned(X, idx, T)
        Tg = own.sig[0].shape[1]
        f1, f2 = [], []
        for l in range(self.n_layers):
            a = own.sig[l][torch.from_numpy(idx), Tg - T :].T.contiguous()  # (T, b)
            if self.activation == "relu":
                # rho = c * f1 f1',  V = f2 f2' (...) with f2 f2' = sqrt(a a') / (2 pi)
                f1.append(torch.rsqrt(a.clamp_min(torch.finfo(a.dtype).tiny)))
                f2.append(torch.sqrt(a / _TWO_PI))
            else:
                # r = c * f1 f1' = 2c / sqrt((1+2a)(1+2a')),  V' = f2 f2' / sqrt(1 - r^2)
                q = torch.rsqrt(1.0 + 2.0 * a)
                f1.append(q * SQRT2)
                f2.append(q * (2.0 / math.sqrt(math.pi)))
        return {"x": xp, "starts": starts, "T": T, "lengths": lengths, "f1": f1, "f2": f2}

    def _block(self, xs: Mapping[str, Any], ys: Mapping[str, Any], readouts: set[str]) -> dict[Variant, np.ndarray]:
        """GP and RNTK of every pair of two packed tiles: one pass over the common time grid."""
        dt = self._torch_dtype
        tiny = torch.finfo(dt).tiny
        L = self.n_layers
        sw2, su2, sb2, sv2 = (s * s for s in (self.sigma_w, self.sigma_u, self.sigma_b, self.sigma_v))
        m = xs["x"].shape[2]
        T = max(xs["T"], ys["T"])
        ox, oy = T - xs["T"], T - ys["T"]  # offsets of each tile's own grid in the common grid
        sx = torch.from_numpy(xs["starts"] + ox)
        sy = torch.from_numpy(ys["starts"] + oy)
        S = torch.maximum(sx[:, None], sy[None, :])  # first common step of each pair
        smin, smax = int(S.min()), int(S.max())
        relu = self.activation == "relu"
        # The ReLU branch keeps V' Theta scaled by 2 pi; every use of it divides by 2 pi here.
        kt = 1.0 / _TWO_PI if relu else 1.0
        one = torch.ones((), dtype=dt)
        V: list[torch.Tensor] = [torch.empty(0)] * L
        VT: list[torch.Tensor] = [torch.empty(0)] * L
        avg = "avg" in readouts
        if avg:
            acc_g = torch.zeros(S.shape, dtype=dt)
            acc_v = torch.zeros(S.shape, dtype=dt)  # sum of V' Theta (times 2 pi for ReLU)
        for g in range(smin, T):
            xg, yg = xs["x"][g - ox], ys["x"][g - oy]
            # Pairs whose first common step is after g are masked out of the W-terms (and of "avg"); the
            # values they carry meanwhile are finite junk that the mask discards.
            cont = (S < g).to(dt) if smin < g <= smax else None
            for l in range(L):
                w_all = g > smin and cont is None  # every pair continues: unmasked W-terms
                if l == 0 and w_all:  # the GEMM accumulates onto the W-term: one pass saved
                    sig = torch.addmm(V[l], xg, yg.T, beta=sw2, alpha=su2 / m).add_(sb2)
                else:
                    if l == 0:
                        sig = torch.mm(xg, yg.T).mul_(su2 / m).add_(sb2)
                    else:
                        sig = torch.mul(V[l - 1], su2).add_(sb2)
                    if w_all:
                        sig.add_(V[l], alpha=sw2)
                    elif cont is not None:
                        sig.addcmul_(V[l], cont, value=sw2)
                if w_all:
                    th = torch.add(sig, VT[l], alpha=sw2 * kt)
                elif cont is not None:
                    th = torch.addcmul(sig, VT[l], cont, value=sw2 * kt)
                else:
                    th = sig.clone()
                if l > 0:
                    th.add_(VT[l - 1], alpha=su2 * kt)
                a1, b1 = xs["f1"][l][g - ox], ys["f1"][l][g - oy]
                a2, b2 = xs["f2"][l][g - ox], ys["f2"][l][g - oy]
                # Fused dual activation, consuming sig and th in place. asin is the cheapest inverse
                # trigonometric function here (pi - arccos(rho) = pi/2 + arcsin(rho)), and sqrt(s) is
                # computed as s * rsqrt(s): both are several times faster than acos / sqrt in float64.
                if relu:
                    rho = sig.mul_(a1[:, None]).mul_(b1[None, :]).clamp_(-1.0, 1.0)
                    pm = torch.asin(rho).add_(math.pi / 2)  # pi - theta
                    vt = th.mul_(pm)  # 2 pi V' Theta (the 1/(2 pi) is folded into the constants)
                    s = torch.addcmul(one, rho, rho, value=-1.0).clamp_(min=tiny)  # 1 - rho^2
                    s.mul_(torch.rsqrt(s))
                    v = s.addcmul_(pm, rho).mul_(a2[:, None]).mul_(b2[None, :])
                else:
                    r = sig.mul_(a1[:, None]).mul_(b1[None, :]).clamp_(-1.0, 1.0)
                    s = torch.addcmul(one, r, r, value=-1.0).clamp_(min=tiny).rsqrt_()
                    vt = th.mul_(s).mul_(a2[:, None]).mul_(b2[None, :])
                    v = torch.asin(r).mul_(2.0 / math.pi)
                V[l], VT[l] = v, vt
            if avg:
                if g < smax:
                    act = (S <= g).to(dt)
                    acc_g.addcmul_(V[L - 1], act)
                    acc_v.addcmul_(VT[L - 1], act)
                else:
                    acc_g.add_(V[L - 1])
                    acc_v.add_(VT[L - 1])
        out: dict[Variant, np.ndarray] = {}
        if "last" in readouts:
            out[("gp", "last")] = V[L - 1].mul(sv2).numpy()
            out[("ntk", "last")] = VT[L - 1].mul(kt).add_(V[L - 1]).mul_(sv2).numpy()
        if avg:
            lx = torch.from_numpy(xs["lengths"]).to(dt)
            ly = torch.from_numpy(ys["lengths"]).to(dt)
            scale = torch.rsqrt(lx[:, None] * ly[None, :]).mul_(sv2)
            out[("gp", "avg")] = (acc_g * scale).numpy()
            out[("ntk", "avg")] = acc_v.mul_(kt).add_(acc_g).mul_(scale).numpy()
        return out


# ------------------------------------------------------------------------------------------------
# The detector
# ------------------------------------------------------------------------------------------------
#: Kernel hyperparameters that ``param_grid`` may search over.
GRID_KEYS = ("activation", "n_layers", "sigma_w", "sigma_u", "sigma_b", "sigma_h", "readout", "kernel", "centre")

#: Default cross-validation grid (small: each setting costs one Gram of the training set). With cosine
#: normalisation only the ratios of the sigmas matter: sigma_w sets the memory (forgetting below sqrt(2)),
#: sigma_u the weight of the current input against the state and the bias. Centring helps where clips'
#: backgrounds differ more than their calls (synthetic challenge-like clips: AUC 0.78 against 0.65) and
#: hurts where the clip's mean level is the signal, so cross-validation decides.
DEFAULT_GRID: dict[str, list[Any]] = {"sigma_w": [1.0, SQRT2], "sigma_u": [0.5, 1.0], "centre": [True, False]}

SOLVERS = ("svm", "krr")
CALIBRATIONS = ("sigmoid", "isotonic")
METHODS = ("auto", "exact", "nystroem")


def _platt(d: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt's sigmoid ``p = 1 / (1 + exp(-(a d + c)))`` fitted with his smoothed targets.

    scikit-learn's logistic regression with each sample entered once per class, weighted by its target,
    minimises exactly Platt's cross-entropy; the smoothing keeps the slope finite when the decisions
    separate the classes.
    """
    from sklearn.linear_model import LogisticRegression

    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    t = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    X = np.concatenate([d, d])[:, None]
    lab = np.concatenate([np.ones(len(d)), np.zeros(len(d))])
    w = np.concatenate([t, 1.0 - t])
    lr = LogisticRegression(C=1e6, tol=1e-10, max_iter=1000).fit(X, lab, sample_weight=w)
    a, c = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if a <= 0:
        # Out-of-fold decisions pooled over folds (each fold with its own offset) can slope the wrong way on
        # small sets even when every fold ranks well. A calibrator must never reverse the classifier's
        # ranking: fall back to the base rate, ordered by the decision (a negligible positive slope).
        a = 1e-6 / max(float(np.std(d)), 1e-12)
        prior = float(np.clip(np.mean(t), 1e-6, 1 - 1e-6))
        c = math.log(prior / (1 - prior)) - a * float(np.mean(d))
    return a, c


class RNTKClassifier(Detector):
    """Bird / no-bird classifier: the RNTK (or NNGP kernel) of scattering sequences and a kernel machine.

    ``fit`` optionally centres each sequence and standardises each channel with training statistics, then
    for every kernel setting of the grid (centring included) computes the training Gram once (the four
    kernel/readout variants together) and scores every regularisation value by stratified k-fold
    cross-validated ROC AUC; the best pair is refitted on the whole set, and out-of-fold decision values
    of that pair calibrate the probabilities (Platt's sigmoid or isotonic regression). Training sets larger
    than ``max_exact`` use a Nystroem approximation with ``n_landmarks`` landmark sequences instead of the
    exact Gram.

    Whatever the method, the fitted model is ``decision(x) = sum_k alpha_k k(x, z_k) + b`` over reference
    sequences ``z_k`` (the support vectors, all training sequences for ridge regression, or the Nystroem
    landmarks), so prediction and the saved state are the same in every case.

    Parameters
    ----------
    activation, n_layers, sigma_w, sigma_u, sigma_b, sigma_h, sigma_v :
        Kernel hyperparameters, see :class:`RNTK`; any of them but sigma_v (which cosine normalisation
        cancels) may be overridden by ``param_grid``.
    readout : {"avg", "last"}
        "avg" by default: a call anywhere in the clip counts, where "last" weights the steps by their
        position.
    kernel : {"ntk", "gp"}
        RNTK (all weights trained) or NNGP kernel (readout only).
    normalize : bool
        Cosine-normalise the kernel (removes the growth with length at sigma_w = sqrt(2)).
    centre : bool
        Subtract each sequence's own mean over time from every channel first, so that the kernel compares
        what changes within a clip (calls) rather than its background spectrum.
    standardize : bool
        Standardise each channel with its training mean and standard deviation (the kernel takes raw dot
        products of steps).
    param_grid : dict of str to list, optional
        Kernel settings searched by cross-validation (keys in ``GRID_KEYS``); ``None`` uses
        ``DEFAULT_GRID``, ``{}`` no search.
    solver : {"svm", "krr"}
        Support vector machine on the precomputed kernel (``sklearn.svm.SVC``; ``LinearSVC`` on Nystroem
        features) or kernel ridge regression on labels +-1 (``KernelRidge``; ``Ridge``).
    C : list of float
        Values of the SVM's C searched.
    ridge : list of float
        Values of the ridge penalty searched (``solver="krr"``).
    cv : int
        Folds of the stratified cross-validation (lowered to the smaller class's count if needed).
    calibration : {"sigmoid", "isotonic"}
        Platt scaling or isotonic regression of the out-of-fold decision values.
    method : {"auto", "exact", "nystroem"}
        "auto" is exact up to ``max_exact`` training sequences, Nystroem above.
    max_exact : int
    n_landmarks : int
        Nystroem landmarks (drawn at random from the training set).
    memory_budget_mb : float
        Working memory of one kernel tile, see :class:`RNTK`.
    random_state : int, optional
        Seeds the folds, the landmarks and LinearSVC.

    Notes
    -----
    ``fit(..., unlabeled=...)`` ignores the unlabeled sequences: the kernel machine is supervised.
    """

    kind = "rntk"

    def __init__(
        self,
        *,
        activation: str = "relu",
        n_layers: int = 1,
        sigma_w: float = SQRT2,
        sigma_u: float = 1.0,
        sigma_b: float = 0.1,
        sigma_h: float = 0.0,
        sigma_v: float = 1.0,
        readout: str = "avg",
        kernel: str = "ntk",
        normalize: bool = True,
        centre: bool = True,
        standardize: bool = True,
        param_grid: Mapping[str, Sequence[Any]] | None = None,
        solver: str = "svm",
        C: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
        ridge: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
        cv: int = 3,
        calibration: str = "sigmoid",
        method: str = "auto",
        max_exact: int = 8000,
        n_landmarks: int = 1000,
        memory_budget_mb: float = 512.0,
        random_state: int | None = None,
    ) -> None:
        self.activation = activation
        self.n_layers = n_layers
        self.sigma_w = sigma_w
        self.sigma_u = sigma_u
        self.sigma_b = sigma_b
        self.sigma_h = sigma_h
        self.sigma_v = sigma_v
        self.readout = readout
        self.kernel = kernel
        self.normalize = normalize
        self.centre = centre
        self.standardize = standardize
        self.param_grid = param_grid
        self.solver = solver
        self.C = C
        self.ridge = ridge
        self.cv = cv
        self.calibration = calibration
        self.method = method
        self.max_exact = max_exact
        self.n_landmarks = n_landmarks
        self.memory_budget_mb = memory_budget_mb
        self.random_state = random_state

    # -- construction from the command line --------------------------------------------------------
    #: Short names the command line may use for some parameters.
    OPTION_ALIASES: ClassVar[dict[str, str]] = {
        "layers": "n_layers",
        "landmarks": "n_landmarks",
        "nystroem_landmarks": "n_landmarks",
        "folds": "cv",
        "seed": "random_state",
        "memory_mb": "memory_budget_mb",
    }

    @classmethod
    def from_options(cls, **options: Any) -> "RNTKClassifier":
        """Build a classifier from simple keyword options, as a command line gives them.

        Values may be strings. A kernel hyperparameter (one of ``GRID_KEYS``) given as a comma-separated
        list, e.g. ``sigma_w="1.0,1.414"``, is searched by cross-validation (the default grid is then
        not used); a single value fixes it. ``C`` and ``ridge`` take comma-separated lists. Aliases:
        ``layers``, ``landmarks``, ``folds``, ``seed``, ``memory_mb``. ``None`` values are skipped.

        Examples
        --------
        >>> det = RNTKClassifier.from_options(activation="erf", layers="2", sigma_w="1.0,1.2", C="1,10")
        >>> det.param_grid, det.C, det.n_layers
        ({'sigma_w': [1.0, 1.2]}, [1.0, 10.0], 2)
        """
        import inspect

        sig = inspect.signature(cls.__init__)
        defaults = {k: p.default for k, p in sig.parameters.items() if k != "self"}
        kw: dict[str, Any] = {}
        grid: dict[str, list[Any]] = {}
        for key, value in options.items():
            if value is None:
                continue
            name = cls.OPTION_ALIASES.get(key, key)
            if name not in defaults or name == "param_grid":
                known = sorted(set(defaults) - {"param_grid"} | set(cls.OPTION_ALIASES))
                raise DetectorError(f"unknown rntk option {key!r}; known: {', '.join(known)}")
            default = defaults[name]
            items = [v.strip() for v in value.split(",")] if isinstance(value, str) else None
            if name in ("C", "ridge"):
                kw[name] = [float(v) for v in items] if items is not None else [float(v) for v in np.atleast_1d(value)]
                continue
            if items is not None and len(items) > 1:
                if name not in GRID_KEYS:
                    raise DetectorError(f"rntk option {key!r} takes one value, got {value!r}")
                grid[name] = [_parse_like(v, default, name) for v in items]
                continue
            kw[name] = _parse_like(items[0] if items is not None else value, default, name)
        kw["param_grid"] = grid
        det = cls(**kw)
        det._check_params()
        return det

    # -- Detector API -----------------------------------------------------------------------------
    @property
    def n_channels_(self) -> int:
        self._check_fitted()
        return int(self.extra_["n_channels"])

    def fit(
        self,
        sequences: Sequence[np.ndarray],
        labels: Sequence[int],
        unlabeled: Sequence[np.ndarray] | None = None,
    ) -> "RNTKClassifier":
        """Select the kernel and regularisation by cross-validation, refit, calibrate.

        Parameters
        ----------
        sequences : sequence of ndarray, each (n_steps, n_channels)
        labels : sequence of int, 0 or 1
        unlabeled : ignored

        Returns
        -------
        self
        """
        from sklearn.model_selection import StratifiedKFold

        self._check_params()
        seqs = check_sequences(sequences, name="sequences")
        y = check_labels(labels, len(seqs))
        n = len(seqs)
        n_min = int(min(np.bincount(y)))
        n_splits = min(int(self.cv), n_min)
        if n_splits < 2:
            raise DetectorError(
                f"cross-validation needs at least 2 sequences of each class, got {np.bincount(y).tolist()}"
            )
        folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state).split(np.zeros(n), y))
        method = self.method if self.method != "auto" else ("exact" if n <= self.max_exact else "nystroem")
        regs = [float(v) for v in (self.C if self.solver == "svm" else self.ridge)]
        landmarks = None
        if method == "nystroem":
            rng = np.random.default_rng(self.random_state)
            landmarks = np.sort(rng.choice(n, size=min(int(self.n_landmarks), n), replace=False))
        best: dict[str, Any] | None = None
        prepared: dict[bool, tuple[ChannelStats | None, list[np.ndarray]]] = {}
        for params, variants in self._settings():
            centre = bool(params["centre"])
            if centre not in prepared:
                stats = fit_channel_stats(self._centred(seqs, centre)) if self.standardize else None
                prepared[centre] = (stats, self._prepare(seqs, stats, centre))
            X = prepared[centre][1]
            kern = self._rntk(params)
            if method == "exact":
                feats = kern.grams(X, variants=variants)
            else:
                feats = _nystroem_features(kern, X, landmarks, variants)
            for kname, readout in variants:
                F = feats[(kname, readout)]
                for reg in regs:
                    oof, score = self._cross_validate(F, y, folds, reg, method)
                    if best is None or score > best["score"] + 1e-12:
                        best = {
                            "score": score,
                            "params": {**params, "kernel": kname, "readout": readout},
                            "reg": reg,
                            "oof": oof,
                            "F": F,
                        }
        assert best is not None
        # Refit the chosen setting on everything, as a weighted sum over reference sequences.
        F, reg = best["F"], best["reg"]
        stats = prepared[bool(best["params"]["centre"])][0]
        if method == "exact":
            ref, alpha, b = self._refit_exact(F, y, reg)
        else:
            phi, M = F
            w, b = self._fit_linear(phi, y, reg)
            ref, alpha = landmarks, M @ w
        if self.calibration == "sigmoid":
            a, c = _platt(best["oof"], y)
            calib = {"platt": torch.tensor([a, c], dtype=torch.float64)}
        else:
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(best["oof"], y)
            calib = {
                "iso_x": torch.from_numpy(np.asarray(iso.X_thresholds_, dtype=np.float64)),
                "iso_y": torch.from_numpy(np.asarray(iso.y_thresholds_, dtype=np.float64)),
            }
        ref = np.asarray(ref, dtype=np.int64)
        frames = np.concatenate([seqs[i] for i in ref]) if len(ref) else np.zeros((0, seqs[0].shape[1]), np.float32)
        self.tensors_ = {
            "ref_frames": torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)),
            "ref_lengths": torch.tensor([seqs[i].shape[0] for i in ref], dtype=torch.int64),
            "alpha": torch.from_numpy(np.asarray(alpha, dtype=np.float64).copy()),
            "intercept": torch.tensor([float(b)], dtype=torch.float64),
            **calib,
        }
        if stats is not None:
            self.tensors_["mean"] = torch.from_numpy(stats.mean.copy())
            self.tensors_["std"] = torch.from_numpy(stats.std.copy())
        self.extra_ = {
            "n_channels": int(seqs[0].shape[1]),
            "kernel_params": best["params"],
            "reg": reg,
            "method": method,
            "cv_auc": float(best["score"]),
            "n_train": n,
        }
        self._cache = None
        return self

    def decision_function(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Uncalibrated decision values ``sum_k alpha_k k(x, z_k) + b``, shape (n_sequences,)."""
        self._check_fitted()
        seqs = check_sequences(sequences, n_channels=self.n_channels_, name="sequences")
        stats, refs = self._reference()
        X = self._prepare(seqs, stats, bool(self.extra_["kernel_params"]["centre"]))
        alpha = self.tensors_["alpha"].numpy()
        b = float(self.tensors_["intercept"][0])
        if len(refs) == 0:  # every coefficient zero: a constant decision
            return np.full(len(X), b)
        kp = self.extra_["kernel_params"]
        K = self._rntk(kp).gram(X, refs, kernel=kp["kernel"], readout=kp["readout"])
        return K @ alpha + b

    def predict_proba(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Calibrated probability of bird, shape (n_sequences,)."""
        d = self.decision_function(sequences)
        t = self.tensors_
        if "platt" in t:
            a, c = (float(v) for v in t["platt"])
            z = np.clip(a * d + c, -700.0, 700.0)
            p = 1.0 / (1.0 + np.exp(-z))
        else:
            p = np.interp(d, t["iso_x"].numpy(), t["iso_y"].numpy())
        return np.clip(p, 0.0, 1.0)

    def _get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        self._check_fitted()
        return dict(self.tensors_), dict(self.extra_)

    def _set_state(self, tensors: Mapping[str, torch.Tensor], extra: Mapping[str, Any]) -> None:
        need = {"ref_frames", "ref_lengths", "alpha", "intercept"}
        if not need <= set(tensors) or not ({"platt"} <= set(tensors) or {"iso_x", "iso_y"} <= set(tensors)):
            raise DetectorError(f"rntk model file lacks tensors: has {sorted(tensors)}")
        if int(tensors["ref_lengths"].sum()) != tensors["ref_frames"].shape[0]:
            raise DetectorError("rntk model file is inconsistent: reference lengths do not add up to the frames")
        self.tensors_ = dict(tensors)
        self.extra_ = dict(extra)
        self._cache = None

    # -- internals --------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "tensors_"):
            raise DetectorError("this RNTKClassifier is not fitted yet; call fit first")

    def _check_params(self) -> None:
        if self.solver not in SOLVERS:
            raise DetectorError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.calibration not in CALIBRATIONS:
            raise DetectorError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        if self.method not in METHODS:
            raise DetectorError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.kernel not in KERNELS:
            raise DetectorError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        grid = DEFAULT_GRID if self.param_grid is None else self.param_grid
        bad = sorted(set(grid) - set(GRID_KEYS))
        if bad:
            raise DetectorError(f"param_grid keys must be among {GRID_KEYS}, got {bad}")
        if any(len(v) == 0 for v in grid.values()) or len(self.C) == 0 or len(self.ridge) == 0:
            raise DetectorError("param_grid lists, C and ridge must not be empty")
        if int(self.cv) < 2:
            raise DetectorError(f"cv must be >= 2 folds, got {self.cv}")
        if int(self.n_landmarks) < 1 or int(self.max_exact) < 1:
            raise DetectorError("n_landmarks and max_exact must be >= 1")
        for params, _ in self._settings():  # every kernel of the grid must be valid
            try:
                self._rntk(params)
            except ValueError as exc:
                raise DetectorError(f"bad kernel setting {params}: {exc}") from None

    def _settings(self) -> list[tuple[dict[str, Any], tuple[Variant, ...]]]:
        """The grid's kernel settings, grouped so that settings differing only by kernel and readout
        (which come from one pass over time) share one Gram computation."""
        grid = dict(DEFAULT_GRID if self.param_grid is None else self.param_grid)
        kernels = list(grid.pop("kernel", [self.kernel]))
        readouts = list(grid.pop("readout", [self.readout]))
        variants = tuple(itertools.product(kernels, readouts))
        base = {k: getattr(self, k) for k in GRID_KEYS if k not in ("kernel", "readout")}
        keys = sorted(grid)
        out = []
        for values in itertools.product(*(grid[k] for k in keys)):
            out.append(({**base, **dict(zip(keys, values))}, variants))
        return out

    def _rntk(self, params: Mapping[str, Any]) -> RNTK:
        return RNTK(
            activation=params["activation"],
            n_layers=int(params["n_layers"]),
            sigma_w=float(params["sigma_w"]),
            sigma_u=float(params["sigma_u"]),
            sigma_b=float(params["sigma_b"]),
            sigma_h=float(params["sigma_h"]),
            sigma_v=float(self.sigma_v),
            readout=params.get("readout", self.readout),
            normalize=bool(self.normalize),
            memory_budget_mb=float(self.memory_budget_mb),
        )

    @staticmethod
    def _centred(seqs: Sequence[np.ndarray], centre: bool) -> list[np.ndarray]:
        x = [np.asarray(s, dtype=np.float64) for s in seqs]
        return [s - s.mean(axis=0) for s in x] if centre else x

    def _prepare(self, seqs: Sequence[np.ndarray], stats: ChannelStats | None, centre: bool) -> list[np.ndarray]:
        """What the kernel sees: optional per-sequence centring, then the training set's channel scaling."""
        x = self._centred(seqs, centre)
        return x if stats is None else [standardize(s, stats) for s in x]

    def _reference(self) -> tuple[ChannelStats | None, list[np.ndarray]]:
        """Channel statistics and standardised reference sequences, from the state (cached)."""
        if self._cache is None:
            t = self.tensors_
            stats = ChannelStats(t["mean"].numpy(), t["std"].numpy()) if "mean" in t else None
            frames = t["ref_frames"].numpy()
            bounds = np.cumsum(np.concatenate([[0], t["ref_lengths"].numpy()]))
            refs = [frames[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]
            self._cache = (stats, self._prepare(refs, stats, bool(self.extra_["kernel_params"]["centre"])))
        return self._cache

    def _cross_validate(self, F: Any, y: np.ndarray, folds: list, reg: float, method: str) -> tuple[np.ndarray, float]:
        """Out-of-fold decision values and the mean fold ROC AUC of one (kernel, reg) setting."""
        from sklearn.metrics import roc_auc_score

        oof = np.empty(len(y))
        scores = []
        for tr, va in folds:
            if method == "exact":
                ref, alpha, b = self._refit_exact(F[np.ix_(tr, tr)], y[tr], reg)
                oof[va] = F[np.ix_(va, tr[ref])] @ alpha + b
            else:
                phi = F[0]
                w, b = self._fit_linear(phi[tr], y[tr], reg)
                oof[va] = phi[va] @ w + b
            scores.append(roc_auc_score(y[va], oof[va]))
        return oof, float(np.mean(scores))

    def _refit_exact(self, G: np.ndarray, y: np.ndarray, reg: float) -> tuple[np.ndarray, np.ndarray, float]:
        """(reference indices, coefficients, intercept) of an SVM or kernel ridge fit on a Gram."""
        if self.solver == "svm":
            from sklearn.svm import SVC

            svc = SVC(C=reg, kernel="precomputed").fit(G, y)
            return svc.support_, svc.dual_coef_[0].copy(), float(svc.intercept_[0])
        from sklearn.kernel_ridge import KernelRidge

        krr = KernelRidge(alpha=reg, kernel="precomputed").fit(G, 2.0 * y - 1.0)
        return np.arange(len(y)), np.asarray(krr.dual_coef_).ravel(), 0.0

    def _fit_linear(self, phi: np.ndarray, y: np.ndarray, reg: float) -> tuple[np.ndarray, float]:
        """(weights, intercept) of a linear SVM or ridge on Nystroem features."""
        if self.solver == "svm":
            from sklearn.svm import LinearSVC

            svm = LinearSVC(C=reg, random_state=self.random_state, max_iter=20000, dual="auto").fit(phi, y)
            return svm.coef_[0].copy(), float(svm.intercept_[0])
        from sklearn.linear_model import Ridge

        r = Ridge(alpha=reg).fit(phi, 2.0 * y - 1.0)
        return np.asarray(r.coef_).ravel(), float(r.intercept_)


def _nystroem_features(
    kern: RNTK, X: list[np.ndarray], landmarks: np.ndarray, variants: Sequence[Variant]
) -> dict[Variant, tuple[np.ndarray, np.ndarray]]:
    """Nystroem features ``phi = K(X, Z) M`` with ``M = K(Z, Z)^{-1/2}``, and ``M``, per variant.

    The landmarks are training sequences, so their entries with themselves get the sample-identity
    term (their own self-kernel), as in an exact Gram of the training set.
    """
    Z = [X[i] for i in landmarks]
    out = {}
    for v, C in kern.grams(X, Z, variants=variants).items():
        C[landmarks, np.arange(len(landmarks))] = kern.diag(Z, kernel=v[0], readout=v[1])
        Kzz = C[landmarks]
        Kzz = 0.5 * (Kzz + Kzz.T)
        w, U = np.linalg.eigh(Kzz)
        keep = w > max(w.max(), 0.0) * 1e-10  # drop the null space: K(Z, Z) of similar sequences is near-singular
        M = U[:, keep] / np.sqrt(w[keep])
        out[v] = (C @ M, M)
    return out


def _parse_like(value: Any, default: Any, name: str) -> Any:
    """Convert a command-line value to the type of a parameter's default."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                v = value.strip().lower()
                if v not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return v in ("1", "true", "yes", "on")
            return bool(value)
        if name == "random_state":
            return None if value in ("", "none", "None") else int(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value) if isinstance(value, str) else value
    except (TypeError, ValueError):
        raise DetectorError(f"rntk option {name}: cannot read {value!r} as {type(default).__name__}") from None
