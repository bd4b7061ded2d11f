"""Stage 3: power diagrams, centroids and radii, exact region counts along segments, local complexity and
2-D slices, each against an independent computation."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from scatterbird.models.spline import (
    centroid_radius,
    enumerate_power_diagram,
    explicit_affine,
    layer_piece_maps,
    local_complexity,
    power_assign,
    regions_on_segment,
    regions_on_segment_dense,
    slice_regions,
    spline_view,
)
from scatterbird.models.spline.network import Abs
from scatterbird.models.spline.testing import RANDOM_NETS, _init, random_inversion_net

torch.set_num_threads(1)

HAS_INVERSION = importlib.util.find_spec("scatterbird.models.inversion") is not None


def _small_pd_nets():
    """Layers small enough to enumerate every cell of their power diagram."""
    mlp = _init(
        nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(0.2), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 5), Abs(), nn.Linear(5, 2)), 0
    )
    cnn = _init(nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(4, 2)), 1)
    return [(mlp, (4,)), (cnn, (1, 6))]


@pytest.mark.parametrize("which", [0, 1], ids=["mlp", "cnn-maxpool"])
def test_power_diagram_assignment_is_the_activation_code(which):
    """argmin_t ||x - mu_t||^2 - rad_t over every code tuple t of a layer (pulled back to the input within the
    region of the layers below) is the layer's code of x; and the centroid of that cell is J^T 1 and its
    radius ||mu||^2 + 2 1^T (z - J x), from autograd."""
    net, shape = _small_pd_nets()[which]
    view = spline_view(net)
    g = torch.Generator().manual_seed(5)
    for _ in range(4):
        x = torch.randn(1, *shape, dtype=torch.float64, generator=g)
        codes = view.codes(x)
        cr = centroid_radius(view, x)
        for l in range(1, view.n_layers + 1):
            A, B = layer_piece_maps(view, l, x)
            cells, mu, rad = enumerate_power_diagram(A, B)
            k = power_assign(x.flatten(1), mu, rad)[0]
            assert torch.equal(cells[k], codes[l - 1][0])
            assert torch.allclose(mu[k], cr.mu[l - 1].flatten(), rtol=0, atol=1e-12)  # centroid = J^T 1
            assert torch.allclose(rad[k], cr.rad[l - 1][0], rtol=0, atol=1e-10)  # radius identity


@pytest.mark.parametrize("name", list(RANDOM_NETS))
def test_centroid_is_jacobian_transpose_ones(name):
    """mu^l(x) = J_l^T 1 with J_l composed explicitly from the layers (no autograd)."""
    net, shape = RANDOM_NETS[name](0)
    view = spline_view(net)
    x = torch.randn(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    cr = centroid_radius(view, x)
    outs = view.layer_outputs(x)
    for l in range(1, view.n_layers + 1):
        A, B = explicit_affine(view, x, upto_layer=l)
        assert torch.allclose(cr.mu[l - 1].flatten(), A.sum(0), rtol=0, atol=1e-12)
        rad = A.sum(0).pow(2).sum() + 2 * B.sum()  # 1^T (z - J x) = 1^T B
        assert torch.allclose(cr.rad[l - 1][0], rad, rtol=0, atol=1e-10)
        assert torch.allclose(outs[l - 1].flatten(), A @ x.flatten() + B, rtol=0, atol=1e-12)


def _segment_nets():
    out = [pytest.param(name, id=name) for name in RANDOM_NETS]
    out.append(pytest.param("inversion", id="inversion", marks=pytest.mark.skipif(not HAS_INVERSION, reason="no models.inversion")))
    return out


@pytest.mark.parametrize("name", _segment_nets())
def test_region_count_on_a_segment_matches_dense_sampling(name):
    """Exact breakpoints == code changes seen on a sampling fine enough to separate every breakpoint."""
    net, shape = random_inversion_net(0) if name == "inversion" else RANDOM_NETS[name](0)
    view = spline_view(net)
    g = torch.Generator().manual_seed(7)
    a = torch.randn(1, *shape, dtype=torch.float64, generator=g)
    b = 2 * torch.randn(1, *shape, dtype=torch.float64, generator=g)
    seg = regions_on_segment(view, a, b)
    assert seg.n_regions > 5  # a segment that crosses something
    gaps = np.diff(seg.knots_u)
    n = int(min(2_000_000, max(10_000, 4 / gaps.min())))
    changes, where = regions_on_segment_dense(view, a, b, n)
    assert changes == seg.n_regions - 1
    # every sampled change lies just after an exact breakpoint
    step = 1 / (n - 1)
    j = np.searchsorted(seg.breakpoints, where)
    assert np.all(where - seg.breakpoints[j - 1] <= step * (1 + 1e-9))
    # the output is linear between knots and exact at them
    u = torch.tensor(seg.knots_u, dtype=torch.float64).reshape(-1, *([1] * len(shape)))
    assert np.allclose(view(a + u * (b - a)).numpy(), seg.knots_logits, rtol=0, atol=1e-10)
    um = (seg.knots_u[1:] + seg.knots_u[:-1]) / 2
    mid = view(a + torch.tensor(um).reshape(-1, *([1] * len(shape))) * (b - a)).numpy()
    assert np.allclose(mid, (seg.knots_logits[1:] + seg.knots_logits[:-1]) / 2, rtol=0, atol=1e-9)


def test_region_count_known_answer():
    """ReLU units with breakpoints at known places on the line: one region change per unit."""
    lin = nn.Linear(1, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0], [-1.0], [2.0]]))
        lin.bias.copy_(torch.tensor([-0.25, 0.5, -1.5]))  # zeros at u = 0.25, 0.5, 0.75
    view = spline_view(nn.Sequential(lin, nn.ReLU(), nn.Linear(3, 1).double()))
    seg = regions_on_segment(view, torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
    assert np.allclose(seg.breakpoints, [0.25, 0.5, 0.75], atol=1e-15)
    assert seg.n_regions == 4 and seg.per_layer == [3]


def test_local_complexity_grows_with_the_radius():
    net, shape = RANDOM_NETS["mlp"](0)
    view = spline_view(net)
    x = torch.randn(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    cuts = [local_complexity(view, x, r, n_vertices=10, seed=3)[0]["cut_units"] for r in (0.0, 1e-3, 0.3, 3.0, 30.0)]
    assert cuts[0] == 0
    assert cuts == sorted(cuts)  # layer 1 is affine in x: a unit cut at radius r stays cut beyond
    assert cuts[-1] > 0
    # layer 1 by hand: unit k is cut iff some vertex x +- r u_i has the other sign
    r = 3.0
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(x.numel(), 5, generator=g, dtype=torch.float64))
    W, b = net[0].weight, net[0].bias
    h0 = x.flatten() @ W.T + b
    hv = torch.cat([(x.flatten() + r * q.T) @ W.T + b, (x.flatten() - r * q.T) @ W.T + b])
    expect = int(((hv > 0) != (h0 > 0)).any(0).sum())
    assert local_complexity(view, x, r, n_vertices=10, seed=3)[0]["cut_units"] == expect


def test_slice_regions_match_codes_on_the_grid():
    net, shape = RANDOM_NETS["cnn1d"](0)
    view = spline_view(net)
    anchors = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    sl = slice_regions(view, anchors, n=25)
    assert sl.regions_per_layer == sorted(sl.regions_per_layer)  # a subdivision only refines
    assert sl.n_regions == sl.regions_per_layer[-1]
    # equal labels <=> equal code tuples, on a sample of grid points
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 25, size=(40, 2))
    xs = torch.stack([anchors[0] + sl.s[j] * (anchors[1] - anchors[0]) + sl.t[i] * (anchors[2] - anchors[0]) for i, j in pts])
    codes = view.codes(xs)
    tuples = [tuple(np.concatenate([c[k].numpy() for c in codes])) for k in range(len(pts))]
    labels = [sl.region[i, j] for i, j in pts]
    for p in range(len(pts)):
        for q in range(len(pts)):
            assert (labels[p] == labels[q]) == (tuples[p] == tuples[q])
    assert np.allclose(sl.logits[pts[0][0], pts[0][1]], view(xs[:1])[0].numpy(), atol=1e-10)
    # an affine network has one region
    lin = spline_view(nn.Sequential(nn.Flatten(), nn.Linear(32, 2)).double())
    assert slice_regions(lin, anchors, n=10).n_regions == 1
