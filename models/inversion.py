"""Semi-supervised bird detector trained by multiscale network inversion (Balestriero, Glotin & Baraniuk 2018).

:class:`InversionNet` is built only from piecewise-affine parts (1-D convolutions over time, leaky ReLUs, a
masked mean-and-max pooling over time, a linear read-out), so for every input it is an affine map and its
inversion needs no decoder: :func:`layer_reconstructions` gives every layer's reconstruction
``R^(l) = grad_{z^(l)} 1/2 ||z^(L)||^2``. :func:`inversion_loss` combines cross-entropy on labelled clips,
prediction entropy on unlabeled ones and the reconstruction error of every layer, with the paper's
data-free weights (:func:`spec_loss_weights`); its gradient needs double back-propagation.
:class:`InversionDetector` is the Detector that trains it.

Layout for analyses (spline templates, partitions): :class:`InversionNet` keeps its parts in a flat
``layers`` list; ``block_ends`` says after which parts a representation ``z^(l)`` is taken, and
:meth:`InversionNet.representations` returns all of them, ``[z^(0) = x, z^(1), ..., z^(L) = logits]``.

Derivation (the affine form, the inversion, the loss and its weights): docs/inversion-loss.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .base import Detector, DetectorError, check_labels, check_sequences
from .spline.betavq import BetaVQ
from .spline.group_ae import encoder_as_conv, fit_group_autoencoder, sample_windows
from .spline.penalties import ORTHO_VARIANTS, template_ortho_penalty, weight_ortho_penalty


# -- the network --------------------------------------------------------------------------------------
class TimePool(nn.Module):
    """Mean and max over time of (batch, features, time), concatenated to (batch, 2 * features).

    Both are piecewise affine (the mean is linear, the max routes to its argmax). With ``lengths`` only the
    first ``lengths[i]`` frames of item ``i`` count, so padded batches give each item its own result.
    For the spline view (:mod:`scatterbird.models.spline.network`), the max half is one unit per channel whose
    pieces are that channel's frames; the mean half is affine and carries no code.
    """

    def spline_pieces(self, x: torch.Tensor) -> torch.Tensor:
        return x  # (B, C, T): C units, T pieces each

    def spline_assemble(self, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(-1), units], dim=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            return torch.cat([x.mean(-1), x.amax(-1)], dim=1)
        mask = _time_mask(lengths, x.shape[-1]).unsqueeze(1)
        mean = (x * mask).sum(-1) / lengths.to(x.dtype).unsqueeze(1)
        peak = x.masked_fill(~mask, float("-inf")).amax(-1)
        return torch.cat([mean, peak], dim=1)


class TimeCentre(nn.Module):
    """Subtract each channel's mean over time, (batch, channels, time) -> same shape.

    A linear map (a projection), so the network stays piecewise affine. It removes each clip's overall level
    per band (background loudness and colour), leaving what changes within the clip, where calls are.
    """

    spline_affine = True  # for the spline view: a linear map of its input

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            return x - x.mean(-1, keepdim=True)
        mask = _time_mask(lengths, x.shape[-1]).unsqueeze(1).to(x.dtype)
        mean = (x * mask).sum(-1, keepdim=True) / lengths.to(x.dtype)[:, None, None]
        return (x - mean) * mask


def _time_mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """Boolean (batch, n): True on each item's valid frames."""
    return torch.arange(n, device=lengths.device)[None, :] < lengths[:, None]


