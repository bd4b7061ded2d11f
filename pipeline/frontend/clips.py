"""Whole scattergrams of many short clips, scattered together in batches.

Streaming (:meth:`Scattering.stream`) puts every recording through FFT buffers of ``fft_size`` samples,
however short it is: a 10 s clip then costs a whole buffer. :func:`scatter_clips` instead gives each clip
the buffer :meth:`Scattering.whole` gives it (the clip with its margins), rounded up to a length shared by
clips of similar durations, and transforms clips of one length together, along the batch dimension.

Why the results equal ``whole``: a frame depends on the samples within ``margin`` of it only, and the
thresholding's noise blocks are counted from the buffer's first sample, which is where ``whole`` starts its
buffer too; the zeros appended after ``whole``'s right margin are out of every kept frame's reach.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from scatterbird.pipeline.frontend.scattering import Scattergram, Scattering

#: Samples transformed in one batched call (clips x buffer length), unless one clip's buffer alone is longer.
#: Peak memory grows with it; the speed gained by batching levels off well before it
#: (``benchmarks/bench_clips.py``).
MAX_BATCH_SAMPLES = 2**20

#: Factors of the buffer lengths, in units of ``Scattering.align``: FFTs of lengths with large prime factors are
#: slow, and every distinct length builds its own filter banks (seconds each), so clip buffers are rounded up
#: to the next such length (a few percent longer at most, for buffers of tens of units or more).
_SMOOTH_PRIMES = (2, 3, 5, 7)


def _smooth_at_least(q: int) -> int:
    """The smallest integer >= ``q`` with no prime factor outside ``_SMOOTH_PRIMES``."""
    while True:
        r = q
        for p in _SMOOTH_PRIMES:
            while r % p == 0:
                r //= p
        if r == 1:
            return q
        q += 1


def buffer_length(scattering: Scattering, n_samples: int) -> int:
    """Length of the FFT buffer that holds a clip of ``n_samples`` with the margins ``whole`` gives it.

    ``margin`` reflected samples on the left, the clip, and up to ``margin + n_frames * hop`` on the right
    (as :meth:`Scattering.whole`), then zeros up to a multiple of ``align`` whose quotient has small prime
    factors only.
    """
    sc = scattering
    n = 2 * sc.margin + sc.n_frames(n_samples) * sc.hop
    return sc.align * _smooth_at_least(-(-n // sc.align))


def _padded(scattering: Scattering, x: np.ndarray, length: int) -> np.ndarray:
    """``x`` padded exactly as :meth:`Scattering.whole` pads it, then with zeros up to ``length``."""
    sc = scattering
    right = sc.margin + sc.n_frames(x.size) * sc.hop - x.size
    out = np.zeros(length, dtype=np.float32)
    # np.pad's reflect, as in `whole`: it reflects again and again when the clip is shorter than the margin
    core = np.pad(x, (sc.margin, right), mode="reflect")
    out[: core.size] = core
    return out


def scatter_clips(
    scattering: Scattering, signals: Sequence[np.ndarray], *, max_batch_samples: int = MAX_BATCH_SAMPLES
) -> list[Scattergram]:
    """The whole-signal scattergram of each clip (:meth:`Scattering.whole`), computed in batches.

    Clips whose buffers (:func:`buffer_length`) have the same length are transformed together, at most
    ``max_batch_samples`` samples per call; a clip whose buffer alone is longer is transformed alone.

    Parameters
    ----------
    scattering : Scattering
        The front end.
    signals : sequence of ndarray, each shape (n_samples,)
        Mono clips at ``scattering.config.sample_rate``, at least 2 samples each.
    max_batch_samples : int
        Bound on clips x buffer length per transform call: peak memory grows with it.

    Returns
    -------
    list of Scattergram
        One per clip, in the order of ``signals``; each equals ``scattering.whole(signal)`` to float32
        rounding.

    Raises
    ------
    ValueError
        If a signal is not 1-D or has fewer than 2 samples (before any work).
    """
    sc = scattering
    clips = [np.asarray(x, dtype=np.float32) for x in signals]
    for i, x in enumerate(clips):
        if x.ndim != 1 or x.size < 2:
            raise ValueError(f"clip {i}: expected a 1-D signal of at least 2 samples, got shape {x.shape}")
    by_length: dict[int, list[int]] = {}
    for i, x in enumerate(clips):
        by_length.setdefault(buffer_length(sc, x.size), []).append(i)
    out: list[Scattergram | None] = [None] * len(clips)
    lo = sc.margin // sc.hop
    # shortest buffers first, each length's batches one after the other: every length builds its filter
    # banks once (the front end keeps only the last few)
    for n, members in sorted(by_length.items()):
        per_call = max(1, int(max_batch_samples) // n)
        for at in range(0, len(members), per_call):
            batch = members[at : at + per_call]
            x = torch.from_numpy(np.stack([_padded(sc, clips[i], n) for i in batch]))
            S = sc._transform_buffer(x)
            for row, i in enumerate(batch):
                nf = sc.n_frames(clips[i].size)
                out[i] = sc._wrap(sc._log(S[row, :, lo : lo + nf]), 0)
            del x, S
    return out  # type: ignore[return-value]


def read_if_short(
    blocks: Iterable[np.ndarray], limit: int = MAX_BATCH_SAMPLES
) -> tuple[np.ndarray | None, Iterable[np.ndarray]]:
    """Read consecutive mono blocks whole if they hold at most ``limit`` samples.

    Returns ``(signal, ())`` when they do, else ``(None, blocks)``: the blocks read so far chained with the
    rest, to be streamed. Memory is bounded by ``limit`` either way, even when a header promised a short
    file and the audio goes on.
    """
    head: list[np.ndarray] = []
    it = iter(blocks)
    read = 0
    for b in it:
        head.append(np.asarray(b, dtype=np.float32).reshape(-1))
        read += head[-1].size
        if read > limit:
            return None, itertools.chain(head, it)
    return (np.concatenate(head) if head else np.zeros(0, np.float32)), ()


def scatter_recording(
    scattering: Scattering, blocks: Iterable[np.ndarray], expected_samples: int | None = None
) -> Iterator[Scattergram]:
    """The scattergrams of one recording: in one buffer of about its own length when it is short (at most
    ``MAX_BATCH_SAMPLES`` samples, as its header promised and as read), streamed otherwise.

    Both give the frames :meth:`Scattering.stream` gives, to float rounding; the short path costs about the
    recording's own length instead of a whole streaming buffer.
    """
    if expected_samples is not None and expected_samples <= MAX_BATCH_SAMPLES:
        x, blocks = read_if_short(blocks, MAX_BATCH_SAMPLES)
        if x is not None:
            if x.size == 0:
                raise ValueError("empty stream: no samples")
            yield from scatter_clips(scattering, [x])
            return
    yield from scattering.stream(blocks)
