"""Stage 5: the finite-difference tangent-Hessian (rugosity) estimator, and the audio directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from scatterbird.models.spline import (
    hessian_direction_norm,
    jacobian_norm,
    regions_on_segment,
    spline_view,
    tangent_rugosity,
)
from scatterbird.models.spline.directions import (
    FeatureSpace,
    frequency_shift,
    frequency_shift_index,
    gain,
    noise,
    time_shift,
)
from scatterbird.models.spline.rugosity import augmentation_rugosity
from scatterbird.models.spline.testing import RANDOM_NETS, _init

torch.set_num_threads(1)


def _affine_net():
    return _init(nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.BatchNorm1d(3), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(12, 3)), 0)


def _softplus_net():
    return _init(nn.Sequential(nn.Linear(5, 7), nn.Softplus(), nn.Linear(7, 6), nn.Softplus(), nn.Linear(6, 3)), 1)


def test_rugosity_is_zero_on_an_affine_network():
    net = _affine_net()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 8, dtype=torch.float64, generator=g)
    v = torch.randn(4, 2, 8, dtype=torch.float64, generator=g)
    for eps in (1e-3, 1.0, 100.0):
        for scheme in ("forward", "central"):
            r = tangent_rugosity(net, x, v, eps, scheme=scheme)
            assert r.abs().max().item() < 1e-12


def _true_hv_norm(net, x, v):
    """||H v||_F over all outputs from the full Hessians (torch.autograd.functional.hessian)."""
    v = v / v.norm()
    rows = []
    for c in range(3):
        H = torch.autograd.functional.hessian(lambda z: net(z.unsqueeze(0))[0, c], x)
        rows.append(H @ v)
    return torch.stack(rows).norm()


def test_rugosity_matches_the_analytic_hessian_of_a_smooth_network():
    net = _softplus_net()
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(5, dtype=torch.float64, generator=g)
        v = torch.randn(5, dtype=torch.float64, generator=g)
        truth = _true_hv_norm(net, x, v)
        assert torch.allclose(hessian_direction_norm(net, x[None], v[None])[0], truth, rtol=1e-12, atol=0)
        central = tangent_rugosity(net, x[None], v[None], 1e-4, scheme="central")[0]
        forward = tangent_rugosity(net, x[None], v[None], 1e-7)[0]
        assert abs(central - truth) / truth < 1e-6  # O(eps^2)
        assert abs(forward - truth) / truth < 1e-5  # O(eps)


def test_rugosity_of_a_piecewise_affine_network_sits_on_region_boundaries():
    """Zero when x -> x + eps v stays in one region; the template jump over eps when it crosses."""
    net, shape = RANDOM_NETS["mlp"](0)
    view = spline_view(net)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, *shape, dtype=torch.float64, generator=g)
    v = torch.randn(1, *shape, dtype=torch.float64, generator=g)
    v = v / v.norm()
    for eps in (1e-6, 0.5, 5.0):
        r = tangent_rugosity(view, x, v, eps)[0].item()
        crossed = regions_on_segment(view, x, x + eps * v).n_regions > 1
        assert (r > 1e-9) == crossed
        if not crossed:
            assert r == 0.0
    xa = x + 5.0 * v
    r, eps = augmentation_rugosity(view, x, xa)
    assert eps.item() == pytest.approx(5.0)
    assert r.item() == pytest.approx(tangent_rugosity(view, x, v, 5.0).item())
    assert jacobian_norm(view, x).item() > 0


def test_time_shift_known_answer():
    x = torch.arange(10.0).reshape(2, 5)
    assert time_shift(x, 1).tolist() == [[0, 0, 1, 2, 3], [5, 5, 6, 7, 8]]
    assert time_shift(x, -2).tolist() == [[2, 3, 4, 4, 4], [7, 8, 9, 9, 9]]


def test_frequency_shift_moves_bands_up_along_the_first_order_grid():
    # channels: order 0; order 1 at 1, 2, 4 kHz; order 2 at (2 kHz, 10 Hz) and (4 kHz, 10 Hz)
    order = np.array([0, 1, 1, 1, 2, 2])
    f1 = np.array([0.0, 4000.0, 2000.0, 1000.0, 2000.0, 4000.0])  # not sorted, as in kymatio
    f2 = np.array([0.0, 0, 0, 0, 10.0, 10.0])
    src = frequency_shift_index(order, f1, f2, 6, bins=1)
    assert src.tolist() == [0, 2, 3, 3, 4, 4]  # 4k <- 2k, 2k <- 1k, 1k kept (edge), (4k,10) <- (2k,10)
    space = FeatureSpace(np.zeros(6), np.ones(6), 1e-5, order, f1, f2)
    x = torch.arange(12.0, dtype=torch.float64).reshape(6, 2)
    assert torch.equal(frequency_shift(x, space), x[torch.as_tensor(src)])
    # standardised inputs: the physical level moves, then takes the destination channel's scaling
    space2 = FeatureSpace(np.arange(6.0), np.full(6, 2.0), 1e-5, order, f1, f2)
    raw = x * 2 + torch.arange(6.0, dtype=torch.float64)[:, None]
    out = frequency_shift(x, space2) * 2 + torch.arange(6.0, dtype=torch.float64)[:, None]
    assert torch.allclose(out, raw[torch.as_tensor(src)])
    assert frequency_shift_index(None, None, None, 4, 1).tolist() == [0, 0, 1, 2]


def test_gain_and_noise_act_on_the_modulus():
    space = FeatureSpace(np.array([1.0, -2.0]), np.array([2.0, 0.5]), 1e-5)
    S = torch.tensor([[1.0, 2.0, 4.0], [0.5, 0.25, 1.0]], dtype=torch.float64)
    x = space.from_modulus(S)
    assert torch.allclose(space.to_modulus(x), S, atol=1e-12)
    assert torch.allclose(space.to_modulus(gain(x, space, 6.0)), S * 10 ** 0.3, atol=1e-12)
    floor = 0.1 * S.median(dim=-1, keepdim=True).values
    assert torch.allclose(space.to_modulus(noise(x, space, -20.0)), S + floor, atol=1e-12)
