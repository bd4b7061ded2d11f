"""Per-channel standardisation of sequences: statistics learned over a training set, applied to any sequence.

A kernel detector (the RNTK) takes raw dot products of the steps of a sequence, so every channel must be on
a comparable scale: :func:`fit_channel_stats` learns a mean and standard deviation per channel over all steps
of a training set, and :func:`standardize` applies them. The statistics travel with the model, so training
and detection scale features identically. Pure functions of arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Standard deviations below this are treated as this (a constant channel must not divide by zero).
STD_FLOOR = 1e-6


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and standard deviation over the steps of a training set.

    Attributes
    ----------
    mean, std : ndarray, float64, shape (n_channels,)
        ``std`` is floored at :data:`STD_FLOOR`.
    """

    mean: np.ndarray
    std: np.ndarray

    @property
    def n_channels(self) -> int:
        return int(self.mean.shape[0])


def fit_channel_stats(sequences: Sequence[np.ndarray]) -> ChannelStats:
    """Mean and standard deviation of each channel over every step of every sequence.

    Each step counts once, so long clips weigh more than short ones, as they do in the kernel's sums.

    Parameters
    ----------
    sequences : sequence of ndarray, each (n_steps, n_channels)

    Returns
    -------
    ChannelStats
    """
    if len(sequences) == 0:
        raise ValueError("no sequences to fit channel statistics on")
    n_ch = {np.shape(s)[1] if np.ndim(s) == 2 else None for s in sequences}
    if len(n_ch) != 1 or None in n_ch:
        raise ValueError(
            f"sequences must all be (n_steps, n_channels) with one channel count, got {sorted(map(str, n_ch))}"
        )
    # Two passes in float64 (sum, then squared deviations): no catastrophic cancellation on log features.
    count = sum(int(np.shape(s)[0]) for s in sequences)
    if count == 0:
        raise ValueError("sequences hold no steps")
    mean = sum(np.asarray(s, np.float64).sum(axis=0) for s in sequences) / count
    var = sum(((np.asarray(s, np.float64) - mean) ** 2).sum(axis=0) for s in sequences) / count
    return ChannelStats(mean=mean, std=np.maximum(np.sqrt(var), STD_FLOOR))


def standardize(seq: np.ndarray, stats: ChannelStats, dtype: type = np.float64) -> np.ndarray:
    """``(seq - mean) / std`` per channel.

    Parameters
    ----------
    seq : ndarray, shape (n_steps, n_channels)
    stats : ChannelStats
    dtype : numpy dtype
        Of the result.

    Returns
    -------
    ndarray, shape (n_steps, n_channels)
    """
    seq = np.asarray(seq)
    if seq.ndim != 2 or seq.shape[1] != stats.n_channels:
        raise ValueError(f"expected (n_steps, {stats.n_channels}) for these statistics, got {seq.shape}")
    return ((seq.astype(np.float64) - stats.mean) / stats.std).astype(dtype, copy=False)
