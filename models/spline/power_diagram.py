"""Stage 3: the partition as a power diagram, regions along paths, local complexity, 2-D slices.

* :func:`centroid_radius`: each layer's per-input centroid ``mu^l(x) = J_l(x)^T 1`` and radius;
* :func:`layer_piece_maps`, :func:`enumerate_power_diagram`, :func:`power_assign`: a layer's power diagram
  within the region of the layers below, whose argmin over codes is the layer's code;
* :func:`regions_on_segment`: the exact number of regions crossed along a segment, found layer by layer
  (:func:`regions_on_segment_dense` is the sampled check);
* :func:`local_complexity` and :func:`slice_regions`: units cut around an input, and a 2-D slice of the
  partition through three inputs (grid form).

Derivation: docs/spline-analyses.md §4.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .affine import _linear_map, explicit_affine
from .codes import region_hash
from .network import PointwiseHandler, SplineNet, handler_for, iter_batches


# -- per-input centroids and radii ---------------------------------------------------------------------
@dataclass
class CentroidRadius:
    """Per layer (the piecewise layers, then the logits): ``mu`` (batch, *input_shape) and ``rad`` (batch,)."""

    mu: list[torch.Tensor]
    rad: list[torch.Tensor]


def centroid_radius(view: SplineNet, x: torch.Tensor) -> CentroidRadius:
    """``mu^l(x) = J_l^T 1`` (one backward pass per layer) and the radius identity, for every layer.

    Parameters
    ----------
    view : SplineNet
    x : Tensor, shape (batch, *input_shape)
    """
    mus, rads = [], []
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        outs = view.layer_outputs(xg)
        for l, z in enumerate(outs):
            (mu,) = torch.autograd.grad(z.sum(), xg, retain_graph=l < len(outs) - 1)
            ones_z = z.detach().flatten(1).sum(1)
            mu_x = (mu * x).flatten(1).sum(1)  # 1^T J x = <J^T 1, x>
            rads.append(mu.flatten(1).pow(2).sum(1) + 2 * (ones_z - mu_x))
            mus.append(mu)
    return CentroidRadius(mus, rads)


# -- a layer's power diagram, by enumeration (small layers) ---------------------------------------------
@torch.no_grad()
def layer_piece_maps(view: SplineNet, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine maps of the pieces of layer ``layer``'s units, as functions of the network input, valid in the
    region of ``x`` of the layers below (the pulled-back layer, docs/spline-analyses.md §4(a)3).

    Parameters
    ----------
    view : SplineNet
    layer : int
        1-based piecewise layer.
    x : Tensor, shape (1, *input_shape)

    Returns
    -------
    A : Tensor, (units, R, d_in)
    B : Tensor, (units, R)
        Piece ``r`` of unit ``k`` equals ``A[k, r] @ x'.flatten() + B[k, r]`` for ``x'`` in that region.
    """
    if not 1 <= layer <= view.n_layers:
        raise ValueError(f"layer must be in 1..{view.n_layers}, got {layer}")
    end = view.piecewise_index[layer - 1]
    start = 0 if layer == 1 else view.piecewise_index[layer - 2] + 1
    if layer == 1:
        A_om = torch.eye(x.numel(), dtype=x.dtype)
        B_om = torch.zeros(x.numel(), dtype=x.dtype)
        z = x
    else:
        A_om, B_om = explicit_affine(view, x, upto_layer=layer - 1)
        z = view.run(x, 0, start)
    m = view.parts[end]
    h = handler_for(m)

    def pieces_of(u: torch.Tensor) -> torch.Tensor:
        return h.pieces(m, view.run(u, start, end))

    Q, q0 = _linear_map(pieces_of, tuple(z.shape[1:]), z)  # pieces are affine in the layer input
    U, R = pieces_of(z).shape[1:]
    A = (Q @ A_om).reshape(U, R, -1)
    B = (Q @ B_om + q0).reshape(U, R)
    return A, B