def _conv_length(conv: nn.Conv1d, lengths: torch.Tensor) -> torch.Tensor:
    """Valid output frames of ``conv`` for inputs of ``lengths`` valid frames (PyTorch's length formula)."""
    (k,), (s,), (p,), (d,) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    return torch.div(lengths + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1


#: Nonlinearities of the convolution blocks.
ACTIVATIONS = ("leaky_relu", "betavq")


class InversionNet(nn.Module):
    """Compact piecewise-affine CNN over a log-scattering sequence, two logits (no bird, bird).

    Parameters
    ----------
    n_channels : int
        Input features per frame (scattering channels).
    widths : sequence of int
        Output channels of each 1-D convolution block (conv -> leaky ReLU); every block after the first
        halves the frame rate (stride 2).
    kernel_size : int
        Odd temporal kernel size of every convolution.
    negative_slope : float
        Leaky-ReLU slope (0 gives a ReLU).
    n_classes : int
        Number of logits.
    centre : bool
        Start with :class:`TimeCentre` (each clip's per-band mean over time removed).
    activation : str
        "leaky_relu" (hard), or "betavq": the beta-VQ soft version of the same leaky ReLU
        (:class:`models.spline.betavq.BetaVQ`; beta = 1 is the hard one exactly, 1/2 swish-type).
    beta : float
        The beta-VQ softness, in [0, 1].
    front_channels : int
        0: no front. Otherwise the network starts (after :class:`TimeCentre`) with an extra block
        ``Conv1d(n_channels, front_channels, front_kernel)`` + the activation, stride 1: the place of the group
        autoencoder's encoder (:mod:`models.spline.group_ae`), see :attr:`front`.
    front_kernel : int
        Odd temporal kernel of the front convolution (the autoencoder's window width).

    Notes
    -----
    Input shape (batch, n_channels, n_frames), any n_frames >= 1. Padding is ``kernel_size // 2`` and the
    representations of padded frames are zeroed after every block, so a zero-padded batch gives each item
    exactly what it gives alone (up to float rounding).
    """

    def __init__(
        self,
        n_channels: int,
        widths: Sequence[int] = (32, 32, 32),
        kernel_size: int = 3,
        negative_slope: float = 0.1,
        n_classes: int = 2,
        centre: bool = True,
        activation: str = "leaky_relu",
        beta: float = 1.0,
        front_channels: int = 0,
        front_kernel: int = 5,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if not widths:
            raise ValueError("widths: at least one convolution block is needed")
        if int(front_channels) < 0 or (front_channels and (front_kernel < 1 or front_kernel % 2 == 0)):
            raise ValueError(f"front: channels must be >= 0 and the kernel odd, got {front_channels}, {front_kernel}")
        layers: list[nn.Module] = [TimeCentre()] if centre else []
        ends: list[int] = []
        c_in = n_channels
        #: Index in ``layers`` of the front convolution (None without a front).
        self.front_index: int | None = None

        def block(conv: nn.Conv1d) -> None:
            layers.append(conv)
            act = nn.LeakyReLU(negative_slope)
            layers.append(BetaVQ(act, float(beta)) if activation == "betavq" else act)
            ends.append(len(layers) - 1)

        if front_channels:
            self.front_index = len(layers)
            block(nn.Conv1d(c_in, int(front_channels), int(front_kernel), padding=int(front_kernel) // 2))
            c_in = int(front_channels)
        for i, w in enumerate(widths):
            block(nn.Conv1d(c_in, int(w), kernel_size, stride=1 if i == 0 else 2, padding=kernel_size // 2))
            c_in = int(w)
        layers.append(TimePool())
        ends.append(len(layers) - 1)
        layers.append(nn.Linear(2 * c_in, n_classes))
        ends.append(len(layers) - 1)
        self.layers = nn.ModuleList(layers)
        #: Index in ``layers`` of the part whose output is z^(l), l = 1..L.
        self.block_ends: tuple[int, ...] = tuple(ends)
        self.n_channels = n_channels
        self.n_classes = n_classes

    @property
    def n_layers(self) -> int:
        """L, the number of representations after the input (the logits are z^(L))."""
        return len(self.block_ends)

    @property
    def front(self) -> nn.Conv1d | None:
        """The front convolution (None without a front)."""
        return None if self.front_index is None else self.layers[self.front_index]

    def block_forward(
        self, l: int, z: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Map z^(l-1) to z^(l) (l = 1..L); returns it with its valid lengths (None without lengths)."""
        start = 0 if l == 1 else self.block_ends[l - 2] + 1
        for m in self.layers[start : self.block_ends[l - 1] + 1]:
            if isinstance(m, TimePool):
                z = m(z, lengths)
                lengths = None  # no time axis any more
            elif isinstance(m, TimeCentre):
                z = m(z, lengths)
            else:
                z = m(z)
                if isinstance(m, nn.Conv1d) and lengths is not None:
                    lengths = _conv_length(m, lengths)
        if lengths is not None and z.dim() == 3:
            z = z * _time_mask(lengths, z.shape[-1]).unsqueeze(1).to(z.dtype)
        return z, lengths

    def representations(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, *, return_lengths: bool = False
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """All representations ``[z^(0) = x, z^(1), ..., z^(L) = logits]``.

        Parameters
        ----------
        x : Tensor, shape (batch, n_channels, n_frames)
        lengths : Tensor of int, shape (batch,), optional
            Valid frames of each item of a zero-padded batch.
        return_lengths : bool
            Also return each representation's valid lengths (None where there is no time axis).
        """
        zs, lens = [x], [lengths]
        if lengths is not None:
            x = x * _time_mask(lengths, x.shape[-1]).unsqueeze(1).to(x.dtype)
            zs[0] = x
        z = x
        for l in range(1, self.n_layers + 1):
            z, lengths = self.block_forward(l, z, lengths)
            zs.append(z)
            lens.append(lengths)
        return (zs, lens) if return_lengths else zs

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits, shape (batch, n_classes)."""
        return self.representations(x, lengths)[-1]


# -- inversion and loss --------------------------------------------------------------------------------
def layer_reconstructions(
    net: InversionNet,
    x: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    create_graph: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor | None]]:
    """Representations z^(l) and their reconstructions R^(l) = grad_{z^(l)} 1/2 ||z^(L)||^2.

    Parameters
    ----------
    net : InversionNet
    x : Tensor, shape (batch, n_channels, n_frames)
    lengths : Tensor, optional
        Valid frames per item of a padded batch.
    create_graph : bool
        Keep the graph of the reconstructions so that a loss on them can be differentiated again with
        respect to the weights (double back-propagation). Needed for training.

    Returns
    -------
    zs : list of Tensor
        ``[z^(0), ..., z^(L)]``.
    Rs : list of Tensor
        ``[R^(0), ..., R^(L-1)]``, each the shape of its ``z``; ``R^(0)`` is the inversion x^.
    lens : list of Tensor or None
        Valid lengths of each ``z`` (None where there is no time axis or no lengths were given).
    """
    with torch.enable_grad():  # the inversion is a gradient, also when called under no_grad
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        zs, lens = net.representations(x, lengths, return_lengths=True)
        # The items of a batch do not interact, so the gradient of the summed energy is each item's own.
        energy = 0.5 * zs[-1].pow(2).sum()
        Rs = torch.autograd.grad(energy, zs[:-1], create_graph=create_graph)
    return zs, list(Rs), lens


def inversion(net: InversionNet, x: torch.Tensor) -> torch.Tensor:
    """The inversion x^ = A[x]^T z^(L)(x) of every item of ``x`` (same shape as ``x``)."""
    return layer_reconstructions(net, x)[1][0].detach()


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three loss terms.

    Attributes
    ----------
    ce, entropy : float
        Multiply the mean cross-entropy over labelled items and the mean entropy over unlabeled items.
    recon : tuple of float
        One weight per reconstructed layer l = 0..L-1.
    recon_per_dim : bool
        True: each layer's squared error is first divided by that item's dimension D^(l) (the paper's
        ``1 / (L * D^(l))`` is then ``recon = (1/L, ..., 1/L)``). False: the weights multiply the raw
        squared error.
    """

    ce: float
    entropy: float
    recon: tuple[float, ...]
    recon_per_dim: bool = True


def spec_loss_weights(n_layers: int, n_classes: int = 2) -> LossWeights:
    """The paper's data-free weights: 1 / log C for CE and entropy; 1 / (L * D^(l)) per layer.

    See docs/inversion-loss.md (the weights are the least certain part of the paper's method).
    """
    b = 1.0 / math.log(n_classes)
    return LossWeights(ce=b, entropy=b, recon=(1.0 / n_layers,) * n_layers, recon_per_dim=True)


def inversion_loss(
    zs: Sequence[torch.Tensor],
    Rs: Sequence[torch.Tensor],
    lens: Sequence[torch.Tensor | None],
    labels: torch.Tensor,
    weights: LossWeights,
    *,
    entropy_ramp: float = 1.0,
    detach_target: bool = False,
) -> dict[str, torch.Tensor]:
    """The semi-supervised inversion loss of one batch.

    Parameters
    ----------
    zs, Rs, lens
        From :func:`layer_reconstructions` on a batch whose first ``len(labels)`` items are labelled and the
        rest unlabeled.
    labels : Tensor of int, shape (n_labelled,)
    weights : LossWeights
    entropy_ramp : float
        Factor in [0, 1] on the entropy weight (the warm-up).
    detach_target : bool
        Stop the gradient through the targets z^(l) of the reconstruction (the paper's choice is unknown).

    Returns
    -------
    dict of Tensor
        ``ce``, ``entropy``, ``recon`` (weighted sum over layers), ``recon_layers`` (per layer, unweighted,
        shape (L,)) and ``total``; a switched-off term is 0 and not computed.
    """
    logits = zs[-1]
    n_lab = int(labels.shape[0])
    zero = logits.new_zeros(())
    out: dict[str, torch.Tensor] = {}
    out["ce"] = F.cross_entropy(logits[:n_lab], labels) if n_lab and weights.ce else zero
    if logits.shape[0] > n_lab and weights.entropy and entropy_ramp:
        logp = F.log_softmax(logits[n_lab:], dim=1)
        out["entropy"] = -(logp.exp() * logp).sum(1).mean()
    else:
        out["entropy"] = zero
    per_layer = []
    recon = zero
    if any(weights.recon):
        if len(weights.recon) != len(Rs):
            raise ValueError(f"{len(weights.recon)} reconstruction weights for {len(Rs)} layers")
        for w, z, R, n in zip(weights.recon, zs[:-1], Rs, lens[:-1]):
            target = z.detach() if detach_target else z
            diff = R - target
            if n is not None and diff.dim() == 3:  # padded frames are not part of the item
                diff = diff * _time_mask(n, diff.shape[-1]).unsqueeze(1).to(diff.dtype)
            sq = diff.pow(2).flatten(1).sum(1)
            if weights.recon_per_dim:
                dim = diff[0].numel() if n is None or diff.dim() != 3 else diff.shape[1] * n.to(diff.dtype)
                sq = sq / dim
            term = sq.mean()
            per_layer.append(term.detach())
            if w:
                recon = recon + w * term
    out["recon"] = recon
    out["recon_layers"] = torch.stack(per_layer) if per_layer else logits.new_zeros(0)
    out["total"] = weights.ce * out["ce"] + weights.entropy * entropy_ramp * out["entropy"] + recon
    return out


# -- the detector ------------------------------------------------------------------------------------
#: Early stopping needs at least this many validation clips of each class: on 2 + 2 clips the AUC takes five
#: values, reaches 1 by chance in the first epochs and stops training there (seen with 30 labels).
MIN_VALIDATION_PER_CLASS = 5

#: Fine-tuning steps ``FINE_TUNE_LR_FACTOR * lr`` by default: small steps keep a trained network near the
#: solution it found while the new domain's clips move it.
FINE_TUNE_LR_FACTOR = 0.3

_CPU = torch.device("cpu")

#: Hyperparameters added after inversion models were saved and bundled, with their defaults: ``get_params``
#: leaves each out while it has its default, so the saved parameters and the model hash of every earlier model
#: (the bundled one included) stay as they were, as a calibration temperature of 1 is left out of the state.
_LATE_PARAMS: dict[str, Any] = {
    "front_channels": 0,
    "front_kernel": 5,
    "front_pretrain": "group",
    "front_group_weight": 1.0,
    "front_first_order": None,
}

#: ``front_pretrain`` values: the group autoencoder, the same without its regulariser, or no pre-training.
FRONT_PRETRAIN = ("group", "plain", "none")

#: Windows the front's autoencoder is pre-trained on (at most), its hidden width and its gradient steps.
FRONT_WINDOWS = 1000
FRONT_HIDDEN = 64
FRONT_STEPS = 600


def batch_split(batch_size: int, labelled_share: float) -> tuple[int, int]:
    """(labelled, unlabeled) items of a batch of ``batch_size`` with a ``labelled_share`` of labelled ones.

    The labelled count is ``round(labelled_share * batch_size)``, kept between 1 and ``batch_size - 1`` so
    that every batch holds both kinds.

    Raises
    ------
    DetectorError
        When ``batch_size < 2`` or ``labelled_share`` is not in (0, 1).
    """
    if int(batch_size) < 2:
        raise DetectorError(f"batch size must be >= 2 (labelled and unlabeled items), got {batch_size}")
    if not 0.0 < float(labelled_share) < 1.0:
        raise DetectorError(f"labelled share must be in (0, 1), got {labelled_share}")
    n_lab = min(max(round(float(labelled_share) * int(batch_size)), 1), int(batch_size) - 1)
    return n_lab, int(batch_size) - n_lab


def _pad_batch(seqs: Sequence[np.ndarray], device: torch.device = _CPU) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_frames, C) arrays -> zero-padded (batch, C, T_max) tensor and lengths, on ``device``."""
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    x = torch.zeros(len(seqs), seqs[0].shape[1], int(lengths.max()))
    for i, s in enumerate(seqs):
        x[i, :, : s.shape[0]] = torch.from_numpy(np.ascontiguousarray(s.T))
    return x.to(device), lengths.to(device)  # one copy per batch (none on the CPU)


#: Held while a network is away from the CPU: threads sharing a detector (a Dask worker's) take turns on it.
_MOVE_LOCK = threading.Lock()


@contextmanager
def _placed(net: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``net`` on ``device`` inside the block and back where it was after: the learned state lives on the CPU,
    where the analyses (:mod:`models.spline`), saving and hashing read it."""
    if device.type == "cpu" and next(net.parameters()).device.type == "cpu":
        yield net  # the default: nothing moves, nothing to wait for
        return
    with _MOVE_LOCK:  # another thread must not move the network back while this one computes on it
        home = next(net.parameters()).device
        net.to(device)
        try:
            yield net
        finally:
            net.to(home)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


class InversionDetector(Detector):
    """Bird / no-bird detector on scattering sequences, trained with the semi-supervised inversion loss.

    Parameters
    ----------
    widths, kernel_size, negative_slope, centre
        The network (see :class:`InversionNet`). ``centre`` removes each clip's per-band mean over time
        first, so that the network sees what changes within a clip (calls) rather than its background
        level, which varies widely between recordings.
    ce_weight, entropy_weight : float, optional
        Weights of the cross-entropy and entropy terms; None takes the paper's ``1 / log C``; 0 switches the
        term off.
    recon_scale : float
        Multiplies the paper's per-layer reconstruction weights ``1 / (L * D^(l))``; 0 switches the
        reconstruction (and its double back-propagation) off.
    recon_weights : list of float, optional
        Explicit per-layer weights on the raw squared errors ``||R^(l) - z^(l)||^2`` (l = 0..L-1), replacing
        the paper's; overrides ``recon_scale``.
    detach_target : bool
        Stop the gradient through the reconstruction targets z^(l).
    lr, weight_decay : float
        Adam(W) step size and decoupled weight decay.
    max_epochs : int
        Upper bound on epochs.
    steps_per_epoch : int, optional
        Gradient steps per epoch; default: enough for one pass over the larger of the labelled training set
        and the unlabeled set (when the loss uses unlabeled clips).
    batch_labelled, batch_unlabelled : int
        Labelled and unlabeled clips in every batch (a fixed ratio, whatever the set sizes). These two names
        keep the spelling saved in model files since the first release.
    warmup_epochs : int
        The entropy weight ramps linearly from 0 to its value over this many epochs (confident wrong
        predictions early on would otherwise be reinforced).
    validation_fraction : float
        Stratified share of the labelled clips held out for early stopping (on validation AUC, ties broken by
        cross-entropy). Skipped when it would hold fewer than ``MIN_VALIDATION_PER_CLASS`` clips of a class
        (then the last epoch's weights are kept). After ``fit`` (and in a saved model): ``validation_auc_``,
        the kept epoch's ROC AUC on the held-out clips (None without a split), ``n_validation_``, how many
        clips were held out, and ``best_epoch_``, the kept epoch (0-based).
    patience : int
        Epochs without validation improvement before stopping; the best epoch's weights are kept.
    random_state : int
        Seeds the split, the initial weights and the batch order.
    verbose : bool
        Progress bar with the loss terms on stderr.
    ortho_penalty : float
        Weight of the template-orthogonality penalty (0: off); see :mod:`models.spline.penalties`.
    ortho_variant : str
        "weights" (on the read-out layer's weights) or "templates" (on the input-gradient templates of each
        batch; two extra backward passes per step).
    activation, beta
        Hard leaky ReLU or its beta-VQ soft version (see :class:`InversionNet`).
    front_channels : int
        0 (default): today's network. Otherwise an extra first block ``Conv1d(C, front_channels,
        front_kernel)`` + activation (after the time centring), initialised by ``front_pretrain``.
    front_kernel : int
        Odd width, in frames, of the front convolution and of the autoencoder's windows.
    front_pretrain : str
        "group": ``fit`` first trains the group autoencoder (:mod:`models.spline.group_ae`) on windows of the
        standardised (and, with ``centre``, time-centred) training and unlabeled sequences, and copies its
        encoder into the front; "plain": the same autoencoder without the group regulariser; "none": the
        front starts from PyTorch's random initialisation. The front stays trainable.
    front_group_weight : float
        The regulariser's weight for "group".
    front_first_order : list of int, optional
        The channels on the frequency axis of the group (the first-order scattering channels, in frequency
        order); None: the time shift only (a detector does not know its channels' orders). Each ``front_*``
        hyperparameter is left out of ``get_params`` (so of saved files and the model hash) while it has its
        default, so that models saved before they existed keep their hashes. See docs/group-autoencoder.md.

    Attributes
    ----------
    adaptations_ : list of dict
        After :meth:`fine_tune` (and in a saved model): one record per fine-tuning run (epochs, batch split,
        step size, clip counts, and what the caller added, e.g. the recordings adapted to); empty after ``fit``.
    device : str
        Where ``fit`` and ``predict_proba`` compute (``"cpu"``, ``"cuda"``, ``"cuda:N"``); set it directly or
        through :func:`scatterbird.pipeline.device.detector_on`. Not a hyperparameter: it is neither saved nor
        part of the model's hash, and the learned state and the results always come back on the CPU.
    """

    kind = "inversion"
    device: str = "cpu"

    def __init__(
        self,
        widths: Sequence[int] = (32, 32, 32),
        kernel_size: int = 3,
        negative_slope: float = 0.1,
        centre: bool = True,
        ce_weight: float | None = None,
        entropy_weight: float | None = None,
        recon_scale: float = 1.0,
        recon_weights: Sequence[float] | None = None,
        detach_target: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        max_epochs: int = 50,
        steps_per_epoch: int | None = None,
        batch_labelled: int = 16,
        batch_unlabelled: int = 16,
        warmup_epochs: int = 5,
        validation_fraction: float = 0.15,
        patience: int = 10,
        random_state: int = 0,
        verbose: bool = False,
        ortho_penalty: float = 0.0,
        ortho_variant: str = "weights",
        activation: str = "leaky_relu",
        beta: float = 1.0,
        front_channels: int = 0,
        front_kernel: int = 5,
        front_pretrain: str = "group",
        front_group_weight: float = 1.0,
        front_first_order: Sequence[int] | None = None,
    ) -> None:
        self.widths = widths
        self.kernel_size = kernel_size
        self.negative_slope = negative_slope
        self.centre = centre
        self.ce_weight = ce_weight
        self.entropy_weight = entropy_weight
        self.recon_scale = recon_scale
        self.recon_weights = recon_weights
        self.detach_target = detach_target
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_labelled = batch_labelled
        self.batch_unlabelled = batch_unlabelled
        self.warmup_epochs = warmup_epochs
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.verbose = verbose
        self.ortho_penalty = ortho_penalty
        self.ortho_variant = ortho_variant
        self.activation = activation
        self.beta = beta
        self.front_channels = front_channels
        self.front_kernel = front_kernel
        self.front_pretrain = front_pretrain
        self.front_group_weight = front_group_weight
        self.front_first_order = front_first_order

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyperparameters, without the ``front_*`` ones that have their defaults (see ``_LATE_PARAMS``)."""
        out = super().get_params(deep)
        for name, default in _LATE_PARAMS.items():
            if name in out and _same_default(out[name], default):
                del out[name]
        return out

    # -- pieces -------------------------------------------------------------------------------------
    def _build_net(self, n_channels: int) -> InversionNet:
        return InversionNet(
            n_channels, tuple(int(w) for w in self.widths), int(self.kernel_size), float(self.negative_slope),
            centre=bool(self.centre), activation=str(self.activation), beta=float(self.beta),
            front_channels=int(self.front_channels), front_kernel=int(self.front_kernel),
        )

    def loss_weights(self, n_layers: int | None = None, n_classes: int = 2) -> LossWeights:
        """The weights this detector trains with (the paper's unless overridden)."""
        if n_layers is None:
            # conv blocks, the front's block if any, time pooling, read-out
            n_layers = len(self.widths) + 2 + (1 if int(self.front_channels) else 0)
        spec = spec_loss_weights(n_layers, n_classes)
        ce = spec.ce if self.ce_weight is None else float(self.ce_weight)
        ent = spec.entropy if self.entropy_weight is None else float(self.entropy_weight)
        if self.recon_weights is not None:
            rw = tuple(float(w) for w in self.recon_weights)
            if len(rw) != n_layers:
                raise DetectorError(f"recon_weights: expected {n_layers} values (layers 0..L-1), got {len(rw)}")
            return LossWeights(ce, ent, rw, recon_per_dim=False)
        return LossWeights(ce, ent, tuple(float(self.recon_scale) * w for w in spec.recon), recon_per_dim=True)

    def _pretrain_front(self, seqs: Sequence[np.ndarray]) -> None:
        """Train the (group) autoencoder on windows of standardised sequences and copy its encoder into the
        front convolution (see ``front_pretrain``)."""
        k, n_channels = int(self.front_kernel), self.n_channels_
        if self.centre:  # the front sees time-centred input: pre-train on what it will see
            seqs = [s - s.mean(0, keepdims=True) for s in seqs]
        n_positions = sum(max(0, s.shape[0] - k + 1) for s in seqs)
        if n_positions < 2:
            raise DetectorError(f"front pre-training needs sequences of at least {k} frames (front_kernel)")
        windows = sample_windows(seqs, k, min(FRONT_WINDOWS, n_positions), seed=int(self.random_state))
        first = np.zeros(n_channels, dtype=bool)  # without front_first_order: the time shift only
        if self.front_first_order is not None:
            index = np.asarray(self.front_first_order)
            if index.dtype == bool:  # a mask would silently be read as the indices 0 and 1
                raise DetectorError("front_first_order: give the first-order channels' indices, not a boolean mask")
            first[index.astype(np.int64)] = True
        weight = float(self.front_group_weight) if self.front_pretrain == "group" else 0.0
        fit = fit_group_autoencoder(
            windows, latent=int(self.front_channels), hidden=FRONT_HIDDEN, group_weight=weight, first_order=first,
            steps=FRONT_STEPS, negative_slope=float(self.negative_slope), seed=int(self.random_state),
        )
        w, b = encoder_as_conv(fit.encoder, n_channels, k)
        with torch.no_grad():
            self.net_.front.weight.copy_(w)
            self.net_.front.bias.copy_(b)
        self.front_pretraining_ = {
            "windows": int(len(windows)), "group_weight": weight,
            "reconstruction_error": fit.reconstruction_error(windows),
        }  # no timing: the record is part of the model's hash, which must not depend on the clock

    def _standardise(self, seqs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [(s - self.mean_) / self.std_ for s in seqs]

    def _split(self, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Stratified (train, validation) indices; validation empty when too few clips."""
        idx = np.arange(len(y))
        if not self.validation_fraction:
            return idx, idx[:0]
        val: list[int] = []
        for c in (0, 1):
            members = rng.permutation(idx[y == c])
            k = int(round(self.validation_fraction * len(members)))
            if k < MIN_VALIDATION_PER_CLASS or len(members) - k < 2:
                return idx, idx[:0]
            val.extend(members[:k].tolist())
        val_idx = np.sort(np.array(val))
        return np.setdiff1d(idx, val_idx), val_idx

    # -- contract ----------------------------------------------------------------------------------
    def fit(
        self,
        sequences: Sequence[np.ndarray],
        labels: Sequence[int],
        unlabeled: Sequence[np.ndarray] | None = None,
    ) -> "InversionDetector":
        """Train on labelled sequences and, when the loss uses them, unlabeled ones.

        Parameters
        ----------
        sequences : sequence of ndarray, each (n_frames, n_channels)
        labels : sequence of int (0 no bird, 1 bird)
        unlabeled : sequence of ndarray, optional
            Used by the entropy and reconstruction terms.

        Returns
        -------
        self
        """
        if self.ortho_variant not in ORTHO_VARIANTS:
            raise DetectorError(f"ortho_variant must be one of {ORTHO_VARIANTS}, got {self.ortho_variant!r}")
        if self.front_pretrain not in FRONT_PRETRAIN:
            raise DetectorError(f"front_pretrain must be one of {FRONT_PRETRAIN}, got {self.front_pretrain!r}")
        seqs = check_sequences(sequences)
        y = check_labels(labels, len(seqs))
        n_channels = seqs[0].shape[1]
        weights = self.loss_weights()
        use_unlab = unlabeled is not None and len(unlabeled) > 0 and bool(weights.entropy or any(weights.recon))
        unlab = check_sequences(unlabeled, n_channels, name="unlabeled") if use_unlab else []

        rng = np.random.default_rng(self.random_state)
        tr, va = self._split(y, rng)
        # Per-band standardisation from every training frame (unlabeled clips carry no label, only statistics).
        frames = np.concatenate([seqs[i] for i in tr] + list(unlab), axis=0).astype(np.float64)
        self.mean_ = frames.mean(0).astype(np.float32)
        self.std_ = np.maximum(frames.std(0), 1e-6).astype(np.float32)
        del frames
        xs = self._standardise(seqs)
        us = self._standardise(unlab)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.random_state))
            self.net_ = self._build_net(n_channels)  # initialised on the CPU: the same weights on any device
        self.adaptations_: list[dict[str, Any]] = []  # a new network: fine-tuned on nothing yet
        self.front_pretraining_: dict[str, Any] | None = None
        if self.net_.front is not None and self.front_pretrain != "none":
            self._pretrain_front([xs[i] for i in tr] + list(us))
        bl, bu = int(self.batch_labelled), int(self.batch_unlabelled) if use_unlab else 0
        steps = self.steps_per_epoch or max(
            math.ceil(len(tr) / bl), math.ceil(len(us) / bu) if use_unlab else 0
        )
        self._train(
            xs, y, tr, va, us, rng, weights=weights, lr=float(self.lr), epochs=int(self.max_epochs), batch=(bl, bu),
            steps=int(steps), warmup_epochs=int(self.warmup_epochs), desc="train",
        )
        return self

    def fine_tune(
        self,
        sequences: Sequence[np.ndarray],
        labels: Sequence[int],
        unlabeled: Sequence[np.ndarray],
        *,
        epochs: int = 5,
        labelled_share: float = 0.5,
        lr: float | None = None,
        batch_size: int | None = None,
        steps_per_epoch: int | None = None,
        random_state: int | None = None,
        balance: float = 1.0,
    ) -> InversionDetector:
        """Continue training the fitted network on unlabeled clips of a new domain (domain adaptation).

        The learned weights, the standardisation statistics and the architecture are kept; the inversion loss
        goes on from there with every batch holding ``labelled_share`` labelled clips (cross-entropy and
        reconstruction: they anchor the classes) and the rest unlabeled ones (entropy and reconstruction).
        No validation split and no entropy warm-up: the labelled clips come from another domain than the one
        adapted to, so their AUC cannot choose an epoch, and the network is not a random initialisation.

        Parameters
        ----------
        sequences, labels
            Labelled sequences (the anchor), both classes present.
        unlabeled : sequence of ndarray
            Sequences of the new domain.
        epochs : int
            Passes over the unlabeled sequences.
        labelled_share : float
            Share of each batch taken by labelled sequences, in (0, 1) (see :func:`batch_split`).
        lr : float, optional
            Step size; default ``FINE_TUNE_LR_FACTOR * lr``.
        batch_size : int, optional
            Items per batch; default ``batch_labelled + batch_unlabelled``.
        steps_per_epoch : int, optional
            Default: one pass over the unlabeled sequences.
        random_state : int, optional
            Seeds the batch order; default the detector's ``random_state``.
        balance : float
            Weight (relative to the entropy term's) of minus the entropy of the unlabeled items' mean prediction
            (information maximisation). Without it the entropy term is minimised by calling every clip of the
            new domain one class, which the labelled clips cannot prevent (the network tells the domains apart);
            0 switches it off. It assumes the new domain holds both classes.

        Returns
        -------
        self
            With ``adaptations_`` extended by a record of this run (saved with the model).

        Raises
        ------
        DetectorError
            When the detector is not fitted, its loss ignores unlabeled clips, or an argument is out of range.
        """
        if not hasattr(self, "net_"):
            raise DetectorError("this InversionDetector is not fitted yet; fit it before fine-tuning")
        if int(epochs) < 1:
            raise DetectorError(f"epochs must be >= 1, got {epochs}")
        weights = self.loss_weights(self.net_.n_layers, self.net_.n_classes)
        if not (weights.entropy or any(weights.recon)):
            raise DetectorError(
                "this detector's loss ignores unlabeled clips (entropy_weight=0 and recon_scale=0): nothing to adapt with"
            )
        seqs = check_sequences(sequences, self.n_channels_)
        y = check_labels(labels, len(seqs))
        unlab = check_sequences(unlabeled, self.n_channels_, name="unlabeled")
        bl, bu = batch_split(int(batch_size or (int(self.batch_labelled) + int(self.batch_unlabelled))), labelled_share)
        lr = FINE_TUNE_LR_FACTOR * float(self.lr) if lr is None else float(lr)
        if not lr > 0:
            raise DetectorError(f"lr must be > 0, got {lr}")
        seed = int(self.random_state if random_state is None else random_state)
        rng = np.random.default_rng(seed)
        steps = int(steps_per_epoch or math.ceil(len(unlab) / bu))
        # The fitted statistics, not the new domain's: the network's weights were learned on this scale.
        xs, us = self._standardise(seqs), self._standardise(unlab)
        every = np.arange(len(y))
        self._train(xs, y, every, every[:0], us, rng, weights=weights, lr=lr, epochs=int(epochs), batch=(bl, bu),
                    steps=steps, warmup_epochs=0, desc="adapt", balance=float(balance))
        record = {"epochs": int(epochs), "labelled_share": bl / (bl + bu), "batch": [bl, bu], "lr": lr,
                  "steps_per_epoch": steps, "n_labelled": len(y), "n_unlabeled": len(us), "random_state": seed,
                  "balance": float(balance)}
        self.adaptations_ = [*getattr(self, "adaptations_", []), record]
        return self

    def _train(
        self,
        xs: Sequence[np.ndarray],
        y: np.ndarray,
        tr: np.ndarray,
        va: np.ndarray,
        us: Sequence[np.ndarray],
        rng: np.random.Generator,
        *,
        weights: LossWeights,
        lr: float,
        epochs: int,
        batch: tuple[int, int],
        steps: int,
        warmup_epochs: int,
        desc: str,
        balance: float = 0.0,
    ) -> None:
        """The training loop of ``fit`` and ``fine_tune``, on ``self.net_`` as it is (standardised inputs).

        Each step takes ``batch[0]`` labelled items of ``tr`` and ``batch[1]`` unlabeled ones of ``us``; with
        validation indices ``va``, the best epoch's weights are kept (early stopping after ``patience``).
        """
        bl, bu = batch
        use_unlab = bu > 0 and len(us) > 0
        use_recon = any(weights.recon)
        dev = torch.device(self.device)
        net = self.net_.to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=self.weight_decay)
        lab_order = _Cycler(tr, rng)
        unl_order = _Cycler(np.arange(len(us)), rng) if use_unlab else None

        from tqdm import tqdm

        self.history_: list[dict[str, float]] = []
        best_key, best_state, best_epoch, stale = None, None, -1, 0
        bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not self.verbose, leave=False)
        for epoch in bar:
            net.train()
            ramp = min(1.0, epoch / warmup_epochs) if warmup_epochs else 1.0
            sums = {"total": 0.0, "ce": 0.0, "entropy": 0.0, "recon": 0.0}
            t0 = time.perf_counter()
            for _ in range(steps):
                li = lab_order.take(bl)
                batch_items = [xs[i] for i in li]
                if use_unlab:
                    batch_items += [us[i] for i in unl_order.take(bu)]
                x, lengths = _pad_batch(batch_items, dev)
                target = torch.from_numpy(y[li]).to(dev)
                if use_recon:
                    zs, Rs, lens = layer_reconstructions(net, x, lengths, create_graph=True)
                else:
                    zs, lens = net.representations(x, lengths, return_lengths=True)
                    Rs = []
                terms = inversion_loss(
                    zs, Rs, lens, target, weights, entropy_ramp=ramp, detach_target=self.detach_target
                )
                if balance and use_unlab:
                    # minus the entropy of the unlabeled items' mean prediction: confident items, not one class
                    mean_p = torch.softmax(zs[-1][bl:], dim=1).mean(0)
                    terms["balance"] = -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()
                    terms["total"] = terms["total"] - balance * weights.entropy * terms["balance"]
                if self.ortho_penalty:
                    pen = (
                        weight_ortho_penalty(net.layers[-1].weight)
                        if self.ortho_variant == "weights"
                        else template_ortho_penalty(lambda u: net(u, lengths), x)
                    )
                    terms["ortho"] = pen
                    terms["total"] = terms["total"] + float(self.ortho_penalty) * pen
                opt.zero_grad(set_to_none=True)
                terms["total"].backward()
                opt.step()
                for k in sums:
                    sums[k] += float(terms[k].detach()) / steps
            rec = {"epoch": epoch, **sums, "seconds": time.perf_counter() - t0}
            if len(va):
                p = self._proba_standardised([xs[i] for i in va])
                rec["val_auc"] = _auc(y[va], p)
                eps = 1e-7
                rec["val_ce"] = float(-np.mean(y[va] * np.log(p + eps) + (1 - y[va]) * np.log(1 - p + eps)))
                key = (rec["val_auc"], rec["val_ce"])
                if best_key is None or _better(key, best_key):
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
                    best_key, best_epoch, stale = key, epoch, 0
                else:
                    stale += 1
            self.history_.append(rec)
            bar.set_postfix(
                {k: f"{v:.3g}" for k, v in rec.items() if k in ("ce", "entropy", "recon", "val_auc")}
            )
            if len(va) and stale >= self.patience:
                break
        net.to("cpu")  # the learned state lives on the CPU (saving, hashing, the analyses read it there)
        if best_state is not None:
            net.load_state_dict(best_state)
        self.best_epoch_ = best_epoch if best_state is not None else len(self.history_) - 1
        self.validation_auc_ = float(best_key[0]) if best_key is not None else None
        self.n_validation_ = int(len(va))
        net.eval()

    @torch.no_grad()
    def _proba_standardised(self, xs: Sequence[np.ndarray], batch: int = 64) -> np.ndarray:
        """Probabilities of standardised sequences, computed where the network is (fit's device, or the
        one ``predict_proba`` placed it on), returned on the CPU."""
        net = self.net_
        dev = next(net.parameters()).device
        was_training = net.training
        net.eval()
        order = np.argsort([s.shape[0] for s in xs], kind="stable")  # similar lengths share a batch
        out = np.empty(len(xs), dtype=np.float64)
        for a in range(0, len(xs), batch):
            idx = order[a : a + batch]
            x, lengths = _pad_batch([xs[i] for i in idx], dev)
            out[idx] = torch.softmax(net(x, lengths).double(), dim=1)[:, 1].cpu().numpy()
        net.train(was_training)
        return out

    def predict_proba(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Probability of bird for each sequence, shape (n,), computed on ``self.device``."""
        if not hasattr(self, "net_"):
            raise DetectorError("this InversionDetector is not fitted yet; call fit first")
        seqs = check_sequences(sequences, self.n_channels_)
        with _placed(self.net_, torch.device(self.device)):
            return self._proba_standardised(self._standardise(seqs))

    @property
    def n_channels_(self) -> int:
        return int(self.mean_.shape[0])

    def _get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"net.{k}": v for k, v in self.net_.state_dict().items()}
        tensors["mean"] = torch.from_numpy(self.mean_)
        tensors["std"] = torch.from_numpy(self.std_)
        extra: dict[str, Any] = {"n_channels": self.n_channels_, "best_epoch": int(getattr(self, "best_epoch_", -1))}
        if getattr(self, "validation_auc_", None) is not None:  # only then: a model saved without it keeps its hash
            extra.update(validation_auc=float(self.validation_auc_), n_validation=int(self.n_validation_))
        if getattr(self, "adaptations_", None):  # likewise: only an adapted model carries its record
            extra["adaptations"] = list(self.adaptations_)
        if getattr(self, "front_pretraining_", None):  # and only a pre-trained front its record
            extra["front_pretraining"] = dict(self.front_pretraining_)
        return tensors, extra

    def _set_state(self, tensors: Mapping[str, torch.Tensor], extra: Mapping[str, Any]) -> None:
        self.mean_ = tensors["mean"].numpy().astype(np.float32)
        self.std_ = tensors["std"].numpy().astype(np.float32)
        self.net_ = self._build_net(int(extra["n_channels"]))
        self.net_.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        self.net_.eval()
        self.best_epoch_ = int(extra.get("best_epoch", -1))
        auc = extra.get("validation_auc")  # absent from models saved before it was recorded
        self.validation_auc_ = None if auc is None else float(auc)
        self.n_validation_ = int(extra.get("n_validation", 0))
        self.adaptations_ = list(extra.get("adaptations", []))
        self.front_pretraining_ = extra.get("front_pretraining")


def _same_default(value: Any, default: Any) -> bool:
    """A hyperparameter equals its default (None only as None; 1 and 1.0 alike; lists and tuples alike)."""
    if default is None or value is None:
        return value is None and default is None
    if isinstance(default, str) or isinstance(value, str):
        return value == default
    try:
        return bool(np.array_equal(np.asarray(value), np.asarray(default)))
    except (TypeError, ValueError):
        return False


def _better(new: tuple[float, float], best: tuple[float, float]) -> bool:
    """Validation (AUC, CE) improves: a higher AUC, or the same AUC with a CE lower by more than 1 %."""
    if new[0] > best[0] + 1e-9:
        return True
    return new[0] >= best[0] - 1e-9 and new[1] < 0.99 * best[1]


class _Cycler:
    """Endless shuffled passes over indices; ``take(k)`` returns the next k (reshuffled at each pass)."""

    def __init__(self, indices: np.ndarray, rng: np.random.Generator) -> None:
        self.indices = np.asarray(indices)
        self.rng = rng
        self.queue = np.zeros(0, dtype=np.int64)

    def take(self, k: int) -> np.ndarray:
        while self.queue.size < k:
            self.queue = np.concatenate([self.queue, self.rng.permutation(self.indices)])
        out, self.queue = self.queue[:k], self.queue[k:]
        return out
