"""Continuous-wavelet scattering (kymatio's Morlet filter banks and algorithm), streamed chunk by chunk.

:class:`Scattering` computes kymatio's ``scattering1d`` (same filters, same subsampling grid, same channel
order; order 0 averages ``|x|``), with the filters of one subsampling level applied in one batched,
band-limited Fourier product (:mod:`scatterbird.pipeline.frontend.bands`) and the complex first-order
coefficients exposed to the thresholding stage before their modulus.

Contract: a recording of ``n`` samples gives ``ceil(n / 2**J)`` frames, frame ``i`` centred on sample
``i * 2**J``; :meth:`Scattering.stream` gives the frames :meth:`Scattering.whole` gives, to float32
rounding, with memory bounded by the FFT buffer whatever the stream's length.

Derivation (the filters, kymatio's grid, band-limited products, streaming margins): docs/scattering-grid.md.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

# Imported from the 1-D module directly: kymatio's top level (kymatio.numpy / kymatio.torch) pulls in its
# 3-D code, which fails to import with SciPy >= 1.15 (scipy.special.sph_harm was removed).
from kymatio.scattering1d.filter_bank import (
    adaptive_choice_P,
    morlet_1d,
    periodize_filter_fourier,
    scattering_filter_factory,
)
from scipy.fft import ifft as sp_ifft

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.audio import stream_audio
from scatterbird.pipeline.frontend.bands import Band, FilterGroup, FilterStack, band, band_run
from scatterbird.pipeline.frontend.filter_cache import cached, register
from scatterbird.pipeline.frontend.thresholding import ScatteringThresholder

#: kymatio's defaults for the filter bank shape.
_R_PSI = math.sqrt(0.5)
_SIGMA0 = 0.1
_ALPHA = 5.0

#: First-order coefficients transformed together (filters x samples, one batched FFT call): groups of
#: filters sharing a subsampling are split to stay under it. Larger batches save little time, and their
#: coefficients, thresholding statistics and second-order products set the peak memory; smaller ones pay
#: per-call overhead.
_GROUP_SAMPLES = 2**19

#: Tail mass left out of the streaming margin (relative L1 mass of each filter).
_SUPPORT_EPS = 1e-7

#: Bandwidth grid: a wavelet's complex coefficients are taken at the coarsest dyadic rate whose band holds
#: every Fourier bin where the filter is above this fraction of its peak (complex band-pass sampling). The
#: coefficients are still exact samples of the full filter's output (the tails alias, as sampling does);
#: what the rate must hold is the modulus taken of them. See docs/scattering-grid.md for the choice.
BANDWIDTH_REL = 1e-3

#: Bandwidth grid: a second-order wavelet counts as reaching ``xi + GRID_ALPHA * sigma`` (kymatio's own
#: ``alpha``) when the rate of the first-order modulus it filters is chosen. 3 would make the front end ~20 %
#: cheaper and S2 up to ~3 % of a channel's maximum away from kymatio's (docs/scattering-grid.md).
GRID_ALPHA = 5.0

#: A first-order hook receives a list of subsampling groups' complex coefficients (batch, filters, time)
#: with the groups (filters' indices, log2 subsampling), and returns coefficients of the same shapes. The
#: front end calls it once per group (a list of one), to bound memory.
FirstOrderHook = Callable[[list[torch.Tensor], list["FilterGroup"]], list[torch.Tensor]]


@dataclass
class Scattergram:
    """Log-scattering coefficients of a span of audio, with what a reader needs to interpret them.

    Attributes
    ----------
    S : ndarray, float32, shape (n_channels, n_frames)
        ``log(S + log_eps)`` per channel and frame.
    frame_rate : float
        Frames per second.
    start_time : float
        Time in seconds (from the file's start) of the centre of frame 0.
    order : ndarray, int, shape (n_channels,)
        0, 1 or 2.
    frequency : ndarray, float, shape (n_channels,)
        Centre frequency in Hz of the first-order wavelet (0 for the order-0 channel).
    frequency2 : ndarray, float, shape (n_channels,)
        Centre frequency in Hz of the second-order wavelet (0 below order 2).
    config_hash : str
        Hash of the :class:`FeatureConfig` that made it.
    """

    S: np.ndarray
    frame_rate: float
    start_time: float
    order: np.ndarray
    frequency: np.ndarray
    frequency2: np.ndarray
    config_hash: str

    @property
    def n_frames(self) -> int:
        return int(self.S.shape[1])

    @property
    def times(self) -> np.ndarray:
        """Centre time in seconds of each frame."""
        return self.start_time + np.arange(self.n_frames) / self.frame_rate


@dataclass
class _Plan2:
    """Second-order filters ``n2s`` of one first-order group, sharing the subsampling ``2**k2``."""

    k2: int
    n2s: torch.Tensor
    rows: torch.Tensor  # output channel of each (first-order filter, second-order filter) pair (G1, G2)
    psi: Band  # the wavelets on the moduli's half spectra, subsampled by 2**k2
    phi: Band  # the low-pass on the second-order moduli's half spectra, down to the frame rate


@dataclass
class _Bank:
    """Filters for one FFT length, ready to apply (see ``pipeline/frontend/bands.py``)."""

    n: int
    phi0: Band  # order 0: the low-pass of |x|, down to the frame rate
    groups: list[FilterGroup]
    psi1: list[Band]  # per group: the wavelets on the signal's full spectrum, subsampled by 2**k
    phi1: list[Band]  # per group: the low-pass on the moduli's half spectra, down to the frame rate
    plan2: list[list[_Plan2]] = field(default_factory=list)
    channels1: list[torch.Tensor] = field(default_factory=list)  # per group: its first-order output channels

    def to(self, device: torch.device) -> "_Bank":
        """This bank with every tensor on ``device``."""
        return _Bank(
            n=self.n,
            phi0=self.phi0.to(device),
            groups=self.groups,
            psi1=[b.to(device) for b in self.psi1],
            phi1=[b.to(device) for b in self.phi1],
            plan2=[
                [_Plan2(p.k2, p.n2s.to(device), p.rows.to(device), p.psi.to(device), p.phi.to(device)) for p in plans]
                for plans in self.plan2
            ],
            channels1=[c.to(device) for c in self.channels1],
        )


register(_Bank, _Plan2)  # stored in the on-disk filter cache (pipeline/frontend/filter_cache.py)

#: exp(-x) is exactly 0.0 in float64 for x > 745.2: Gaussian samples beyond it need not be evaluated.
_EXP_ZERO = 746.0


def morlet_fourier(n: int, xi: float | None, sigma: float) -> np.ndarray:
    """kymatio's ``morlet_1d(n, xi, sigma)`` (``gauss_1d`` when ``xi`` is None), bit for bit, faster.

    kymatio evaluates its two Gaussians on ``(2P - 1) n`` frequencies (``P`` up to 5) and periodises them
    (the mean of the ``2P - 1`` periods); all but a few thousand of those samples underflow to exactly 0.0.
    Only the others are evaluated here, with the same expressions, and added period by period in the order
    of numpy's reduction (adding an exact 0.0 changes nothing), so the result is identical without the
    ``(2P - 1) n`` grid (~110 MB of temporaries at ``n = 2**19``). See docs/scattering-grid.md.
    """
    P = min(adaptive_choice_P(sigma), 5)
    if P == 1:  # kymatio's other frequency grid; never reached for its banks (P >= 2 for any sigma > 0)
        return morlet_1d(n, xi, sigma)
    periods = 2 * P - 1
    first = (1 - P) * n  # kymatio's grid: freqs[i] = float(first + i) / float(n), i < periods * n
    half = math.sqrt(2 * sigma**2 * _EXP_ZERO)

    def gaussian(centre: float) -> np.ndarray:
        # grid indices whose samples do not underflow: first + i within centre -/+ half (times n), widened
        # by one, then trimmed exactly as the searchsorted on the full grid would
        lo = max(int(math.floor((centre - half) * n)) - 1 - first, 0)
        hi = min(int(math.ceil((centre + half) * n)) + 2 - first, periods * n)
        f = np.arange(first + lo, first + hi, dtype=float) / float(n)
        a, b = np.searchsorted(f, [centre - half, centre + half])
        lo, hi, f = lo + a, lo + b, f[a:b]
        # kymatio's expressions, operation for operation
        if centre == 0:
            vals = np.exp(-(f**2) / (2 * sigma**2))
        else:
            vals = np.exp(-((f - centre) ** 2) / (2 * sigma**2))
        out = np.zeros(n)
        for p in range(lo // n, -(-hi // n)):  # the periods touched, in order
            a, b = max(lo, p * n), min(hi, (p + 1) * n)
            out[a - p * n : b - p * n] += vals[a - lo : b - lo]
        out /= periods
        return out

    low_pass_f = gaussian(0.0)
    if xi:
        gabor_f = gaussian(xi)
        kappa = gabor_f[0] / low_pass_f[0]
        filter_f = gabor_f - kappa * low_pass_f
    else:
        filter_f = low_pass_f
    filter_f /= np.abs(sp_ifft(filter_f)).sum()
    return filter_f


def modulus(z: torch.Tensor) -> torch.Tensor:
    """``|z|`` of a complex tensor as ``sqrt(re**2 + im**2)``, in three vectorised passes.

    ``torch.abs`` of a complex tensor goes through ``hypot`` element by element, which is slower. The
    squares cannot overflow or lose anything that matters at audio magnitudes: a coefficient under ~1e-19
    squares to 0, far below the log offset.
    """
    out = z.real.square()
    out.addcmul_(z.imag, z.imag)
    return out.sqrt_()


def _upper_k(xi: float, sigma: float, alpha: float) -> int:
    """kymatio's ``get_max_dyadic_subsampling`` with reach ``alpha``: the largest ``k`` whose Nyquist
    frequency ``2**-(k + 1)`` is above ``xi + alpha * sigma``."""
    return int(math.floor(-math.log2(min(xi + alpha * sigma, 0.5)))) - 1


def _fit_k(run: int, n: int, cap: int) -> int:
    """The largest ``k <= cap`` for which a band of ``run`` bins (of ``n``) fits in ``n / 2**k`` bins: a complex
    output sampled every ``2**k`` samples does not alias."""
    k = cap
    while k > 0 and run > n >> k:
        k -= 1
    return k


def _support(h_f: np.ndarray, eps: float = _SUPPORT_EPS) -> int:
    """Half-width in samples holding all but ``eps`` of a filter's time-domain L1 mass."""
    h = np.abs(np.fft.ifft(h_f))
    n = h.size
    # mass at lag |t| (lag 0 once, +t and -t together)
    lag = np.concatenate([[h[0]], h[1 : n // 2] + h[:-n // 2:-1][: n // 2 - 1]])
    tail = np.cumsum(lag[::-1])[::-1]  # tail[s] = mass at |t| >= s
    total = tail[0]
    above = np.nonzero(tail > eps * total)[0]
    return int(above[-1]) + 1 if above.size else 0


class Scattering:
    """First- and second-order scattering of a 1-D signal, whole or streamed.

    Parameters
    ----------
    config : FeatureConfig
        Sample rate, J, Q1, Q2, order, log offset.
    fft_size : int, optional
        Length of each streaming chunk's FFT buffer (a power of two, at least four times the margin).
        Defaults to the smallest power of two >= 2**18 that leaves at least seven eighths of the buffer for new
        frames (on kymatio's grid: >= 2**17 and three quarters); the margins are recomputed work, which a longer
        buffer wastes less of, for more memory.
    first_order_hook : callable, optional
        Edits the complex first-order wavelet coefficients before the modulus (the thresholding stage).
        See ``FirstOrderHook``.
    device : str or torch.device
        Where the transform runs (``"cpu"``, ``"cuda"``); results are returned on the CPU.

    Attributes
    ----------
    margin : int
        Context samples each buffer needs on both sides of the frames it gives (a multiple of ``align``).
    align : int
        Buffers whose first samples lie a multiple of ``align`` apart give the same frames for the same audio
        (the thresholding's noise blocks; the hop without thresholding).

    Notes
    -----
    Channel order is kymatio's: order 0, then the first-order channels by decreasing centre frequency, then
    the second-order channels grouped by first-order filter.
    """

    def __init__(
        self,
        config: FeatureConfig | None = None,
        *,
        fft_size: int | None = None,
        first_order_hook: FirstOrderHook | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.config = config or FeatureConfig()
        self.device = torch.device(device)
        c = self.config
        self.log2_T = int(c.J)
        self.hop = 2**self.log2_T
        self.first_order_hook = first_order_hook
        # Metadata and margin from a reference bank (the filters' shapes do not depend on the FFT length).
        # (centre, width, max subsampling) do not depend on the FFT length: take them from a short bank,
        # then build each filter alone where a length is needed (a whole bank in float64 is ~100 MB)
        _, psi1_f, psi2_f = self._factory(2 ** (self.log2_T + 1))
        self._psi1_meta = [{key: p[key] for key in ("xi", "sigma", "j")} for p in psi1_f]
        self._psi2_meta = [{key: p[key] for key in ("xi", "sigma", "j")} for p in psi2_f]
        ref = cached({"what": "reference", "config": c.to_json()}, self._reference)
        self._set_grid(ref["n"], ref["runs1"], ref["runs2"])
        sup_phi, sup1, sup2 = ref["support_phi"], ref["support1"], ref["support2"]
        margin = sup_phi + sup1 + sup2
        # Thresholding (pipeline/frontend/thresholding.py): a keep-or-kill decision also depends on the noise
        # level around the coefficient, which widens the context each thresholded order needs by `reach`.
        self._thresholder = None
        if c.threshold != "none":
            self._thresholder = ScatteringThresholder(self, c.threshold, order2=c.threshold_order2)
            margin += self._thresholder.reach * (2 if c.threshold_order2 and c.max_order == 2 else 1)
        # A multiple of the noise block, so that chunks start on the same block grid as the whole signal.
        grid = self._thresholder.block if self._thresholder is not None else self.hop
        self.align = int(grid)  # buffers that start a multiple of this apart see the same noise blocks
        self.margin = int(math.ceil(margin / grid) * grid)
        if fft_size is None:
            # the margins are recomputed work: the bandwidth grid's buffers cost a third as much memory per
            # sample as kymatio's, so they can be long enough to waste an eighth of their samples, not a quarter
            fft_size, share = (2**17, 4) if c.grid == "kymatio" else (2**18, 8)
            while share * (fft_size - 2 * self.margin) < (share - 1) * fft_size:
                fft_size *= 2
        if fft_size & (fft_size - 1) or fft_size - 2 * self.margin < self.hop:
            raise ValueError(
                f"fft_size must be a power of two larger than 2*margin + hop = {2 * self.margin + self.hop}, "
                f"got {fft_size}"
            )
        self.fft_size = int(fft_size)
        self.core = self.fft_size - 2 * self.margin  # new samples per chunk, a multiple of hop
        self._build_metadata()

    def _reference(self) -> dict:
        """What the margin and the grid need from the filters at a reference length (they do not depend on
        the FFT length): each filter's time support and the length of its band (bins above ``BANDWIDTH_REL``)."""
        n = max(2 ** (self.log2_T + 8), 2**14)
        out = {"n": n, "support_phi": _support(self._filter(n, None)), "runs1": [], "runs2": []}
        sup1 = sup2 = 0
        for p in self._psi1_meta:
            h = self._filter(n, p)
            sup1 = max(sup1, _support(h))
            out["runs1"].append(band_run(h, BANDWIDTH_REL)[1])
        for p in self._psi2_meta:
            h = self._filter(n, p)
            sup2 = max(sup2, _support(h))
            out["runs2"].append(band_run(h, BANDWIDTH_REL)[1])
        out["support1"] = sup1
        out["support2"] = sup2 if self.config.max_order == 2 else 0
        return out

    # -- the sampling grid ------------------------------------------------------------------------
    def _set_grid(self, ref_n: int, runs1: list[int], runs2: list[int]) -> None:
        """log2 subsampling of every first-order wavelet (``_k1``) and second-order wavelet (``_j2``, relative to
        the audio), on the configured grid (docs/scattering-grid.md)."""
        lt = self.log2_T
        if self.config.grid == "kymatio":
            self._k1 = [int(min(p["j"], lt)) for p in self._psi1_meta]
            self._j2 = [int(p["j"]) for p in self._psi2_meta]
            return
        # a second-order coefficient is complex with a one-sided spectrum: its rate need only hold the band of
        # its wavelet (complex band-pass sampling)
        self._j2 = [_fit_k(run, ref_n, lt) for run in runs2]
        k1 = []
        for p, run in zip(self._psi1_meta, runs1):
            width = run / ref_n  # the wavelet's band, hence the modulus's spectrum, in cycles per sample
            reach = 0.0  # how far up the second-order wavelets applied to the modulus reach
            if self.config.max_order == 2:
                reach = max(
                    (q["xi"] + GRID_ALPHA * q["sigma"] for q in self._psi2_meta if q["j"] > p["j"]), default=0.0
                )
            # Taken every 2**k samples, the complex coefficients must hold the wavelet's band (run fits) and the
            # real modulus the second-order wavelets' reach (Nyquist); what the modulus holds above the Nyquist
            # frequency (up to `width`) folds to 2**-k - width and above, which must clear them too.
            k = _fit_k(run, ref_n, lt - 1)  # at the frame rate itself the low-pass could not average the modulus
            while k > 0 and (2.0 ** -(k + 1) < reach or 2.0**-k < width + reach):
                k -= 1
            k1.append(k)
        self._k1 = k1

    def _kymatio_scale(self) -> np.ndarray | None:
        """Per channel, the factor that puts the bandwidth grid's output on kymatio's scale (None on its grid).

        kymatio periodises a filter to level ``k`` by the *mean* of its ``2**k`` periods, so its low-pass at
        level ``k`` has DC gain ``2**-k``: S1 carries ``2**-k1`` and S2 ``2**-k1`` (the second-order wavelet
        at level ``k1``) times ``2**-(k1 + k2)``, with kymatio's own ``k1``, ``k2``. The bandwidth grid's
        factors are those of its own levels; this ratio makes the two grids' coefficients comparable.
        """
        if self.config.grid == "kymatio":
            return None
        lt = self.log2_T
        kym1 = [min(p["j"], lt) for p in self._psi1_meta]
        scale = [1.0] + [2.0 ** (k - q) for k, q in zip(self._k1, kym1)]
        for n1, n2 in self.pairs:
            own = self._k1[n1] + max(min(self._j2[n2], lt), self._k1[n1])
            kym = kym1[n1] + max(min(self._psi2_meta[n2]["j"], lt), kym1[n1])
            scale.append(2.0 ** (own - kym))
        return np.array(scale)

    # -- filters ---------------------------------------------------------------------------------
    def _factory(self, n: int):
        c = self.config
        return scattering_filter_factory(
            n, c.J, (c.Q1, c.Q2), 2**c.J, r_psi=_R_PSI, sigma0=_SIGMA0, alpha=_ALPHA
        )

    def _build_metadata(self) -> None:
        sr = self.config.sample_rate
        order = [0]
        f1 = [0.0]
        f2 = [0.0]
        pairs: list[tuple[int, int]] = []
        for n1, p1 in enumerate(self._psi1_meta):
            order.append(1)
            f1.append(p1["xi"] * sr)
            f2.append(0.0)
        if self.config.max_order == 2:
            for n1, p1 in enumerate(self._psi1_meta):
                for n2, p2 in enumerate(self._psi2_meta):
                    if p2["j"] > p1["j"]:
                        order.append(2)
                        f1.append(p1["xi"] * sr)
                        f2.append(p2["xi"] * sr)
                        pairs.append((n1, n2))
        self.order = np.array(order, dtype=np.int64)
        self.frequency = np.array(f1, dtype=np.float64)
        self.frequency2 = np.array(f2, dtype=np.float64)
        self.pairs = pairs
        self.n_channels = len(order)
        scale = self._kymatio_scale()
        self._scale = None if scale is None else torch.from_numpy(scale.astype(np.float32))[:, None].to(self.device)

    @property
    def psi1_xi(self) -> np.ndarray:
        """Centre frequencies of the first-order wavelets, in cycles per sample."""
        return np.array([p["xi"] for p in self._psi1_meta])

    @property
    def psi1_sigma(self) -> np.ndarray:
        """Frequency widths of the first-order wavelets, in cycles per sample."""
        return np.array([p["sigma"] for p in self._psi1_meta])

    def first_order_k(self) -> np.ndarray:
        """log2 subsampling of each first-order filter's complex coefficients."""
        return np.array(self._k1, dtype=np.int64)

    def psi1_fourier(self, n: int) -> np.ndarray:
        """First-order filters in Fourier at FFT length ``n``, shape (K1, n), real float64."""
        _, psi1_f, _ = self._factory(n)
        return np.stack([p["levels"][0] for p in psi1_f]).real

    def psi1_filters(self, n: int) -> FilterStack:
        """First-order filters at FFT length ``n`` as a sequence built one filter per access (see
        :class:`FilterStack`)."""
        return FilterStack(n, len(self._psi1_meta), lambda i: self._filter(n, self._psi1_meta[i]))

    def _filter(self, n: int, meta: dict | None, level: int = 0) -> np.ndarray:
        """One kymatio filter at FFT length ``n`` (``meta`` None: the low-pass), periodised to ``level``.

        The filters kymatio's ``scattering_filter_factory`` makes (bit for bit, tested), one at a time, so
        that a long FFT buffer never holds the whole bank in float64.
        """
        if meta is None:  # the low-pass
            h = morlet_fourier(n, None, _SIGMA0 / 2**self.log2_T)
        else:
            h = morlet_fourier(n, meta["xi"], meta["sigma"])
        return periodize_filter_fourier(h, 2**level) if level else h

    def _bank(self, n: int) -> _Bank:
        """The filters at FFT length ``n``, built once and kept for the two lengths used last.

        Per instance: a ``functools.lru_cache`` on the method would be shared by every instance (two
        front ends in one process evicting each other's banks, which are slow to rebuild) and would keep
        the instances alive.
        """
        cache: OrderedDict[int, _Bank] = self.__dict__.setdefault("_banks", OrderedDict())
        bank = cache.get(n)
        if bank is None:
            bank = cache[n] = self._cached_bank(n).to(self.device)
            while len(cache) > 2:
                cache.popitem(last=False)
        cache.move_to_end(n)
        return bank

    def _cached_bank(self, n: int) -> _Bank:
        """The bank at length ``n`` from the on-disk filter cache (built and stored on a miss), with the
        thresholding stage's rule filters for its groups, which are as slow to build."""
        rule = self._thresholder.rule1 if self._thresholder is not None else None

        def build() -> tuple[_Bank, dict]:
            bank = self._build_bank(n)
            bands = {} if rule is None else {(g.index, g.k): rule.band(n, g.index, g.k) for g in bank.groups}
            return bank, bands

        # the grid is in the key besides the configuration: it is what the bank is built from
        key = {"what": "bank", "config": self.config.to_json(), "n": n, "k1": self._k1, "j2": self._j2}
        bank, bands = cached(key, build)
        for (index, k), b in bands.items():
            rule.install_band(n, index, k, b)
        return bank

    def _build_bank(self, n: int) -> _Bank:
        if n % self.hop:
            raise ValueError(f"buffer length {n} is not a multiple of the hop {self.hop}")
        lt = self.log2_T
        ks = self.first_order_k()
        # filters sharing a subsampling, in batches of at most _GROUP_SAMPLES coefficients
        groups = []
        # ... and the same kymatio j, which decides which second-order wavelets apply (j2 > j1)
        js = np.array([p["j"] for p in self._psi1_meta])
        for k, j in sorted(set(zip(ks.tolist(), js.tolist()))):
            index = [int(i) for i in np.nonzero((ks == k) & (js == j))[0]]
            size = max(1, _GROUP_SAMPLES // (n >> int(k)))
            size = -(-len(index) // -(-len(index) // size))  # even batches: 10 -> 4, 3, 3 rather than 4, 4, 2
            for at in range(0, len(index), size):
                groups.append(FilterGroup(int(k), tuple(index[at : at + size])))
        phi_levels: dict[int, np.ndarray] = {}
        psi2_level0: dict[int, np.ndarray] = {}

        def phi(level: int) -> np.ndarray:
            if level not in phi_levels:
                if 0 not in phi_levels:
                    phi_levels[0] = self._filter(n, None)
                phi_levels[level] = periodize_filter_fourier(phi_levels[0], 2**level) if level else phi_levels[0]
            return phi_levels[level]

        def psi2(i: int, level: int) -> np.ndarray:
            # each second-order wavelet is built once per bank, then periodised for every level that needs it
            if i not in psi2_level0:
                psi2_level0[i] = self._filter(n, self._psi2_meta[i])
            h = psi2_level0[i]
            return periodize_filter_fourier(h, 2**level) if level else h

        psi1: list[Band] = []
        phi1: list[Band] = []
        for g in groups:
            # filters built one at a time (FilterStack): a stack of a group's filters at 2**19 is ~34 MB
            h = FilterStack(n, len(g.index), lambda j, g=g: self._filter(n, self._psi1_meta[g.index[j]]))
            psi1.append(band(h, g.k))
            if not phi1 or groups[len(phi1) - 1].k != g.k:
                phi1.append(band(phi(g.k), max(lt - g.k, 0), half=True))
            else:  # the same low-pass as the previous group of this subsampling
                phi1.append(phi1[-1])
        bank = _Bank(
            n=n,
            phi0=band(phi(0), lt, half=True),
            groups=groups,
            psi1=psi1,
            phi1=phi1,
            channels1=[torch.tensor(g.index, dtype=torch.long) + 1 for g in groups],
        )
        if self.config.max_order == 2:
            row_of = {pair: 1 + len(self._psi1_meta) + i for i, pair in enumerate(self.pairs)}
            j1s = [p["j"] for p in self._psi1_meta]
            shared2: dict[tuple, tuple[Band, Band]] = {}
            for g in groups:
                plans = []
                by_k2: dict[int, list[int]] = {}
                for n2, p2 in enumerate(self._psi2_meta):
                    if all(p2["j"] > j1s[i] for i in g.index):
                        k2 = max(min(self._j2[n2], lt) - g.k, 0)
                        by_k2.setdefault(k2, []).append(n2)
                    elif any(p2["j"] > j1s[i] for i in g.index):  # pragma: no cover - not with kymatio banks
                        raise NotImplementedError("mixed second-order validity inside a subsampling group")
                for k2, n2s in sorted(by_k2.items()):
                    rows = torch.tensor([[row_of[(i, n2)] for n2 in n2s] for i in g.index], dtype=torch.long)
                    key = (g.k, k2, tuple(n2s))
                    if key not in shared2:  # groups split from one subsampling level share their filters
                        h2 = FilterStack(n, len(n2s), lambda j, n2s=n2s, k=g.k: psi2(n2s[j], k))
                        shared2[key] = (
                            band(h2, k2, half=True),
                            band(phi(g.k + k2), max(lt - g.k - k2, 0), half=True),
                        )
                    psi, low = shared2[key]
                    plans.append(_Plan2(k2=k2, n2s=torch.tensor(n2s, dtype=torch.long), rows=rows, psi=psi, phi=low))
                bank.plan2.append(plans)
        return bank

    # -- the transform on one buffer ----------------------------------------------------------------
    @torch.no_grad()
    def _transform_buffer(self, x: torch.Tensor) -> torch.Tensor:
        """Scattering (before log) of buffers ``x`` (B, n), circular; returns (B, C, n / hop) float32."""
        b, n = x.shape
        bank = self._bank(n)
        lt = self.log2_T
        out = torch.empty(b, self.n_channels, n >> lt, dtype=torch.float32, device=self.device)
        x = x.to(self.device, torch.float32)
        X = torch.fft.fft(x)
        # Order 0 averages |x|, not x as kymatio does: the low-pass of a signed audio signal is its DC offset,
        # which carries no information and cannot be log-compressed.
        out[:, 0] = torch.fft.ifft(bank.phi0.apply(torch.fft.rfft(x.abs()))).real
        # One subsampling group at a time, start to finish: a long buffer's first-order coefficients, their
        # thresholding statistics and second-order products for every group at once would be several
        # hundred MB.
        for gi, g in enumerate(bank.groups):
            u = torch.fft.ifft(bank.psi1[gi].apply(X))
            if self._thresholder is not None:
                (gain,) = self._thresholder.first_order_gains(X, [u], [g])
                u.mul_(gain)  # u is this buffer's own: no copy
                del gain
            if self.first_order_hook is not None:
                (u,) = self.first_order_hook([u], [g])
            u = modulus(u)
            Uh = torch.fft.rfft(u)  # (B, G, n1 // 2 + 1): the moduli are real
            out[:, bank.channels1[gi]] = torch.fft.ifft(bank.phi1[gi].apply(Uh)).real
            if self.config.max_order == 2:
                plan = bank.plan2[gi]
                Vc = [torch.fft.ifft(p.psi.apply(Uh)) for p in plan]  # (B, G1, G2, n1 / 2**k2)
                if self._thresholder is not None and self.config.threshold_order2:
                    # all second-order filters of the group form one frame of each modulus signal
                    Vc = self._thresholder.second_order(
                        torch.fft.fft(u), Vc, g.k, [(p.k2, p.n2s, p.rows) for p in plan]
                    )
                for p, V in zip(plan, Vc):
                    S2 = torch.fft.ifft(p.phi.apply(torch.fft.rfft(modulus(V)))).real
                    out[:, p.rows.reshape(-1)] = S2.reshape(b, -1, S2.shape[-1])
        if self._scale is not None:
            out.mul_(self._scale)
        return out.cpu()

    def _log(self, S: torch.Tensor) -> np.ndarray:
        # Rounding can make a tiny average negative; the modulus makes the true value >= 0.
        return torch.log(S.clamp_min(0) + self.config.log_eps).numpy().astype(np.float32, copy=False)

    def _wrap(self, S: np.ndarray, start_frame: int) -> Scattergram:
        return Scattergram(
            S=S,
            frame_rate=self.config.frame_rate,
            start_time=start_frame * self.hop / self.config.sample_rate,
            order=self.order,
            frequency=self.frequency,
            frequency2=self.frequency2,
            config_hash=self.config.hash,
        )

    # -- public API ------------------------------------------------------------------------------
    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a signal of ``n_samples`` samples: ``ceil(n_samples / hop)``."""
        return -(-int(n_samples) // self.hop)

    def whole(self, x: np.ndarray) -> Scattergram:
        """Scatter a whole signal in one FFT buffer (the reference the streamed path must equal).

        Parameters
        ----------
        x : ndarray, shape (n_samples,)
            Mono signal at the configured sample rate.

        Returns
        -------
        Scattergram
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 1 or x.size < 2:
            raise ValueError(f"expected a 1-D signal of at least 2 samples, got shape {x.shape}")
        nf = self.n_frames(x.size)
        m = self.margin
        right = m + nf * self.hop - x.size
        padded = np.pad(x, (m, right), mode="reflect")
        S = self._transform_buffer(torch.from_numpy(padded)[None])[0, :, m // self.hop : m // self.hop + nf]
        return self._wrap(self._log(S), 0)

    def stream(self, blocks: Iterable[np.ndarray], *, batch: int = 1) -> Iterator[Scattergram]:
        """Scatter a stream of mono blocks chunk by chunk; yields consecutive Scattergrams.

        Concatenating the yielded ``S`` along time equals ``whole(concatenated blocks).S`` to float32
        rounding. Memory is bounded by ``batch * fft_size``, whatever the stream's length.

        Parameters
        ----------
        blocks : iterable of ndarray
            Consecutive mono float32 blocks of any sizes (e.g. an
            :class:`~scatterbird.pipeline.frontend.audio.AudioStream`).
        batch : int
            Chunks transformed together in one batched call.
        """
        m, core, n_fft, hop = self.margin, self.core, self.fft_size, self.hop
        frames_per_chunk = core // hop
        head = np.zeros(0, dtype=np.float32)  # raw samples before the left pad is known
        buf = np.zeros(0, dtype=np.float32)  # padded signal from the current chunk's start
        tail = np.zeros(0, dtype=np.float32)  # last raw samples, for the right reflect pad
        started = False
        n_total = 0
        next_frame = 0
        pending: list[np.ndarray] = []
        pending_frames: list[int] = []

        def flush() -> Iterator[Scattergram]:
            nonlocal pending, pending_frames
            if not pending:
                return
            S = self._transform_buffer(torch.from_numpy(np.stack(pending)))
            lo = m // hop
            for i, f0 in enumerate(pending_frames):
                yield self._wrap(self._log(S[i, :, lo : lo + frames_per_chunk]), f0)
            pending, pending_frames = [], []

        for block in blocks:
            block = np.asarray(block, dtype=np.float32).reshape(-1)
            if block.size == 0:
                continue
            n_total += block.size
            tail = np.concatenate([tail, block])[-(m + hop + 1):]
            if not started:
                head = np.concatenate([head, block])
                if head.size <= m:
                    continue
                buf = np.concatenate([head[m:0:-1], head])  # reflect pad, as np.pad(mode="reflect")
                started = True
            else:
                buf = np.concatenate([buf, block])
            while buf.size >= n_fft:
                pending.append(buf[:n_fft].copy())
                pending_frames.append(next_frame)
                next_frame += frames_per_chunk
                buf = buf[core:]
                if len(pending) >= batch:
                    yield from flush()
        if n_total == 0:
            raise ValueError("empty stream: no samples")
        nf = self.n_frames(n_total)
        if not started:  # shorter than the margin: pad it whole, exactly as `whole` does
            right = m + nf * hop - head.size
            buf = np.pad(head, (m, right), mode="reflect")
        else:
            right = m + nf * hop - n_total
            # np.pad's reflect of the last samples; repeat reflection if the tail is too short.
            buf = np.concatenate([buf, np.pad(tail, (0, right), mode="reflect")[tail.size:]])
        yield from flush()
        while next_frame < nf:
            chunk = buf[:n_fft]
            if chunk.size < n_fft:
                chunk = np.pad(chunk, (0, n_fft - chunk.size))
            S = self._transform_buffer(torch.from_numpy(np.ascontiguousarray(chunk))[None])
            lo = m // hop
            take = min(frames_per_chunk, nf - next_frame)
            yield self._wrap(self._log(S[0, :, lo : lo + take]), next_frame)
            next_frame += take
            buf = buf[core:]


def concatenate(parts: Sequence[Scattergram]) -> Scattergram:
    """Join consecutive Scattergrams along time."""
    if not parts:
        raise ValueError("nothing to concatenate")
    first = parts[0]
    return Scattergram(
        S=np.concatenate([p.S for p in parts], axis=1),
        frame_rate=first.frame_rate,
        start_time=first.start_time,
        order=first.order,
        frequency=first.frequency,
        frequency2=first.frequency2,
        config_hash=first.config_hash,
    )


def scatter_file(path, config: FeatureConfig | None = None, scattering: Scattering | None = None) -> Scattergram:
    """Stream a recording from disk through the scattering front end and return all its frames."""
    sc = scattering or Scattering(config)
    return concatenate(list(sc.stream(stream_audio(path, sc.config.sample_rate))))
