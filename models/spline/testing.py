"""Small random piecewise-affine networks (float64, eval mode) on which the spline identities are checked.

Each builder returns ``(net, input_shape)``; weights come from a seeded generator, BatchNorm layers get
random running statistics and affine parameters, so that nothing is an identity by accident.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from scatterbird.models.inversion import InversionNet

from .network import Abs


def _randomise_bn(bn: nn.Module, g: torch.Generator) -> nn.Module:
    with torch.no_grad():
        n = bn.num_features
        bn.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64))
        bn.running_var.copy_(0.5 + torch.rand(n, generator=g, dtype=torch.float64))
        bn.weight.copy_(torch.randn(n, generator=g, dtype=torch.float64))
        bn.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64))
    return bn


def _init(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = net.double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64) / fan_in**0.5)
                if m.bias is not None:
                    m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g, dtype=torch.float64))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                _randomise_bn(m, g)
    return net.eval()


def random_mlp(seed: int = 0, widths: tuple[int, ...] = (8, 7, 6), d_in: int = 5, n_out: int = 3) -> tuple[nn.Module, tuple[int, ...]]:
    """Linear layers with leaky ReLU, ReLU and abs in turn, then a read-out."""
    acts = [lambda: nn.LeakyReLU(0.2), nn.ReLU, Abs]
    layers: list[nn.Module] = []
    d = d_in
    for i, w in enumerate(widths):
        layers += [nn.Linear(d, w), acts[i % 3]()]
        d = w
    layers.append(nn.Linear(d, n_out))
    return _init(nn.Sequential(*layers), seed), (d_in,)


def random_cnn1d(seed: int = 0, length: int = 16) -> tuple[nn.Module, tuple[int, ...]]:
    """Conv - ReLU - max-pool - conv - BatchNorm (eval) - abs - avg-pool - flatten - linear."""
    n = ((length - 2) // 2) // 2  # frames left after conv(k=3, no padding), max-pool 2, avg-pool 2
    net = nn.Sequential(
        nn.Conv1d(2, 4, 3),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(4, 3, 3, padding=1),
        nn.BatchNorm1d(3),
        Abs(),
        nn.AvgPool1d(2),
        nn.Flatten(),
        nn.Linear(3 * n, 3),
    )
    return _init(net, seed), (2, length)


def random_cnn2d(seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """Conv2d - leaky ReLU - max-pool 2x2 - conv2d - BatchNorm2d (eval) - ReLU - flatten - linear."""
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 2, 3, padding=1),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 3 * 3, 2),
    )
    return _init(net, seed), (1, 6, 6)


def random_inversion_net(seed: int = 0, n_channels: int = 4, n_frames: int = 12) -> tuple[nn.Module, tuple[int, ...]]:
    """The inversion detector's own network (``models.inversion.InversionNet``), small."""
    torch.manual_seed(seed)
    net = InversionNet(n_channels, (4, 3), 3, 0.1)
    with torch.no_grad():  # biases away from zero so that the first layer is not a central arrangement
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)) and m.bias is not None:
                m.bias.normal_(0, 0.3)
    return net.double().eval(), (n_channels, n_frames)


#: Builders of the small nets the identities are tested on.
RANDOM_NETS: dict[str, Callable[[int], tuple[nn.Module, tuple[int, ...]]]] = {
    "mlp": random_mlp,
    "cnn1d": random_cnn1d,
    "cnn2d": random_cnn2d,
}
