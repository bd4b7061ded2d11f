"""Band-limited Fourier products: ``fold(Y * h, 2**d)`` computed from the few bins where ``h`` lives.

Filtering in Fourier and subsampling by ``2**d`` folds the product to ``T = m / 2**d`` bins (kymatio's
``subsample_fourier``): ``out[j] = 2**-d * sum_a Y[j + a T] h[j + a T]``. A :class:`Band` keeps only the
circular run of bins where ``|h| > BAND_REL * max|h|``, cut into contiguous pieces, and computes the folded
product piece by piece (added where a run wider than the output band folds onto itself); :func:`band` builds
it for a full (``fft``) or a half (``rfft``) spectrum.

Derivation: docs/scattering-grid.md ("Band-limited Fourier products").
"""

from __future__ import annotations

from collections import abc
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

#: Bins with ``|h|`` below this fraction of the filter's peak are dropped.
BAND_REL = 1e-8


@dataclass(frozen=True)
class FilterGroup:
    """First-order filters that share one subsampling factor ``2**k`` (indices into the filter bank)."""

    k: int
    index: tuple[int, ...]


@dataclass
class Band:
    """``fold(Y * h_f, 2**d)`` for filters ``h_f`` of one length ``m``, as products over contiguous pieces.

    Attributes
    ----------
    m, T : int
        Spectrum length and output length.
    half : bool
        Whether the band reads an ``rfft`` half spectrum.
    single : bool
        Built from one 1-D filter: :meth:`apply` has no filter axis.
    segments : list of lists of (int, int, Tensor)
        Per filter, the contiguous pieces ``(src_lo, out_lo, weights)`` of its run: ``weights`` (float32) is
        ``h[bin] / 2**d`` for the spectrum bins ``src_lo ...``, added to the output bins ``out_lo ...``. In a
        half spectrum a negative ``src_lo`` (``-(mirror of the first bin)``) reads conjugated mirror bins, in
        reverse.
    rows : int
        Spectrum bins folded onto one output bin at most (1 where the filter's run fits the output band: no
        aliasing, and the pieces are written rather than added).
    """

    m: int
    T: int
    half: bool
    single: bool
    segments: list[list[tuple[int, int, torch.Tensor]]]
    rows: int = 1

    def to(self, device: torch.device | str) -> "Band":
        """This band with its weights on ``device`` (itself when they are there already)."""
        first = next((w for pieces in self.segments for _, _, w in pieces), None)
        if first is None or first.device == torch.device(device):
            return self
        segments = [[(lo, at, w.to(device)) for lo, at, w in pieces] for pieces in self.segments]
        return Band(self.m, self.T, self.half, self.single, segments, self.rows)

    @property
    def bins(self) -> int:
        """Spectrum bins multiplied per application (every filter's run)."""
        return sum(w.shape[0] for pieces in self.segments for _, _, w in pieces)

    def apply(self, Y: torch.Tensor) -> torch.Tensor:
        """The folded products of spectrum ``Y`` (..., m or m // 2 + 1) with every filter: (..., F, T).

        A band built from one 1-D filter has no filter axis: (..., T).
        """
        want = self.m // 2 + 1 if self.half else self.m
        if Y.shape[-1] != want:
            raise ValueError(f"spectrum of length {Y.shape[-1]}, band built for {want}")
        # only the run's bins are multiplied; the rest of the output band is zero
        F = len(self.segments)
        out = torch.zeros(*Y.shape[:-1], F, self.T, dtype=Y.dtype, device=Y.device)
        for f, pieces in enumerate(self.segments):
            for lo, at, w in pieces:
                L = w.shape[0]
                if lo >= 0:
                    src = Y[..., lo : lo + L]
                else:  # bins above m / 2 of a real signal: conjugates of the mirror bins, in reverse
                    hi = -lo  # the mirror of the piece's first bin
                    src = Y[..., hi - L + 1 : hi + 1].flip(-1).conj()
                if self.rows == 1:  # written in place: no temporary of the band's size
                    torch.mul(src, w, out=out[..., f, at : at + L])
                else:  # pieces of an aliasing run overlap in the output: added
                    out[..., f, at : at + L] += src * w
        return out[..., 0, :] if self.single else out