def enumerate_power_diagram(A: torch.Tensor, B: torch.Tensor, *, max_cells: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All cells of the power diagram of a layer from its piece maps.

    Returns
    -------
    codes : Tensor, int64, (n_cells, units)
        Every code tuple ``t`` (``R ** units`` of them).
    mu : Tensor, (n_cells, d_in)
        ``sum_k A[k, t_k]``.
    rad : Tensor, (n_cells,)
        ``||mu_t||^2 + 2 sum_k B[k, t_k]``.
    """
    U, R = B.shape
    if R**U > max_cells:
        raise ValueError(f"{R}**{U} cells is more than max_cells={max_cells}")
    codes = torch.tensor(list(itertools.product(range(R), repeat=U)), dtype=torch.long).reshape(-1, U)
    k = torch.arange(U)
    mu = A[k, codes].sum(1)  # (n_cells, d_in)
    rad = mu.pow(2).sum(1) + 2 * B[k, codes].sum(1)
    return codes, mu, rad


def power_assign(x: torch.Tensor, mu: torch.Tensor, rad: torch.Tensor) -> torch.Tensor:
    """Index of the power-diagram cell of each input: ``argmin_t ||x - mu_t||^2 - rad_t``.

    Parameters
    ----------
    x : Tensor, (n, d_in)
    mu : Tensor, (n_cells, d_in)
    rad : Tensor, (n_cells,)
    """
    return (torch.cdist(x, mu).pow(2) - rad).argmin(1)


# -- exact regions along a segment ----------------------------------------------------------------------
def _walk_right(v: torch.Tensor, s: torch.Tensor, limit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax switches of lines ``v + t s`` (per interval and unit) for ``t`` in (0, limit).

    v, s: (N, U, R) values at the interval's reference point and slopes; limit: (N,).
    Returns (interval index, t) of every switch.
    """
    N, U, R = v.shape
    cur = v.argmax(-1)  # (N, U)
    t_now = v.new_zeros(N, U)
    active = torch.ones(N, U, dtype=torch.bool)
    rows_n, rows_t = [], []
    for _ in range(R - 1):  # each switch strictly raises the current slope
        vc = v.gather(-1, cur.unsqueeze(-1))
        sc = s.gather(-1, cur.unsqueeze(-1))
        ds = s - sc
        cross = torch.where(ds > 0, (vc - v) / ds.where(ds > 0, torch.ones_like(ds)), torch.full_like(v, torch.inf))
        cross = cross.where(cross >= t_now.unsqueeze(-1), torch.full_like(cross, torch.inf))
        tmin, pmin = cross.min(-1)
        ok = active & (tmin < limit.unsqueeze(-1))
        if not ok.any():
            break
        rows_n.append(torch.nonzero(ok, as_tuple=True)[0])
        rows_t.append(tmin[ok])
        cur = torch.where(ok, pmin, cur)
        t_now = torch.where(ok, tmin, t_now)
        active = ok
    if not rows_n:
        return torch.zeros(0, dtype=torch.long), v.new_zeros(0)
    return torch.cat(rows_n), torch.cat(rows_t)


def _crossings(
    m: nn.Module, h, inp: torch.Tensor, tan: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, mid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(interval index, u) of every code change of piecewise part ``m`` inside the intervals, given its input
    at the intervals' midpoints and the input's derivative along the segment (both exact: the input is
    affine in u on each interval)."""
    if isinstance(h, PointwiseHandler):
        s0, s1 = h.slopes(m)
        if s0 == s1:
            return torch.zeros(0, dtype=torch.long), inp.new_zeros(0)
        v, dv = inp.flatten(1), tan.flatten(1)  # a two-piece unit changes where its input crosses 0
        t = -v / dv.where(dv != 0, torch.ones_like(dv))
        ok = (dv != 0) & (t > (lo - mid).unsqueeze(1)) & (t < (hi - mid).unsqueeze(1))
        n_idx = torch.nonzero(ok, as_tuple=True)[0]
        return n_idx, mid[n_idx] + t[ok]
    p, dp = h.pieces(m, inp), h.pieces(m, tan)  # pieces are linear in the input: dp is their derivative
    n_r, t_r = _walk_right(p, dp, hi - mid)
    n_l, t_l = _walk_right(p, -dp, mid - lo)
    return torch.cat([n_r, n_l]), torch.cat([mid[n_r] + t_r, mid[n_l] - t_l])


def _frozen(m: nn.Module, h, inp: torch.Tensor, tan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output of a piecewise part and its derivative, with the codes of ``inp`` (the hard op)."""
    if isinstance(h, PointwiseHandler):  # fast path: one slope per unit
        s0, s1 = h.slopes(m)
        hi_s, lo_s = inp.new_tensor(s1), inp.new_tensor(s0)  # in the input's dtype (0.1 is not a float32)
        slope = torch.where(s1 * inp > s0 * inp, hi_s, lo_s)
        return slope * inp, slope * tan
    p = h.pieces(m, inp)
    code = p.argmax(-1, keepdim=True)
    out = h.assemble(m, inp, p.gather(-1, code).squeeze(-1))
    dout = h.assemble(m, tan, h.pieces(m, tan).gather(-1, code).squeeze(-1))
    return out, dout


def _affine(parts: Sequence[nn.Module], inp: torch.Tensor, tan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine parts applied to values (with the offset) and to derivatives (without), in one pass."""
    if not parts:
        return inp, tan
    n = inp.shape[0]
    y = torch.cat([inp, tan, torch.zeros_like(tan[:1])])
    for m in parts:
        y = m(y)
    return y[:n], y[n : 2 * n] - y[2 * n :]


def _split(lo: torch.Tensor, hi: torch.Tensor, owner: torch.Tensor, pos: torch.Tensor, tol: float):
    """Cut intervals at the positions found in them; positions within ``tol`` of an end or of each other are
    one change. Returns (kept positions, their interval, children lo, children hi, children's parent)."""
    keep = (pos - lo[owner] > tol) & (hi[owner] - pos > tol)
    owner, pos = owner[keep], pos[keep]
    if pos.numel():
        order = np.lexsort((pos.numpy(), owner.numpy()))
        owner, pos = owner[order], pos[order]
        first = torch.ones_like(owner, dtype=torch.bool)
        first[1:] = (owner[1:] != owner[:-1]) | (pos[1:] - pos[:-1] > tol)
        owner, pos = owner[first], pos[first]
    n = lo.numel()
    starts = torch.cat([lo, pos])
    parent = torch.cat([torch.arange(n), owner])
    order = np.lexsort((starts.numpy(), parent.numpy()))
    starts, parent = starts[order], parent[order]
    ends = torch.empty_like(starts)
    ends[:-1] = starts[1:]
    last = torch.ones_like(parent, dtype=torch.bool)
    last[:-1] = parent[1:] != parent[:-1]
    ends[last] = hi[parent[last]]
    return pos, owner, starts, ends, parent


@dataclass
class SegmentRegions:
    """Regions crossed along ``x(u) = a + u (b - a)``, u in [0, 1].

    Attributes
    ----------
    breakpoints : ndarray, (n_breaks,)
        Sorted values of u where the region changes.
    layer : ndarray of int, (n_breaks,)
        The (1-based) piecewise layer whose code changes there.
    knots_u, knots_logits : ndarray
        u at 0, the breakpoints and 1, with the outputs there; the output path is linear between knots.
    length : float
        ``||b - a||``.
    per_layer : list of int
        Breakpoints contributed by each layer.
    """

    breakpoints: np.ndarray
    layer: np.ndarray
    knots_u: np.ndarray
    knots_logits: np.ndarray
    length: float
    per_layer: list[int] = field(default_factory=list)

    @property
    def n_regions(self) -> int:
        """Number of linear pieces of the path (breakpoints + 1)."""
        return int(self.breakpoints.size) + 1

    @property
    def density(self) -> float:
        """Region changes per unit of input distance."""
        return self.breakpoints.size / self.length if self.length > 0 else 0.0

    def decision_flips(self, positive: int = 1, negative: int = 0) -> int:
        """Sign changes of ``logit[positive] - logit[negative]`` (of the logit for one output) along the
        path (exact: it is linear between knots)."""
        z = self.knots_logits
        d = z[:, positive] - z[:, negative] if z.shape[1] > 1 else z[:, 0]
        s = np.sign(d)
        s = s[s != 0]
        return int(np.count_nonzero(s[1:] != s[:-1]))


@torch.no_grad()
def regions_on_segment(
    view: SplineNet,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    batch: int = 128,
    max_breakpoints: int = 500_000,
    merge_tol: float = 1e-10,
) -> SegmentRegions:
    """Exact region changes along the segment from ``a`` to ``b`` (docs/spline-analyses.md §4(b)B).

    Layer by layer and depth first: on each interval where the codes of the layers below are constant, the
    input of layer ``l``'s piecewise part is affine in u, known from its value at the interval's midpoint and
    its derivative; its units' code changes inside the interval are solved for in closed form (zero crossings
    of two-piece units, an upper-envelope walk for max-pool units). The interval is cut there and each piece
    is carried one layer up. Each layer is computed once per interval of the layers below, never the whole
    network per interval.

    Parameters
    ----------
    view : SplineNet
        Use float64 (:func:`~models.spline.network.spline_view`) for exact counts. Soft (beta-VQ) parts are
        treated as the hard ops they soften.
    a, b : Tensor, shape (1, *input_shape)
    batch : int
        Intervals carried per step (bounds memory).
    max_breakpoints : int
        Guard against runaway counts; exceeding it raises ``RuntimeError``.
    merge_tol : float
        Code changes closer than this (in u) are one region change: several units changing at one point
        (duplicated units, or a max-pool whose argmax moves exactly when a ReLU below it turns on) change the
        region once.
    """
    parts = list(view.parts)
    pidx = view.piecewise_index
    L = len(pidx)
    z0 = view.run(a, 0, view.affine_prefix)
    dz = view.run(b, 0, view.affine_prefix) - z0  # the affine prefix is exactly linear along the segment
    found_u: list[torch.Tensor] = []
    found_l: list[int] = []
    per_layer = [0] * L
    knots_u: list[torch.Tensor] = []
    knots_out: list[torch.Tensor] = []
    total = [0]

    def readout(lo, hi, inp, tan):
        # inputs of the read-out at the children's midpoints -> outputs at their starts
        out, dout = _affine(parts[pidx[-1] + 1 :] if L else parts[view.affine_prefix :], inp, tan)
        mid = (lo + hi) / 2
        shape = [-1] + [1] * (out.dim() - 1)
        knots_u.append(lo)
        knots_out.append((out + (lo - mid).reshape(shape) * dout).flatten(1))

    def descend(level: int, lo: torch.Tensor, hi: torch.Tensor, inp: torch.Tensor, tan: torch.Tensor) -> None:
        """``inp``/``tan``: input of piecewise part ``level`` (0-based) at the intervals' midpoints."""
        m = parts[pidx[level]]
        h = handler_for(m)
        mid = (lo + hi) / 2
        owner, pos = _crossings(m, h, inp, tan, lo, hi, mid)
        pos, owner, clo, chi, parent = _split(lo, hi, owner, pos, merge_tol)
        found_u.append(pos)
        found_l.extend([level + 1] * pos.numel())
        per_layer[level] += int(pos.numel())
        total[0] += int(pos.numel())
        if total[0] > max_breakpoints:
            raise RuntimeError(f"more than {max_breakpoints} region changes along the segment")
        nxt = parts[pidx[level] + 1 : pidx[level + 1]] if level + 1 < L else None
        for sl in iter_batches(clo.numel(), batch):
            p, cl, ch = parent[sl], clo[sl], chi[sl]
            cm = (cl + ch) / 2
            shape = [-1] + [1] * (inp.dim() - 1)
            cinp = inp[p] + (cm - mid[p]).reshape(shape) * tan[p]  # affine on the parent interval
            out, dout = _frozen(m, h, cinp, tan[p])
            if nxt is None:
                readout(cl, ch, out, dout)
            else:
                ninp, ntan = _affine(nxt, out, dout)
                descend(level + 1, cl, ch, ninp, ntan)

    lo, hi = a.new_zeros(1), a.new_ones(1)
    if L:
        descend(0, lo, hi, z0 + 0.5 * dz, dz)
    else:
        readout(lo, hi, z0 + 0.5 * dz, dz)
    u = torch.cat(found_u) if found_u else a.new_zeros(0)
    lay = torch.tensor(found_l, dtype=torch.long)
    order = torch.argsort(u)
    ku = torch.cat(knots_u)
    korder = torch.argsort(ku)
    return SegmentRegions(
        breakpoints=u[order].numpy(),
        layer=lay[order].numpy(),
        knots_u=np.append(ku[korder].numpy(), 1.0),
        knots_logits=np.concatenate([torch.cat(knots_out)[korder].numpy(), view(b).flatten(1).numpy()]),
        length=float((b - a).norm()),
        per_layer=per_layer,
    )


@torch.no_grad()
def regions_on_segment_dense(view: SplineNet, a: torch.Tensor, b: torch.Tensor, n: int, *, batch: int = 512) -> tuple[int, np.ndarray]:
    """Brute force: codes at ``n`` evenly spaced points of the segment; returns the number of changes of the
    full code tuple between consecutive points and the u of the points just after each change."""
    us = torch.linspace(0, 1, n, dtype=a.dtype)
    hashes = []
    for sl in iter_batches(n, batch):
        u = us[sl].reshape(-1, *([1] * (a.dim() - 1)))
        codes = view.trace(a + u * (b - a)).codes()
        h = np.zeros(u.shape[0], dtype=np.int64)
        with np.errstate(over="ignore"):
            for l, c in enumerate(codes):
                h = h * np.int64(1000003) + region_hash(c.cpu().numpy(), seed=l)
        hashes.append(h)
    h = np.concatenate(hashes)
    change = np.nonzero(h[1:] != h[:-1])[0]
    return int(change.size), us.numpy()[change + 1]


# -- local complexity -----------------------------------------------------------------------------------
@torch.no_grad()
def local_complexity(
    view: SplineNet, x: torch.Tensor, radius: float, *, n_vertices: int = 40, seed: int = 0
) -> list[dict]:
    """Units whose code is not constant over a cross-polytope around ``x`` (docs/spline-analyses.md §4(b)D).

    Parameters
    ----------
    view : SplineNet
    x : Tensor, (1, *input_shape)
    radius : float
        Distance of the vertices ``x +- radius u_i`` from ``x`` (``u_i`` orthonormal, random).
    n_vertices : int
        Even; ``n_vertices / 2`` directions.

    Returns
    -------
    list of dict per layer: ``cut_units`` (count) and ``cut_fraction`` (of the layer's units).
    """
    g = torch.Generator().manual_seed(seed)
    d = x.numel()
    k = max(1, min(n_vertices // 2, d))
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=x.dtype))
    dirs = q.T.reshape(k, *x.shape[1:])
    verts = torch.cat([x + radius * dirs, x - radius * dirs])
    codes = view.trace(verts).codes()
    out = []
    for c in codes:
        cut = (c != c[:1]).any(0)
        out.append({"cut_units": int(cut.sum()), "cut_fraction": float(cut.float().mean())})
    return out


# -- 2-D slice ------------------------------------------------------------------------------------------
@dataclass
class Slice2D:
    """Regions on a grid over the plane through three anchors, ``x(s, t) = x0 + s (x1 - x0) + t (x2 - x0)``.

    Attributes
    ----------
    s, t : ndarray, (n,)
        Grid coordinates (anchor 0 at (0, 0), anchor 1 at (1, 0), anchor 2 at (0, 1)).
    region : ndarray of int, (n, n)
        Region label of each grid point (``region[i, j]`` at ``t[i], s[j]``), labels 0..n_regions-1.
    logits : ndarray, (n, n, n_out)
    regions_per_layer : list of int
        Distinct regions of layers 1..l on the grid, for every l (the subdivision, coarse to fine).
    """

    s: np.ndarray
    t: np.ndarray
    region: np.ndarray
    logits: np.ndarray
    regions_per_layer: list[int]

    @property
    def n_regions(self) -> int:
        return int(self.region.max()) + 1 if self.region.size else 0


@torch.no_grad()
def slice_regions(
    view: SplineNet,
    anchors: torch.Tensor,
    *,
    n: int = 120,
    margin: float = 0.25,
    extent: tuple[float, float, float, float] | None = None,
    batch: int = 128,
) -> Slice2D:
    """Region labels and outputs on an ``n x n`` grid of the plane through three inputs (grid form of
    docs/spline-analyses.md §4(b)C; regions smaller than a grid cell are missed, so the count is a lower bound).

    Parameters
    ----------
    anchors : Tensor, (3, *input_shape)
    n : int
        Grid points per axis.
    margin : float
        The grid spans ``[-margin, 1 + margin]`` on both axes.
    extent : (s_min, s_max, t_min, t_max), optional
        Another window of the same plane (e.g. a zoom on anchor 0, where the grid resolves the regions).
    """
    k0 = view.affine_prefix
    z = view.run(anchors, 0, k0)  # affine prefix at the anchors; the grid is their affine combination
    z0, e1, e2 = z[:1], z[1:2] - z[:1], z[2:3] - z[:1]
    s0, s1, t0, t1 = extent if extent is not None else (-margin, 1 + margin, -margin, 1 + margin)
    s_ax = torch.linspace(s0, s1, n, dtype=anchors.dtype)
    t_ax = torch.linspace(t0, t1, n, dtype=anchors.dtype)
    T, S = torch.meshgrid(t_ax, s_ax, indexing="ij")
    S, T = S.reshape(-1), T.reshape(-1)
    shape = [-1] + [1] * (z0.dim() - 1)
    # Outputs preallocated: small arrays kept between the large per-batch temporaries would fragment
    # the heap (hundreds of MB of resident memory for a 100 x 100 grid).
    H = np.zeros((S.numel(), view.n_layers), dtype=np.int64)
    L = None
    for sl in iter_batches(S.numel(), batch):
        zz = z0 + S[sl].reshape(shape) * e1 + T[sl].reshape(shape) * e2
        tr = view.trace(zz, start=k0)
        acc = np.zeros(zz.shape[0], dtype=np.int64)
        with np.errstate(over="ignore"):
            for l, c in enumerate(tr.codes()):
                acc = acc * np.int64(1000003) + region_hash(c.cpu().numpy(), seed=l)
                H[sl, l] = acc
        out = tr.logits.flatten(1)
        if L is None:
            L = np.zeros((S.numel(), out.shape[1]))
        L[sl] = out.cpu().numpy()
        del tr, zz
    per_layer = [int(np.unique(H[:, l]).size) for l in range(H.shape[1])]
    if H.shape[1]:
        _, labels = np.unique(H[:, -1], return_inverse=True)
    else:
        labels = np.zeros(H.shape[0], dtype=np.int64)
    return Slice2D(s_ax.numpy(), t_ax.numpy(), labels.reshape(n, n), L.reshape(n, n, -1), per_layer)
