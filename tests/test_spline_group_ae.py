"""The group autoencoder (models/spline/group_ae.py, lie_shift.py): the shift torus is an exact group action
(checked against np.roll and scipy's matrix exponential of its generator), the regulariser vanishes for an
exactly equivariant decoder and not for others (and matches a dense grid search), region pairs are adjacent,
training with it lowers it, and windows are slices of their sources."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from scatterbird.models.spline.group_ae import (
    adjacent_pairs,
    encoder_as_conv,
    fit_group_autoencoder,
    generalisation_gap,
    group_regulariser,
    make_decoder,
    sample_windows,
)
from scatterbird.models.spline.lie_shift import (
    best_shift,
    shift_generator,
    shift_matrix,
    shift_windows,
)
from scatterbird.models.spline.network import SplineNet

torch.set_num_threads(1)

C, W = 7, 5
FIRST = np.array([False, True, True, True, True, True, False])  # order 0, five first-order, one second-order


def _windows(n=4, seed=0, c=C, w=W):
    return np.random.default_rng(seed).normal(size=(n, c, w))


# -- the group action -----------------------------------------------------------------------------------
def test_shift_is_a_group_action_preserving_norms():
    x = _windows()
    a, b = (0.37, -1.21), (1.9, 2.45)
    ab = shift_windows(shift_windows(x, *b, FIRST), *a, FIRST)
    np.testing.assert_allclose(ab, shift_windows(x, a[0] + b[0], a[1] + b[1], FIRST), atol=1e-12)
    np.testing.assert_allclose(shift_windows(x, 0.0, 0.0, FIRST), x, atol=1e-14)
    y = shift_windows(x, 0.61, -0.83, FIRST)
    np.testing.assert_allclose(np.linalg.norm(y.reshape(4, -1), axis=1), np.linalg.norm(x.reshape(4, -1), axis=1))
    # the two shifts commute and the inverse is T(-theta)
    np.testing.assert_allclose(shift_windows(y, -0.61, 0.83, FIRST), x, atol=1e-12)
    assert not np.allclose(y, x)


def test_integer_shifts_are_rolls_on_odd_axes():
    x = _windows()
    y = shift_windows(x, 2, 3, FIRST)
    expect = np.roll(x, 2, axis=-1)
    expect[:, FIRST] = np.roll(expect[:, FIRST], 3, axis=1)  # five channels: odd, so an exact roll
    np.testing.assert_allclose(y, expect, atol=1e-12)
    # no mask: every channel is on the frequency axis
    np.testing.assert_allclose(shift_windows(x, 0, 1), np.roll(x, 1, axis=1), atol=1e-12)


def test_even_axis_keeps_the_group_law_and_only_the_nyquist_component_differs_from_roll():
    x = np.random.default_rng(1).normal(size=6)
    s1 = shift_matrix(6, 1.0) @ x
    np.testing.assert_allclose(shift_matrix(6, 2.0) @ x, np.roll(x, 2), atol=1e-12)  # even shifts: rolls
    diff = s1 - np.roll(x, 1)
    alternating = (-1.0) ** np.arange(6)
    np.testing.assert_allclose(diff, (diff @ alternating / 6) * alternating, atol=1e-12)
    np.testing.assert_allclose(shift_matrix(6, 0.4) @ shift_matrix(6, 0.9), shift_matrix(6, 1.3), atol=1e-12)


@pytest.mark.parametrize("n", [5, 6, 22])
def test_generator_exponentiates_to_the_shift(n):
    L = shift_generator(n)
    np.testing.assert_allclose(L, -L.T, atol=1e-12)  # skew-symmetric: the shifts are rotations
    for theta in (0.3, -1.7, 2.0):
        np.testing.assert_allclose(scipy.linalg.expm(theta * L), shift_matrix(n, theta), atol=1e-10)


def test_best_shift_recovers_a_known_group_element():
    A = torch.as_tensor(_windows(6, seed=2)).reshape(2, 3, C, W)
    thetas = [(0.4, -1.3), (-2.1, 2.2)]
    B = torch.stack([torch.as_tensor(shift_windows(A[i].numpy(), *thetas[i], FIRST)) for i in range(2)])
    tt, tf, inner = best_shift(A, B, FIRST)
    np.testing.assert_allclose(tt.numpy(), [t[0] for t in thetas], atol=1e-8)
    np.testing.assert_allclose(tf.numpy(), [t[1] for t in thetas], atol=1e-8)
    np.testing.assert_allclose(inner.numpy(), (B * B).sum((1, 2, 3)).numpy(), rtol=1e-10)


# -- the regulariser --------------------------------------------------------------------------------------
def _two_region_decoder(a: np.ndarray, c: np.ndarray) -> nn.Sequential:
    """g(z) = a relu(z) - c relu(-z): slope a for z > 0, c for z < 0 (two regions, continuous at 0)."""
    dec = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, a.size)).double()
    with torch.no_grad():
        dec[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        dec[0].bias.zero_()
        dec[2].weight.copy_(torch.tensor(np.stack([a.ravel(), -c.ravel()], 1)))
        dec[2].bias.zero_()
    return dec


Z = torch.tensor([[1.0], [-1.0], [0.5], [-2.0]], dtype=torch.float64)


def test_regulariser_is_zero_for_an_exactly_equivariant_decoder():
    a = _windows(1, seed=3)[0]
    dec = _two_region_decoder(a, shift_windows(a, 0.7, -1.3, FIRST))
    r, details = group_regulariser(dec, Z, (C, W), FIRST, return_details=True)
    assert len(details["per_pair"]) > 0 and r.item() < 1e-12
    # the wrapped version of the same network goes through the generic (bisection, autograd) paths
    r2 = group_regulariser(nn.Sequential(nn.Identity(), *dec), Z, (C, W), FIRST)
    assert r2.item() < 1e-12


def test_regulariser_is_positive_otherwise_and_equals_a_dense_grid_minimum():
    rng = np.random.default_rng(4)
    a, c = rng.normal(size=(C, W)), rng.normal(size=(C, W))
    dec = _two_region_decoder(a, c)
    r = group_regulariser(dec, Z, (C, W), FIRST).item()
    # independent: min over a dense grid of the torus with the matrix form of T (Kronecker of shift matrices)
    fi = np.flatnonzero(FIRST)
    best = np.inf
    for tt in np.linspace(-2.5, 2.5, 101):
        St = shift_matrix(W, tt)
        for tf in np.linspace(-2.5, 2.5, 101):
            Ta = a @ St.T
            Ta[fi] = shift_matrix(len(fi), tf) @ Ta[fi]
            best = min(best, np.sum((c - Ta) ** 2))
    pair_value = best / (np.sum(a**2) + np.sum(c**2))  # the same for both directions (T orthogonal)
    assert r > 0.05
    assert r <= pair_value + 1e-12 and r == pytest.approx(pair_value, rel=2e-3)


def test_pairs_are_in_adjacent_regions():
    torch.manual_seed(0)
    dec = make_decoder(3, 12, C * W).double()
    z = torch.randn(40, 3, dtype=torch.float64)
    za, zb = adjacent_pairs(dec, z, generator=torch.Generator().manual_seed(0))
    view = SplineNet(dec)
    ca, cb = view.codes(za)[0], view.codes(zb)[0]
    assert len(za) > 10
    assert ((ca != cb).sum(1) >= 1).all()
    # adjacency: the segment z_a -> z_b meets exactly one boundary (dense sampling sees one code change)
    t = torch.linspace(0, 1, 4001, dtype=torch.float64)
    for i in range(len(za)):
        codes = view.codes(za[i] + t[:, None] * (zb[i] - za[i]))[0]
        changes = (codes[1:] != codes[:-1]).any(1).sum().item()
        assert changes == 1


def test_regulariser_gradient_reaches_the_decoder():
    torch.manual_seed(1)
    dec = make_decoder(4, 16, C * W).double()
    r = group_regulariser(dec, torch.randn(32, 4, dtype=torch.float64), (C, W), FIRST)
    r.backward()
    assert r.item() > 0 and dec[0].weight.grad.abs().sum() > 0 and dec[2].weight.grad.abs().sum() > 0


def test_training_with_the_regulariser_lowers_it():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(3, C, W))
    # windows from shifted copies of a few patterns: data with the symmetry
    x = np.stack([shift_windows(base[i % 3], rng.uniform(-2, 2), rng.uniform(-2, 2), FIRST) for i in range(120)])
    x = (x + 0.05 * rng.normal(size=x.shape)).astype(np.float32)
    plain = fit_group_autoencoder(x, latent=4, hidden=24, group_weight=0.0, first_order=FIRST, steps=150, seed=0)
    group = fit_group_autoencoder(x, latent=4, hidden=24, group_weight=20.0, first_order=FIRST, steps=150, seed=0)
    r_plain, r_group = plain.regulariser(x, seed=0), group.regulariser(x, seed=0)
    assert r_group < 0.7 * r_plain
    assert group.reconstruction_error(x) < np.var(x)  # it still reconstructs better than the mean


def test_generalisation_gap_reports_consistent_errors():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, C, W)).astype(np.float32)
    out = generalisation_gap(x[:40], x[40:], group_weight=0.0, seed=0, latent=4, hidden=8, steps=40)
    assert out["gap"] == pytest.approx(out["test_error"] - out["train_error"])
    fit = fit_group_autoencoder(x[:40], latent=4, hidden=8, group_weight=0.0, steps=40, seed=0)
    assert out["train_error"] == pytest.approx(fit.reconstruction_error(x[:40]))  # seeded: the same fit
    assert fit.reconstruction_error(x[40:]) == pytest.approx(
        float(np.mean((fit.reconstruct(x[40:]) - x[40:]) ** 2)))


def test_encoder_is_a_convolution_on_one_window():
    x = _windows(3, seed=7).astype(np.float32)
    fit = fit_group_autoencoder(x, latent=4, hidden=8, group_weight=0.0, steps=2, seed=0)
    weight, bias = encoder_as_conv(fit.encoder, C, W)
    conv = nn.Conv1d(C, 4, W)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        out = nn.functional.leaky_relu(conv(torch.as_tensor(x)), 0.1)[..., 0]
    np.testing.assert_allclose(out.numpy(), fit.encode(x), rtol=1e-5, atol=1e-6)


# -- windows ------------------------------------------------------------------------------------------------
def test_sample_windows_are_slices_of_their_sources():
    rng = np.random.default_rng(8)
    seqs = [rng.normal(size=(T, 3)).astype(np.float32) for T in (12, 4, 30)]  # the 4-frame one is too short
    win = sample_windows(seqs, 5, 50, seed=0)
    assert win.shape == (50, 3, 5) and win.dtype == np.float32
    for w in win:
        found = [(i, s) for i, q in enumerate(seqs) for s in range(q.shape[0] - 4) if np.array_equal(q[s : s + 5].T, w)]
        assert found and all(i != 1 for i, _ in found)
    # 8 + 26 = 34 positions: 50 windows repeat some; 30 are drawn without replacement, all distinct
    assert len({w.tobytes() for w in win}) <= 34
    assert len({w.tobytes() for w in sample_windows(seqs, 5, 30, seed=1)}) == 30
    np.testing.assert_array_equal(sample_windows(seqs, 5, 30, seed=1), sample_windows(seqs, 5, 30, seed=1))
    with pytest.raises(ValueError):
        sample_windows(seqs, 31, 5)
