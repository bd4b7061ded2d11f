"""Audio-meaningful directions in the detector's input space (log-scattering frames, standardised per
channel), for the rugosity and region-count stages (docs/spline-analyses.md §5(b)1).

An input is ``x`` of shape (channels, frames) in the *network's* space ``x = (log(S + eps) - mean) / std``;
:class:`FeatureSpace` converts to and from the scattering modulus ``S`` so that gain and noise act where they
physically do:

* ``time_shift``: the clip delayed by whole frames (edge frames repeated);
* ``frequency_shift``: every first-order band moved up by whole wavelet bins (1/Q1 octave each); a
  second-order channel follows its first-order band and keeps its modulation frequency; order 0 is kept;
* ``gain``: ``S -> g S`` (a level change of ``db`` decibels);
* ``noise``: ``S -> S + n_c``, a stationary floor ``level_db`` below each channel's median (the approximate
  effect of mixing in steady background noise, since a scattering modulus of a sum is about the sum of
  moduli for incoherent components);
* ``random``: an isotropic Gaussian direction of the same size as a given perturbation (the control).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass
class FeatureSpace:
    """How the network's input relates to scattering moduli.

    Attributes
    ----------
    mean, std : ndarray, (channels,)
        Per-channel standardisation applied to ``log(S + log_eps)``; zeros and ones when the network takes
        raw log-scattering frames.
    log_eps : float
    order, frequency, frequency2 : ndarray, (channels,), optional
        Channel metadata from the :class:`~scatterbird.pipeline.frontend.scattering.Scattergram`; without it the channel axis is
        treated as a frequency axis.
    """

    mean: np.ndarray
    std: np.ndarray
    log_eps: float = 1e-5
    order: np.ndarray | None = None
    frequency: np.ndarray | None = None
    frequency2: np.ndarray | None = None

    @classmethod
    def identity(cls, n_channels: int, log_eps: float = 1e-5) -> "FeatureSpace":
        return cls(np.zeros(n_channels), np.ones(n_channels), log_eps)

    def _col(self, v: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.asarray(v), dtype=x.dtype, device=x.device).reshape(-1, 1)

    def to_modulus(self, x: torch.Tensor) -> torch.Tensor:
        """``S`` (>= 0) from the network input (channels, frames)."""
        raw = x * self._col(self.std, x) + self._col(self.mean, x)
        return (torch.exp(raw) - self.log_eps).clamp_min(0.0)

    def from_modulus(self, S: torch.Tensor) -> torch.Tensor:
        """The network input from ``S``."""
        raw = torch.log(S + self.log_eps)
        return (raw - self._col(self.mean, S)) / self._col(self.std, S)


def time_shift(x: torch.Tensor, frames: int = 1) -> torch.Tensor:
    """Delay by ``frames`` frames (negative: advance) along the last axis, repeating the edge frame."""
    if frames == 0:
        return x.clone()
    n = x.shape[-1]
    idx = (torch.arange(n, device=x.device) - frames).clamp(0, n - 1)
    return x.index_select(-1, idx)


def frequency_shift_index(
    order: np.ndarray | None, frequency: np.ndarray | None, frequency2: np.ndarray | None, n_channels: int, bins: int = 1
) -> np.ndarray:
    """Source channel of every channel for an upward shift of ``bins`` first-order wavelet bins.

    Channel ``i`` takes its values from the channel of the same order and second-order frequency whose
    first-order frequency is ``bins`` steps lower; where there is none (band edges, order 0), from itself.
    Without metadata, channel ``i`` takes channel ``i - bins`` (clamped).
    """
    if order is None or frequency is None:
        return np.clip(np.arange(n_channels) - bins, 0, n_channels - 1)
    order = np.asarray(order)
    f1 = np.asarray(frequency, dtype=np.float64)
    f2 = np.zeros_like(f1) if frequency2 is None else np.asarray(frequency2, dtype=np.float64)
    src = np.arange(n_channels)
    firsts = np.unique(f1[order == 1])  # the first-order frequency grid, ascending
    pos = {float(f): k for k, f in enumerate(firsts)}
    lookup = {(int(o), float(a), float(b)): i for i, (o, a, b) in enumerate(zip(order, f1, f2))}
    for i in range(n_channels):
        if order[i] == 0 or float(f1[i]) not in pos:
            continue
        k = pos[float(f1[i])] - bins
        if 0 <= k < len(firsts):
            src[i] = lookup.get((int(order[i]), float(firsts[k]), float(f2[i])), i)
    return src


def frequency_shift(x: torch.Tensor, space: FeatureSpace | None = None, bins: int = 1) -> torch.Tensor:
    """Move every band up by ``bins`` first-order bins (see :func:`frequency_shift_index`)."""
    n = x.shape[-2]
    meta = (space.order, space.frequency, space.frequency2) if space is not None else (None, None, None)
    src = frequency_shift_index(*meta, n_channels=n, bins=bins)
    if space is None:
        return x.index_select(-2, torch.as_tensor(src, device=x.device))
    # shift the physical level (the log modulus), then re-standardise with the destination channel's stats
    raw = x * space._col(space.std, x) + space._col(space.mean, x)
    moved = raw.index_select(-2, torch.as_tensor(src, device=x.device))
    return (moved - space._col(space.mean, x)) / space._col(space.std, x)


def gain(x: torch.Tensor, space: FeatureSpace, db: float = 1.0) -> torch.Tensor:
    """The clip ``db`` decibels louder: ``S -> 10**(db / 20) S``."""
    return space.from_modulus(space.to_modulus(x) * 10 ** (db / 20))


def noise(x: torch.Tensor, space: FeatureSpace, level_db: float = -20.0) -> torch.Tensor:
    """A stationary floor ``level_db`` below each channel's median modulus added to ``S``."""
    S = space.to_modulus(x)
    return space.from_modulus(S + 10 ** (level_db / 20) * S.median(dim=-1, keepdim=True).values)


def random_direction(x: torch.Tensor, norm: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x + norm * u / ||u||`` with ``u`` isotropic Gaussian."""
    u = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x + norm * u / u.norm()


def audio_directions(
    space: FeatureSpace, *, shift_frames: int = 1, freq_bins: int = 1, gain_db: float = 1.0, noise_db: float = -20.0
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The four audio augmentations as functions of one input (channels, frames)."""
    return {
        "time_shift": lambda x: time_shift(x, shift_frames),
        "frequency_shift": lambda x: frequency_shift(x, space, freq_bins),
        "gain": lambda x: gain(x, space, gain_db),
        "noise": lambda x: noise(x, space, noise_db),
    }
