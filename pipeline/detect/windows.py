"""Cut a stream of scattergram chunks into the windows a detector scores.

A recording of ``n`` samples (at the pipeline rate ``sr``) is covered by windows of ``W`` seconds that start
every ``H`` seconds (``0 < H <= W``). All bounds are whole samples, so they are exact and reproducible.

Window policy
-------------
* Regular windows ``[k*H, k*H + W)`` for every ``k`` whose window ends inside the recording.
* **The last partial window**: when the regular grid stops short of the end (a tail of less than ``H``
  seconds would otherwise go unscored), one more window is added, *aligned to the end*: ``[n - W, n)``.
  It has the full length the detector was trained on (a detector scores a full 10 s window far more reliably
  than a 0.3 s scrap) and overlaps its neighbour by more than usual.
* A recording shorter than ``W`` gets a single window ``[0, n)``, as long as the recording.

So the windows always cover the recording exactly: the first starts at 0, the last ends at the end, each
starts no later than the previous one ends, and none reaches outside the recording.

A frame belongs to a window when its centre lies in the window: frame ``i`` is centred on sample
``i * 2**J`` (see :mod:`scatterbird.pipeline.frontend.scattering`), so window ``[a, b)`` holds frames
``ceil(a / 2**J) <= i < ceil(b / 2**J)``.

Streaming: windows are produced span by span as the scattergram chunks arrive; only the frames of the windows
not yet emitted are kept (about ``W`` seconds plus one chunk), so a 10-hour recording never holds all its
frames. The total length is needed only for the last window, and is asked for once the chunks are exhausted.

Pooling: when the detector's feature configuration has ``pool_s > 0``, each window's frames are averaged to
steps of ``pool_s`` seconds from the window's first frame, by :func:`pool_frames` (the
pooling training uses), so a window is pooled exactly as a training clip of the same length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from scatterbird.errors import OptionError
from scatterbird.pipeline.config import FeatureConfig
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


@dataclass(frozen=True)
class WindowSpec:
    """Window length and hop in seconds, validated.

    Parameters
    ----------
    window_s : float
        Window length in seconds (> 0).
    hop_s : float
        Step between window starts in seconds, ``0 < hop_s <= window_s`` (a larger hop would leave audio
        unscored).
    """

    window_s: float = 10.0
    hop_s: float = 5.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise OptionError(f"window must be > 0 seconds, got {self.window_s}")
        if not (math.isfinite(self.hop_s) and self.hop_s > 0):
            raise OptionError(f"hop must be > 0 seconds, got {self.hop_s}")
        if self.hop_s > self.window_s:
            raise OptionError(
                f"hop ({self.hop_s} s) must not exceed the window ({self.window_s} s): "
                "the audio between windows would never be scored"
            )

    def samples(self, sample_rate: int) -> tuple[int, int]:
        """Window and hop in whole samples at ``sample_rate`` (each at least 1)."""
        return max(1, round(self.window_s * sample_rate)), max(1, round(self.hop_s * sample_rate))


@dataclass
class Window:
    """One scored unit: its bounds and its frame sequence.

    Attributes
    ----------
    start, end : int
        Bounds in samples at the pipeline rate, ``[start, end)``.
    start_s, end_s : float
        The same in seconds.
    frames : ndarray, float32, shape (n_steps, n_channels)
        The window's frames (pooled when the configuration asks for it), as a Detector takes them.
    """

    start: int
    end: int
    start_s: float
    end_s: float
    frames: np.ndarray


def plan_windows(n_samples: int, sample_rate: int, spec: WindowSpec) -> list[tuple[int, int]]:
    """The sample bounds ``[start, end)`` of every window of a recording (the policy in the module notes).

    Parameters
    ----------
    n_samples : int
        Length of the recording at the pipeline rate (>= 1).
    sample_rate : int
        Pipeline sample rate in Hz.
    spec : WindowSpec

    Returns
    -------
    list of (int, int)
        In increasing order of start.

    Examples
    --------
    >>> plan_windows(23, 1, WindowSpec(10, 5))
    [(0, 10), (5, 15), (10, 20), (13, 23)]
    >>> plan_windows(7, 1, WindowSpec(10, 5))
    [(0, 7)]
    """
    if n_samples < 1:
        raise ValueError(f"a recording of {n_samples} samples has no windows")
    w, h = spec.samples(sample_rate)
    if n_samples <= w:
        return [(0, int(n_samples))]
    bounds = [(k * h, k * h + w) for k in range((n_samples - w) // h + 1)]
    if bounds[-1][1] < n_samples:
        bounds.append((n_samples - w, n_samples))
    return bounds


def frame_range(start: int, end: int, frame_hop: int) -> tuple[int, int]:
    """Frames whose centres lie in samples ``[start, end)``: ``ceil(start/hop) <= i < ceil(end/hop)``."""
    return -(-start // frame_hop), -(-end // frame_hop)


def pool_sequence(seq: np.ndarray, frame_rate: float, pool_s: float) -> np.ndarray:
    """Average a (n_frames, n_channels) sequence to steps of ``pool_s`` seconds.

    The pooling is :func:`pool_frames` (the one training and every detector use), taking
    and returning the detector's orientation. ``pool_s <= 0`` returns the sequence unchanged.

    Returns
    -------
    ndarray, float32, shape (n_steps, n_channels)
    """
    if pool_s <= 0:
        return seq
    return pool_frames(np.asarray(seq).T, frame_rate, pool_s)


def iter_windows(
    chunks: Iterable[Scattergram],
    config: FeatureConfig,
    spec: WindowSpec,
    total_samples: Callable[[], int],
) -> Iterator[Window]:
    """Windows of a recording from its scattergram chunks, span by span, in bounded memory.

    Parameters
    ----------
    chunks : iterable of Scattergram
        Consecutive chunks of one recording from frame 0 (e.g. ``Scattering.stream``).
    config : FeatureConfig
        The configuration that made the chunks (frame hop, frame rate, pooling).
    spec : WindowSpec
        Window length and hop.
    total_samples : callable
        Returns the recording's length in samples at the pipeline rate; called once, after the chunks are
        exhausted (e.g. ``lambda: stream.samples_out`` for an :class:`~scatterbird.pipeline.frontend.audio.AudioStream`).

    Yields
    ------
    Window
        In the order of :func:`plan_windows`, with exactly its bounds.

    Raises
    ------
    ValueError
        If the chunks do not match ``total_samples`` (a frame count other than ``ceil(n / 2**J)``).
    """
    sr = config.sample_rate
    fh = config.hop_samples
    w, h = spec.samples(sr)
    if w < fh:
        raise ValueError(
            f"window ({spec.window_s} s) is shorter than one feature frame ({fh / sr:.4f} s); "
            "use a longer window or a smaller J"
        )
    held = np.zeros((0, 0), dtype=np.float32)  # (channels, frames) from frame `held_first` on
    held_first = 0
    received = 0  # frames seen so far
    k = 0  # next regular window

    def take(a: int, b: int) -> Window:
        f0, f1 = frame_range(a, b, fh)
        seq = np.ascontiguousarray(held[:, f0 - held_first : f1 - held_first].T, dtype=np.float32)
        seq = pool_sequence(seq, config.frame_rate, config.pool_s)
        return Window(a, b, a / sr, b / sr, seq)

    for sg in chunks:
        if sg.n_frames == 0:
            continue
        held = sg.S if received == 0 else np.concatenate([held, sg.S], axis=1)
        received += sg.n_frames
        # Window [a, b) is certainly inside the recording once frame ceil(b / fh) exists: that frame's centre,
        # ceil(b / fh) * fh >= b, is a sample of the recording.
        while frame_range(k * h, k * h + w, fh)[1] < received:
            yield take(k * h, k * h + w)
            k += 1
        # Keep the frames of the next regular window and those of a possible end-aligned last window, which
        # starts at n - w > (received - 1) * fh - w.
        keep_from = min(frame_range(k * h, k * h + w, fh)[0], max(0, received - 2 - (-(-w // fh))))
        if keep_from > held_first:
            held = held[:, keep_from - held_first :].copy()  # copy: release the older frames
            held_first = keep_from

    n = int(total_samples())
    if n < 1 or received == 0:
        raise ValueError("the recording produced no samples")
    if received != -(-n // fh):
        raise ValueError(f"{received} frames received for {n} samples; expected {-(-n // fh)}")
    plan = plan_windows(n, sr, spec)
    for a, b in plan[k:]:
        yield take(a, b)


def events_from_windows(windows: np.ndarray, min_conf: float) -> np.ndarray:
    """Merge consecutive windows scoring at least ``min_conf`` into events.

    Parameters
    ----------
    windows : ndarray, shape (n_windows, 3)
        ``start_s, end_s, score`` in time order (as :func:`iter_windows` yields them).
    min_conf : float
        Score threshold, inclusive.

    Returns
    -------
    ndarray, float64, shape (n_events, 4)
        ``start_s`` (first window's start), ``end_s`` (last window's end), ``peak_score`` (the highest
        window score) and ``peak_s`` (the centre of the first window reaching it).

    Examples
    --------
    >>> w = np.array([[0, 10, .2], [5, 15, .8], [10, 20, .9], [15, 25, .1], [20, 30, .7]])
    >>> events_from_windows(w, 0.5).tolist()
    [[5.0, 20.0, 0.9, 15.0], [20.0, 30.0, 0.7, 25.0]]
    """
    w = np.asarray(windows, dtype=np.float64).reshape(-1, 3)
    above = w[:, 2] >= min_conf
    events = []
    i, n = 0, len(w)
    while i < n:
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and above[j + 1]:
            j += 1
        run = w[i : j + 1]
        p = int(np.argmax(run[:, 2]))
        events.append([run[0, 0], run[-1, 1], run[p, 2], 0.5 * (run[p, 0] + run[p, 1])])
        i = j + 1
    return np.array(events, dtype=np.float64).reshape(-1, 4)
