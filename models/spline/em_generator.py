"""Analytical EM for a continuous piecewise-affine (leaky-ReLU) generator with a 1-D or 2-D latent.

Model: ``z ~ N(0, sigma_z^2 I_S)``, ``x | z ~ N(g(z), sigma_x^2 I_D)`` with ``g`` a small leaky-ReLU MLP
(:class:`CPAGenerator`). On each latent region ``omega`` (:mod:`.latent_regions`) ``g(z) = A z + b``, so

* ``p(x) = sum_omega kappa_omega(x) Phi0_omega(x)`` exactly (:func:`marginal_log_likelihood`);
* ``p(z | x)`` is a mixture of truncated Gaussians with weights ``pi_omega(x)`` (:func:`compute_posterior`);
* EM (:func:`fit_em`): E-step moments ``m0, m1, m2``; closed-form ``sigma_x^2, sigma_z^2``; the weights
  maximise the expected complete-data log-likelihood with the region masks frozen (autograd + L-BFGS).
  Freezing the masks makes the weight update a proposal only (the partition moves with the weights), so it
  is accepted along a halving line search only where the *exact* log-likelihood does not decrease: a
  generalised EM whose ``history`` is nondecreasing by construction.
* :func:`fit_vae`: the same generator trained as a VAE, its likelihood evaluated exactly.

Formulas follow the authors' code (RandallBalestriero/EMDGN, ``utils.mu_sigma``, ``log_kappa``,
``marginal_moments``, ``networks.create_fns``); the 2-D truncated moments (Owen's T and divergence theorem),
the masks-frozen autograd M-step with its backtracking safeguard and the initialisation are ours.
Derivations: docs/em-generator.md.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp, ndtri
from torch import nn

from .latent_regions import LatentRegions, enumerate_regions, hidden_codes
from .truncated_normal import (
    LOG_SPACE_BELOW,
    TruncatedMoments,
    interval_moments,
    polygon_log_mass_bound,
    polygon_moments,
)

_LOG_2PI = float(np.log(2.0 * np.pi))
#: Half-width of the 2-D latent box, in units of sigma_z (prior mass outside: 4 Phi(-10) < 4e-23).
BOX_SIGMAS = 10.0
#: 2-D: (x, region) pairs whose kappa * Phi0 is provably this many nats below p(x) are skipped (each adds
#: less than e^-40 = 4e-18 of p(x)).
PRUNE_NATS = 40.0


class CPAGenerator(nn.Module):
    """Leaky-ReLU MLP ``R^S -> R^D`` (float64): Linear, leaky ReLU, ..., Linear.

    Parameters
    ----------
    latent_dim : int
        ``S`` (1 or 2 for the exact analyses).
    out_dim : int
        ``D``.
    widths : sequence of int
        Hidden widths.
    negative_slope : float
    seed : int
        Seeds the (He-normal) initial weights.
    """

    def __init__(
        self, latent_dim: int, out_dim: int, widths: Sequence[int] = (8,), negative_slope: float = 0.1, seed: int = 0
    ):
        super().__init__()
        self.latent_dim, self.out_dim = int(latent_dim), int(out_dim)
        self.widths = tuple(int(w) for w in widths)
        self.negative_slope = float(negative_slope)
        dims = [self.latent_dim, *self.widths, self.out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o, dtype=torch.float64) for i, o in itertools.pairwise(dims))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for lin in self.layers:
                lin.weight.copy_(
                    torch.randn(lin.weight.shape, generator=g, dtype=torch.float64) * (2.0 / lin.in_features) ** 0.5
                )
                lin.bias.copy_(0.5 * torch.randn(lin.bias.shape, generator=g, dtype=torch.float64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for lin in self.layers[:-1]:
            h = nn.functional.leaky_relu(lin(h), self.negative_slope)
        return self.layers[-1](h)

    def numpy_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W, b), ...]`` as numpy copies."""
        return [(l.weight.detach().numpy().copy(), l.bias.detach().numpy().copy()) for l in self.layers]

    def regions(self, box: float = BOX_SIGMAS) -> LatentRegions:
        """Exact latent regions (2-D: inside ``[-box, box]^2``)."""
        return enumerate_regions(self.numpy_layers(), self.negative_slope, box=box)

    def codes(self, z: np.ndarray) -> np.ndarray:
        """Hidden sign patterns at latent points ``z`` (n, S): bool (n, H)."""
        return hidden_codes(self.numpy_layers(), z, self.negative_slope)

    def region_maps(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable ``A`` (R, D, S) and ``b`` (R, D) of the regions with the given (frozen) codes."""
        R = codes.shape[0]
        A = torch.eye(self.latent_dim, dtype=torch.float64).expand(R, -1, -1)
        c = torch.zeros(R, self.latent_dim, dtype=torch.float64)
        start = 0
        for lin in self.layers[:-1]:
            m = torch.where(codes[:, start : start + lin.out_features], 1.0, self.negative_slope).double()
            start += lin.out_features
            A = m[:, :, None] * torch.einsum("ij,rjs->ris", lin.weight, A)
            c = m * (c @ lin.weight.T + lin.bias)
        out = self.layers[-1]
        return torch.einsum("ij,rjs->ris", out.weight, A), c @ out.weight.T + out.bias


# -- per-region Gaussian algebra -------------------------------------------------------------------------
def region_covariances(A: np.ndarray, sigma_x: float, sigma_z: float) -> np.ndarray:
    """``Sigma_omega = (I / sigma_z^2 + A^T A / sigma_x^2)^{-1}``, shape (R, S, S)."""
    S = A.shape[2]
    prec = np.eye(S) / sigma_z**2 + np.einsum("rds,rdt->rst", A, A) / sigma_x**2
    return np.linalg.inv(prec)


def region_means(A: np.ndarray, b: np.ndarray, Sigma: np.ndarray, x: np.ndarray, sigma_x: float) -> np.ndarray:
    """``mu_omega(x) = Sigma_omega A^T (x - b) / sigma_x^2``, shape (n, R, S)."""
    K = np.einsum("rst,rdt->rsd", Sigma, A) / sigma_x**2
    return np.einsum("rsd,nrd->nrs", K, x[:, None, :] - b[None])


def log_kappa(A: np.ndarray, b: np.ndarray, x: np.ndarray, sigma_x: float, sigma_z: float) -> np.ndarray:
    """``log N(x; b_omega, sigma_x^2 I + sigma_z^2 A A^T)``, shape (n, R)."""
    D = A.shape[1]
    C = sigma_x**2 * np.eye(D) + sigma_z**2 * np.einsum("rds,res->rde", A, A)
    _, logdet = np.linalg.slogdet(C)
    diff = x[:, None, :] - b[None]
    quad = np.einsum("nrd,rde,nre->nr", diff, np.linalg.inv(C), diff)
    return -0.5 * (quad + logdet[None] + D * _LOG_2PI)


@dataclass
class Posterior:
    """``p(z | x)`` as a mixture of truncated Gaussians, one component per latent region.

    Attributes
    ----------
    regions : LatentRegions
    log_px : (n,) exact ``log p(x)``
    weights : (n, R) ``pi_omega(x)`` (rows sum to 1)
    means : (n, R, S) mean of each truncated component
    covs : (n, R, S, S) covariance of each truncated component
    second : (n, R, S, S) second moment ``E[z z^T | x, omega]``
    """

    regions: LatentRegions
    log_px: np.ndarray
    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    second: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """``E[z | x]``, shape (n, S)."""
        return np.einsum("nr,nrs->ns", self.weights, self.means)


def _update(tm: TruncatedMoments, new: TruncatedMoments, pairs: np.ndarray) -> None:
    tm.log_phi0[pairs], tm.mean[pairs], tm.second[pairs] = new.log_phi0[pairs], new.mean[pairs], new.second[pairs]


def _redo_tiny_in_log_space(
    tm: TruncatedMoments,
    pairs: np.ndarray,
    polygons: Sequence[np.ndarray],
    mu: np.ndarray,
    Sigma: np.ndarray,
    lk: np.ndarray,
    bd: np.ndarray,
) -> None:
    """Recompute in log space the ``pairs`` whose Owen's T ``Phi0`` is below its accuracy, skipping those
    that provably cannot matter: per row, first the one with the best upper bound
    ``lk + min(bd, log LOG_SPACE_BELOW)`` (a lower bound on ``log p(x)`` with the accurate pairs), then the
    others within ``PRUNE_NATS`` of it; the rest get ``log Phi0 = -inf`` (each < e^-40 of ``p(x)``)."""
    tiny = pairs & (tm.log_phi0 < np.log(LOG_SPACE_BELOW))
    if not tiny.any():
        return
    ub = np.where(tiny, lk + np.minimum(bd, np.log(LOG_SPACE_BELOW)), -np.inf)
    best = ub.max(1, keepdims=True)
    lb = logsumexp(np.where(pairs & ~tiny, lk + tm.log_phi0, -np.inf), axis=1, keepdims=True)
    first = tiny & (ub == best) & (best >= lb - PRUNE_NATS)
    if first.any():
        _update(tm, polygon_moments(polygons, mu, Sigma, first, mode="log"), first)
    lb = logsumexp(np.where((pairs & ~tiny) | first, lk + tm.log_phi0, -np.inf), axis=1, keepdims=True)
    rest = tiny & ~first & (ub >= lb - PRUNE_NATS)
    if rest.any():
        _update(tm, polygon_moments(polygons, mu, Sigma, rest, mode="log"), rest)
    tm.log_phi0[tiny & ~first & ~rest] = -np.inf


def compute_posterior(
    generator: CPAGenerator,
    sigma_x: float,
    sigma_z: float,
    x: np.ndarray,
    regions: LatentRegions | None = None,
    box_sigmas: float = BOX_SIGMAS,
) -> Posterior:
    """Exact ``log p(x)`` and the posterior mixture (the E-step) for the rows of ``x`` (n, D)."""
    x = np.atleast_2d(np.asarray(x, float))
    if regions is None:
        regions = generator.regions(box=box_sigmas * sigma_z)
    Sigma = region_covariances(regions.A, sigma_x, sigma_z)
    mu = region_means(regions.A, regions.b, Sigma, x, sigma_x)
    lk = log_kappa(regions.A, regions.b, x, sigma_x, sigma_z)
    if regions.latent_dim == 1:
        tm = interval_moments(regions.lo[None], regions.hi[None], mu[..., 0], Sigma[None, :, 0, 0])
    else:
        # a region whose kappa * (upper bound on Phi0) is e^-PRUNE_NATS below a lower bound on p(x) cannot
        # matter: compute the pairs near the best upper bound first, bound p(x) from them, then any others
        bd = polygon_log_mass_bound(regions.polygons, mu, Sigma)
        ub = lk + bd
        active = ub >= ub.max(1, keepdims=True) - PRUNE_NATS
        tm = polygon_moments(regions.polygons, mu, Sigma, active, mode="owen")
        _redo_tiny_in_log_space(tm, active, regions.polygons, mu, Sigma, lk, bd)
        bound = logsumexp(lk + tm.log_phi0, axis=1, keepdims=True)
        more = ~active & (ub >= bound - PRUNE_NATS)
        if more.any():
            _update(tm, polygon_moments(regions.polygons, mu, Sigma, more, mode="owen"), more)
            _redo_tiny_in_log_space(tm, more, regions.polygons, mu, Sigma, lk, bd)
    logw = lk + tm.log_phi0
    log_px = logsumexp(logw, axis=1)
    w = np.exp(logw - log_px[:, None])
    return Posterior(regions, log_px, w, tm.mean, tm.cov, tm.second)


def marginal_log_likelihood(generator: CPAGenerator, sigma_x: float, sigma_z: float, x: np.ndarray) -> np.ndarray:
    """Exact ``log p(x)`` (n,) of the rows of ``x`` (n, D) under the generator's model.

    For a 2-D latent the prior mass outside the box of ``BOX_SIGMAS * sigma_z`` is left out (see the doc).
    """
    return compute_posterior(generator, sigma_x, sigma_z, x).log_px


# -- EM --------------------------------------------------------------------------------------------------
def _sufficient_stats(post: Posterior, x: np.ndarray) -> dict[str, torch.Tensor]:
    """Sums over the data of the E-step moments, so that the M-step costs O(R), not O(n R)."""
    m0 = post.weights
    m1 = m0[..., None] * post.means
    m2 = m0[..., None, None] * post.second
    st = {
        "S0": m0.sum(0),
        "Sx": m0.T @ x,
        "Sxx": m0.T @ (x * x).sum(1),
        "Sxz": np.einsum("nd,nrs->rds", x, m1),
        "Sz": m1.sum(0),
        "Szz": m2.sum(0),
    }
    return {k: torch.as_tensor(v, dtype=torch.float64) for k, v in st.items()}


def _residual(A: torch.Tensor, b: torch.Tensor, st: dict[str, torch.Tensor]) -> torch.Tensor:
    """``sum_n sum_omega E[||x - A z - b||^2 1_omega(z) | x_n]`` from the sufficient statistics."""
    return (
        st["Sxx"].sum()
        - 2 * (b * st["Sx"]).sum()
        + ((b * b).sum(1) * st["S0"]).sum()
        - 2 * (A * st["Sxz"]).sum()
        + 2 * torch.einsum("rd,rds,rs->", b, A, st["Sz"])
        + torch.einsum("rds,rst,rdt->", A, st["Szz"], A)
    )


def _weight_proposal(gen: CPAGenerator, codes: torch.Tensor, st: dict, n: int, max_iter: int) -> CPAGenerator:
    """Weights maximising the expected complete-data log-likelihood with the masks frozen.

    scipy's L-BFGS on torch gradients (``torch.optim`` would import ``torch._dynamo``, seconds per process).
    """
    new = copy.deepcopy(gen)
    params = list(new.parameters())
    theta0 = torch.cat([p.detach().reshape(-1) for p in params]).numpy()

    def set_flat(theta: np.ndarray) -> None:
        i = 0
        with torch.no_grad():
            for p in params:
                p.copy_(torch.as_tensor(theta[i : i + p.numel()]).reshape(p.shape))
                i += p.numel()

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        set_flat(theta)
        for p in params:
            p.grad = None
        A, b = new.region_maps(codes)
        loss = _residual(A, b, st) / n
        loss.backward()
        return float(loss.detach()), torch.cat([p.grad.reshape(-1) for p in params]).numpy().copy()

    res = minimize(
        fun, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-12, "ftol": 1e-15}
    )
    set_flat(res.x)
    return new


def _interpolate(old: CPAGenerator, new: CPAGenerator, t: float) -> CPAGenerator:
    out = copy.deepcopy(old)
    with torch.no_grad():
        for po, pn, p in zip(old.parameters(), new.parameters(), out.parameters()):
            p.copy_(po + t * (pn - po))
    return out


@dataclass
class EMFit:
    """A fitted generator with its noise levels; ``history`` is the exact mean ``log p(x)`` of the training
    data, first entry at initialisation, then one per iteration (EM) or per evaluation (VAE)."""

    generator: CPAGenerator
    sigma_x: float
    sigma_z: float
    history: list[float]
    method: str = "em"
    box_sigmas: float = BOX_SIGMAS
    _regions: LatentRegions | None = field(default=None, repr=False)

    @property
    def regions(self) -> LatentRegions:
        if self._regions is None:
            self._regions = self.generator.regions(box=self.box_sigmas * self.sigma_z)
        return self._regions

    @property
    def n_regions(self) -> int:
        return self.regions.n_regions

    def posterior(self, x: np.ndarray) -> Posterior:
        """The posterior mixture of truncated Gaussians of each row of ``x`` (n, D)."""
        return compute_posterior(self.generator, self.sigma_x, self.sigma_z, x, self.regions, self.box_sigmas)

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """Exact ``log p(x)``, shape (n,)."""
        return self.posterior(x).log_px

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` draws of ``x`` (n, D) from the model."""
        rng = np.random.default_rng(seed)
        z = self.sigma_z * rng.standard_normal((n, self.generator.latent_dim))
        with torch.no_grad():
            gz = self.generator(torch.as_tensor(z)).numpy()
        return gz + self.sigma_x * rng.standard_normal(gz.shape)

    def latent_grid(self, n_points: int = 200) -> np.ndarray:
        """The latent points of :meth:`curve`: ``n_points`` in ``[-3, 3] sigma_z`` (S=1), or the
        ``n_points x n_points`` grid of that square, row-major with ``z_1`` varying slowest (S=2)."""
        t = np.linspace(-3.0, 3.0, n_points) * self.sigma_z
        if self.generator.latent_dim == 1:
            return t[:, None]
        g1, g2 = np.meshgrid(t, t, indexing="ij")
        return np.stack([g1.ravel(), g2.ravel()], axis=1)

    def curve(self, n_points: int = 200) -> np.ndarray:
        """``g(z)`` on :meth:`latent_grid`: (n_points, D) for S=1, (n_points**2, D) for S=2."""
        with torch.no_grad():
            return self.generator(torch.as_tensor(self.latent_grid(n_points))).numpy()


def _ordered_centres(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k-means centres of ``x`` ordered along a short open path (nearest-neighbour tour from every start,
    then 2-opt), and the share of the data nearest to each: a crude principal curve."""
    # start from distinct rows: with many repeated rows, centres drawn from x coincide, one of each pair
    # stays empty and two knots collapse (0/0 end slope, NaN weights)
    uniq = np.unique(x, axis=0)
    centres = uniq[rng.choice(len(uniq), size=k, replace=False)].copy()
    for _ in range(50):  # Lloyd iterations
        d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        lab = d2.argmin(1)
        for j in range(k):
            if (lab == j).any():
                centres[j] = x[lab == j].mean(0)
            else:  # an empty centre moves to the row farthest from its centre (distinct from all centres)
                far = int(d2.min(1).argmax())
                centres[j] = x[far]
                d2[far] = 0.0
    lab = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    dist = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))

    def length(path):
        return dist[path[:-1], path[1:]].sum()

    best = None
    for s in range(k):
        path, left = [s], set(range(k)) - {s}
        while left:
            nxt = min(left, key=lambda j: dist[path[-1], j])
            path.append(nxt)
            left.remove(nxt)
        improved = True
        while improved:  # 2-opt on the open path
            improved = False
            for i in range(1, k - 1):
                for j in range(i + 1, k):
                    cand = path[:i] + path[i : j + 1][::-1] + path[j + 1 :]
                    if length(cand) < length(path) - 1e-12:
                        path, improved = cand, True
        if best is None or length(path) < length(best):
            best = path
    share = np.maximum(np.bincount(lab, minlength=k)[best], 0.5)  # an empty cluster keeps distinct knots
    share = share / share.sum()
    return centres[best], share


def init_generator(
    x: np.ndarray, latent_dim: int = 1, widths: Sequence[int] = (8,), seed: int = 0, negative_slope: float = 0.1
) -> tuple[CPAGenerator, float, float]:
    """A data-driven start; ``sigma_z = 1``.

    S=1: a crude principal curve: ``widths[0] + 2`` k-means centres ordered along a short path, placed at
    the prior quantiles of their data shares; the first layer's breakpoints sit at the interior centres,
    so the polyline through the centres is representable. S=2: the data's principal plane, with the first
    layer's lines spread over the prior's bulk. The output layer is the least-squares fit of that target
    on a latent grid (weighted by the prior); ``sigma_x^2`` is the mean squared residual per dimension
    off the target plus a tenth of the variance along it (so the first posteriors are broad).

    Returns
    -------
    generator, sigma_x, sigma_z
    """
    x = np.asarray(x, float)
    n, D = x.shape
    S = latent_dim
    gen = CPAGenerator(S, D, widths, negative_slope, seed)
    rng = np.random.default_rng(seed)
    centre = x.mean(0)
    _, sv, Vt = np.linalg.svd(x - centre, full_matrices=False)
    sd = np.zeros(D)
    sd[: len(sv)] = sv / np.sqrt(n)
    Vfull = np.zeros((D, D))
    Vfull[: len(Vt)] = Vt
    h = gen.widths[0]
    t = np.linspace(-3.5, 3.5, 201 if S == 1 else 41)
    zg = t[:, None] if S == 1 else np.stack([a.ravel() for a in np.meshgrid(t, t, indexing="ij")], 1)
    if S == 1 and len(np.unique(x, axis=0)) >= h + 2:
        cs, share = _ordered_centres(x, h + 2, rng)
        knots = ndtri(np.clip(np.cumsum(share) - 0.5 * share, 1e-3, 1 - 1e-3))
        # strictly increasing (clipping can make end knots equal): distinct breakpoints, finite end slopes
        for i in range(1, len(knots)):
            knots[i] = max(knots[i], knots[i - 1] + 1e-3)
        target = np.stack([np.interp(zg[:, 0], knots, cs[:, d]) for d in range(D)], 1)
        # linear extension beyond the end centres
        for end, (i, j) in (("lo", (0, 1)), ("hi", (-1, -2))):
            slope = (cs[i] - cs[j]) / (knots[i] - knots[j])
            sel = zg[:, 0] < knots[0] if end == "lo" else zg[:, 0] > knots[-1]
            target[sel] = cs[i] + (zg[sel, 0, None] - knots[i]) * slope
        sign = rng.choice([-1.0, 1.0], size=h)
        W1, b1 = sign[:, None], -sign * knots[1:-1]
        resid = ((x[:, None] - cs[None]) ** 2).sum(-1).min(1).mean()
    else:
        target = centre + zg @ (Vfull[:S].T * sd[:S]).T
        if S == 1:
            sign = rng.choice([-1.0, 1.0], size=h)
            W1, b1 = sign[:, None], -sign * np.sort(rng.uniform(-2.0, 2.0, size=h))
        else:
            ang = np.pi * (np.arange(h) + rng.uniform(size=h)) / h
            W1, b1 = np.stack([np.cos(ang), np.sin(ang)], axis=1), rng.uniform(-1.5, 1.5, size=h)
        resid = (sd[S:] ** 2).sum()
    with torch.no_grad():
        gen.layers[0].weight.copy_(torch.as_tensor(W1))
        gen.layers[0].bias.copy_(torch.as_tensor(b1))
        hid = torch.as_tensor(zg)
        for lin in gen.layers[:-1]:
            hid = nn.functional.leaky_relu(lin(hid), negative_slope)
        H = np.hstack([hid.numpy(), np.ones((len(zg), 1))])
        wts = np.exp(-0.25 * (zg * zg).sum(1))[:, None]
        beta = np.linalg.solve((H * wts).T @ H + 1e-8 * np.eye(H.shape[1]), (H * wts).T @ target)
        gen.layers[-1].weight.copy_(torch.as_tensor(beta[:-1].T))
        gen.layers[-1].bias.copy_(torch.as_tensor(beta[-1]))
    sigma_x = float(np.sqrt((resid + 0.1 * (sd[:S] ** 2).sum()) / D))
    return gen, max(sigma_x, 1e-8), 1.0


def fit_em(
    x: np.ndarray,
    latent_dim: int = 1,
    widths: Sequence[int] = (8,),
    n_iter: int = 30,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    negative_slope: float = 0.1,
    m_iter: int = 30,
    max_halvings: int = 10,
    box_sigmas: float = BOX_SIGMAS,
    min_sigma_x: float | None = None,
) -> EMFit:
    """Fit the generator to ``x`` (n, D) by generalised EM; the exact mean ``log p(x)`` never decreases.

    Each iteration: E-step (exact posterior moments); ``sigma_z^2`` in closed form; weights proposed by
    the masks-frozen M-step (``m_iter`` L-BFGS iterations), ``sigma_x^2`` in closed form for them; the step
    from the old to the proposed weights is halved (at most ``max_halvings`` times) until the exact
    likelihood does not decrease; failing that, only the (exact-EM) sigma update is taken; failing that too
    (the fit has converged to rounding), the loop stops early. ``x`` is used as given (no standardisation).

    Parameters
    ----------
    x : ndarray (n, D)
    latent_dim : int
        1 or 2.
    widths : sequence of int
        Hidden widths of the generator.
    n_iter : int
    seed : int
        Seeds the initialisation (:func:`init_generator`).
    progress : callable(iteration, mean log p(x)), optional
    min_sigma_x : float, optional
        Floor on ``sigma_x`` (default 1e-6 of the data's rms spread). Maximum likelihood is unbounded on
        data with repeated points (``sigma_x -> 0``); a floor keeps such fits usable as novelty scores.

    Returns
    -------
    EMFit
    """
    x = np.asarray(x, float)
    n, D = x.shape
    S = latent_dim
    gen, sx, sz = init_generator(x, S, widths, seed, negative_slope)
    floor = 1e-6 * float(np.sqrt(x.var(0).sum() / D) + 1e-300) if min_sigma_x is None else float(min_sigma_x)
    sx = max(sx, floor)
    post = compute_posterior(gen, sx, sz, x, box_sigmas=box_sigmas)
    L = float(post.log_px.mean())
    if not np.isfinite(L):
        raise ValueError(
            f"fit_em: the initial mean log-likelihood is {L} (not finite); the initialisation failed "
            "(non-finite data or a degenerate start)"
        )
    history = [L]
    for it in range(n_iter):
        st = _sufficient_stats(post, x)
        codes = torch.as_tensor(post.regions.codes)
        sz_new = float(np.sqrt(torch.diagonal(st["Szz"].sum(0)).sum().item() / (n * S)))
        with torch.no_grad():
            sx_em = float(np.sqrt(max(_residual(*gen.region_maps(codes), st).item() / (n * D), floor**2)))
        proposal = _weight_proposal(gen, codes, st, n, m_iter)
        accepted = None
        step = 1.0
        for _ in range(max_halvings + 1):
            cand = _interpolate(gen, proposal, step)
            with torch.no_grad():
                sx_c = float(np.sqrt(max(_residual(*cand.region_maps(codes), st).item() / (n * D), floor**2)))
            p = compute_posterior(cand, sx_c, sz_new, x, box_sigmas=box_sigmas)
            if np.isfinite(p.log_px).all() and p.log_px.mean() >= L:
                accepted = (cand, sx_c, p)
                break
            step *= 0.5
        if accepted is None:
            p = compute_posterior(gen, sx_em, sz_new, x, box_sigmas=box_sigmas)
            if p.log_px.mean() >= L:
                accepted = (gen, sx_em, p)
        if accepted is None:
            break
        gen, sx, post = accepted
        sz = sz_new
        L = float(post.log_px.mean())
        history.append(L)
        if progress is not None:
            progress(it + 1, L)
    return EMFit(gen, sx, sz, history, "em", box_sigmas)


# -- VAE baseline ----------------------------------------------------------------------------------------
def fit_vae(
    x: np.ndarray,
    latent_dim: int = 1,
    widths: Sequence[int] = (8,),
    epochs: int = 300,
    lr: float = 1e-3,
    seed: int = 0,
    batch_size: int = 256,
    hidden: int = 32,
    n_evals: int = 20,
    negative_slope: float = 0.1,
    progress: Callable[[int, float], None] | None = None,
) -> EMFit:
    """The same generator (same initialisation) trained as a VAE; its likelihood is evaluated exactly.

    Encoder: MLP ``D -> hidden -> hidden -> 2S`` (tanh) on the standardised data (standardising the
    encoder's input only; the model of ``x`` is unchanged). Prior ``N(0, I)`` (``sigma_z = 1`` fixed: the
    generator's first layer carries the scale); ``log sigma_x`` is learned. Adam, minibatches, ``epochs``
    passes; ``history`` holds the exact mean ``log p(x)`` at the start and after every
    ``epochs // n_evals`` epochs.

    Returns
    -------
    EMFit (``method="vae"``)
    """
    x = np.asarray(x, float)
    n, D = x.shape
    S = latent_dim
    gen, sx, _ = init_generator(x, S, widths, seed, negative_slope)
    torch.manual_seed(seed)
    enc = nn.Sequential(
        nn.Linear(D, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2 * S)
    ).double()
    log_sx = nn.Parameter(torch.tensor(np.log(sx), dtype=torch.float64))
    opt = torch.optim.Adam([*gen.parameters(), *enc.parameters(), log_sx], lr=lr)
    xt = torch.as_tensor(x)
    xs = (xt - xt.mean(0)) / (xt.std(0) + 1e-12)
    g = torch.Generator().manual_seed(seed)
    every = max(1, epochs // max(1, n_evals))

    def exact() -> float:
        return float(marginal_log_likelihood(gen, float(log_sx.detach().exp()), 1.0, x).mean())

    history = [exact()]
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            out = enc(xs[idx])
            mq, lv = out[:, :S], out[:, S:].clamp(-12, 6)
            z = mq + torch.exp(0.5 * lv) * torch.randn(mq.shape, generator=g, dtype=torch.float64)
            var_x = torch.exp(2 * log_sx)
            rec = -0.5 * (((xt[idx] - gen(z)) ** 2).sum(1) / var_x + D * (2 * log_sx + _LOG_2PI))
            kl = 0.5 * (mq**2 + lv.exp() - 1 - lv).sum(1)
            loss = -(rec - kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if (ep + 1) % every == 0 or ep + 1 == epochs:
            history.append(exact())
            if progress is not None:
                progress(ep + 1, history[-1])
    return EMFit(gen, float(log_sx.detach().exp()), 1.0, history, "vae")
