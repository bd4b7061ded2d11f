"""Exact enumeration of the linear regions of a small leaky-ReLU generator's latent space (1-D or 2-D).

The generator is given as its affine layers ``[(W_1, b_1), ..., (W_L, b_L)]`` with a leaky ReLU after
every layer but the last. Regions are found layer by layer: with the codes of the layers below fixed, each
unit's pre-activation is affine in ``z``, so its zero set cuts the current region along one point (1-D) or
one line (2-D). Every piece left after all units of all layers have cut is a region; its code is the sign
pattern of all hidden units and ``g(z) = A z + b`` on it.

* 1-D: intervals split at the breakpoints, over the whole line (the outer intervals are unbounded, so
  nothing is lost to a box);
* 2-D: convex polygons split by Sutherland-Hodgman clipping, inside the box ``[-box, box]^2``.

Derivation: docs/em-generator.md §1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Layers = Sequence[tuple[np.ndarray, np.ndarray]]


@dataclass
class LatentRegions:
    """The regions of a generator's latent space.

    Attributes
    ----------
    codes : bool ndarray (R, H)
        Sign pattern (pre-activation > 0) of the H hidden units, layer by layer.
    A : ndarray (R, D, S)
    b : ndarray (R, D)
        ``g(z) = A[r] z + b[r]`` on region ``r``.
    lo, hi : ndarray (R,) or None
        1-D: interval ends (the outer ones infinite), sorted by ``lo``.
    polygons : list of (V_r, 2) arrays or None
        2-D: counter-clockwise vertices.
    box : float or None
        2-D: half-width of the square the polygons tile.
    """

    codes: np.ndarray
    A: np.ndarray
    b: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    polygons: list[np.ndarray] | None = None
    box: float | None = None

    @property
    def n_regions(self) -> int:
        return len(self.codes)

    @property
    def latent_dim(self) -> int:
        return self.A.shape[2]

    def index_of_codes(self, codes: np.ndarray) -> np.ndarray:
        """Region index of each row of ``codes`` (n, H); -1 for a code not enumerated."""
        table = {c.tobytes(): i for i, c in enumerate(np.asarray(self.codes, bool))}
        return np.array([table.get(c.tobytes(), -1) for c in np.asarray(codes, bool)], dtype=int)


def hidden_codes(layers: Layers, z: np.ndarray, negative_slope: float = 0.1) -> np.ndarray:
    """Sign patterns (pre-activation > 0) of all hidden units at the points ``z`` (n, S): bool (n, H)."""
    h = np.asarray(z, float)
    out = []
    for W, b in layers[:-1]:
        pre = h @ W.T + b
        out.append(pre > 0)
        h = np.where(pre > 0, pre, negative_slope * pre)
    return np.concatenate(out, axis=1)


def polygon_area(poly: np.ndarray) -> float:
    """Signed area (positive for counter-clockwise vertices)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _split_polygon(poly: np.ndarray, a: np.ndarray, c: float, tol: float):
    """Both sides ``a.z + c >= 0`` and ``<= 0`` of a convex polygon (None for an empty side)."""
    s = poly @ a + c
    s = np.where(np.abs(s) <= tol, 0.0, s)
    if (s >= 0).all():
        return poly, None
    if (s <= 0).all():
        return None, poly
    pos, neg = [], []
    k = len(poly)
    for i in range(k):
        j = (i + 1) % k
        if s[i] >= 0:
            pos.append(poly[i])
        if s[i] <= 0:
            neg.append(poly[i])
        if s[i] * s[j] < 0:
            p = poly[i] + (s[i] / (s[i] - s[j])) * (poly[j] - poly[i])
            pos.append(p)
            neg.append(p)
    return np.array(pos), np.array(neg)


def _split_interval(iv: tuple[float, float], a: float, c: float):
    lo, hi = iv
    if a == 0.0:
        return [iv]
    r = -c / a
    if lo < r < hi:
        return [(lo, r), (r, hi)]
    return [iv]


def _interior_point(piece, dim: int) -> np.ndarray:
    if dim == 1:
        lo, hi = piece
        if np.isfinite(lo) and np.isfinite(hi):
            return np.array([0.5 * (lo + hi)])
        if np.isfinite(lo):
            return np.array([lo + 1.0])
        if np.isfinite(hi):
            return np.array([hi - 1.0])
        return np.array([0.0])
    return piece.mean(axis=0)  # the vertex mean of a convex polygon is inside it


def enumerate_regions(
    layers: Layers, negative_slope: float = 0.1, box: float = 10.0, min_size: float = 1e-10
) -> LatentRegions:
    """All linear regions of the generator ``layers`` over a 1-D or 2-D latent.

    Parameters
    ----------
    layers : sequence of (W, b)
        Affine layers, ``W`` of shape (out, in); leaky ReLU after all but the last.
    negative_slope : float
    box : float
        2-D only: the polygons tile ``[-box, box]^2`` (1-D regions cover the whole line).
    min_size : float
        Pieces shorter (1-D) or of smaller area (2-D), relative to ``box`` (or ``box^2``), are slivers left
        by rounding where several breakpoints (nearly) coincide; they are dropped.

    Returns
    -------
    LatentRegions
    """
    S = layers[0][0].shape[1]
    if S not in (1, 2):
        raise ValueError(f"latent dimension must be 1 or 2, got {S}")
    if S == 1:
        start = (-np.inf, np.inf)
    else:
        start = np.array([[-box, -box], [box, -box], [box, box], [-box, box]], float)
    # each region: (geometry, A_cur (m, S), c_cur (m,), list of code blocks)
    regions = [(start, np.eye(S), np.zeros(S), [])]
    for W, b in layers[:-1]:
        nxt = []
        for geom, Ac, cc, code in regions:
            P, q = W @ Ac, W @ cc + b  # pre-activations, affine in z on this region
            pieces = [geom]
            for k in range(len(q)):
                new = []
                for piece in pieces:
                    if S == 1:
                        new.extend(_split_interval(piece, float(P[k, 0]), float(q[k])))
                    else:
                        tol = 1e-12 * (np.abs(P[k]).sum() * box + abs(q[k]))
                        for side in _split_polygon(piece, P[k], float(q[k]), tol):
                            if side is not None and len(side) >= 3:
                                new.append(side)
                pieces = new
            for piece in pieces:
                if S == 1:
                    lo, hi = piece
                    if np.isfinite(lo) and np.isfinite(hi) and hi - lo < min_size * max(1.0, abs(lo)):
                        continue
                elif polygon_area(piece) < min_size * box * box:
                    continue
                sign = P @ _interior_point(piece, S) + q > 0
                m = np.where(sign, 1.0, negative_slope)
                nxt.append((piece, m[:, None] * P, m * q, code + [sign]))
        regions = nxt
    W, b = layers[-1]
    A = np.stack([W @ Ac for _, Ac, _, _ in regions])
    bb = np.stack([W @ cc + b for _, _, cc, _ in regions])
    codes = np.stack([np.concatenate(code) if code else np.zeros(0, bool) for *_, code in regions])
    if S == 1:
        lo = np.array([g[0] for g, *_ in regions])
        hi = np.array([g[1] for g, *_ in regions])
        order = np.argsort(lo)
        return LatentRegions(codes[order], A[order], bb[order], lo=lo[order], hi=hi[order])
    return LatentRegions(codes, A, bb, polygons=[g for g, *_ in regions], box=float(box))
