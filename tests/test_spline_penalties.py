"""Template-orthogonality penalties: differentiable, zero for orthogonal templates, and lowering the measured
overlap when trained with."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from scatterbird.models.spline import (
    ortho_penalty,
    template_ortho_penalty,
    template_overlap,
    weight_ortho_penalty,
    weight_overlap,
)
from scatterbird.models.spline.testing import RANDOM_NETS

torch.set_num_threads(1)


def test_weight_penalty_known_answers():
    W = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    assert weight_ortho_penalty(W).item() == 0.0  # orthogonal class vectors
    W2 = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)  # G = [[2, 1], [1, 1]]
    assert weight_ortho_penalty(W2).item() == pytest.approx(2 / 4)
    # the ICML code's form: mean (G - diag(G) / in_dim)^2 = mean([[1, 1], [1, 0.5]]^2)
    assert weight_ortho_penalty(W2, diagonal="icml").item() == pytest.approx((1 + 1 + 1 + 0.25) / 4)
    assert weight_ortho_penalty(W, diagonal="icml").item() > 0  # it penalises the norms too
    assert weight_overlap(W) == 0.0 and weight_overlap(W2) == pytest.approx(1 / 2**0.5)


def test_template_penalty_is_zero_for_orthogonal_templates():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():  # on x > 0 all units are on: templates W2 W1 = rows e1 and 2 e2
        net[0].weight.copy_(torch.eye(4, 3, dtype=torch.float64))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]], dtype=torch.float64))
    x = torch.rand(5, 3, dtype=torch.float64) + 0.1
    assert template_ortho_penalty(net, x).item() == 0.0
    assert template_overlap(net, x) == 0.0
    with torch.no_grad():
        net[2].weight[1, 0] = 1.0  # class-1 template now (1, 2, 0): <T0, T1> = 1
    assert template_ortho_penalty(net, x).item() == pytest.approx(2 / 4)  # two off-diagonal 1's over 4 entries


def test_penalties_are_differentiable():
    net, shape = RANDOM_NETS["mlp"](0)
    x = torch.randn(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    W = net[-1].weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: weight_ortho_penalty(w), (W,))
    assert torch.autograd.gradcheck(lambda w: weight_ortho_penalty(w, diagonal="icml"), (W,))
    # through double back-propagation, w.r.t. the first layer's weights
    W1 = net[0].weight.detach().clone().requires_grad_(True)

    def pen(w1: torch.Tensor) -> torch.Tensor:
        def f(z: torch.Tensor) -> torch.Tensor:
            h = F.linear(z, w1, net[0].bias)
            for m in list(net)[1:]:
                h = m(h)
            return h

        return template_ortho_penalty(f, x)

    assert torch.autograd.gradcheck(pen, (W1,), fast_mode=True)
    p = ortho_penalty("templates", f=net, x=x)
    p.backward()
    # templates of a piecewise-affine network are products of weights (biases only choose the region)
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in net if isinstance(m, nn.Linear))
    with pytest.raises(ValueError):
        ortho_penalty("weights")


def _train(variant: str | None, lam: float, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 6, generator=g, dtype=torch.float64) * 2
    y = torch.arange(150) % 3
    x = centres[y] + torch.randn(150, 6, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(net(x), y)
        if variant == "templates":
            loss = loss + lam * template_ortho_penalty(net, x)
        elif variant == "weights":
            loss = loss + lam * weight_ortho_penalty(net[-1].weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, x


def test_training_with_the_penalty_lowers_the_template_overlap():
    base, x = _train(None, 0.0)
    ortho, _ = _train("templates", 1.0)
    assert template_overlap(ortho, x) < 0.5 * template_overlap(base, x)
    wbase = weight_overlap(base[-1].weight)
    wortho, _ = _train("weights", 1.0)
    assert weight_overlap(wortho[-1].weight) < 0.5 * wbase
