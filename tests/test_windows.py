"""Windows over a scattergram stream: the plan, the streamed frames, pooling, events, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.detect.windows import (
    WindowSpec,
    events_from_windows,
    frame_range,
    iter_windows,
    plan_windows,
    pool_frames,
    pool_sequence,
)
from scatterbird.pipeline.frontend.scattering import Scattergram, Scattering

FAST = FeatureConfig(J=6, Q1=4, max_order=1, sample_rate=8000, threshold="none")


# -- the plan -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, w, h, expected",
    [
        (23, 10, 5, [(0, 10), (5, 15), (10, 20), (13, 23)]),  # end-aligned last window
        (20, 10, 5, [(0, 10), (5, 15), (10, 20)]),  # grid reaches the end: no extra window
        (21, 10, 5, [(0, 10), (5, 15), (10, 20), (11, 21)]),  # 1 sample of tail still scored
        (10, 10, 5, [(0, 10)]),  # exactly one window
        (7, 10, 5, [(0, 7)]),  # shorter than a window: one window as long as the file
        (25, 10, 10, [(0, 10), (10, 20), (15, 25)]),  # hop == window
        (12, 4, 3, [(0, 4), (3, 7), (6, 10), (8, 12)]),
    ],
)
def test_plan_windows_known_answers(n, w, h, expected):
    assert plan_windows(n, 1, WindowSpec(w, h)) == expected


@pytest.mark.parametrize("n", [1, 2, 9, 10, 11, 14, 15, 16, 99, 100, 101, 1234])
@pytest.mark.parametrize("w, h", [(10, 5), (10, 10), (10, 3), (7, 1)])
def test_windows_cover_the_recording_exactly(n, w, h):
    plan = plan_windows(n, 1, WindowSpec(w, h))
    assert plan[0][0] == 0 and plan[-1][1] == n
    for (a0, b0), (a1, b1) in zip(plan, plan[1:]):
        assert a0 < a1 <= b0  # increasing, no gap
    assert all(0 <= a < b <= n and b - a == min(w, n) for a, b in plan)
    assert len(set(plan)) == len(plan)


def test_window_spec_rejects_gaps_and_nonsense():
    with pytest.raises(ValueError, match="must not exceed the window"):
        WindowSpec(5, 6)
    with pytest.raises(ValueError, match="window must be > 0"):
        WindowSpec(0, 1)
    with pytest.raises(ValueError, match="hop must be > 0"):
        WindowSpec(1, -1)
    assert WindowSpec(10, 5).samples(22050) == (220500, 110250)


def test_frame_range_takes_frames_centred_in_the_window():
    # frames every 4 samples, centred on 0, 4, 8, ...: [5, 13) holds the frames centred on 8 and 12
    assert frame_range(5, 13, 4) == (2, 4)
    assert frame_range(0, 4, 4) == (0, 1)
    assert frame_range(4, 9, 4) == (1, 3)


# -- streamed windows ---------------------------------------------------------------------------------
def _fake_chunks(n_frames: int, n_channels: int, sizes):
    """Scattergram chunks whose value at (channel c, frame i) is i + 1000 c: slices are checkable exactly."""
    start = 0
    for size in sizes:
        size = min(size, n_frames - start)
        if size <= 0:
            break
        i = np.arange(start, start + size, dtype=np.float32)
        S = i[None, :] + 1000 * np.arange(n_channels, dtype=np.float32)[:, None]
        yield Scattergram(S, FAST.frame_rate, start / FAST.frame_rate, np.zeros(n_channels), np.zeros(n_channels),
                          np.zeros(n_channels), FAST.hash)
        start += size


@pytest.mark.parametrize("n_samples", [8000 * 3 + 17, 8000 * 2, 5000, 64 * 10, 64 * 10 + 1])
@pytest.mark.parametrize("chunk", [1, 7, 125, 100000])
def test_iter_windows_gives_the_plan_and_exact_frames(n_samples, chunk):
    spec = WindowSpec(1.0, 0.5)  # 8000 and 4000 samples; frames every 64 samples
    n_frames = -(-n_samples // 64)
    chunks = _fake_chunks(n_frames, 3, [chunk] * (n_frames // chunk + 2))
    wins = list(iter_windows(chunks, FAST, spec, lambda: n_samples))
    assert [(w.start, w.end) for w in wins] == plan_windows(n_samples, 8000, spec)
    for w in wins:
        f0, f1 = frame_range(w.start, w.end, 64)
        expected = np.arange(f0, f1, dtype=np.float32)[:, None] + 1000 * np.arange(3, dtype=np.float32)
        np.testing.assert_array_equal(w.frames, expected)
        assert w.start_s == w.start / 8000 and w.end_s == w.end / 8000


def test_iter_windows_checks_the_frame_count():
    with pytest.raises(ValueError, match="frames received"):
        list(iter_windows(_fake_chunks(100, 2, [100]), FAST, WindowSpec(0.1, 0.1), lambda: 64 * 200))


def test_iter_windows_rejects_a_window_shorter_than_a_frame():
    with pytest.raises(ValueError, match="shorter than one feature frame"):
        list(iter_windows(_fake_chunks(10, 2, [10]), FAST, WindowSpec(0.001, 0.001), lambda: 640))


def test_streamed_windows_equal_windows_of_the_whole_signal():
    # A real signal through the real streaming front end, cut in several FFT chunks.
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(8000 * 9 + 333)).astype(np.float32)
    sc = Scattering(FAST, fft_size=2**14)
    whole = sc.whole(x).S
    blocks = [x[i : i + 3000] for i in range(0, x.size, 3000)]
    spec = WindowSpec(2.0, 1.5)
    wins = list(iter_windows(sc.stream(blocks), FAST, spec, lambda: x.size))
    assert [(w.start, w.end) for w in wins] == plan_windows(x.size, 8000, spec)
    for w in wins:
        f0, f1 = frame_range(w.start, w.end, FAST.hop_samples)
        np.testing.assert_allclose(w.frames, whole[:, f0:f1].T, atol=2e-4)


def test_long_stream_memory_is_bounded():
    # Two hours of frames (900,000 frames x 8 channels = 29 MB if held) through 1 s windows: only about a
    # window plus a chunk is ever held.
    n_frames = 2 * 3600 * 125
    n_samples = n_frames * 64
    spec = WindowSpec(1.0, 1.0)
    tracemalloc.start()
    try:
        count = 0
        for w in iter_windows(_fake_chunks(n_frames, 8, [2000] * (n_frames // 2000 + 1)), FAST, spec,
                              lambda: n_samples):
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(plan_windows(n_samples, 8000, spec)) == 7200
    assert peak < 2_000_000, f"peak {peak} bytes"


# -- pooling ------------------------------------------------------------------------------------------
def test_pool_sequence_averages_to_the_step():
    seq = np.arange(8.0, dtype=np.float32)[:, None] * np.array([1.0, 10.0], dtype=np.float32)
    np.testing.assert_array_equal(pool_sequence(seq, 4.0, 1.0), [[1.5, 15.0], [5.5, 55.0]])
    assert pool_sequence(seq, 4.0, 0.0) is seq


def test_windows_are_pooled_when_the_config_asks():
    cfg = FAST.replace(pool_s=0.25)  # 125 frames/s: 31.25 frames per step
    n_samples = 8000 * 3
    spec = WindowSpec(2.0, 1.0)
    wins = list(iter_windows(_fake_chunks(n_samples // 64, 2, [100] * 10), cfg, spec, lambda: n_samples))
    assert all(w.frames.shape == (8, 2) for w in wins)  # 2 s / 0.25 s
    f0, f1 = frame_range(wins[1].start, wins[1].end, 64)
    first_step = np.arange(f0, f0 + 32, dtype=np.float64).mean()  # frames 0..31.25 -> 32 frames
    assert wins[1].frames[0, 0] == pytest.approx(first_step)


# -- events -------------------------------------------------------------------------------------------
def test_events_merge_consecutive_windows_at_or_above_threshold():
    w = np.array([[0, 10, 0.2], [5, 15, 0.5], [10, 20, 0.9], [15, 25, 0.49], [20, 30, 0.7], [25, 35, 0.8]])
    ev = events_from_windows(w, 0.5)
    np.testing.assert_array_equal(ev, [[5, 20, 0.9, 15], [20, 35, 0.8, 30]])
    assert events_from_windows(w, 0.95).shape == (0, 4)
    np.testing.assert_array_equal(events_from_windows(w, 0.0), [[0, 35, 0.9, 15]])
    assert events_from_windows(np.zeros((0, 3)), 0.5).shape == (0, 4)


# -- pooling frames to coarse steps ---------------------------------------------------------------------
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
    seq = pool_frames(S, cfg.frame_rate, cfg.pool_s)
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
