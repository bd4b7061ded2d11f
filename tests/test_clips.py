"""pipeline/frontend/clips.py: clips scattered in batches equal Scattering.whole clip by clip, really in
batches, in the order given."""

from __future__ import annotations

import numpy as np
import pytest

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.clips import buffer_length, scatter_clips
from scatterbird.pipeline.frontend.scattering import Scattering


def birdish(n: int, sr: int, seed: int) -> np.ndarray:
    """Noise plus a chirp: energy in many channels, different in every clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f = rng.uniform(0.05, 0.35) * sr
    x = 0.05 * rng.standard_normal(n) + np.exp(-((t - t.mean()) ** 2) / 0.02) * np.sin(2 * np.pi * f * t)
    return x.astype(np.float32)


def whole_length(sc: Scattering, n: int) -> int:
    """The buffer `whole` transforms for a clip of n samples."""
    return 2 * sc.margin + sc.n_frames(n) * sc.hop


def frames_where_buffers_agree(sc: Scattering, start: int) -> int:
    """The first frame count >= start whose clip's buffer is exactly `whole`'s: clips of that length build one
    filter bank for both computations (banks take seconds), and other lengths test the zero padding."""
    nf = start
    while buffer_length(sc, nf * sc.hop) != whole_length(sc, nf * sc.hop):
        nf += 1
    return nf


@pytest.mark.parametrize("threshold", ["none", "risk"])
@pytest.mark.parametrize("grid", ["kymatio", "bandwidth"])
def test_batched_clips_equal_whole_clip_by_clip(threshold, grid, monkeypatch):
    # a small bank at a low rate: the buffers' lengths, set by the margins, set the time; "risk" at 8 kHz, where
    # the noise level of every band is well above the float32 rounding of the FFTs (see below)
    rate = 4000 if threshold == "none" else 8000
    config = FeatureConfig(sample_rate=rate, J=6, Q1=4, Q2=1, threshold=threshold, grid=grid)
    sc = Scattering(config)
    hop = sc.hop
    nf = frames_where_buffers_agree(sc, 40)
    n = nf * hop
    budget = 2 * buffer_length(sc, n)  # two clips of length n per call
    long_nf = frames_where_buffers_agree(sc, nf + budget // hop)
    short = next(k for k in range(100, sc.margin, hop) if buffer_length(sc, k) > whole_length(sc, k))
    lengths = [
        n,  # three clips of one buffer length: a batch of two, then one
        n - hop // 3,  # shorter, same frames: right reflect pad longer
        short,  # shorter than the margin (np.pad reflects it repeatedly), zeros after whole's buffer
        n,
        long_nf * hop - 5,  # its buffer alone is over the budget
    ]
    assert buffer_length(sc, lengths[-1]) > budget
    clips = [birdish(k, config.sample_rate, seed) for seed, k in enumerate(lengths)]

    calls = []
    transform = sc._transform_buffer

    def counted(x):
        calls.append(tuple(x.shape))
        return transform(x)

    monkeypatch.setattr(sc, "_transform_buffer", counted)
    got = scatter_clips(sc, clips, max_batch_samples=budget)
    # fewer calls than clips: the three clips of one buffer length in a batch of two and one of one
    base = buffer_length(sc, n)
    expected = [(1, buffer_length(sc, short)), (2, base), (1, base), (1, buffer_length(sc, lengths[-1]))]
    assert sorted(calls) == sorted(expected)
    monkeypatch.undo()
    assert len(got) == len(clips)
    # references longest first: the front end keeps the last two lengths' filter banks, and the batched call
    # ended with the longest buffers (banks take seconds to build)
    for i in sorted(range(len(clips)), key=lambda i: -clips[i].size):
        x, g = clips[i], got[i]
        ref = sc.whole(x)
        assert g.S.shape == ref.S.shape == (sc.n_channels, sc.n_frames(x.size))
        assert g.start_time == ref.start_time == 0 and g.config_hash == config.hash
        np.testing.assert_array_equal(g.order, ref.order)
        # log-domain differences over every frame (ends included), as between streamed and whole: float32
        # rounding (a batched FFT rounds differently from a single one), which thresholding's decision ramp
        # amplifies for a few coefficients of weak bands (see test_thresholding.py)
        d = np.abs(g.S - ref.S)
        if threshold == "none":
            assert d.max() < 2e-4, x.size
        else:
            assert np.mean(d > 2e-4) < 0.005 and d.max() < 1e-3, x.size
    # the order of the results is the order of the clips, not of the batches
    assert not np.allclose(got[0].S, got[3].S)

def test_buffer_lengths_are_multiples_of_align_with_small_factors():
    sc = Scattering(FeatureConfig(sample_rate=8000, J=6, Q1=4, Q2=1, threshold="none"))
    for n in (2, 100, 5000, 5001, 12345, 99999):
        b = buffer_length(sc, n)
        assert b % sc.align == 0 and b >= whole_length(sc, n)
        q = b // sc.align
        for p in (2, 3, 5, 7):
            while q % p == 0:
                q //= p
        assert q == 1
        # the shortest such buffer: every shorter multiple of align that holds the clip has a larger factor
        for shorter in range(-(-whole_length(sc, n) // sc.align), b // sc.align):
            assert max(p for p in range(2, shorter + 1) if shorter % p == 0 and all(p % d for d in range(2, p))) > 7
    assert buffer_length(sc, 5000) == buffer_length(sc, 5001)  # nearby lengths share a buffer (one bank)


def test_bad_signals_are_refused_before_any_work():
    sc = Scattering(FeatureConfig(sample_rate=8000, J=6, Q1=4, Q2=1, threshold="none"))
    with pytest.raises(ValueError, match="clip 1"):
        scatter_clips(sc, [np.zeros(100, np.float32), np.zeros(1, np.float32)])
    with pytest.raises(ValueError, match="clip 0"):
        scatter_clips(sc, [np.zeros((2, 100), np.float32)])
    assert scatter_clips(sc, []) == []


def test_a_recording_longer_than_its_header_said_is_streamed_not_held():
    """read_if_short stops reading at the limit and hands back every block, in order, to be streamed."""
    from scatterbird.pipeline.frontend.clips import read_if_short

    blocks = [np.full(100, i, np.float32) for i in range(5)]
    x, rest = read_if_short(iter(blocks), limit=500)
    assert rest == () and np.array_equal(x, np.concatenate(blocks))
    x, rest = read_if_short(iter(blocks), limit=250)
    assert x is None and np.array_equal(np.concatenate(list(rest)), np.concatenate(blocks))
