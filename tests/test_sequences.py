"""Tests of pipeline/frontend/sequences.py: pooling scattergram frames to coarse steps."""

from __future__ import annotations

import numpy as np
import pytest

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.scattering import Scattergram
from scatterbird.models.standardize import STD_FLOOR
from scatterbird.pipeline.frontend.sequences import pool_frames, sequence_from_scattergram


def _sg(S: np.ndarray, config: FeatureConfig, frame_rate: float | None = None) -> Scattergram:
    c = S.shape[0]
    return Scattergram(
        S=S.astype(np.float32), frame_rate=frame_rate or config.frame_rate, start_time=0.0,
        order=np.ones(c, int), frequency=np.zeros(c), frequency2=np.zeros(c), config_hash=config.hash,
    )


def test_pool_frames_averages_whole_steps():
    S = np.stack([np.arange(8.0), 10 * np.arange(8.0)])  # 2 channels x 8 frames at 4 frames/s
    out = pool_frames(S, frame_rate=4.0, pool_s=1.0)
    assert out.dtype == np.float32 and out.shape == (2, 2)  # (steps, channels)
    np.testing.assert_array_equal(out, [[1.5, 15.0], [5.5, 55.0]])


def test_pool_frames_non_integer_step_and_remainder():
    # 2.5 frames per step: frames 0,1,2 | 3,4 | 5,6,7 | 8,9 -> bins by floor(i / 2.5)
    S = np.arange(10.0)[None, :]
    np.testing.assert_allclose(pool_frames(S, 1.0, 2.5)[:, 0], [1.0, 3.5, 6.0, 8.5])
    # 11 frames: frame 10 alone would be a step of 1 frame (< half of 2.5): it joins the step before
    S = np.arange(11.0)[None, :]
    np.testing.assert_allclose(pool_frames(S, 1.0, 2.5)[:, 0], [1.0, 3.5, 6.0, 9.0])
    # 12 frames: frames 10, 11 make 2 >= 1.25 frames: a step of their own
    S = np.arange(12.0)[None, :]
    np.testing.assert_allclose(pool_frames(S, 1.0, 2.5)[:, 0], [1.0, 3.5, 6.0, 8.5, 10.5])
    # a sequence shorter than one step is one step
    np.testing.assert_allclose(pool_frames(np.arange(2.0)[None, :], 1.0, 2.5), [[0.5]])


def test_pool_zero_keeps_frames_transposed():
    S = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(pool_frames(S, 43.0, 0.0), S.T)


def test_ten_second_clip_is_forty_steps_at_quarter_second():
    cfg = FeatureConfig(pool_s=0.25)
    n_frames = -(-10 * cfg.sample_rate // cfg.hop_samples)  # 431 frames of 23.2 ms
    S = np.random.default_rng(0).standard_normal((5, n_frames))
    seq = sequence_from_scattergram(_sg(S, cfg), cfg)
    assert seq.shape == (40, 5)
    per = 0.25 * cfg.frame_rate  # 10.77 frames per step; the first step holds frames 0..10
    np.testing.assert_allclose(seq[0], S[:, : int(np.floor(per)) + 1].mean(axis=1), rtol=1e-6)


def test_pool_frames_errors():
    with pytest.raises(ValueError, match="shorter than one frame"):
        pool_frames(np.zeros((2, 10)), frame_rate=43.0, pool_s=0.01)
    with pytest.raises(ValueError, match=r"\(n_channels, n_frames\)"):
        pool_frames(np.zeros((2, 0)), 43.0, 0.25)
    with pytest.raises(ValueError, match=r"\(n_channels, n_frames\)"):
        pool_frames(np.zeros(5), 43.0, 0.25)
    with pytest.raises(ValueError, match="pool_s"):
        pool_frames(np.zeros((2, 5)), 43.0, -1.0)


def test_sequence_from_scattergram_checks_config_and_standardises_per_clip():
    cfg = FeatureConfig(pool_s=0.25)
    S = np.random.default_rng(1).standard_normal((3, 200)) * [[1.0], [5.0], [0.1]] + [[0.0], [3.0], [-2.0]]
    seq = sequence_from_scattergram(_sg(S, cfg), cfg, per_clip_standardize=True)
    np.testing.assert_allclose(seq.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(seq.std(axis=0), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="feature config"):
        sequence_from_scattergram(_sg(S, cfg), cfg.replace(pool_s=0.5))
