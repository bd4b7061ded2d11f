"""A torch network seen as a continuous piecewise-affine (CPA) spline: a flat sequence of parts, each either
affine or a max of affine *pieces*.

Every analysis in :mod:`models.spline` goes through this view, so it works on any network made of the parts
below, whatever class holds them (``nn.Sequential``, the inversion detector's ``InversionNet`` with its
``layers`` list, or a custom module exposing one):

* affine parts: ``Linear``, ``Conv1d/2d``, ``BatchNorm1d/2d`` (eval mode), ``AvgPool1d/2d``,
  ``AdaptiveAvgPool1d/2d``, ``Flatten``, ``Identity``, ``Dropout`` (eval mode), the inversion network's
  ``TimeCentre``, and any type given to :func:`register_affine` (or with ``spline_affine = True``);
* piecewise parts (a "max-affine spline operator"): ``ReLU`` (pieces ``0, h``), ``LeakyReLU``
  (``alpha h, h``), :class:`Abs` (``-h, h``), ``MaxPool1d/2d`` (the window's values), the inversion
  network's ``TimePool`` (the max over time; its mean half is affine), and :class:`~models.spline.betavq.BetaVQ`
  (the pieces of the op it softens).

A piecewise part is described by a :class:`PieceHandler`: ``pieces(module, x)`` returns the values of every
unit's affine pieces, shape ``(batch, units, R)``, and the hard output is their max, put back in the module's
output layout by ``assemble``. The *VQ code* of a unit is the argmax over its pieces. New part types
plug in with :func:`register_pieces`, or by giving the module ``spline_pieces(x)`` and ``spline_assemble(x,
units)`` methods.

Layers: layer ``l`` (1..L) ends at the ``l``-th piecewise part and its output is the representation
``z^l``; affine parts after the last piecewise part form the read-out, whose output is the logits.

Derivation (max-affine spline operators, VQ codes): docs/spline-analyses.md §1 and §2(a)1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, Sequence

import torch
from torch import nn

#: Parts that are affine maps of their input (BatchNorm and Dropout only in eval mode).
AFFINE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
)


class Abs(nn.Module):
    """Absolute value, ``max(-h, h)``: the two-piece nonlinearity with slopes -1 and 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


