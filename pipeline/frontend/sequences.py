"""Scattergrams to coarse sequences: frames average-pooled to a fixed step, and per-channel standardisation.

A detector that works on coarse sequences (the RNTK) sees a clip as a sequence of ``steps x channels``:
the scattering frames (23 ms apart with the default configuration) are averaged over bins of
``FeatureConfig.pool_s`` seconds, so a 10 s clip at ``pool_s = 0.25`` is a sequence of 40 steps.

The kernel of such a detector takes raw dot products of the steps, so every channel must be on a
comparable scale: :func:`fit_channel_stats` learns a mean and standard deviation per channel over all
steps of a training set, and :func:`standardize` applies them (the fitted statistics travel with the model,
so training and detection scale features identically). Per-clip standardisation is also offered, for
when each clip's absolute level should be ignored.

Everything here is a pure function of arrays: usable by training and by detection, with no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.scattering import Scattergram

#: Standard deviations below this are treated as this (a constant channel must not divide by zero).
STD_FLOOR = 1e-6


def pool_frames(S: np.ndarray, frame_rate: float, pool_s: float) -> np.ndarray:
    """Average-pool frames to a step of ``pool_s`` seconds.

    Frame ``i`` goes to step ``floor(i / (pool_s * frame_rate))``. A final partial step holding fewer than
    half a step's worth of frames is merged into the step before it (a step of one or two edge frames
    would be noisier than the others, and the RNTK's "last" readout weights the last step most).

    Parameters
    ----------
    S : ndarray, shape (n_channels, n_frames)
        Frames, as in :attr:`Scattergram.S`.
    frame_rate : float
        Frames per second.
    pool_s : float
        Step in seconds; 0 keeps the native frames.

    Returns
    -------
    ndarray, float32, shape (n_steps, n_channels)
        about ``round(n_frames / (pool_s * frame_rate))`` steps (at least 1), or ``n_frames`` for ``pool_s = 0``.

    Raises
    ------
    ValueError
        On a non-2-D or empty input, a negative ``pool_s``, or a step shorter than one frame.

    Examples
    --------
    >>> pool_frames(np.arange(8.0)[None, :], frame_rate=4.0, pool_s=1.0)[:, 0]
    array([1.5, 5.5], dtype=float32)
    """
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] == 0 or S.shape[1] == 0:
        raise ValueError(f"expected frames of shape (n_channels, n_frames) with both > 0, got {S.shape}")
    if pool_s < 0:
        raise ValueError(f"pool_s must be >= 0 seconds, got {pool_s}")
    if pool_s == 0:
        return np.ascontiguousarray(S.T, dtype=np.float32)
    per_step = pool_s * frame_rate
    if per_step < 1:
        raise ValueError(
            f"pool_s={pool_s} s is shorter than one frame ({1 / frame_rate:.4f} s at {frame_rate:.3f} frames/s)"
        )
    n = S.shape[1]
    # The small offset keeps a frame that sits exactly on a bin edge (up to rounding) in the later bin.
    step = np.floor(np.arange(n) / per_step + 1e-9).astype(np.int64)
    last = int(step[-1])
    if last > 0 and np.count_nonzero(step == last) < per_step / 2:
        step[step == last] = last - 1
    starts = np.searchsorted(step, np.arange(int(step[-1]) + 1))
    counts = np.diff(np.append(starts, n))
    sums = np.add.reduceat(S.astype(np.float64), starts, axis=1)
    return np.ascontiguousarray((sums / counts).T, dtype=np.float32)


def sequence_from_scattergram(
    sg: Scattergram, config: FeatureConfig, *, per_clip_standardize: bool = False
) -> np.ndarray:
    """The detector sequence of one scattergram: its frames pooled to ``config.pool_s``.

    Parameters
    ----------
    sg : Scattergram
        Log-scattering frames, shape (n_channels, n_frames).
    config : FeatureConfig
        Gives ``pool_s``; its hash must be the scattergram's.
    per_clip_standardize : bool
        Also remove each channel's mean and divide by its standard deviation over this clip's steps.
        This discards the clip's absolute level per channel; the usual choice is to keep it and let the
        detector standardise with training statistics (:func:`fit_channel_stats`).

    Returns
    -------
    ndarray, float32, shape (n_steps, n_channels)
    """
    if sg.config_hash and sg.config_hash != config.hash:
        raise ValueError(
            f"scattergram made with feature config {sg.config_hash}, but the config given has hash {config.hash}"
        )
    seq = pool_frames(sg.S, sg.frame_rate, config.pool_s)
    if per_clip_standardize:
        mu = seq.mean(axis=0, dtype=np.float64)
        sd = np.maximum(seq.std(axis=0, dtype=np.float64), STD_FLOOR)
        seq = ((seq - mu) / sd).astype(np.float32)
    return seq


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
