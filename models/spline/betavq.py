"""Stage 4: beta-VQ nonlinearities and the post-hoc beta sweep ("From Hard to Soft", Balestriero & Baraniuk).

A max-affine unit with pieces ``a_r`` infers its piece softly: ``y = sum_r softmax(eta a)_r a_r`` with
``eta = beta / (1 - beta)``. ``beta = 1`` is the original hard op (ReLU, leaky ReLU, abs, max-pool) exactly;
``beta = 1/2`` is soft VQ (swish-type: ``sigmoid(h) h`` for ReLU); ``beta -> 0`` tends to the mean of the
pieces, a linear map.

:class:`BetaVQ` wraps any hard piecewise part known to the spline view, so a network can be softened without
touching its code (:func:`soften`), and :func:`beta_sweep` measures accuracy and calibration as beta moves.

Derivation: docs/spline-analyses.md §3.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .network import Abs, PointwiseHandler, handler_for

#: What a sweep softens: every piecewise part, the scalar activations only, or the max-poolings only.
SOFTEN_TARGETS = ("all", "activations", "pooling")

#: Default post-hoc sweep, from hard (1) to linear (0).
DEFAULT_BETAS: tuple[float, ...] = (1.0, 0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.0)


def _make_hard(kind: str, **kwargs) -> nn.Module:
    kinds = {
        "relu": lambda: nn.ReLU(),
        "leaky_relu": lambda: nn.LeakyReLU(kwargs.get("negative_slope", 0.01)),
        "abs": lambda: Abs(),
        "maxpool1d": lambda: nn.MaxPool1d(kwargs["kernel_size"], kwargs.get("stride")),
        "maxpool2d": lambda: nn.MaxPool2d(kwargs["kernel_size"], kwargs.get("stride")),
    }
    if kind not in kinds:
        raise ValueError(f"unknown nonlinearity {kind!r}; known: {', '.join(kinds)}")
    return kinds[kind]()


class BetaVQ(nn.Module):
    """beta-VQ version of a hard max-affine nonlinearity.

    Parameters
    ----------
    hard : nn.Module or str
        The hard op (``nn.ReLU()``, ``nn.LeakyReLU(a)``, :class:`~models.spline.network.Abs`,
        ``nn.MaxPool1d/2d``, the inversion network's ``TimePool``, or any registered piecewise part), or one
        of ``"relu"``, ``"leaky_relu"``, ``"abs"``, ``"maxpool1d"``, ``"maxpool2d"`` (with the op's keyword
        arguments: ``negative_slope``, ``kernel_size``, ``stride``).
    beta : float
        In [0, 1]: 1 is the hard op exactly, 1/2 the soft (swish-type) op, 0 the mean of the pieces.

    Notes
    -----
    ``beta`` is a plain float (a hyperparameter: not a parameter or buffer, so a network's state dict is the
    same with hard or soft nonlinearities, and ``eta`` keeps double precision). The unit outputs are
    ``sum_r softmax(eta a)_r a_r``, computed with a max-shifted softmax, so large ``eta`` (beta near 1) is
    numerically safe.
    """

    def __init__(self, hard: nn.Module | str, beta: float = 1.0, **kwargs) -> None:
        super().__init__()
        self.hard = _make_hard(hard, **kwargs) if isinstance(hard, str) else hard
        if isinstance(self.hard, BetaVQ):
            self.hard = self.hard.hard
        if handler_for(self.hard) is None:
            raise TypeError(f"{type(self.hard).__name__} is not a known piecewise-affine nonlinearity")
        self.beta = 1.0
        self.set_beta(beta)

    def set_beta(self, beta: float) -> None:
        """Change beta in place (0 <= beta <= 1)."""
        if not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.beta = float(beta)

    @property
    def eta(self) -> float:
        """Inverse temperature ``beta / (1 - beta)`` (infinite at beta = 1)."""
        b = float(self.beta)
        return float("inf") if b >= 1.0 else b / (1.0 - b)

    def spline_pieces(self, x: torch.Tensor) -> torch.Tensor:
        """Pieces of the hard op (the spline view's codes of a softened network are its MAP codes)."""
        return handler_for(self.hard).pieces(self.hard, x)

    def spline_assemble(self, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        return handler_for(self.hard).assemble(self.hard, x, units)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        b = float(self.beta)
        if b >= 1.0:
            return self.hard(x, *args, **kwargs)  # the hard op itself: exact, and keeps its extra arguments
        if any(a is not None for a in args) or any(v is not None for v in kwargs.values()):
            raise NotImplementedError("soft beta-VQ takes the input only (run padded clips one by one)")
        a = self.spline_pieces(x)
        if b <= 0.0:
            units = a.mean(-1)
        else:
            units = (torch.softmax(self.eta * a, dim=-1) * a).sum(-1)
        return self.spline_assemble(x, units)

    def extra_repr(self) -> str:
        return f"beta={float(self.beta):.4g}"


def _targeted(m: nn.Module, target: str) -> bool:
    if target not in SOFTEN_TARGETS:
        raise ValueError(f"target must be one of {SOFTEN_TARGETS}, got {target!r}")
    hard = m.hard if isinstance(m, BetaVQ) else m
    pointwise = isinstance(handler_for(hard), PointwiseHandler)
    return target == "all" or (target == "activations") == pointwise


def _replace(module: nn.Module, beta: float, target: str) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, BetaVQ):
            if _targeted(child, target):
                child.set_beta(beta)
        elif handler_for(child) is not None:
            if _targeted(child, target):
                setattr(module, name, BetaVQ(child, beta))
        else:
            _replace(child, beta, target)


def soften(net: nn.Module, beta: float, target: str = "all") -> nn.Module:
    """A copy of ``net`` with its hard piecewise nonlinearities (and existing :class:`BetaVQ`) at ``beta``;
    ``net`` itself is untouched.

    Parameters
    ----------
    net : nn.Module
    beta : float
    target : {"all", "activations", "pooling"}
        Soften every piecewise part, only the scalar activations (ReLU, leaky ReLU, abs), or only the
        max-poolings (including the inversion network's max over time).

    Notes
    -----
    Modules that pass extra arguments to their nonlinearities by type (the inversion network gives
    ``lengths`` to its ``TimePool``) lose them once wrapped: evaluate the softened copy on unpadded inputs.
    """
    out = copy.deepcopy(net)
    if isinstance(out, BetaVQ):
        out.set_beta(beta)
        return out
    if handler_for(out) is not None:
        return BetaVQ(out, beta) if _targeted(out, target) else out
    _replace(out, beta, target)
    return out


def set_beta(net: nn.Module, beta: float) -> int:
    """Set the beta of every :class:`BetaVQ` inside ``net`` in place; returns how many were found."""
    n = 0
    for m in net.modules():
        if isinstance(m, BetaVQ):
            m.set_beta(beta)
            n += 1
    return n


# -- metrics --------------------------------------------------------------------------------------------
def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE of binary probabilities: bins of the predicted class's confidence (equal width in [0.5, 1]),
    mean |accuracy - confidence| weighted by bin size."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    conf = np.maximum(p, 1 - p)
    correct = ((p >= 0.5).astype(int) == y).astype(float)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    ece = 0.0
    for k in range(n_bins):
        m = idx == k
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC AUC, accuracy at 0.5, ECE, negative log-likelihood and Brier score of bird probabilities."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return {
        "auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
        "accuracy": float(((p >= 0.5).astype(int) == y).mean()),
        "ece": expected_calibration_error(y, p),
        "nll": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        "brier": float(np.mean((p - y) ** 2)),
    }


def beta_sweep(
    net: nn.Module,
    xs: Sequence[torch.Tensor],
    labels: np.ndarray | None = None,
    betas: Sequence[float] = DEFAULT_BETAS,
    *,
    positive: int = 1,
    proba: Callable[[torch.Tensor], torch.Tensor] | None = None,
    target: str = "all",
) -> list[dict[str, float]]:
    """Swap every nonlinearity for its beta-VQ version and score the predictions at each beta.

    Parameters
    ----------
    net : nn.Module
        Maps a batch to logits (batch, n_out).
    xs : sequence of Tensor
        Batches of inputs (each batch of one input shape).
    labels : ndarray of 0/1, optional
        Concatenated labels of all batches.
    betas : sequence of float
    positive : int
        Index of the bird logit.
    proba : callable, optional
        Logits -> probability of bird; default ``softmax(logits)[:, positive]`` (``sigmoid`` for one logit).
    target : {"all", "activations", "pooling"}
        Which nonlinearities move with beta (see :func:`soften`); the others stay hard.

    Returns
    -------
    list of dict, one per beta: ``beta``, ``eta``, ``mean_p``, ``agreement`` (share of decisions equal to
    the hard network's), ``mean_abs_dp`` (mean |p - p_hard|), and with labels the :func:`binary_metrics`.
    """

    def default_proba(z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z[:, 0]) if z.shape[1] == 1 else torch.softmax(z, dim=1)[:, positive]

    to_p = proba or default_proba
    soft = soften(net, 1.0, target).eval()

    def predict() -> np.ndarray:
        with torch.no_grad():
            return torch.cat([to_p(soft(x)).double() for x in xs]).cpu().numpy()

    p_hard = predict()  # every beta at 1: the original network
    rows = []
    for beta in betas:
        set_beta(soft, beta)
        p = predict()
        rec = {
            "beta": float(beta),
            "eta": float("inf") if beta >= 1 else float(beta / (1 - beta)),
            "mean_p": float(p.mean()),
            "agreement": float(((p >= 0.5) == (p_hard >= 0.5)).mean()),
            "mean_abs_dp": float(np.abs(p - p_hard).mean()),
        }
        if labels is not None:
            rec.update(binary_metrics(labels, p))
        rows.append(rec)
    return rows
