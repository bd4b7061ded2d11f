"""Tests of models/standardize.py: per-channel statistics over a training set, and standardisation."""

from __future__ import annotations

import numpy as np
import pytest

from scatterbird.models.standardize import STD_FLOOR, ChannelStats, fit_channel_stats, standardize


def test_channel_stats_and_standardize():
    a = np.array([[1.0, 5.0], [3.0, 5.0]])
    b = np.array([[5.0, 5.0]])
    st = fit_channel_stats([a, b])  # each step counts once: channel 0 steps 1, 3, 5
    np.testing.assert_allclose(st.mean, [3.0, 5.0])
    np.testing.assert_allclose(st.std, [np.sqrt(8 / 3), STD_FLOOR])  # constant channel: floored, no division by 0
    z = standardize(a, st)
    np.testing.assert_allclose(z[:, 0], (a[:, 0] - 3.0) / np.sqrt(8 / 3))
    np.testing.assert_allclose(z[:, 1], 0.0)
    assert standardize(a, st, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="2\\)"):
        standardize(np.zeros((3, 4)), st)
    with pytest.raises(ValueError, match="one channel count"):
        fit_channel_stats([a, np.zeros((2, 3))])
    with pytest.raises(ValueError, match="no sequences"):
        fit_channel_stats([])
    assert ChannelStats(np.zeros(4), np.ones(4)).n_channels == 4
