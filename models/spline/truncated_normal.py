"""Moments of a Gaussian ``N(mu, Sigma)`` restricted to an interval (1-D) or a convex polygon (2-D).

For a region ``Omega`` the truncated moments are ``Phi0 = int_Omega N``, ``Phi1 = int_Omega z N`` and
``Phi2 = int_Omega z z^T N``. Both functions return :class:`TruncatedMoments`: ``log_phi0`` and the
*conditional* moments ``mean = Phi1 / Phi0`` and ``second = Phi2 / Phi0`` (better conditioned than the raw
ones), with ``phi0``, ``phi1``, ``phi2`` as properties.

* :func:`interval_moments`: closed form (survival function and pdf), computed in log space, so that an
  interval deep in a tail keeps its relative accuracy; the ends may be infinite.
* :func:`polygon_moments`: whiten, then for the standard normal ``Phi0`` is a signed sum over the polygon's
  edges of origin triangles, each closed form in ``atan`` and Owen's T; ``Phi1`` and ``Phi2`` follow from
  the divergence theorem as edge integrals closed form in the normal cdf/pdf. Accuracy is absolute
  (about 1e-16 on ``Phi0``), so where ``Phi0 < LOG_SPACE_BELOW`` (polygons far from the mean) the pair
  is redone by :func:`log_space_polygon_moments`: nearest point factored out, exact inner integral,
  Gauss-Legendre outer one, all in log space (``Phi0`` may be e^-10000).

Derivations: docs/em-generator.md §3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, ndtr, owens_t

_LOG_2PI = float(np.log(2.0 * np.pi))
#: ``log_phi0`` of a polygon whose computed mass is not positive (it is below the absolute accuracy).
LOG_TINY = -745.0


@dataclass
class TruncatedMoments:
    """``log Phi0`` (...,), conditional ``mean`` (..., S) and ``second`` moment (..., S, S)."""

    log_phi0: np.ndarray
    mean: np.ndarray
    second: np.ndarray

    @property
    def phi0(self) -> np.ndarray:
        return np.exp(self.log_phi0)

    @property
    def phi1(self) -> np.ndarray:
        return self.phi0[..., None] * self.mean

    @property
    def phi2(self) -> np.ndarray:
        return self.phi0[..., None, None] * self.second

    @property
    def cov(self) -> np.ndarray:
        """Covariance of the truncated Gaussian, ``second - mean mean^T``."""
        return self.second - self.mean[..., :, None] * self.mean[..., None, :]


def _log_pdf(t: np.ndarray) -> np.ndarray:
    return -0.5 * t * t - 0.5 * _LOG_2PI


def log_ndtr_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``log(Phi(b) - Phi(a))`` for ``a <= b``, accurate in both tails (``-inf`` where ``a == b``)."""
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    # use the tail in which both ends lie, so that the difference of two tiny numbers is a log1p
    flip = a > 0
    lo = np.where(flip, -b, a)
    hi = np.where(flip, -a, b)
    out = np.empty(lo.shape)
    tail = hi <= 0  # each branch evaluated only where it is used (the special functions dominate the cost)
    with np.errstate(divide="ignore", invalid="ignore"):
        lh = log_ndtr(hi[tail])
        out[tail] = lh + np.log(-np.expm1(log_ndtr(lo[tail]) - lh))
        out[~tail] = np.log1p(-(ndtr(lo[~tail]) + ndtr(-hi[~tail])))
    return np.where(a >= b, -np.inf, out)


def interval_moments(lo, hi, mu, var) -> TruncatedMoments:
    """Truncated moments of ``N(mu, var)`` over ``[lo, hi]`` (1-D), broadcast over all arguments.

    Parameters
    ----------
    lo, hi : array_like
        Interval ends (may be ``-inf`` / ``inf``), ``lo < hi``.
    mu, var : array_like
        Mean and variance.

    Returns
    -------
    TruncatedMoments
        ``mean`` and ``second`` have a trailing axis of size 1 (and 1x1), as a 1-D latent.
    """
    lo, hi, mu, var = np.broadcast_arrays(*(np.asarray(v, float) for v in (lo, hi, mu, var)))
    s = np.sqrt(var)
    a, b = (lo - mu) / s, (hi - mu) / s
    log_z = log_ndtr_diff(a, b)
    with np.errstate(over="ignore", invalid="ignore"):
        ra = np.where(np.isfinite(a), np.exp(_log_pdf(a) - log_z), 0.0)  # phi(a) / Z
        rb = np.where(np.isfinite(b), np.exp(_log_pdf(b) - log_z), 0.0)
        m1 = ra - rb  # E[t] of the standardised truncated normal
        m2 = 1.0 + np.where(np.isfinite(a), a * ra, 0.0) - np.where(np.isfinite(b), b * rb, 0.0)
    mean = mu + s * m1
    second = mu * mu + 2.0 * mu * s * m1 + var * m2
    return TruncatedMoments(log_z, mean[..., None], second[..., None, None])


