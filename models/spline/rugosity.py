"""Stage 5: Hessian complexity (rugosity) by finite differences of templates.

For a unit direction ``v`` and a step ``eps``, ``R(x; v, eps) = ||J(x + eps v) - J(x)||_F / eps`` (or the
central difference), ``J`` the Jacobian of all logits. For a smooth network it tends to ``||H v||_F``; for a
piecewise-affine one it is zero unless the step crosses region boundaries, where it sums the template
jumps. With ``eps v = aug(x) - x`` it measures how rough the detector is along an audio nuisance, against an
isotropic direction of the same size.

Derivation: docs/spline-analyses.md §5.
"""

from __future__ import annotations

from typing import Callable

import torch

from .affine import jacobian

Net = Callable[[torch.Tensor], torch.Tensor]


def _unit(v: torch.Tensor) -> torch.Tensor:
    n = v.flatten(1).norm(dim=1).clamp_min(1e-300)
    return v / n.reshape(-1, *([1] * (v.dim() - 1)))


def tangent_rugosity(
    f: Net, x: torch.Tensor, v: torch.Tensor, eps: float | torch.Tensor, *, scheme: str = "forward"
) -> torch.Tensor:
    """Finite-difference tangent-Hessian norm along ``v`` (normalised here), per input of a batch.

    Parameters
    ----------
    f : callable
        Batch (batch, *input_shape) -> outputs (batch, n_out).
    x, v : Tensor, (batch, *input_shape)
    eps : float or Tensor (batch,)
        Step length.
    scheme : {"forward", "central"}

    Returns
    -------
    Tensor, (batch,)
    """
    v = _unit(v)
    e = torch.as_tensor(eps, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    _, J0 = jacobian(f, x)
    if scheme == "forward":
        _, J1 = jacobian(f, x + e * v)
        diff, denom = J1 - J0, e.flatten()
    elif scheme == "central":
        _, Jp = jacobian(f, x + e * v)
        _, Jm = jacobian(f, x - e * v)
        diff, denom = Jp - Jm, 2 * e.flatten()
    else:
        raise ValueError(f"scheme must be 'forward' or 'central', got {scheme!r}")
    return diff.flatten(1).norm(dim=1) / denom


def augmentation_rugosity(f: Net, x: torch.Tensor, x_aug: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rugosity along an augmentation, ``eps v = x_aug - x``; returns (R, eps) per input."""
    d = x_aug - x
    eps = d.flatten(1).norm(dim=1)
    return tangent_rugosity(f, x, d, eps), eps


def hessian_direction_norm(f: Net, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Analytic ``||H v||_F`` over all outputs, by double back-propagation (smooth networks), per input.

    Parameters
    ----------
    f : callable
    x, v : Tensor, (batch, *input_shape); ``v`` is normalised here.
    """
    v = _unit(v)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        out = f(xg)
        rows = []
        for c in range(out.shape[1]):
            (g,) = torch.autograd.grad(out[:, c].sum(), xg, create_graph=True)
            (hv,) = torch.autograd.grad((g * v).sum(), xg, retain_graph=True)
            rows.append(hv)
    return torch.stack(rows, 1).flatten(1).norm(dim=1)


def jacobian_norm(f: Net, x: torch.Tensor) -> torch.Tensor:
    """``||J(x)||_F`` per input (the first-order baseline E4 of docs/spline-analyses.md §5(a)4)."""
    _, J = jacobian(f, x)
    return J.flatten(1).norm(dim=1)