class PieceHandler(Protocol):
    """How one kind of piecewise part exposes its affine pieces."""

    def pieces(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Values of every unit's pieces at input ``x``, shape (batch, units, R); the max over R is the output.

        Must be *linear* in ``x`` (slopes times the input, or selections of it), so that the pieces of a
        derivative are the derivative of the pieces."""

    def assemble(self, module: nn.Module, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """The module's output from one value per unit (batch, units), e.g. the max or a soft max."""


class PointwiseHandler:
    """Scalar nonlinearities ``max_r s_r h``: ReLU (0, 1), leaky ReLU (alpha, 1), abs (-1, 1)."""

    def __init__(self, slopes: Callable[[nn.Module], tuple[float, float]]) -> None:
        self._slopes = slopes

    def slopes(self, module: nn.Module) -> tuple[float, float]:
        return self._slopes(module)

    def pieces(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        s0, s1 = self.slopes(module)
        h = x.reshape(x.shape[0], -1)
        return torch.stack([s0 * h, s1 * h], dim=-1)  # index 1 is the "on" piece (h > 0)

    def assemble(self, module: nn.Module, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        return units.reshape(x.shape)


def _leaky_slopes(m: nn.Module) -> tuple[float, float]:
    a = float(m.negative_slope)
    if a > 1:
        raise ValueError(f"LeakyReLU with negative_slope {a} > 1 is a min, not a max, of its pieces")
    return (a, 1.0)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _single(v: int | Sequence[int]) -> int:
    return int(v) if isinstance(v, int) else int(v[0])


def _check_pool(m: nn.Module) -> None:
    pads = m.padding if isinstance(m.padding, (tuple, list)) else (m.padding,)
    dils = m.dilation if isinstance(m.dilation, (tuple, list)) else (m.dilation,)
    if any(int(p) for p in pads) or any(int(d) != 1 for d in dils) or m.ceil_mode or m.return_indices:
        raise NotImplementedError(
            f"{m}: only max pooling without padding, dilation, ceil_mode or return_indices is supported"
        )


class MaxPool1dHandler:
    """``MaxPool1d``: each output is a unit whose pieces are its window's inputs."""

    def pieces(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        _check_pool(module)
        k, s = _single(module.kernel_size), _single(module.stride or module.kernel_size)
        w = x.unfold(-1, k, s)  # (B, C, L_out, k)
        return w.reshape(x.shape[0], -1, k)

    def assemble(self, module: nn.Module, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        k, s = _single(module.kernel_size), _single(module.stride or module.kernel_size)
        return units.reshape(*x.shape[:-1], (x.shape[-1] - k) // s + 1)


class MaxPool2dHandler:
    """``MaxPool2d``: each output is a unit whose pieces are its (kh x kw) window's inputs."""

    def pieces(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        _check_pool(module)
        (kh, kw), (sh, sw) = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        w = x.unfold(-2, kh, sh).unfold(-2, kw, sw)  # (B, C, Ho, Wo, kh, kw)
        return w.reshape(x.shape[0], -1, kh * kw)

    def assemble(self, module: nn.Module, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        return units.reshape(*x.shape[:-2], (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1)


class _DuckHandler:
    """Modules that describe themselves with ``spline_pieces`` / ``spline_assemble`` methods."""

    def pieces(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module.spline_pieces(x)

    def assemble(self, module: nn.Module, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        return module.spline_assemble(x, units)


_HANDLERS: dict[type, PieceHandler] = {
    nn.ReLU: PointwiseHandler(lambda m: (0.0, 1.0)),
    nn.LeakyReLU: PointwiseHandler(_leaky_slopes),
    Abs: PointwiseHandler(lambda m: (-1.0, 1.0)),
    nn.MaxPool1d: MaxPool1dHandler(),
    nn.MaxPool2d: MaxPool2dHandler(),
}
_AFFINE_EXTRA: set[type] = set()


def register_pieces(cls: type[nn.Module], handler: PieceHandler) -> None:
    """Teach the spline view a new piecewise part type (subclasses match too)."""
    _HANDLERS[cls] = handler


def register_affine(cls: type[nn.Module]) -> None:
    """Declare a custom part type affine (it must compute an affine map of its input, batch items apart)."""
    _AFFINE_EXTRA.add(cls)


def handler_for(module: nn.Module) -> PieceHandler | None:
    """The :class:`PieceHandler` of a piecewise part, or None for an affine (or unknown) one."""
    if hasattr(module, "spline_pieces") and hasattr(module, "spline_assemble"):
        return _DuckHandler()
    for cls in type(module).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    return None


def is_affine(module: nn.Module) -> bool:
    """True for the parts that are affine maps of their input (in eval mode)."""
    return isinstance(module, AFFINE_TYPES) or isinstance(module, tuple(_AFFINE_EXTRA)) or bool(
        getattr(module, "spline_affine", False)
    )


def flatten_modules(net: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    """The network's parts in the order they run.

    ``nn.Sequential`` and ``nn.ModuleList`` are flattened recursively; a module with a ``layers``
    ``ModuleList`` (``InversionNet``) is read through it; any other module is one part.
    """
    if isinstance(net, SplineNet):
        return list(net.parts)
    if isinstance(net, (nn.Sequential, nn.ModuleList, list, tuple)):
        out: list[nn.Module] = []
        for m in net:
            out.extend(flatten_modules(m))
        return out
    layers = getattr(net, "layers", None)
    if isinstance(layers, nn.ModuleList) and not is_affine(net) and handler_for(net) is None:
        return flatten_modules(layers)
    return [net]


@dataclass
class Trace:
    """What one forward pass through a :class:`SplineNet` saw.

    Attributes
    ----------
    pieces : list of Tensor
        Per piecewise layer, the pieces of every unit, shape (batch, units, R).
    outputs : list of Tensor
        Per piecewise layer, its output z^l (the module's output layout).
    logits : Tensor
        The network's output.
    """

    pieces: list[torch.Tensor]
    outputs: list[torch.Tensor]
    logits: torch.Tensor

    def codes(self) -> list[torch.Tensor]:
        """VQ codes: per layer, the argmax piece of every unit, int64 (batch, units)."""
        return [p.argmax(-1) for p in self.pieces]


class SplineNet(nn.Module):
    """A flat, checked view of a piecewise-affine network (the modules are shared, not copied).

    Parameters
    ----------
    net : nn.Module or sequence of nn.Module
        The network; see :func:`flatten_modules`.

    Raises
    ------
    TypeError
        If a part is neither affine nor a known piecewise part.
    ValueError
        If a BatchNorm or Dropout part is in training mode (it would not be affine).
    """

    def __init__(self, net: nn.Module | Sequence[nn.Module]) -> None:
        super().__init__()
        parts = flatten_modules(net)
        if not parts:
            raise ValueError("the network has no parts")
        for i, m in enumerate(parts):
            if handler_for(m) is None and not is_affine(m):
                raise TypeError(
                    f"part {i} ({type(m).__name__}) is neither affine nor a known piecewise-affine part; "
                    "register it with models.spline.register_pieces"
                )
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)) and m.training:
                raise ValueError(f"part {i} ({type(m).__name__}) is in training mode; call .eval() first")
        self.parts = nn.ModuleList(parts)
        #: Indices in ``parts`` of the piecewise parts (one per layer).
        self.piecewise_index: tuple[int, ...] = tuple(i for i, m in enumerate(parts) if handler_for(m) is not None)

    @property
    def n_layers(self) -> int:
        """Number of piecewise layers (the read-out is not counted)."""
        return len(self.piecewise_index)

    @property
    def affine_prefix(self) -> int:
        """Number of leading parts before the first piecewise one (an affine map of the input)."""
        return self.piecewise_index[0] if self.piecewise_index else len(self.parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.parts:
            x = m(x)
        return x

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Apply parts ``start .. stop-1`` to ``x``."""
        for m in self.parts[start:stop]:
            x = m(x)
        return x

    def trace(self, x: torch.Tensor, *, start: int = 0, upto_layer: int | None = None) -> Trace:
        """Forward pass recording every piecewise layer's pieces and output.

        Parameters
        ----------
        x : Tensor
            Input of part ``start`` (the network's input when ``start`` is 0).
        start : int
            First part to run (to resume from a cached affine prefix).
        upto_layer : int, optional
            Stop after this many piecewise layers (counted from the first); ``logits`` is then the last
            output reached.
        """
        pieces, outputs = [], []
        for i in range(start, len(self.parts)):
            m = self.parts[i]
            h = handler_for(m)
            if h is not None:
                p = h.pieces(m, x)
                pieces.append(p)
                x = m(x)
                outputs.append(x)
                if upto_layer is not None and len(pieces) >= upto_layer:
                    return Trace(pieces, outputs, x)
            else:
                x = m(x)
        return Trace(pieces, outputs, x)

    def codes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """VQ codes of a batch: per layer, int64 (batch, units)."""
        with torch.no_grad():
            return self.trace(x).codes()

    def layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[z^1, ..., z^L, logits]``: every piecewise layer's output, then the network's output."""
        t = self.trace(x)
        return [*t.outputs, t.logits]


def spline_view(net: nn.Module | Sequence[nn.Module], dtype: torch.dtype | None = torch.float64) -> SplineNet:
    """An independent, eval-mode copy of ``net`` as a :class:`SplineNet` (float64 by default, so that codes
    and region walks are exact to rounding). The original network is left untouched."""
    parts = [copy.deepcopy(m) for m in flatten_modules(net)]
    view = SplineNet(nn.ModuleList(parts).eval())
    if dtype is not None:
        view = view.to(dtype)
    view.requires_grad_(False)
    return view


def piecewise_units(view: SplineNet, x: torch.Tensor) -> list[int]:
    """Number of coded units of each piecewise layer for inputs shaped like ``x`` (batch first)."""
    with torch.no_grad():
        return [p.shape[1] for p in view.trace(x[:1]).pieces]


def iter_batches(n: int, size: int) -> Iterable[slice]:
    """Slices covering ``range(n)`` in chunks of ``size``."""
    for a in range(0, n, size):
        yield slice(a, min(n, a + size))