class FilterStack(abc.Sequence):
    """A bank of ``count`` real Fourier filters of length ``n``, each built when it is read.

    Stands where a ``(count, n)`` float64 array would (``len``, indexing, iteration, ``shape``) without
    holding it: the first-order bank at a 2**17 reference length is ~84 MB, and a filter is cheap to
    rebuild.
    """

    def __init__(self, n: int, count: int, build: Callable[[int], np.ndarray]) -> None:
        self.n, self.count, self._build = int(n), int(count), build

    @property
    def shape(self) -> tuple[int, int]:
        return (self.count, self.n)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if not -self.count <= i < self.count:
            raise IndexError(i)
        return self._build(i % self.count)


def band(filters: np.ndarray, d: int, *, half: bool = False, rel: float = BAND_REL) -> Band:
    """Build the :class:`Band` of real Fourier filters ``filters`` (F, m) (or (m,)) subsampled by ``2**d``.

    Parameters
    ----------
    filters : ndarray, shape (F, m) or (m,), or a sequence of F rows of length m
        Real Fourier responses at ``np.fft.fftfreq(m)``; one 1-D array makes a band without a filter
        axis, applied alike to every row of its input. A sequence (a list, a
        :class:`FilterStack`) is read one row at a time.
    d : int
        log2 subsampling: the output has ``T = m / 2**d`` bins.
    half : bool
        Index an ``rfft`` half spectrum instead of a full one (for real input signals).
    rel : float
        Bins where ``|h| <= rel * max|h|`` are dropped.
    """
    single = not isinstance(filters, abc.Sequence) and np.ndim(filters) == 1
    rows = [filters] if single else filters
    # each row reduced to its run at once: a sequence of rows built on access (a FilterStack) is never
    # held whole, so a band of long filters costs its runs, not F x m float64
    runs: list[tuple[int, np.ndarray]] = []
    m = None
    for row in rows:
        row = np.asarray(row, dtype=np.float64)
        if m is None:
            m = row.size
        elif row.size != m:
            raise ValueError(f"filters of different lengths: {m} and {row.size}")
        start, length = band_run(row, rel)
        runs.append((start, row[np.arange(start, start + length) % m]))
    if m is None:
        raise ValueError("no filters")
    T = m >> int(d)
    if T << int(d) != m:
        raise ValueError(f"length {m} is not a multiple of 2**{d}")
    r = max(-(-vals.size // T) for _, vals in runs)
    segments = []
    for start, vals in runs:
        pieces, i, length = [], 0, vals.size
        while i < length:
            b, at = (start + i) % m, (start + i) % T
            # up to the next wrap of the input or the output (and, in a half spectrum, of its mirror)
            edge = (m // 2 + 1 if b <= m // 2 else m) if half else m
            step = min(length - i, edge - b, T - at)
            w = torch.from_numpy((vals[i : i + step] / 2**d).astype(np.float32))
            # a negative source marks bins read as conjugates of their mirrors: -(m - b) = mirror of b
            pieces.append((-(m - b) if half and b > m // 2 else b, at, w))
            i += step
        segments.append(pieces)
    return Band(m, T, half, single, segments, r)


def band_run(h: np.ndarray, rel: float = BAND_REL) -> tuple[int, int]:
    """``(start, length)`` of the shortest circular run of bins holding every ``|h| > rel * max|h|``."""
    m = h.size
    mag = np.abs(h)
    sel = np.nonzero(mag > rel * mag.max())[0] if mag.max() > 0 else np.array([0])
    # the run is the circle minus its largest gap between consecutive selected bins
    gaps = np.diff(np.concatenate([sel, [sel[0] + m]]))
    g = int(np.argmax(gaps))
    start = int(sel[(g + 1) % sel.size])
    return start, int(m - gaps[g] + 1)