def _ndtr_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``Phi(b) - Phi(a)`` computed in the tail where both lie (no cancellation of two values near 1)."""
    return np.where(a > 0, ndtr(-a) - ndtr(-b), ndtr(b) - ndtr(a))


def std_polygon_moments(a: np.ndarray, b: np.ndarray, starts: np.ndarray):
    """Raw moments of the standard bivariate normal over convex polygons given by their edges.

    Parameters
    ----------
    a, b : ndarray, shape (n, E, 2)
        Start and end vertex of every edge; polygons are counter-clockwise and their edges contiguous.
    starts : ndarray of int, shape (R,)
        Index of each polygon's first edge (``np.add.reduceat`` convention).

    Returns
    -------
    phi0 : (n, R), m1 : (n, R, 2), m2 : (n, R, 2, 2)
        ``int_P phi``, ``int_P u phi``, ``int_P u u^T phi``.
    """
    d = b - a
    length = np.linalg.norm(d, axis=-1)
    e = d / np.where(length > 0, length, 1.0)[..., None]
    nrm = np.stack([e[..., 1], -e[..., 0]], axis=-1)  # outward normal of a counter-clockwise polygon
    h = (a * nrm).sum(-1)  # signed distance of the edge's line from the origin
    sa, sb = (a * e).sum(-1), (b * e).sum(-1)  # positions of the ends along the edge
    # origin triangle (0, a, b): (atan(sb/h) - atan(sa/h)) / 2pi - T(h, sb/h) + T(h, sa/h) (signed by h)
    ok = np.abs(h) > 1e-300
    hs = np.where(ok, h, 1.0)
    with np.errstate(over="ignore", divide="ignore"):
        qa, qb = sa / hs, sb / hs
        tri = (np.arctan(qb) - np.arctan(qa)) / (2 * np.pi) - owens_t(hs, qb) + owens_t(hs, qa)
    tri = np.where(ok & (length > 0), tri, 0.0)
    # edge integrals of phi and u phi along the line u = h n + s e
    ph = np.exp(_log_pdf(h))
    i0 = ph * _ndtr_diff(sa, sb)
    i_s = ph * (np.exp(_log_pdf(sa)) - np.exp(_log_pdf(sb)))  # int s phi ds
    iu = (h * i0)[..., None] * nrm + i_s[..., None] * e  # int u phi ds
    phi0 = np.add.reduceat(tri, starts, axis=1)
    m1 = -np.add.reduceat(i0[..., None] * nrm, starts, axis=1)
    flux = np.add.reduceat(nrm[..., :, None] * iu[..., None, :], starts, axis=1)  # sum n_i int u_j phi
    m2 = phi0[..., None, None] * np.eye(2) - flux
    m2 = 0.5 * (m2 + np.swapaxes(m2, -1, -2))
    return phi0, m1, m2


#: Below this ``Phi0`` the Owen's T sum (absolute accuracy ~1e-16, so ~1e-4 relative here) is replaced by
#: log-space quadrature.
LOG_SPACE_BELOW = 1e-12
_GL_N = 8
_GL_X, _GL_W = np.polynomial.legendre.leggauss(_GL_N)


def log_space_polygon_moments(verts: np.ndarray, n_verts: np.ndarray, panels: int = 8):
    """``log Phi0`` and conditional moments of the standard bivariate normal over convex polygons that do
    not contain the origin, accurate in log space however far the polygon lies (``Phi0`` may be e^-10000).

    Rotate so that the polygon's nearest point ``c`` to the origin lies on the first axis (``s = |c|``);
    the polygon lies in ``s >= |c|``. ``Phi0 = int phi(s) [Phi(t_hi(s)) - Phi(t_lo(s))] ds``: the inner
    integral is exact (log_ndtr differences, with its truncated mean/second moment in ``t``), the outer
    one a composite Gauss-Legendre rule in ``y = s - |c|`` on the range where ``exp(-|c| y - y^2/2)``
    is above e^-40 (``panels`` uniform panels, about 40/panels nats of decay each), with extra breaks at
    the vertices' ``y`` (where the integrand has kinks).

    Parameters
    ----------
    verts : ndarray (P, V, 2)
        Counter-clockwise vertices, rows past ``n_verts[p]`` ignored.
    n_verts : ndarray of int (P,)
    panels : int
        Uniform panels (8 Gauss-Legendre nodes each) besides the vertex breaks.

    Returns
    -------
    log_phi0 (P,), mean (P, 2), second (P, 2, 2); ``inside`` (P,) bool marks polygons containing the
    origin, for which the results are not computed (NaN).
    """
    P, V, _ = verts.shape
    k = np.arange(V)
    valid = k[None] < n_verts[:, None]
    # pad with the first vertex: the closing edge is v_{n-1} -> v_0, the padding edges are degenerate
    va = np.where(valid[..., None], verts, verts[:, :1])
    vb = np.where((k[None] + 1 < n_verts[:, None])[..., None], np.roll(verts, -1, axis=1), verts[:, :1])
    d = vb - va
    dd = (d * d).sum(-1)
    tp = np.clip(-(va * d).sum(-1) / np.where(dd > 0, dd, 1.0), 0.0, 1.0)
    q = va + tp[..., None] * d
    j = (q * q).sum(-1).argmin(1)
    c = q[np.arange(P), j]
    cross = d[..., 0] * (-va[..., 1]) - d[..., 1] * (-va[..., 0])  # origin left of every edge: inside
    inside = ((cross >= 0) | (dd == 0)).all(1)
    r = np.linalg.norm(c, axis=1)
    e1 = c / np.where(r > 0, r, 1.0)[:, None]
    e2 = np.stack([-e1[:, 1], e1[:, 0]], 1)
    sa, sb = (va * e1[:, None]).sum(-1) - r[:, None], (vb * e1[:, None]).sum(-1) - r[:, None]  # y = s - |c|
    ta, tb = (va * e2[:, None]).sum(-1), (vb * e2[:, None]).sum(-1)
    sa, sb = np.maximum(sa, 0.0), np.maximum(sb, 0.0)
    y_cut = -r + np.sqrt(r * r + 2 * 40.0)  # beyond, exp(-|c| y - y^2/2) < e^-40
    y_max = np.minimum(np.max(np.where(valid, sa, 0.0), axis=1), y_cut)
    y_vert = np.minimum(np.where(valid, sa, 0.0), y_max[:, None])
    br = np.sort(np.concatenate([y_max[:, None] * np.linspace(0, 1, panels + 1)[None], y_vert], 1), axis=1)
    half = 0.5 * np.diff(br, axis=1)  # (P, K)
    mid = 0.5 * (br[:, 1:] + br[:, :-1])
    y = (mid[..., None] + half[..., None] * _GL_X).reshape(P, -1)  # (P, N)
    gw = (half[..., None] * _GL_W).reshape(P, -1)
    # t-range: panels break at the vertices, so within a panel the section is bounded by the same two
    # edges; find them at the panel's midpoint, then evaluate their lines at the panel's nodes
    ym = mid[..., None]
    crosses = (np.minimum(sa, sb)[:, None] <= ym) & (ym <= np.maximum(sa, sb)[:, None]) & (sa != sb)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(sa != sb, (tb - ta) / (sb - sa), 0.0)
    tm_ = ta[:, None] + (ym - sa[:, None]) * slope[:, None]
    i_lo = np.where(crosses, tm_, np.inf).argmin(-1)  # (P, K)
    i_hi = np.where(crosses, tm_, -np.inf).argmax(-1)
    hit = crosses.any(-1)

    def line(i):  # the edge i's t at every node, (P, N)
        tk, sk, mk = (np.take_along_axis(v, i, axis=1)[..., None] for v in (ta, sa, slope))
        return (tk + (y.reshape(P, -1, _GL_N) - sk) * mk).reshape(P, -1)

    t_lo, t_hi = line(i_lo), line(i_hi)
    t_hi = np.where(np.repeat(hit, _GL_N, axis=1), t_hi, -np.inf)
    ok = t_lo < t_hi
    inner = interval_moments(np.where(ok, t_lo, 0.0), np.where(ok, t_hi, 1.0), 0.0, 1.0)
    ok &= np.isfinite(inner.log_phi0)
    with np.errstate(divide="ignore"):
        lw = np.where(ok & (gw > 0), np.log(gw) - r[:, None] * y - 0.5 * y * y + inner.log_phi0, -np.inf)
    lse = np.logaddexp.reduce(lw, axis=1)
    with np.errstate(invalid="ignore"):  # rows of polygons containing the origin (not computed) are NaN
        om = np.exp(lw - lse[:, None])
    mt, m2t = np.where(ok, inner.mean[..., 0], 0.0), np.where(ok, inner.second[..., 0, 0], 0.0)
    Ey, Et = (om * y).sum(1), (om * mt).sum(1)
    Cyy = (om * (y - Ey[:, None]) ** 2).sum(1)
    Cyt = (om * (y - Ey[:, None]) * mt).sum(1)  # E[(y - Ey) t]
    Ctt = (om * m2t).sum(1) - Et**2
    log_phi0 = -0.5 * r * r - 0.5 * _LOG_2PI + lse
    Es = r + Ey
    R = np.stack([e1, e2], axis=2)  # u = R (s, t)
    m_st = np.stack([Es, Et], 1)
    cov_st = np.stack([np.stack([Cyy, Cyt], 1), np.stack([Cyt, Ctt], 1)], 1)
    mean = np.einsum("pij,pj->pi", R, m_st)
    second = R @ (cov_st + m_st[:, :, None] * m_st[:, None, :]) @ np.swapaxes(R, 1, 2)
    nan = np.where(inside, np.nan, 0.0)
    return log_phi0 + nan, mean + nan[:, None], second + nan[:, None, None], inside


def polygon_moments(
    polygons: Sequence[np.ndarray],
    mu: np.ndarray,
    cov: np.ndarray,
    active: np.ndarray | None = None,
    chunk: int = 200_000,
    mode: str = "auto",
) -> TruncatedMoments:
    """Truncated moments of ``N(mu[:, r], cov[r])`` over convex polygon ``r``, for many means at once.

    Parameters
    ----------
    polygons : sequence of R arrays (V_r, 2)
        Convex polygons, vertices counter-clockwise.
    mu : ndarray, shape (n, R, 2)
    cov : ndarray, shape (R, 2, 2)
    active : bool ndarray (n, R), optional
        Only these (mean, polygon) pairs are computed; the others get ``log_phi0 = -inf`` and the
        untruncated moments (callers pass the pairs whose weight is not negligible).
    chunk : int
        Edges handled at once (memory).
    mode : {"auto", "owen", "log"}
        "owen": the Owen's T sum only (absolute accuracy); "log": every pair not containing the origin
        by :func:`log_space_polygon_moments`; "auto": the Owen's T sum, then the pairs whose ``Phi0`` is
        below ``LOG_SPACE_BELOW`` in log space.

    Returns
    -------
    TruncatedMoments with arrays (n, R), (n, R, 2), (n, R, 2, 2).
    """
    mu = np.asarray(mu, float)
    n, R = mu.shape[0], len(polygons)
    counts = np.array([len(p) for p in polygons])
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    va = np.concatenate([np.asarray(p, float) for p in polygons])
    vb = np.concatenate([np.roll(np.asarray(p, float), -1, axis=0) for p in polygons])
    L = np.linalg.cholesky(cov)  # (R, 2, 2); whitening keeps the orientation (det L > 0)
    Linv = np.linalg.inv(L)
    log_phi0 = np.full((n, R), -np.inf)
    mean = mu.copy()
    second = mu[..., :, None] * mu[..., None, :] + cov[None]
    pn, pr = np.nonzero(np.ones((n, R), bool) if active is None else active)
    # pairs in batches whose edges number at most ~chunk; every edge of a pair is one row
    cum = np.cumsum(counts[pr])
    bounds = np.searchsorted(cum, np.arange(chunk, cum[-1] + chunk, chunk) if len(cum) else [], side="right")
    lo = 0
    for hi in [*bounds, len(pr)]:
        if hi <= lo:
            continue
        n_, r_ = pn[lo:hi], pr[lo:hi]
        c = counts[r_]
        starts = np.concatenate([[0], np.cumsum(c)[:-1]])
        edge = np.repeat(first[r_] - starts, c) + np.arange(c.sum())  # edge index within va/vb
        owner = np.repeat(np.arange(len(r_)), c)
        m = mu[n_, r_]  # (P, 2)
        Le = Linv[r_][owner]  # (E, 2, 2)
        da, db = va[edge] - m[owner], vb[edge] - m[owner]
        ua = Le[:, :, 0] * da[:, :1] + Le[:, :, 1] * da[:, 1:]
        ub = Le[:, :, 0] * db[:, :1] + Le[:, :, 1] * db[:, 1:]
        p0, m1, m2 = std_polygon_moments(ua[None], ub[None], starts)
        p0, m1, m2 = p0[0], m1[0], m2[0]
        pos = p0 > 0
        z = np.where(pos, p0, 1.0)
        e_u, e_uu = m1 / z[:, None], m2 / z[:, None, None]
        lp0 = np.where(pos, np.log(z), LOG_TINY)
        # where Phi0 is below the Owen's T sum's absolute accuracy, redo the pair in log space
        redo = p0 < LOG_SPACE_BELOW if mode == "auto" else np.full(len(p0), mode == "log")
        tiny = np.flatnonzero(redo)
        if len(tiny):
            cm = np.max(c[tiny])
            vt = np.zeros((len(tiny), cm, 2))
            slot = np.arange(len(ua)) - np.repeat(starts, c)
            sel = np.isin(owner, tiny)
            vt[np.searchsorted(tiny, owner[sel]), slot[sel]] = ua[sel]
            # in batches: the quadrature holds (pairs, ~320 nodes, vertices) arrays
            parts = [
                log_space_polygon_moments(vt[k : k + 1000], c[tiny[k : k + 1000]]) for k in range(0, len(tiny), 1000)
            ]
            lq, mq, sq, inside = (np.concatenate(a) for a in zip(*parts))
            use = tiny[~inside]
            lp0[use], e_u[use], e_uu[use] = lq[~inside], mq[~inside], sq[~inside]
        Lr = L[r_]
        c1 = (Lr @ e_u[..., None])[..., 0]  # E[z - mu | P] = L E[u | P]
        c2 = Lr @ e_uu @ np.swapaxes(Lr, -1, -2)
        log_phi0[n_, r_] = lp0
        mean[n_, r_] = m + c1
        second[n_, r_] = (
            m[:, :, None] * m[:, None, :] + m[:, :, None] * c1[:, None, :] + c1[:, :, None] * m[:, None, :] + c2
        )
        lo = hi
    return TruncatedMoments(log_phi0, mean, second)


def polygon_log_mass_bound(polygons: Sequence[np.ndarray], mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Upper bound on ``log Phi0`` (n, R): the log mass of the tightest of the polygon's edge half-planes,
    ``min_e log Phi(h_e)`` with ``h_e`` the whitened signed distance of the mean inside edge ``e``'s line.
    Cheap (no Owen's T); used to skip (mean, polygon) pairs whose weight is negligible."""
    counts = np.array([len(p) for p in polygons])
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    region = np.repeat(np.arange(len(polygons)), counts)
    va = np.concatenate([np.asarray(p, float) for p in polygons])
    d = np.concatenate([np.roll(np.asarray(p, float), -1, axis=0) for p in polygons]) - va
    nrm = np.stack([d[:, 1], -d[:, 0]], axis=1)  # outward (unnormalised): inside is nrm.z <= nrm.va
    L = np.linalg.cholesky(cov)
    scale = np.linalg.norm(np.einsum("eji,ej->ei", L[region], nrm), axis=1)  # ||L^T n||
    h = ((nrm * va).sum(1)[None] - np.einsum("ned,ed->ne", np.asarray(mu, float)[:, region], nrm)) / scale
    return np.minimum.reduceat(log_ndtr(h), first, axis=1)
