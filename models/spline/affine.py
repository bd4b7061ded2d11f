"""Stage 1: the per-input affine form ``f(x) = A[x] x + B[x]`` and the class templates.

Row ``c`` of ``A[x]`` is the template of class ``c``, the input gradient of logit ``c``; ``B[x]`` is what the
template's inner product with the input leaves unexplained (the accumulated biases of the region).

Two constructions are offered:

* :func:`affine_form` by automatic differentiation (one backward pass per logit), the fast one used by the
  analysis stage;
* :func:`explicit_affine` by composing the layers' own affine maps, ``A = W^L D^{L-1} W^{L-1} ... D^1 W^1``
  (§2(a)3), each read off by applying the layer, with its codes frozen, to the basis vectors. It uses no
  autograd at all, so the two agreeing is a real check of the spline view. It costs one forward pass per
  input dimension: small inputs only.

Derivation: docs/spline-analyses.md §2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .network import SplineNet, handler_for

Net = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class AffineForm:
    """``out = A x + B`` for a batch.

    Attributes
    ----------
    A : Tensor, shape (batch, n_out, *input_shape)
        Templates (input gradients of each output).
    B : Tensor, shape (batch, n_out)
    out : Tensor, shape (batch, n_out)
    """

    A: torch.Tensor
    B: torch.Tensor
    out: torch.Tensor


def jacobian(f: Net, x: torch.Tensor, *, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs and input Jacobians of a batch, one backward pass per output.

    Parameters
    ----------
    f : callable
        Maps a batch (batch, *input_shape) to (batch, n_out); items must not interact (BatchNorm in eval mode).
    x : Tensor, shape (batch, *input_shape)
    create_graph : bool
        Keep the graph, so that the Jacobian can itself be differentiated (penalties).

    Returns
    -------
    out : Tensor, shape (batch, n_out)
    J : Tensor, shape (batch, n_out, *input_shape)
    """
    with torch.enable_grad():
        xg = x if (x.requires_grad and create_graph) else x.detach().requires_grad_(True)
        out = f(xg)
        if out.dim() != 2:
            raise ValueError(f"expected outputs of shape (batch, n_out), got {tuple(out.shape)}")
        rows = []
        for c in range(out.shape[1]):
            (g,) = torch.autograd.grad(out[:, c].sum(), xg, create_graph=create_graph, retain_graph=True)
            rows.append(g)
    J = torch.stack(rows, dim=1)
    return (out if create_graph else out.detach()), J


def affine_form(f: Net, x: torch.Tensor) -> AffineForm:
    """``A[x]`` (templates) and ``B[x] = f(x) - A[x] x`` of every input of a batch."""
    out, A = jacobian(f, x)
    B = out - (A * x.unsqueeze(1)).flatten(2).sum(-1)
    return AffineForm(A=A, B=B, out=out)


def _linear_map(fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrix and offset of an affine map of inputs shaped ``shape``, from its values on 0 and the basis."""
    d = 1
    for s in shape:
        d *= s
    basis = torch.eye(d, dtype=like.dtype, device=like.device).reshape(d, *shape)
    zero = torch.zeros(1, *shape, dtype=like.dtype, device=like.device)
    c = fn(zero).reshape(1, -1)
    M = (fn(basis).reshape(d, -1) - c).T  # (d_out, d_in)
    return M, c[0]


@torch.no_grad()
def explicit_affine(view: SplineNet, x: torch.Tensor, *, upto_layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``A[x]``, ``B[x]`` of one input by composing the layers' affine maps with their codes frozen at ``x``.

    Parameters
    ----------
    view : SplineNet
    x : Tensor, shape (1, *input_shape)
    upto_layer : int, optional
        Stop at the output ``z^l`` of this piecewise layer (default: the logits).

    Returns
    -------
    A : Tensor, shape (d_out, d_in)
        With ``d_in = x.numel()`` and ``d_out`` the flattened output size.
    B : Tensor, shape (d_out,)
        So that, for every ``x'`` in the region of ``x``, the output is ``A x'.flatten() + B``.
    """
    if x.shape[0] != 1:
        raise ValueError("explicit_affine takes one input, shape (1, *input_shape)")
    z = x
    A = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
    B = torch.zeros(x.numel(), dtype=x.dtype, device=x.device)
    seen = 0
    for m in view.parts:
        h = handler_for(m)
        shape = tuple(z.shape[1:])
        if h is None:
            M, c = _linear_map(m, shape, z)
        else:
            code = h.pieces(m, z).argmax(-1)  # frozen at x: the selected piece of every unit

            def frozen(u: torch.Tensor, m=m, h=h, code=code) -> torch.Tensor:
                p = h.pieces(m, u)
                units = p.gather(-1, code.expand(p.shape[0], -1).unsqueeze(-1)).squeeze(-1)
                return h.assemble(m, u, units)

            M, c = _linear_map(frozen, shape, z)
            seen += 1
        A, B = M @ A, M @ B + c
        z = m(z)
        if upto_layer is not None and h is not None and seen >= upto_layer:
            break
    return A, B


@dataclass
class TemplateStats:
    """Per-input template diagnostics (docs/spline-analyses.md §2(b)2).

    Attributes
    ----------
    form : AffineForm
    matched : Tensor, (batch, n_out)
        Matched-filter scores ``<A_c, x>``.
    bias_share : Tensor, (batch, n_out)
        ``|B_c| / (|<A_c, x>| + |B_c|)`` in [0, 1]: how much of a logit the region's bias carries (bounded,
        unlike ``|B_c| / |out_c|``, which explodes near a zero logit).
    cosines : Tensor, (batch, n_out, n_out)
        Cosine between the templates of every pair of outputs.
    overlap : Tensor, (batch,)
        Mean ``|cos|`` over the pairs of different outputs (0 for orthogonal templates).
    input_cosine : Tensor, (batch, n_out)
        ``cos(A_c, x)``: template-input similarity (a memorisation indicator).
    """

    form: AffineForm
    matched: torch.Tensor
    bias_share: torch.Tensor
    cosines: torch.Tensor
    overlap: torch.Tensor
    input_cosine: torch.Tensor


def template_cosines(A: torch.Tensor) -> torch.Tensor:
    """Cosine matrix of the templates, (batch, n_out, n_out), from ``A`` of shape (batch, n_out, ...)."""
    T = A.flatten(2)
    T = T / T.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return T @ T.transpose(1, 2)


def off_diagonal_mean_abs(G: torch.Tensor) -> torch.Tensor:
    """Mean ``|G_ac|`` over ``a != c`` of a batch of square matrices (0 when there is one output)."""
    C = G.shape[-1]
    if C < 2:
        return G.new_zeros(G.shape[:-2])
    mask = ~torch.eye(C, dtype=torch.bool, device=G.device)
    return G.abs()[..., mask].mean(-1)


def template_stats(f: Net, x: torch.Tensor) -> TemplateStats:
    """Templates and their diagnostics for a batch (see :class:`TemplateStats`)."""
    form = affine_form(f, x)
    xf = x.flatten(1).unsqueeze(1)
    matched = (form.A.flatten(2) * xf).sum(-1)
    bias_share = form.B.abs() / (matched.abs() + form.B.abs()).clamp_min(1e-300)
    cos = template_cosines(form.A)
    T = form.A.flatten(2)
    input_cos = matched / (T.norm(dim=-1) * xf.norm(dim=-1)).clamp_min(1e-300)
    return TemplateStats(form, matched, bias_share, cos, off_diagonal_mean_abs(cos), input_cos)
