"""Stage 4: beta-VQ nonlinearities (hard, swish-type and linear limits) and the post-hoc beta sweep."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from scatterbird.models.spline import (
    BetaVQ,
    beta_sweep,
    binary_metrics,
    expected_calibration_error,
    soften,
    spline_view,
)
from scatterbird.models.spline.network import Abs
from scatterbird.models.spline.testing import RANDOM_NETS, random_inversion_net

torch.set_num_threads(1)

HAS_INVERSION = importlib.util.find_spec("scatterbird.models.inversion") is not None


def _hard_ops():
    ops = [
        ("relu", nn.ReLU(), (4, 3, 10)),
        ("leaky", nn.LeakyReLU(0.1), (4, 3, 10)),
        ("abs", Abs(), (4, 3, 10)),
        ("maxpool1d", nn.MaxPool1d(3, 2), (4, 3, 11)),
        ("maxpool2d", nn.MaxPool2d(2), (4, 2, 6, 8)),
    ]
    if HAS_INVERSION:
        from scatterbird.models.inversion import TimePool

        ops.append(("timepool", TimePool(), (4, 3, 9)))
    return ops


@pytest.mark.parametrize("name,op,shape", _hard_ops(), ids=[o[0] for o in _hard_ops()])
def test_beta_one_is_the_hard_op_exactly(name, op, shape):
    x = torch.randn(shape, dtype=torch.float64)
    assert torch.equal(BetaVQ(op, 1.0)(x), op(x))
    # beta just below 1: the soft op through pieces and softmax, already equal to the hard one to rounding
    assert torch.allclose(BetaVQ(op, 1 - 1e-9)(x), op(x), rtol=0, atol=1e-6)


def test_beta_half_is_swish_type():
    h = torch.linspace(-6, 6, 241, dtype=torch.float64)
    assert torch.allclose(BetaVQ("relu", 0.5)(h), F.silu(h), rtol=0, atol=1e-14)  # sigmoid(h) h
    assert torch.allclose(BetaVQ("abs", 0.5)(h), torch.tanh(h) * h, rtol=0, atol=1e-14)
    a = 0.1
    leaky = h * (a * torch.exp(a * h) + torch.exp(h)) / (torch.exp(a * h) + torch.exp(h))
    assert torch.allclose(BetaVQ("leaky_relu", 0.5, negative_slope=a)(h), leaky, rtol=0, atol=1e-14)
    for beta in (0.2, 0.8, 0.95):  # any beta: swish with eta = beta / (1 - beta)
        eta = beta / (1 - beta)
        assert torch.allclose(BetaVQ("relu", beta)(h), torch.sigmoid(eta * h) * h, rtol=0, atol=1e-13)
    # max-pool at beta = 1/2: softmax-weighted mean of each window
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    w = x.unfold(-1, 2, 2)
    assert torch.allclose(BetaVQ("maxpool1d", 0.5, kernel_size=2)(x), (torch.softmax(w, -1) * w).sum(-1), atol=1e-14)


def test_beta_to_zero_tends_to_the_linear_limit():
    """beta = 0 is the mean of the pieces (a linear map); small beta departs from it by O(eta)."""
    h = torch.linspace(-3, 3, 61, dtype=torch.float64)
    assert torch.allclose(BetaVQ("relu", 0.0)(h), h / 2, rtol=0, atol=1e-15)
    assert torch.allclose(BetaVQ("leaky_relu", 0.0, negative_slope=0.2)(h), 0.6 * h, rtol=0, atol=1e-15)
    assert torch.allclose(BetaVQ("abs", 0.0)(h), torch.zeros_like(h), rtol=0, atol=1e-15)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    assert torch.allclose(BetaVQ("maxpool1d", 0.0, kernel_size=2)(x), F.avg_pool1d(x, 2), rtol=0, atol=1e-15)
    errs = []
    for beta in (1e-2, 1e-3, 1e-4):
        eta = beta / (1 - beta)
        err = (BetaVQ("relu", beta)(h) - h / 2).abs().max().item()
        assert err <= eta * 9 / 4 + 1e-15  # |sigmoid(eta h) - 1/2| |h| <= eta h^2 / 4
        errs.append(err)
    assert errs[0] > errs[1] > errs[2]


def test_beta_vq_validates_and_reports():
    with pytest.raises(ValueError):
        BetaVQ("relu", 1.5)
    with pytest.raises(TypeError):
        BetaVQ(nn.Tanh(), 0.5)
    m = BetaVQ(nn.ReLU(), 0.75)
    assert m.eta == pytest.approx(3.0) and "beta=0.75" in repr(m)
    assert BetaVQ("relu", 1.0).eta == float("inf")


@pytest.mark.parametrize("name", list(RANDOM_NETS) + (["inversion"] if HAS_INVERSION else []))
def test_soften_swaps_every_nonlinearity_and_leaves_the_network_alone(name):
    net, shape = random_inversion_net(0) if name == "inversion" else RANDOM_NETS[name](0)
    x = torch.randn(3, *shape, dtype=torch.float64)
    ref = net(x)
    hard = soften(net, 1.0)
    assert torch.equal(hard(x), ref)
    soft = soften(net, 0.5)
    n_hard = sum(1 for m in spline_view(net).parts if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) and
                 type(m).__name__ in ("ReLU", "LeakyReLU", "Abs", "MaxPool1d", "MaxPool2d", "TimePool"))
    assert sum(isinstance(m, BetaVQ) for m in soft.modules()) == n_hard
    assert not torch.allclose(soft(x), ref)
    assert torch.equal(net(x), ref)  # untouched
    assert not any(isinstance(m, BetaVQ) for m in net.modules())
    # the spline view of a softened network reads the codes of the hard network
    codes_soft, codes_hard = spline_view(soft).codes(x[:1]), spline_view(net).codes(x[:1])
    assert torch.equal(codes_soft[0], codes_hard[0])


def test_beta_sweep_and_metrics():
    net, shape = RANDOM_NETS["cnn2d"](0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, *shape, dtype=torch.float64, generator=g)
    with torch.no_grad():
        y = (net(x)[:, 1] > net(x)[:, 0]).numpy().astype(int)  # labels the hard net gets all right
    rows = beta_sweep(net, [x[:20], x[20:]], y, betas=(1.0, 0.9, 0.5, 0.0))
    assert [r["beta"] for r in rows] == [1.0, 0.9, 0.5, 0.0]
    assert rows[0]["accuracy"] == 1.0 and rows[0]["agreement"] == 1.0 and rows[0]["mean_abs_dp"] == 0.0
    assert rows[0]["auc"] == 1.0
    assert all(0 <= r["ece"] <= 1 and 0 <= r["agreement"] <= 1 for r in rows)
    assert rows[-1]["mean_abs_dp"] > 0
    assert "auc" not in beta_sweep(net, [x], None, betas=(0.5,))[0]


def test_calibration_known_answers():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.1, 0.9, 0.1])  # confidence 0.9, all right: ECE 0.1
    assert expected_calibration_error(y, p) == pytest.approx(0.1)
    m = binary_metrics(y, p)
    assert m["accuracy"] == 1.0 and m["auc"] == 1.0
    assert m["brier"] == pytest.approx(0.01) and m["nll"] == pytest.approx(-np.log(0.9))
    p2 = np.array([0.6, 0.6, 0.6, 0.6])  # confidence 0.6, half right: ECE 0.1
    assert expected_calibration_error(y, p2) == pytest.approx(0.1)


def test_soften_targets_activations_or_pooling():
    net, shape = RANDOM_NETS["cnn1d"](0)  # ReLU, max-pool, abs
    kinds = {t: sorted(type(m.hard).__name__ for m in soften(net, 0.5, t).modules() if isinstance(m, BetaVQ))
             for t in ("all", "activations", "pooling")}
    assert kinds == {"all": ["Abs", "MaxPool1d", "ReLU"], "activations": ["Abs", "ReLU"], "pooling": ["MaxPool1d"]}
    x = torch.randn(2, *shape, dtype=torch.float64)
    rows = beta_sweep(net, [x], None, betas=(1.0, 0.5), target="pooling")
    assert rows[0]["mean_abs_dp"] == 0.0 and rows[1]["mean_abs_dp"] > 0
    with pytest.raises(ValueError):
        soften(net, 0.5, "everything")
