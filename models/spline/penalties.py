"""Template-orthogonality penalties, as plain differentiable functions to add to a loss.

Two variants, as in the authors' two code bases:

* ``weights`` (ICML-2018 code, cheap): on the read-out weights ``W`` (n_classes x in_dim), penalise the
  class vectors' Gram matrix ``G = W W^T`` off its diagonal: ``mean_{a,c} ((1 - delta_ac) G_ac)^2``. With
  ``diagonal="icml"`` the code's exact form is used instead, ``mean_{a,c} (G_ac - delta_ac G_cc / in_dim)^2``,
  which also penalises the norms (so it is not zero for orthogonal class vectors).
* ``templates`` (OMASO code): on the input-gradient templates ``T_c(x_n) = d z_c / d x`` of a batch,
  ``mean_{n,a,c} ((1 - delta_ac) <T_a(x_n), T_c(x_n)>)^2``. It needs double back-propagation (one extra
  backward pass per class, with ``create_graph``).

:func:`template_overlap` and :func:`weight_overlap` measure what the penalties aim at (mean off-diagonal
|cosine|), for reporting.

Derivation: docs/spline-analyses.md §2(a)5.
"""

from __future__ import annotations

from typing import Callable

import torch

from .affine import jacobian, off_diagonal_mean_abs, template_cosines

Net = Callable[[torch.Tensor], torch.Tensor]

ORTHO_VARIANTS = ("weights", "templates")


def _offdiag(G: torch.Tensor) -> torch.Tensor:
    C = G.shape[-1]
    return G * (1 - torch.eye(C, dtype=G.dtype, device=G.device))


def weight_ortho_penalty(W: torch.Tensor, *, diagonal: str = "zero") -> torch.Tensor:
    """Orthogonality penalty on read-out weights.

    Parameters
    ----------
    W : Tensor, (n_classes, in_dim)
        ``nn.Linear.weight`` of the last layer.
    diagonal : {"zero", "icml"}
        ``"zero"``: off-diagonal terms only (zero for orthogonal class vectors). ``"icml"``: the ICML code's
        ``ortho_loss2``.

    Returns
    -------
    Tensor, scalar
    """
    G = W @ W.T
    if diagonal == "zero":
        return _offdiag(G).pow(2).mean()
    if diagonal == "icml":
        return (G - torch.diag(torch.diagonal(G)) / W.shape[1]).pow(2).mean()
    raise ValueError(f"diagonal must be 'zero' or 'icml', got {diagonal!r}")


def template_ortho_penalty(f: Net, x: torch.Tensor) -> torch.Tensor:
    """Orthogonality penalty on the input-gradient templates of a batch (differentiable w.r.t. the
    parameters of ``f`` through double back-propagation).

    Parameters
    ----------
    f : callable
        Batch -> logits (batch, n_classes); items must not interact (e.g. ``lambda x: net(x, lengths)``).
    x : Tensor, (batch, *input_shape)

    Returns
    -------
    Tensor, scalar
    """
    _, T = jacobian(f, x, create_graph=True)
    T = T.flatten(2)
    G = T @ T.transpose(1, 2)  # (batch, C, C)
    return _offdiag(G).pow(2).mean()


def ortho_penalty(variant: str, *, weight: torch.Tensor | None = None, f: Net | None = None, x: torch.Tensor | None = None) -> torch.Tensor:
    """Either variant by name: ``"weights"`` needs ``weight``; ``"templates"`` needs ``f`` and ``x``."""
    if variant == "weights":
        if weight is None:
            raise ValueError("the 'weights' variant needs the read-out weight")
        return weight_ortho_penalty(weight)
    if variant == "templates":
        if f is None or x is None:
            raise ValueError("the 'templates' variant needs the network and a batch")
        return template_ortho_penalty(f, x)
    raise ValueError(f"variant must be one of {ORTHO_VARIANTS}, got {variant!r}")


@torch.no_grad()
def weight_overlap(W: torch.Tensor) -> float:
    """Mean off-diagonal |cosine| between the class vectors (rows) of ``W``."""
    return float(off_diagonal_mean_abs(template_cosines(W.unsqueeze(0)))[0])


def template_overlap(f: Net, x: torch.Tensor) -> float:
    """Mean over a batch of the mean off-diagonal |cosine| between the class templates."""
    _, T = jacobian(f, x)
    return float(off_diagonal_mean_abs(template_cosines(T)).mean())
