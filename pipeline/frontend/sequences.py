"""Scattergrams to coarse sequences: frames average-pooled to a fixed step.

A detector that works on coarse sequences (the RNTK) sees a clip as a sequence of ``steps x channels``:
the scattering frames (23 ms apart with the default configuration) are averaged over bins of
``FeatureConfig.pool_s`` seconds, so a 10 s clip at ``pool_s = 0.25`` is a sequence of 40 steps.
Per-clip standardisation is offered here; the per-channel statistics a detector learns over a training set
live with the detectors, in :mod:`scatterbird.models.standardize`.
"""

from __future__ import annotations

import numpy as np

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.models.standardize import STD_FLOOR
from scatterbird.pipeline.frontend.scattering import Scattergram


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
