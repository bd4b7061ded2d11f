"""Analytical EM for a piecewise-affine generator (models/spline/em_generator.py, latent_regions.py,
truncated_normal.py): regions against dense grids, truncated moments against numerical integration, p(x)
and the posterior against Monte Carlo, EM's monotone exact likelihood."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.spatial import ConvexHull
from scipy.special import log_ndtr, logsumexp

import scatterbird.models.spline.em_generator as em
from scatterbird.models.spline.em_generator import (
    CPAGenerator,
    compute_posterior,
    fit_em,
    fit_vae,
    marginal_log_likelihood,
)
from scatterbird.models.spline.latent_regions import polygon_area
from scatterbird.models.spline.truncated_normal import (
    interval_moments,
    log_ndtr_diff,
    log_space_polygon_moments,
    polygon_log_mass_bound,
    polygon_moments,
    std_polygon_moments,
)

torch.set_num_threads(1)


def _g(gen: CPAGenerator, z: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return gen(torch.as_tensor(z)).numpy()


def _wave(n: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    t = r.uniform(-3, 3, n)
    return np.stack([t, np.cos(1.4 * t)], 1) + 0.1 * r.standard_normal((n, 2))


# -- region enumeration ------------------------------------------------------------------------------------
def test_regions_1d_match_a_dense_grid():
    gen = CPAGenerator(1, 3, widths=(6, 5), seed=3)
    reg = gen.regions()
    assert np.isneginf(reg.lo[0]) and np.isposinf(reg.hi[-1])
    np.testing.assert_array_equal(reg.hi[:-1], reg.lo[1:])  # the intervals tile the line
    finite = np.concatenate([reg.lo[1:], reg.hi[:-1]])
    z = np.linspace(finite.min() - 2, finite.max() + 2, 200_001)[:, None]
    codes = gen.codes(z)
    assert {c.tobytes() for c in codes} == {c.tobytes() for c in reg.codes}
    idx = reg.index_of_codes(codes)
    assert (idx >= 0).all()
    assert ((reg.lo[idx] <= z[:, 0]) & (z[:, 0] <= reg.hi[idx])).all()
    np.testing.assert_allclose(np.einsum("nds,ns->nd", reg.A[idx], z) + reg.b[idx], _g(gen, z), atol=1e-10)


def _inside(poly: np.ndarray, pts: np.ndarray, tol: float) -> np.ndarray:
    e = np.roll(poly, -1, 0) - poly
    cross = e[None, :, 0] * (pts[:, None, 1] - poly[None, :, 1]) - e[None, :, 1] * (pts[:, None, 0] - poly[None, :, 0])
    return (cross >= -tol).all(1)


def test_regions_2d_match_a_dense_grid():
    gen = CPAGenerator(2, 3, widths=(7, 4), seed=5)
    box = 4.0
    reg = gen.regions(box=box)
    assert sum(polygon_area(p) for p in reg.polygons) == pytest.approx((2 * box) ** 2, rel=1e-9)
    assert all(polygon_area(p) > 0 for p in reg.polygons)  # counter-clockwise
    t = np.linspace(-box, box, 801)
    z = np.stack([a.ravel() for a in np.meshgrid(t, t, indexing="ij")], 1)
    codes = gen.codes(z)
    idx = reg.index_of_codes(codes)
    assert (idx >= 0).all()  # every grid code is an enumerated region
    cell = (t[1] - t[0]) ** 2
    big = {reg.codes[r].tobytes() for r, p in enumerate(reg.polygons) if polygon_area(p) > 20 * cell}
    assert big <= {c.tobytes() for c in codes}  # every region of more than a few cells is hit
    assert len(reg.codes) == len({c.tobytes() for c in reg.codes})  # one polygon per code
    for r in np.unique(idx):
        assert _inside(reg.polygons[r], z[idx == r], 1e-9).all()
    np.testing.assert_allclose(np.einsum("nds,ns->nd", reg.A[idx], z) + reg.b[idx], _g(gen, z), atol=1e-10)


# -- truncated moments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lo,hi,mu,var", [(-np.inf, 0.4, 0.3, 0.7), (-1.2, 2.5, 0.1, 2.0), (1.0, np.inf, -0.5, 0.3), (3.0, 3.7, 0.0, 0.2)]
)
def test_interval_moments_match_quad(lo, hi, mu, var):
    tm = interval_moments(lo, hi, mu, var)
    pdf = stats.norm(mu, np.sqrt(var)).pdf
    ref = [integrate.quad(lambda z, k=k: z**k * pdf(z), lo, hi, epsabs=1e-14, epsrel=1e-12)[0] for k in range(3)]
    np.testing.assert_allclose([tm.phi0, tm.phi1[0], tm.phi2[0, 0]], ref, rtol=1e-8, atol=1e-13)


def test_interval_mass_keeps_relative_accuracy_in_the_tail():
    assert float(log_ndtr_diff(30.0, 31.0)) == pytest.approx(
        float(log_ndtr(-30.0) + np.log1p(-np.exp(log_ndtr(-31.0) - log_ndtr(-30.0)))), rel=1e-12
    )
    tm = interval_moments(30.0, 31.0, 0.0, 1.0)
    assert 30.0 < tm.mean[0] < 30.1 and np.isfinite(tm.log_phi0)


def _ybounds(poly, x):
    ys = []
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, 0)):
        if min(x1, x2) <= x <= max(x1, x2) and x1 != x2:
            ys.append(y1 + (x - x1) * (y2 - y1) / (x2 - x1))
    return min(ys), max(ys)


def test_polygon_moments_match_dblquad():
    rng = np.random.default_rng(0)
    poly = rng.uniform(-1.5, 1.5, (9, 2))
    poly = poly[ConvexHull(poly).vertices]  # counter-clockwise
    cov = np.array([[0.8, 0.3], [0.3, 0.5]])
    mus = np.array([[0.2, -0.1], [1.8, 1.0], [-2.5, 0.4]])
    tm = polygon_moments([poly], mus[:, None, :], cov[None])
    for k, mu in enumerate(mus):
        pdf = stats.multivariate_normal(mu, cov).pdf

        def integral(f, pdf=pdf):
            return integrate.quad(
                lambda x: integrate.quad(
                    lambda y: f(x, y) * pdf([x, y]), *_ybounds(poly, x), epsabs=1e-14, epsrel=1e-11
                )[0],
                poly[:, 0].min(),
                poly[:, 0].max(),
                points=poly[:, 0],
                limit=200,
                epsabs=1e-14,
                epsrel=1e-11,
            )[0]

        ref0 = integral(lambda x, y: 1.0)
        ref1 = [integral(lambda x, y: x), integral(lambda x, y: y)]
        ref2 = [integral(lambda x, y: x * x), integral(lambda x, y: x * y), integral(lambda x, y: y * y)]
        got2 = tm.phi2[k, 0]
        np.testing.assert_allclose(tm.phi0[k, 0], ref0, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(tm.phi1[k, 0], ref1, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose([got2[0, 0], got2[0, 1], got2[1, 1]], ref2, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("S", [1, 2])
def test_prior_mass_over_all_regions_is_one(S):
    gen = CPAGenerator(S, 2, widths=(8,), seed=1)
    sz = 1.7
    reg = gen.regions(box=10 * sz)
    mu = np.zeros((1, reg.n_regions, S))
    cov = np.broadcast_to(sz**2 * np.eye(S), (reg.n_regions, S, S))
    if S == 1:
        tm = interval_moments(reg.lo, reg.hi, 0.0, sz**2)
    else:
        tm = polygon_moments(reg.polygons, mu, cov)
    assert tm.phi0.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.allclose((tm.phi1.reshape(-1, S)).sum(0), 0.0, atol=1e-9)  # and the prior mean is 0


# -- marginal and posterior ------------------------------------------------------------------------------------
@pytest.mark.parametrize("S", [1, 2])
def test_marginal_matches_monte_carlo(S):
    gen = CPAGenerator(S, 3, widths=(8,), seed=2)
    sx, sz = 0.4, 1.2
    rng = np.random.default_rng(7)
    x = _g(gen, sz * rng.standard_normal((4, S))) + sx * rng.standard_normal((4, 3))
    x[-1] += 1.0  # one point off the manifold
    logp = marginal_log_likelihood(gen, sx, sz, x)
    gz = _g(gen, sz * rng.standard_normal((400_000, S)))
    for i in range(len(x)):
        dens = stats.multivariate_normal(x[i], sx**2 * np.eye(3)).pdf(gz)
        est, se = dens.mean(), dens.std() / np.sqrt(len(dens))
        assert abs(np.exp(logp[i]) - est) < 4 * se, (i, np.exp(logp[i]), est, se)


@pytest.mark.parametrize("S", [1, 2])
def test_posterior_matches_importance_sampling(S):
    gen = CPAGenerator(S, 2, widths=(6,), seed=4)
    sx, sz = 0.5, 1.0
    x = np.array([[0.3, -0.2], [1.0, 0.5]])
    post = compute_posterior(gen, sx, sz, x)
    np.testing.assert_allclose(post.weights.sum(1), 1.0, atol=1e-12)
    rng = np.random.default_rng(11)
    z = sz * rng.standard_normal((400_000, S))
    gz = _g(gen, z)
    idx = post.regions.index_of_codes(gen.codes(z))
    for i in range(len(x)):
        w = np.exp(-0.5 * ((gz - x[i]) ** 2).sum(1) / sx**2)
        w /= w.sum()
        m = w @ z
        se = np.sqrt((w[:, None] ** 2 * (z - m) ** 2).sum(0))  # delta-method SE of the self-normalised mean
        assert (np.abs(post.mean[i] - m) < 4 * se + 1e-12).all(), (post.mean[i], m, se)
        frac = np.bincount(idx, weights=w, minlength=post.regions.n_regions)
        se_f = np.sqrt(
            np.bincount(idx, weights=w**2, minlength=post.regions.n_regions) * (1 - frac) ** 2
            + (w**2).sum() * frac**2
            - np.bincount(idx, weights=w**2, minlength=post.regions.n_regions) * frac**2
        )
        assert (np.abs(post.weights[i] - frac) < 4 * se_f + 1e-9).all()


# -- EM --------------------------------------------------------------------------------------------------------
def test_em_never_lowers_the_exact_likelihood_and_improves_it():
    x = _wave(300, 0)
    fit = fit_em(x, latent_dim=1, widths=(8,), n_iter=12, seed=0)
    h = np.array(fit.history)
    assert len(h) >= 2
    assert (np.diff(h) >= 0).all()
    assert h[-1] > h[0] + 0.3
    assert fit.log_likelihood(x).mean() == pytest.approx(h[-1], abs=1e-10)  # history is the exact value
    assert fit.sample(50).shape == (50, 2) and fit.curve(30).shape == (30, 2)
    assert fit.n_regions >= 2


def test_em_2d_latent_is_monotone():
    x = _wave(150, 1)
    fit = fit_em(x, latent_dim=2, widths=(6,), n_iter=4, seed=0)
    h = np.array(fit.history)
    assert (np.diff(h) >= 0).all() and h[-1] > h[0]
    assert fit.curve(7).shape == (49, 2)


def test_vae_baseline_runs_with_exact_likelihood():
    x = _wave(200, 2)
    fit = fit_vae(x, latent_dim=1, widths=(8,), epochs=20, seed=0, n_evals=4)
    ll = fit.log_likelihood(x)
    assert ll.shape == (200,) and np.isfinite(ll).all()
    assert len(fit.history) == 5 and fit.method == "vae"


def test_backtracking_rejects_a_step_that_lowers_the_likelihood(monkeypatch):
    """With the masks frozen the weight update is only a proposal; a bad one must not lower the exact
    likelihood (a proposal of random weights stands in for a masks-frozen step that moves the partition)."""
    calls = []

    def bad_proposal(gen, codes, st, n, max_iter):
        calls.append(1)
        return CPAGenerator(gen.latent_dim, gen.out_dim, gen.widths, gen.negative_slope, seed=100 + len(calls))

    monkeypatch.setattr(em, "_weight_proposal", bad_proposal)
    x = _wave(200, 3)
    start = em.compute_posterior(*em.init_generator(x, 1, (8,), 0), x).log_px.mean()
    raw = bad_proposal(CPAGenerator(1, 2, (8,)), None, None, None, None)
    assert marginal_log_likelihood(raw, 0.3, 1.0, x).mean() < start  # the raw step would lower it
    calls.clear()
    fit = fit_em(x, latent_dim=1, widths=(8,), n_iter=5, seed=0)
    h = np.array(fit.history)
    assert calls and (np.diff(h) >= 0).all()
    assert h[0] == pytest.approx(start, abs=1e-12)


# -- repeated rows (issue 17 review) ------------------------------------------------------------------------------
def _zeros_and_curve() -> np.ndarray:
    t = np.random.default_rng(0).uniform(-3, 3, 600)
    return np.vstack([np.zeros((900, 2)), np.stack([t, 2 + np.cos(1.4 * t)], 1)])


def test_init_and_em_stay_finite_with_many_repeated_rows():
    """900 identical rows + 600 on a curve: k-means used to pick the same centre twice (NaN weights for
    seeds 0, 4, 7, 8, 9, 12, ...) and fit_em returned history == [nan]."""
    x = _zeros_and_curve()
    for seed in range(14):
        gen = em.init_generator(x, 1, (8,), seed)[0]
        assert all(np.isfinite(p.detach().numpy()).all() for p in gen.parameters()), seed
        h = np.array(fit_em(x, latent_dim=1, widths=(8,), n_iter=2, seed=seed).history)
        assert len(h) >= 2 and np.isfinite(h).all() and (np.diff(h) >= 0).all(), (seed, h)


def test_fit_em_raises_on_a_non_finite_start(monkeypatch):
    x = _wave(100, 5)

    def nan_init(x, S, widths, seed, negative_slope):
        gen = CPAGenerator(S, x.shape[1], widths, negative_slope, seed)
        with torch.no_grad():
            gen.layers[-1].bias.fill_(float("nan"))
        return gen, 0.3, 1.0

    monkeypatch.setattr(em, "init_generator", nan_init)
    with pytest.raises(ValueError, match="not finite"):
        fit_em(x, latent_dim=1, widths=(8,), n_iter=2)


# -- 2-D latent far off the manifold: Phi0 in log space -------------------------------------------------------
def _padded(polys):
    vt = np.zeros((len(polys), max(len(p) for p in polys), 2))
    for i, p in enumerate(polys):
        vt[i, : len(p)] = p
    return vt, np.array([len(p) for p in polys])


def test_log_space_polygon_moments_match_owens_t_where_both_are_accurate():
    rng = np.random.default_rng(0)
    polys = []
    for _ in range(200):
        p = rng.uniform(-1, 1, (rng.integers(3, 9), 2)) * rng.uniform(0.1, 3)
        polys.append(p[ConvexHull(p).vertices] + rng.uniform(-6, 6, 2))
    lq, mq, sq, inside = log_space_polygon_moments(*_padded(polys))
    counts = np.array([len(p) for p in polys])
    p0, m1, m2 = std_polygon_moments(
        np.concatenate(polys)[None],
        np.concatenate([np.roll(p, -1, 0) for p in polys])[None],
        np.concatenate([[0], np.cumsum(counts)[:-1]]),
    )
    p0, m1, m2 = p0[0], m1[0], m2[0]
    ok = ~inside & (p0 > 1e-6)
    assert ok.sum() > 50 and inside.sum() >= 1
    np.testing.assert_allclose(lq[ok], np.log(p0[ok]), atol=1e-5)
    np.testing.assert_allclose(mq[ok], m1[ok] / p0[ok, None], atol=1e-5)
    np.testing.assert_allclose(sq[ok], m2[ok] / p0[ok, None, None], rtol=1e-5, atol=1e-5)


def test_far_polygon_mass_matches_a_half_plane_limit():
    """A square [R, R+1] x [-1, 1] (R = 60, Phi0 ~ e^-1800): Phi0 = (Phi(-R) - Phi(-R-1)) (Phi(1) - Phi(-1))."""
    R = 60.0
    sq = np.array([[R, -1.0], [R + 1, -1.0], [R + 1, 1.0], [R, 1.0]])
    lq, mq, _, inside = log_space_polygon_moments(*_padded([sq]))
    ref = float(log_ndtr_diff(R, R + 1.0) + log_ndtr_diff(-1.0, 1.0))
    assert not inside[0] and lq[0] == pytest.approx(ref, abs=1e-9)
    assert mq[0, 1] == pytest.approx(0.0, abs=1e-12)
    assert mq[0, 0] == pytest.approx(float(interval_moments(R, R + 1.0, 0.0, 1.0).mean[0]), rel=1e-12)


def test_far_off_manifold_log_likelihood_matches_a_dense_latent_grid():
    """S = 2, sigma_x = 0.05, points 5 units off the manifold: log p(x) is thousands of nats below 0 in every
    region; the Owen's T sum alone gave [-10689, -7125, -4949] against the grid's [-14330, -7125, -4949]."""
    gen = CPAGenerator(2, 3, widths=(8,), seed=0)
    sx, sz = 0.05, 1.0
    rng = np.random.default_rng(0)
    x = _g(gen, rng.standard_normal((3, 2))) + 5 * rng.standard_normal((3, 3))
    post = compute_posterior(gen, sx, sz, x)
    ub = logsumexp(
        em.log_kappa(post.regions.A, post.regions.b, x, sx, sz)
        + polygon_log_mass_bound(
            post.regions.polygons,
            em.region_means(post.regions.A, post.regions.b, em.region_covariances(post.regions.A, sx, sz), x, sx),
            em.region_covariances(post.regions.A, sx, sz),
        ),
        axis=1,
    )
    h = 0.01
    t = np.arange(-10, 10, h) + h / 2
    z = np.stack([a.ravel() for a in np.meshgrid(t, t, indexing="ij")], 1)
    gz = _g(gen, z)
    lprior = -0.5 * (z**2).sum(1) / sz**2 - np.log(2 * np.pi * sz**2)
    for i in range(3):
        ll = -0.5 * ((gz - x[i]) ** 2).sum(1) / sx**2 - 1.5 * np.log(2 * np.pi * sx**2) + lprior
        ref = logsumexp(ll) + 2 * np.log(h)
        assert post.log_px[i] == pytest.approx(ref, abs=1.0), (i, post.log_px[i], ref)
        assert post.log_px[i] <= ub[i] + 1e-9
        w = np.exp(ll - ll.max())
        w /= w.sum()
        np.testing.assert_allclose(post.mean[i], w @ z, atol=2e-3)  # the moments are consistent too
    assert post.log_px[0] < -12_000  # the far point of the review (was -10689 without log space)


# -- the M-step's ingredients against Monte Carlo -------------------------------------------------------------
def _posterior_samples(gen, sx, sz, x, n_draws, seed):
    """Self-normalised importance weights (n, M) of prior draws z (M, S) for p(z | x_n), and g(z)."""
    z = sz * np.random.default_rng(seed).standard_normal((n_draws, gen.latent_dim))
    gz = _g(gen, z)
    lw = -0.5 * ((x[:, None, :] - gz[None]) ** 2).sum(-1) / sx**2
    w = np.exp(lw - lw.max(1, keepdims=True))
    return w / w.sum(1, keepdims=True), z, gz


def _is_mean(w, f):
    """Self-normalised estimate of E[f] per row of w, and its delta-method standard error."""
    est = w @ f
    return est, np.sqrt((w**2 * (f[None] - est[:, None]) ** 2).sum(1))


@pytest.mark.parametrize("S", [1, 2])
def test_expected_residual_matches_importance_sampling(S):
    """``_residual`` (sum over regions of E[||x - A z - b||^2 1_omega | x]) is E[||x - g(z)||^2 | x]."""
    gen = CPAGenerator(S, 3, widths=(6,), seed=6)
    sx, sz = 0.6, 1.0
    rng = np.random.default_rng(1)
    x = _g(gen, rng.standard_normal((3, S))) + sx * rng.standard_normal((3, 3))
    post = compute_posterior(gen, sx, sz, x)
    A, b = gen.region_maps(torch.as_tensor(post.regions.codes))
    w, _, gz = _posterior_samples(gen, sx, sz, x, 300_000, 2)
    for i in range(len(x)):
        sub = em.Posterior(
            post.regions,
            post.log_px[i : i + 1],
            post.weights[i : i + 1],
            post.means[i : i + 1],
            post.covs[i : i + 1],
            post.second[i : i + 1],
        )
        with torch.no_grad():
            got = float(em._residual(A, b, em._sufficient_stats(sub, x[i : i + 1])))
        est, se = _is_mean(w[i : i + 1], ((x[i] - gz) ** 2).sum(1))
        assert abs(got - est[0]) < 4 * se[0], (i, got, est[0], se[0])


def test_sigma_updates_maximise_the_expected_complete_data_log_likelihood(monkeypatch):
    """One EM iteration with the weights held (proposal = current weights) takes the closed-form sigma
    update; against an importance-sampling Q(sigma_x, sigma_z) it is the maximiser (+-5 % lowers Q)."""
    monkeypatch.setattr(em, "_weight_proposal", lambda gen, codes, st, n, max_iter: copy.deepcopy(gen))
    x = _wave(20, 4)
    gen0, sx0, sz0 = em.init_generator(x, 1, (6,), 0)
    fit = fit_em(x, latent_dim=1, widths=(6,), n_iter=1, seed=0)
    assert len(fit.history) == 2
    for p, q in zip(fit.generator.parameters(), gen0.parameters()):
        assert torch.equal(p, q)
    w, z, gz = _posterior_samples(gen0, sx0, sz0, x, 200_000, 3)
    e_res = (w * ((x[:, None, :] - gz[None]) ** 2).sum(-1)).sum()  # sum_n E[||x_n - g(z)||^2 | x_n]
    e_zz = (w @ (z**2).sum(1)).sum()
    n, D, S = len(x), 2, 1

    def Q(sx, sz):
        return -n * D * np.log(sx) - e_res / (2 * sx**2) - n * S * np.log(sz) - e_zz / (2 * sz**2)

    best = Q(fit.sigma_x, fit.sigma_z)
    for f in (0.95, 1.05):
        assert Q(f * fit.sigma_x, fit.sigma_z) < best
        assert Q(fit.sigma_x, f * fit.sigma_z) < best
    assert fit.sigma_x == pytest.approx(np.sqrt(e_res / (n * D)), rel=0.01)
    assert fit.sigma_z == pytest.approx(np.sqrt(e_zz / (n * S)), rel=0.01)
