"""GAN ensembles with the coupling regulariser, and the k-NN sample-quality metrics.

The regulariser is checked against its pairwise definition, its limits (independent generators at lambda = 0,
one generator at large lambda) and the metrics against hand-computed cases; one short training checks the
claim the method rests on (an ensemble puts less mass between disconnected clusters than one generator).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from scatterbird.models.spline.affine import explicit_affine
from scatterbird.models.spline.gan_ensemble import (
    GANEnsemble,
    couple_step,
    coupling_penalty,
    fit_gan_ensemble,
    flat_parameters,
    generator_loss,
    make_mlp,
    sweep_coupling,
)
from scatterbird.models.spline.network import spline_view
from scatterbird.models.spline.sample_quality import (
    cluster_coverage,
    cluster_recall,
    knn_precision_recall,
    knn_radii,
    support_components,
)

torch.set_num_threads(1)

CENTRES = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 6.0]])
SIGMA = 0.5


def three_clusters(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 3, n)
    return CENTRES[lab] + SIGMA * rng.standard_normal((n, 2)), lab


def _gens(K: int, seed: int = 0, dtype=torch.float64) -> list[torch.nn.Module]:
    torch.manual_seed(seed)
    return [make_mlp(2, 2, (5, 4)).to(dtype) for _ in range(K)]


# -- the coupling penalty ----------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [1, 2, 3, 5])
def test_coupling_penalty_equals_pairwise_sum(K):
    gens = _gens(K, seed=K)
    slow = torch.zeros((), dtype=torch.float64)
    for a, b in itertools.combinations(gens, 2):
        for pa, pb in zip(a.parameters(), b.parameters()):
            slow = slow + ((pa - pb) ** 2).sum()
    fast = coupling_penalty(gens)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-12, abs=1e-12)
    # and its gradient: d/dtheta_k sum_{i<j} ||theta_i - theta_j||^2 = 2 sum_{j != k} (theta_k - theta_j)
    if K > 1:
        fast.backward()
        thetas = [flat_parameters(g).detach() for g in gens]
        grad0 = torch.cat([p.grad.reshape(-1) for p in gens[0].parameters()])
        expect = 2 * sum(thetas[0] - t for t in thetas[1:])
        torch.testing.assert_close(grad0, expect, rtol=1e-12, atol=1e-12)


def test_coupling_penalty_zero_iff_parameters_equal():
    gens = _gens(3)
    for g in gens[1:]:
        g.load_state_dict(gens[0].state_dict())
    assert coupling_penalty(gens).item() == 0.0
    with torch.no_grad():
        next(gens[2].parameters())[0, 0] += 1e-3  # one parameter of one generator differs
    # pairs (0, 2) and (1, 2) each differ by 1e-3 in one coordinate
    assert coupling_penalty(gens).item() == pytest.approx(2e-6, rel=1e-9)
    with pytest.raises(ValueError):
        coupling_penalty([make_mlp(2, 2, (5,)), make_mlp(2, 2, (6,))])


@pytest.mark.parametrize("step", [1e-3, 0.3, 50.0])
def test_couple_step_is_the_proximal_step(step):
    """The result minimises ||theta - theta_old||^2 / (2 step) + penalty: its gradient there is zero."""
    gens = _gens(3, seed=4)
    old = [flat_parameters(g).detach().clone() for g in gens]
    couple_step(gens, step)
    new = [flat_parameters(g) for g in gens]
    torch.testing.assert_close(sum(new) / 3, sum(old) / 3, rtol=0, atol=1e-12)  # the mean is kept
    for g in gens:
        g.zero_grad()
    coupling_penalty(gens).backward()
    for g, t_new, t_old in zip(gens, new, old):
        grad = torch.cat([p.grad.reshape(-1) for p in g.parameters()])
        torch.testing.assert_close((t_new.detach() - t_old) / step + grad, torch.zeros_like(grad), rtol=0, atol=1e-10)


def test_zero_coupling_makes_generators_independent():
    """At lambda = 0 generator 0's gradient (for a fixed discriminator) ignores generator 1's parameters;
    at lambda > 0 it does not."""
    torch.manual_seed(0)
    disc = make_mlp(2, 1, (8,)).double()
    z = [torch.randn(16, 2, dtype=torch.float64) for _ in range(3)]
    weights = [0.2, 0.3, 0.5]

    def grad0(gens, coupling):
        for g in gens:
            g.zero_grad()
        generator_loss(gens, disc, z, weights, coupling).backward()
        return torch.cat([p.grad.reshape(-1) for p in gens[0].parameters()]).clone()

    gens = _gens(3, seed=1)
    g_before = {lam: grad0(gens, lam) for lam in (0.0, 0.5)}
    with torch.no_grad():
        for p in gens[1].parameters():
            p.add_(torch.randn_like(p))  # move generator 1 only
    g_after = {lam: grad0(gens, lam) for lam in (0.0, 0.5)}
    torch.testing.assert_close(g_after[0.0], g_before[0.0], rtol=0, atol=0)
    assert (g_after[0.5] - g_before[0.5]).abs().max() > 1e-3


# -- training -------------------------------------------------------------------------------------------------


def test_large_coupling_gives_one_generator():
    x, _ = three_clusters(300)
    free = fit_gan_ensemble(x, 3, coupling=0.0, steps=300, seed=0)
    tied = fit_gan_ensemble(x, 3, coupling=100.0, steps=300, seed=0)
    assert free.parameter_spread() > 0.5  # independent initialisations stay apart
    assert tied.parameter_spread() < 0.02
    # tied generators map the same latent to (nearly) the same point: one generator in effect
    z = torch.randn(200, 2)
    with torch.no_grad():
        outs = [g(z) for g in tied.generators]
    spread_out = max((o - outs[0]).abs().max().item() for o in outs)
    assert spread_out < 0.05 * outs[0].std().item()
    assert len(tied.history["penalty"]) == 300 and tied.history["penalty"][-1] < tied.history["penalty"][0]


def test_ensemble_puts_less_mass_between_clusters_than_one_generator():
    x, _ = three_clusters(600)
    single = fit_gan_ensemble(x, 1, steps=500, seed=0)
    ens = fit_gan_ensemble(x, 3, coupling=0.0, steps=500, seed=0)
    fs, fe = single.sample(600, seed=1), ens.sample(600, seed=1)
    ps, pe = knn_precision_recall(x, fs)["precision"], knn_precision_recall(x, fe)["precision"]
    between_s = cluster_coverage(fs, CENTRES, 3 * SIGMA)["outside"]
    between_e = cluster_coverage(fe, CENTRES, 3 * SIGMA)["outside"]
    assert pe > ps + 0.05, (pe, ps)
    assert between_e < between_s, (between_e, between_s)


def test_sample_units_components_and_weights():
    x, _ = three_clusters(200)
    x = x * np.array([100.0, 0.01]) + np.array([1e3, -5.0])  # standardised inside, returned in these units
    ens = fit_gan_ensemble(x, 3, steps=50, seed=0, weights=[0.6, 0.3, 0.1])
    s, comp = ens.sample(4000, seed=3, return_component=True)
    assert s.shape == (4000, 2) and comp.shape == (4000,)
    np.testing.assert_allclose(np.bincount(comp, minlength=3) / 4000, [0.6, 0.3, 0.1], atol=0.03)
    assert np.all(np.abs(s.mean(0) - x.mean(0)) < 5 * x.std(0))
    np.testing.assert_array_equal(ens.sample(10, seed=3), ens.sample(10, seed=3))  # seeded
    # a sample equals its generator applied to the latent, un-standardised
    s1, c1 = ens.sample(1, seed=7, return_component=True)
    z = np.random.default_rng(7)
    z.choice(3, size=1, p=ens.weights)
    zz = torch.from_numpy(z.standard_normal((1, 2)).astype(np.float32))
    with torch.no_grad():
        expect = ens.mean + ens.scale * ens.generators[int(c1[0])](zz).double().numpy()
    np.testing.assert_allclose(s1, expect, rtol=1e-6)


def test_generators_are_piecewise_affine():
    x, _ = three_clusters(100)
    ens = fit_gan_ensemble(x, 2, steps=5, seed=0)
    view = spline_view(ens.generators[0])  # the CPA view accepts it (leaky ReLU is a registered piece)
    z = torch.randn(1, 2, dtype=torch.float64)
    A, B = explicit_affine(view, z)
    with torch.no_grad():
        torch.testing.assert_close(view(z)[0], A @ z[0] + B)
        dz = 1e-7 * torch.randn(1, 2, dtype=torch.float64)  # same region: the same affine map
        torch.testing.assert_close(view(z + dz)[0], A @ (z + dz)[0] + B)


def test_parameter_spread_definition():
    gens = _gens(2, dtype=torch.float32)
    ens = GANEnsemble(gens, np.array([0.5, 0.5]), 0.0, 2, {})
    t = [flat_parameters(g).detach().double() for g in gens]
    bar = (t[0] + t[1]) / 2
    expect = ((t[0] - bar).norm() + (t[1] - bar).norm()) / 2 / bar.norm()
    assert ens.parameter_spread() == pytest.approx(expect.item(), rel=1e-6)
    gens[1].load_state_dict(gens[0].state_dict())
    assert ens.parameter_spread() == 0.0


def test_sweep_coupling_rows():
    x, lab = three_clusters(150)
    rows = sweep_coupling(x, [0.0, 10.0], steps=40, seed=0, labels=lab, centres=CENTRES, radius=3 * SIGMA)
    assert [r["coupling"] for r in rows] == [0.0, 10.0]
    for r in rows:
        assert r["samples"].shape == (150, 2)
        assert r["cluster_coverage"].shape == (3,) and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
        assert r["outside"] == pytest.approx(1 - r["precision"])
        assert {"parameter_spread", "clusters_covered", "mass_between", "component"} <= set(r)
    assert rows[1]["parameter_spread"] < rows[0]["parameter_spread"]


# -- metrics -------------------------------------------------------------------------------------------------


def test_knn_radii_against_brute_force():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((50, 3))
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    for k in (1, 3):
        expect = np.array([np.sort(np.delete(d[i], i))[k - 1] for i in range(50)])
        np.testing.assert_allclose(knn_radii(p, k), expect, rtol=1e-12)


def test_precision_recall_hand_cases():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((100, 2))
    b = rng.standard_normal((100, 2)) + np.array([50.0, 0.0])
    real = np.concatenate([a, b])
    assert knn_precision_recall(real, real.copy()) == {"precision": 1.0, "recall": 1.0}
    far = knn_precision_recall(real, real + 1e3)
    assert far == {"precision": 0.0, "recall": 0.0}
    one = knn_precision_recall(real, a.copy())  # fakes cover one of two equal clusters
    assert one["precision"] == 1.0 and one["recall"] == pytest.approx(0.5)
    # a fake exactly on a ball's boundary counts (closed balls); just outside it does not
    line = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])  # k=1 radii: 1, 1, 2
    assert knn_precision_recall(line, np.array([[5.0, 0.0], [9.0, 9.0]]), k=1)["precision"] == 0.5
    assert knn_precision_recall(line, np.array([[5.0 + 1e-9, 0.0], [9.0, 9.0]]), k=1)["precision"] == 0.0


def test_cluster_metrics():
    rng = np.random.default_rng(2)
    x = CENTRES[np.repeat(np.arange(3), 100)] + SIGMA * rng.standard_normal((300, 2))
    lab = support_components(x)
    assert len(set(lab[lab >= 0])) == 3  # three separated pieces of support
    # the components are the true clusters (up to naming)
    truth = np.repeat(np.arange(3), 100)
    for c in range(3):
        assert len(set(truth[lab == c])) == 1
    fake = x[:200]  # clusters 0 and 1 only
    cr = cluster_recall(x, fake, truth)
    np.testing.assert_allclose(cr["recall"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(cr["mass"], [0.5, 0.5, 0.0])
    assert cr["outside"] == 0.0
    mid = np.zeros((100, 2)) + np.array([0.0, 2.0])  # between the clusters
    cc = cluster_coverage(np.concatenate([fake, mid]), CENTRES, 3 * SIGMA)
    assert cc["outside"] == pytest.approx(1 / 3)
    assert cc["covered"] == 2
