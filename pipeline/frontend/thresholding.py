"""Risk-optimal keep-or-kill thresholding of the complex first-order wavelet coefficients.

The overcomplete-frame thresholding of Cosentino, Balestriero, Baraniuk & Patel (arXiv:1712.09117) on the
front end's decimated Morlet frame: the dual frame by division in Fourier (:class:`ConvFrame`), the paper's
dual-Gram keep-or-kill rule computed as one extra filtering per filter (:class:`_RuleBank`), a robust
per-filter noise level that streams, and the closed-form risk of a mask (:meth:`ConvFrame.risk`).

Modes (``THRESHOLD_MODES``): ``none``; ``universal-hard`` / ``universal-soft`` (Donoho-Johnstone's
``s sqrt(2 log N)``); ``risk``, the default: the plug-in rule with the kill and keep costs summed over a
time window of each filter holding ``RULE_INDEPENDENT`` independent noise samples (the one departure from
the paper).

Contract: :class:`ScatteringThresholder` turns complex first-order coefficients (batch, filters, time)
into real gains in [0, 1] of the same shape. A gain depends on the signal within ``reach`` samples of its
coefficient, so the front end, which widens its streaming margin by ``reach``, gives streamed output equal
to whole-signal output.

Derivation: docs/thresholding.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import numpy as np
import scipy.fft as sfft
import torch

from scatterbird.pipeline.config import THRESHOLD_MODES
from scatterbird.pipeline.frontend.bands import Band, FilterGroup, FilterStack, band
from scatterbird.pipeline.frontend.filter_cache import cached, register

#: Band of the regularised dual, on the filters' coverage ``C(w) = 1/2 sum (psi_hat(w)^2 + psi_hat(-w)^2)``
#: (each filter relative to its peak; :func:`filter_coverage`): the dual is the exact canonical dual where
#: ``C >= TAPER_HI * max C`` and zero where ``C <= TAPER_LO * max C``. Not on the decimated frame response
#: ``S_hat``: that one is small at low frequencies only because of the 1 / M weights, which the dual
#: compensates exactly; what must be excluded is where a frequency is seen by a filter's far tail alone
#: (below ~7 Hz, above ~10.1 kHz for the J=9, Q=8 bank), whose inverse amplifies whatever a mask spreads
#: there (docs/thresholding.md).
TAPER_LO = 0.03
TAPER_HI = 0.3

#: Width in seconds of the window over which each filter's noise level is estimated (median): long enough
#: that a bird call (<= 2.5 s for the synthetic trills) rarely fills half of it in one filter.
NOISE_WINDOW_S = 3.0

#: Coefficients per frame step fed to the noise median (at most): the median of a 3 s window then sees
#: up to ~500 values per filter, nearly independent for all but the lowest filters.
NOISE_POINTS_PER_HOP = 4

#: Relative width of the linear ramp between kill and keep around each threshold (see :func:`decision`).
DECISION_RAMP = 0.01

#: Frames per noise block: each filter's noise level is re-estimated every 8 frames (186 ms at J=9).
NOISE_BLOCK_HOPS = 8

#: The ``risk`` rule decides each coefficient on the kill and keep costs summed over a time window of its
#: filter holding this many independent noise samples (``RULE_INDEPENDENT / B_eff`` seconds, ``B_eff`` the
#: filter's effective noise bandwidth): 12 ms at 9.6 kHz, 100 ms at 1.3 kHz, capped at ``RULE_WINDOW_MAX_S``.
#: The plug-in estimate of one coefficient's signal term has the noise's own spread, so a single-coefficient
#: rule keeps exp(-2) = 13.5 % of pure noise; summed over 16 independent samples it keeps the Gamma(16)
#: tail P(G > 32) = 6.6e-4 of it.
RULE_INDEPENDENT = 16.0

#: Longest decision window in seconds (the low filters' 16 independent samples would take up to ~1.5 s).
RULE_WINDOW_MAX_S = 1.5

#: Tail of a dual filter's L1 mass left out of its time support.
_SUPPORT_EPS = 1e-7

#: |n|^2 of a circular complex Gaussian coefficient is exponential: median = ln 2 * mean.
_LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------------
# Spectral helpers
# ---------------------------------------------------------------------------------------------------
def _mirror(h: np.ndarray) -> np.ndarray:
    """``h(-w)`` for spectra on the DFT grid (last axis)."""
    return np.roll(h[..., ::-1], 1, axis=-1)


def _smoothstep(u: np.ndarray) -> np.ndarray:
    """C-infinity step from 0 (u <= 0) to 1 (u >= 1)."""
    u = np.clip(u, 0.0, 1.0)
    with np.errstate(divide="ignore", over="ignore"):
        f0 = np.where(u > 0, np.exp(-1.0 / np.maximum(u, 1e-300)), 0.0)
        f1 = np.where(u < 1, np.exp(-1.0 / np.maximum(1.0 - u, 1e-300)), 0.0)
    return f0 / (f0 + f1)


def frame_response(filters: np.ndarray, log2_step: Sequence[int]) -> np.ndarray:
    """Fourier response of the real frame operator ``x -> Re(Phi^* Phi x)`` of a decimated filter bank.

    Parameters
    ----------
    filters : ndarray, shape (K, n)
        Real Fourier responses of the analysis filters.
    log2_step : sequence of int, length K
        log2 of each filter's decimation.

    Returns
    -------
    ndarray, shape (n,)
        ``1/2 sum_k (psi_hat_k(w)^2 + psi_hat_k(-w)^2) / 2**log2_step[k]`` (valid when decimation is
        alias-free).
    """
    m = 2.0 ** np.asarray(log2_step, dtype=np.float64)
    p2 = np.asarray(filters, dtype=np.float64) ** 2 / m[:, None]
    s = p2.sum(0)
    return 0.5 * (s + _mirror(s))


def filter_coverage(filters: np.ndarray) -> np.ndarray:
    """``1/2 sum_k (psi_hat_k(w)^2 + psi_hat_k(-w)^2) / max psi_hat_k^2``: how strongly the filters see each
    frequency of a real signal, each relative to its own peak and whatever its decimation, shape (n,)."""
    f2 = np.asarray(filters, dtype=np.float64) ** 2
    s = (f2 / f2.max(axis=1, keepdims=True)).sum(0)
    return 0.5 * (s + _mirror(s))


def band_taper(response: np.ndarray, lo: float = TAPER_LO, hi: float = TAPER_HI) -> np.ndarray:
    """Smooth 0-to-1 taper: 1 where ``response >= hi * max``, 0 where ``response <= lo * max``.

    The taper is a C-infinity function of ``log(response)``, so the regularised dual filters stay smooth in
    frequency (short in time), which the streaming margins need.
    """
    r = response / response.max()
    with np.errstate(divide="ignore"):
        u = (np.log(np.maximum(r, 1e-300)) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return _smoothstep(u)


def _tap_support(h: np.ndarray, eps: float = _SUPPORT_EPS) -> int:
    """Half-width in samples holding all but ``eps`` of the time-domain L1 mass of ``h`` (circular)."""
    a = np.abs(h)
    n = a.size
    lag = np.concatenate([[a[0]], a[1 : n // 2] + a[:-n // 2 : -1][: n // 2 - 1]])
    tail = np.cumsum(lag[::-1])[::-1]
    above = np.nonzero(tail > eps * tail[0])[0]
    return int(above[-1]) + 1 if above.size else 0


def _fold(x: np.ndarray, m: int) -> np.ndarray:
    """Spectrum of the signal subsampled by ``m`` (mean of the ``m`` aliases), last axis."""
    if m == 1:
        return x
    n = x.shape[-1]
    return x.reshape(*x.shape[:-1], m, n // m).mean(axis=-2)


# ---------------------------------------------------------------------------------------------------
# The frame, in float64, for analysis, risk and reconstruction
# ---------------------------------------------------------------------------------------------------
class ConvFrame:
    """A decimated convolutional frame of real signals of length ``n`` (one circular buffer).

    Parameters
    ----------
    filters : ndarray, shape (K, n)
        Real Fourier responses ``psi_hat`` of the filters.
    log2_step : sequence of int
        log2 of each filter's decimation ``M``; coefficients of filter ``k`` have ``n / M`` samples.
    taper : tuple of float, optional
        ``(lo, hi)`` of :func:`band_taper`.

    Notes
    -----
    Coefficients are lists of K complex arrays, ``c[k]`` of length ``n / M_k``:
    ``c[k][t] = (x * psi_k)(M_k t)``.
    """

    def __init__(
        self, filters: np.ndarray, log2_step: Sequence[int], *, taper: tuple[float, float] = (TAPER_LO, TAPER_HI)
    ) -> None:
        self.filters = np.ascontiguousarray(filters, dtype=np.float64)
        if self.filters.ndim != 2:
            raise ValueError(f"filters must be (K, n), got shape {self.filters.shape}")
        self.K, self.n = self.filters.shape
        self.log2_step = np.asarray(log2_step, dtype=np.int64)
        if self.log2_step.shape != (self.K,):
            raise ValueError(f"log2_step must have {self.K} entries, got {self.log2_step.shape}")
        if any(self.n % (1 << int(k)) for k in self.log2_step):
            raise ValueError(f"n={self.n} is not divisible by every decimation 2**k")
        self.taper_levels = taper

    @classmethod
    def from_scattering(cls, scattering, n: int) -> "ConvFrame":
        """The first-order frame of a front end (:class:`~scatterbird.pipeline.frontend.scattering.Scattering`)
        at FFT length ``n``."""
        return cls(scattering.psi1_fourier(n), scattering.first_order_k())

    # -- derived spectra -----------------------------------------------------------------------------
    @cached_property
    def steps(self) -> np.ndarray:
        """Decimation ``M`` of each filter, shape (K,)."""
        return (1 << self.log2_step).astype(np.int64)

    @cached_property
    def response(self) -> np.ndarray:
        """``S_hat(w)``, the frame operator's Fourier response, shape (n,)."""
        return frame_response(self.filters, self.log2_step)

    @cached_property
    def coverage(self) -> np.ndarray:
        """:func:`filter_coverage` of the filters, shape (n,)."""
        return filter_coverage(self.filters)

    @cached_property
    def taper(self) -> np.ndarray:
        """``tau(w) = D S_hat``: what the dual frame rebuilds of each frequency (1 in the band), shape (n,)."""
        return band_taper(self.coverage, *self.taper_levels)

    @cached_property
    def inverse(self) -> np.ndarray:
        """``D(w) = tau / S_hat``: the regularised inverse frame operator, shape (n,)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.taper > 0, self.taper / self.response, 0.0)

    @cached_property
    def band(self) -> np.ndarray:
        """Boolean (n,): frequencies the frame rebuilds exactly (``tau == 1``)."""
        return self.taper >= 1.0

    @cached_property
    def dual_filters(self) -> np.ndarray:
        """Synthesis (dual frame) filters ``psi_hat * D``, shape (K, n)."""
        return self.filters * self.inverse

    @cached_property
    def rule_filters(self) -> np.ndarray:
        """Filters ``h_hat = psi_hat D tau`` with ``(G~ y)_i = (x * h)(s_i)``, shape (K, n)."""
        return self.filters * (self.inverse * self.taper)

    @cached_property
    def norms2(self) -> np.ndarray:
        """``||psi_k||^2`` (the variance of a coefficient under unit white noise), shape (K,)."""
        return (self.filters**2).sum(1) / self.n

    @cached_property
    def gram_diag(self) -> np.ndarray:
        """``(G~ G)_ii`` per filter: the keep cost of a coefficient per unit noise variance, shape (K,)."""
        return (self.filters * self.rule_filters).sum(1) / self.n

    @cached_property
    def rho(self) -> np.ndarray:
        """``(G~ G)_ii / ||psi||^2``: the keep cost per unit coefficient noise variance, shape (K,)."""
        return self.gram_diag / self.norms2

    @cached_property
    def alias_level(self) -> float:
        """Largest alias product ``|psi_hat(w) psi_hat(w + m n / M)|`` relative to ``max S_hat``.

        The diagonal (convolutional) frame operator is exact only when this is negligible.
        """
        worst = 0.0
        for f, m in zip(self.filters, self.steps):
            for j in range(1, int(m)):
                worst = max(worst, float(np.max(np.abs(f * np.roll(f, -j * self.n // int(m))))) / m)
        return worst / float(self.response.max())

    # -- operators ------------------------------------------------------------------------------------
    def analyse(self, x: np.ndarray, filters: np.ndarray | None = None) -> list[np.ndarray]:
        """Coefficients ``(x * f_k)(M_k t)`` of a real signal; ``filters`` defaults to the frame's."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.n,):
            raise ValueError(f"expected a signal of {self.n} samples, got shape {x.shape}")
        return self.analyse_spectrum(sfft.fft(x), filters)

    @cached_property
    def _groups(self) -> list[tuple[int, np.ndarray]]:
        """Filters sharing a decimation: ``(M, indices)``, so that each group is one batched FFT."""
        return [(int(m), np.nonzero(self.steps == m)[0]) for m in np.unique(self.steps)]

    def analyse_spectrum(self, X: np.ndarray, filters: np.ndarray | None = None) -> list[np.ndarray]:
        """Coefficients of the signal of spectrum ``X`` (n,), by ``filters`` (K, n; default the frame's)."""
        f = self.filters if filters is None else filters
        out: list[np.ndarray] = [np.empty(0)] * self.K
        for m, idx in self._groups:
            c = sfft.ifft(_fold(X[None, :] * f[idx], m), axis=-1)
            for j, k in enumerate(idx):
                out[k] = c[j]
        return out

    def adjoint_spectrum(self, coefs: Sequence[np.ndarray]) -> np.ndarray:
        """Spectrum of ``Re(Phi^* c)``, the real frame's adjoint applied to complex coefficients."""
        if len(coefs) != self.K:
            raise ValueError(f"expected {self.K} coefficient arrays, got {len(coefs)}")
        V = np.zeros(self.n, dtype=np.complex128)
        for m, idx in self._groups:
            C = sfft.fft(np.stack([coefs[k] for k in idx]), axis=-1)
            # zero-insertion upsampling by m tiles the spectrum m times
            V += np.einsum("kn,kn->n", self.filters[idx], np.tile(C, (1, m)))
        return 0.5 * (V + np.conj(_mirror(V)))

    def synthesise(self, coefs: Sequence[np.ndarray]) -> np.ndarray:
        """Dual-frame reconstruction ``D Re(Phi^* c)``: a real signal of ``n`` samples."""
        return sfft.ifft(self.inverse * self.adjoint_spectrum(coefs)).real

    def gram(self, coefs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``G c`` (analysis Gram applied to complex coefficients, read as the real frame's pairs)."""
        return self.analyse_spectrum(self.adjoint_spectrum(coefs))

    def dual_gram(self, coefs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``G~ c``: the dual Gram applied, every filter and every lag (for tests and analysis)."""
        return self.analyse_spectrum(self.inverse**2 * self.adjoint_spectrum(coefs))

    def project(self, x: np.ndarray) -> np.ndarray:
        """``tau x``: what the frame rebuilds from all of ``x``'s coefficients (the denoising target)."""
        return sfft.ifft(self.taper * sfft.fft(np.asarray(x, dtype=np.float64))).real

    def dense(self) -> np.ndarray:
        """The real analysis matrix ``Phi_R`` (rows: Re then Im of each coefficient, filter by filter).

        Shape ``(2 * sum_k n / M_k, n)``; only for small ``n`` (tests).
        """
        cols = [np.concatenate([np.concatenate([c.real, c.imag]) for c in self.analyse(e)]) for e in np.eye(self.n)]
        return np.stack(cols, axis=1)

    def flatten(self, coefs: Sequence[np.ndarray]) -> np.ndarray:
        """Complex coefficients as the real vector matching the rows of :meth:`dense`."""
        return np.concatenate([np.concatenate([c.real, c.imag]) for c in coefs])

    def flatten_mask(self, mask: Sequence[np.ndarray]) -> np.ndarray:
        """A per-coefficient mask repeated on the real frame's two rows (Re, Im)."""
        return np.concatenate([np.concatenate([np.asarray(a, float)] * 2) for a in mask])

    def row_groups(self) -> np.ndarray:
        """For each row of :meth:`dense`, the index of its complex coefficient (flat, filter by filter)."""
        out, base = [], 0
        for m in self.steps:
            t = np.arange(self.n // int(m))
            out.append(np.concatenate([t, t]) + base)
            base += t.size
        return np.concatenate(out)

    # -- the rule ----------------------------------------------------------------------------------------
    def noise_variance(self, noise_psd: float | np.ndarray = 1.0) -> np.ndarray:
        """``E|n_k|^2`` per filter for real stationary noise of power spectrum ``noise_psd``
        (a scalar ``sigma**2`` for white noise, or an (n,) array, symmetric in frequency)."""
        p = np.broadcast_to(np.asarray(noise_psd, dtype=np.float64), (self.n,))
        return (self.filters**2 * p).sum(1) / self.n

    def keep_cost(self, noise_psd: float | np.ndarray = 1.0) -> np.ndarray:
        """``nu_k = E[Re(conj(n_i) (G~ n)_i)] = (G~ C_noise)_ii`` per filter (the keep cost), shape (K,)."""
        p = np.broadcast_to(np.asarray(noise_psd, dtype=np.float64), (self.n,))
        return (self.filters * self.rule_filters * p).sum(1) / self.n

    def kill_cost(self, x: np.ndarray) -> list[np.ndarray]:
        """``Re(conj(c_i) (G~ c)_i)`` for ``c = Phi x``: the bias a coefficient's removal costs, per row."""
        X = sfft.fft(np.asarray(x, dtype=np.float64))
        c = self.analyse_spectrum(X)
        z = self.analyse_spectrum(X, self.rule_filters)
        return [(np.conj(ci) * zi).real for ci, zi in zip(c, z)]

    def keep_oracle(self, clean: np.ndarray, noise_psd: float | np.ndarray = 1.0) -> list[np.ndarray]:
        """The paper's decoupled rule with the clean signal known: keep iff kill cost > keep cost."""
        nu = self.keep_cost(noise_psd)
        return [kc > v for kc, v in zip(self.kill_cost(clean), nu)]

    def keep_plugin(self, noisy: np.ndarray, noise_psd: float | np.ndarray = 1.0) -> list[np.ndarray]:
        """Plug-in rule: ``c c^*`` estimated by ``y y^* - C_noise``, i.e. keep iff ``Re(conj(y) G~y) > 2 nu``."""
        nu = self.keep_cost(noise_psd)
        return [kc > 2 * v for kc, v in zip(self.kill_cost(noisy), nu)]

    # -- the risk ----------------------------------------------------------------------------------------
    def risk(
        self,
        mask: Sequence[np.ndarray],
        clean: np.ndarray,
        noise_psd: float | np.ndarray = 1.0,
    ) -> float:
        """Closed-form risk ``E||tau x - D Re(Phi^*(a (c + n)))||^2`` of a fixed mask (sum over samples).

        Parameters
        ----------
        mask : list of K arrays
            Per-coefficient weights ``a`` (0/1 for keep-or-kill; any real values are allowed).
        clean : ndarray, shape (n,)
            The clean signal ``x``.
        noise_psd : float or ndarray (n,)
            Power spectrum of the real stationary noise (``sigma**2`` when white).

        Returns
        -------
        float
            Bias ``||D Re(Phi^*((1-a) c))||^2`` plus variance ``tr(A G~ A C_noise)`` (real-frame traces),
            the latter summed lag by lag over pairs of filters with overlapping spectra.
        """
        a = [np.asarray(m, dtype=np.float64) for m in mask]
        c = self.analyse(clean)
        bias = float(np.sum(self.synthesise([(1 - ai) * ci for ai, ci in zip(a, c)]) ** 2))
        return bias + self.variance(a, noise_psd)

    def variance(self, mask: Sequence[np.ndarray], noise_psd: float | np.ndarray = 1.0) -> float:
        """``E||D Re(Phi^*(a n))||^2`` in closed form for a fixed mask ``a``.

        ``tr(A G~_R A C_R) = 1/2 sum_ij a_i a_j Re(g~_ij g_ji + conj(q~_ij) q_ji)`` with ``g`` the complex
        (noise-weighted) Gram and ``q`` the pseudo-Gram ``sum_s a_j(s) a_i(s)`` (nonzero only where filters
        reach negative frequencies); both depend on the lag ``s_i - s_j`` only, so the double sum is
        ``sum_(k,l) sum_lag kernel_kl(lag) * mask_correlation_kl(lag)``, each an FFT.
        """
        n = self.n
        p = np.broadcast_to(np.asarray(noise_psd, dtype=np.float64), (n,))
        f = self.filters
        fm = _mirror(f)
        d2 = self.inverse**2
        up = []
        for ak, m in zip(mask, self.steps):
            A = np.zeros(n)
            A[:: int(m)] = ak
            up.append(sfft.fft(A))
        absf = np.abs(f)
        absfm = np.abs(fm)
        scale = np.sqrt((f**2).sum(1))
        total = 0.0
        for k in range(self.K):
            # pairs whose spectra (or mirrored spectra) overlap; others contribute nothing
            ov = (absf[k] * absf).sum(1) + (absfm[k] * absf).sum(1)
            for l in np.nonzero(ov > 1e-13 * scale[k] * scale)[0]:
                fkl = f[k] * f[l]
                R = sfft.ifft(fkl * p)  # g_ij at lag s_i - s_j
                Rt = sfft.ifft(fkl * d2)  # g~_ij at lag s_i - s_j
                Qt = sfft.ifft(f[l] * fm[k] * d2)
                Qlk = sfft.ifft(f[k] * fm[l] * p)  # q_ji at lag s_j - s_i
                # g_ji at lag -(s_i - s_j): R reversed; q_ji likewise
                kern = 0.5 * (Rt * _mirror(R) + np.conj(Qt) * _mirror(Qlk)).real
                corr = sfft.ifft(up[k] * np.conj(up[l])).real  # sum_s A_k(s) A_l(s - lag)
                total += float(np.dot(kern, corr))
        return total


def dense_rule(
    phi: np.ndarray, coef: np.ndarray, sigma: float, *, plugin: bool, groups: np.ndarray | None = None
) -> np.ndarray:
    """The decoupled keep-or-kill rule for a dense real frame, with dense Grams (a reference for tests).

    Parameters
    ----------
    phi : ndarray, shape (K, N)
        Real analysis matrix (rows are atoms).
    coef : ndarray, shape (K,)
        Clean coefficients ``Phi x`` (oracle rule) or noisy ``Phi y`` (``plugin=True``).
    sigma : float
        White noise standard deviation in the signal domain.
    plugin : bool
        Replace ``c c^T`` by its unbiased estimate ``y y^T - sigma^2 G``.
    groups : ndarray of int, shape (K,), optional
        Rows deciding together (the Re and Im rows of one complex coefficient, see
        :meth:`ConvFrame.row_groups`): their costs are summed.

    Returns
    -------
    ndarray of bool
        Keep decisions, one per row (or per group).
    """
    G = phi @ phi.T
    pinv = np.linalg.pinv(phi)  # canonical dual synthesis Phi^+, (N, K)
    Gt = pinv.T @ pinv
    kill = coef * (Gt @ coef)
    keep = sigma**2 * np.einsum("ij,ji->i", Gt, G)
    if groups is not None:
        kill = np.bincount(groups, kill)
        keep = np.bincount(groups, keep)
    return kill > (2 * keep if plugin else keep)


def gram_row_profile(frame: ConvFrame, k: int, *, max_offset: int = 4) -> dict[int | str, tuple[float, int]]:
    """Where the (complex) dual Gram row of a coefficient of filter ``k`` puts its mass.

    Parameters
    ----------
    frame : ConvFrame
    k : int
        Filter index.
    max_offset : int
        Neighbouring filters ``k + d`` reported, ``|d| <= max_offset``.

    Returns
    -------
    dict
        ``d -> (share, lag)``: the share of the row's squared mass ``sum_j |g~_ij|^2`` on filter ``k + d``
        (over all its coefficients), and the lag in samples within which 99 % of that filter's share lies.
        The share of lag 0 alone on filter ``k`` itself is returned under key ``"lag0"``.
    """
    d2 = frame.inverse**2
    rows = {}
    total = 0.0
    for l in range(frame.K):
        r = np.fft.ifft(frame.filters[k] * frame.filters[l] * d2)  # g~ at every lag (full rate)
        # entries of the row sit at lags s_i - s_j on filter l's grid (s_i = 0 here)
        on_grid = np.abs(r[:: int(frame.steps[l])]) ** 2
        e = float(on_grid.sum())
        total += e
        if abs(l - k) <= max_offset:
            lags = np.minimum(np.arange(on_grid.size), on_grid.size - np.arange(on_grid.size)) * int(frame.steps[l])
            order = np.argsort(lags, kind="stable")
            cum = np.cumsum(on_grid[order])
            reach = int(lags[order][np.searchsorted(cum, 0.99 * e)]) if e > 0 else 0
            rows[l - k] = (e, reach)
            if l == k:
                rows["lag0"] = (float(on_grid[0]), 0)
    return {d: (e / total, reach) for d, (e, reach) in rows.items()}


# ---------------------------------------------------------------------------------------------------
# The pipeline's thresholding stage (torch, chunk by chunk)
# ---------------------------------------------------------------------------------------------------
class _RuleBank:
    """Rule filters of one frame as short time-domain taps, so that they do not depend on the FFT length.

    ``h_lam`` is computed once at a reference length and cut to its support (all but 1e-7 of its L1 mass),
    or to ``cap`` samples on each side with a smooth window where that is longer (the two lowest first-order
    filters, where the frame is far from tight). ``rho`` is computed with the cut taps, so that the keep
    cost stays the exact expectation of the statistic actually used.
    """

    def __init__(self, filters: np.ndarray | Sequence[np.ndarray], log2_step: Sequence[int], cap: int) -> None:
        # an array, or any sequence of equal-length rows (the front end's FilterStack builds them on access)
        if not hasattr(filters, "shape"):
            filters = np.asarray(filters, dtype=np.float64)
        K, n_ref = filters.shape
        if 2 * cap + 1 > n_ref:
            raise ValueError(f"reference length {n_ref} too short for taps of half-width {cap}")
        self.log2_step = np.asarray(log2_step, dtype=np.int64).copy()
        # ConvFrame's response, coverage, taper and dual, accumulated filter by filter (a (K, n) float64
        # temporary per step would be ~75 MB each at the reference length)
        response = np.zeros(n_ref)
        coverage = np.zeros(n_ref)
        for f, k in zip(filters, self.log2_step):
            f2 = f * f
            response += f2 / 2.0 ** int(k)
            coverage += f2 / f2.max()
        response = 0.5 * (response + _mirror(response))
        taper = band_taper(0.5 * (coverage + _mirror(coverage)))
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(taper > 0, taper / response, 0.0) * taper  # D tau: rule filter = psi D tau
        self.taps: list[np.ndarray] = []  # centred: taps[k][half_k + t] = h_k[t], |t| <= half_k
        self.half: list[int] = []
        rho = np.empty(K)
        bandwidth = np.empty(K)
        for k in range(K):
            psi_hat = np.asarray(filters[k], dtype=np.float64)
            rule_hat = psi_hat * gain
            norm2 = float((psi_hat**2).sum())
            rho[k] = float((psi_hat * rule_hat).sum()) / norm2  # (G~ G)_ii / ||psi||^2
            # effective noise bandwidth (cycles per sample): |n|^2 of the output decorrelates over 1 / B
            bandwidth[k] = norm2**2 / (n_ref * float((psi_hat**4).sum()))
            h = np.fft.ifft(rule_hat)
            support = _tap_support(h)
            half = min(support, cap)
            t = np.arange(-half, half + 1)
            taps = h[t % n_ref]
            if support > cap:
                taps = taps * _smoothstep((cap - np.abs(t)) / (0.5 * cap))
                # keep cost of the windowed filter, by Parseval: sum_w psi_hat h_hat = n sum_t psi[t] conj(h[t])
                psi = np.fft.ifft(psi_hat)[t % n_ref]
                rho[k] = float(n_ref * np.vdot(taps, psi).real / norm2)
            self.taps.append(taps)
            self.half.append(half)
        self.rho = rho
        self.bandwidth = bandwidth
        self.max_half = max(self.half)
        self._bands: dict[tuple, Band] = {}

    def spectra(self, n: int, index: Sequence[int] | None = None) -> torch.Tensor:
        """Real Fourier responses of the taps ``index`` (default all) at FFT length ``n``, float32 (F, n)."""
        index = range(len(self.taps)) if index is None else index
        out = np.empty((len(index), n), dtype=np.float32)
        for row, k in enumerate(index):
            taps, half = self.taps[k], self.half[k]
            full = np.zeros(n, dtype=np.complex128)
            # a buffer shorter than the taps gets them periodised: circular convolution, as for any filter
            np.add.at(full, np.arange(-half, half + 1) % n, taps)
            out[row] = np.fft.fft(full).real  # Hermitian taps: real response
        return torch.from_numpy(out)

    def install_band(self, n: int, index: Sequence[int], k: int, b: Band) -> None:
        """Keep ``b`` as :meth:`band` ``(n, index, k)`` on the CPU (read back from the filter cache)."""
        self._bands[(n, tuple(int(i) for i in index), int(k), "cpu")] = b

    def band(self, n: int, index: Sequence[int], k: int, device: torch.device | str = "cpu") -> Band:
        """The rule filters ``index`` at FFT length ``n``, subsampled by ``2**k``, as a :class:`Band` on ``device``."""
        key = (n, tuple(int(i) for i in index), int(k), str(torch.device(device)))
        b = self._bands.get(key)
        if b is None:
            index = [int(i) for i in index]
            # one filter's spectrum at a time: (F, n) float64 at n = 2**19 would be ~34 MB per group
            rows = FilterStack(n, len(index), lambda j: self.spectra(n, [index[j]])[0].numpy())
            b = band(rows, int(k)).to(device)
            self._bands[key] = b
        return b


register(_RuleBank)  # stored in the on-disk filter cache (pipeline/frontend/filter_cache.py)


def decision(stat: torch.Tensor, thr: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """Keep (1) where ``stat > thr``, kill (0) below, with a linear ramp ``DECISION_RAMP * thr`` wide.

    A 0/1 step would make the output jump when rounding moves a statistic across its threshold, and buffers of
    different FFT lengths round differently; the ramp keeps streamed output equal to whole-signal output to
    rounding. Its width (1 % of the threshold) holds ~0.3 % of pure-noise coefficients. With ``inplace``,
    ``stat`` and ``thr`` are overwritten (the result is ``stat``): no allocation.
    """
    if not inplace:
        stat, thr = stat.clone(), thr.clone()
    return stat.sub_(thr).div_(thr.mul_(DECISION_RAMP).add_(1e-30)).add_(0.5).clamp_(0.0, 1.0)


def window_sum(x: torch.Tensor, widths: Sequence[int]) -> torch.Tensor:
    """Centred circular moving sum along the last axis, of odd width ``widths[f]`` for row ``f``, in float64.

    Parameters
    ----------
    x : Tensor, shape (..., F, T), real
    widths : sequence of F odd ints

    Returns
    -------
    Tensor, float64, same shape as ``x``
        ``out[..., f, t] = sum(x[..., f, t - h : t + h + 1])`` (indices mod ``T``), ``h = widths[f] // 2``.
        Windows longer than ``T`` wrap more than once, as a circular filter does.

    Notes
    -----
    One running sum per row, in float64, over the row padded circularly by the longest half-width; each
    window is a difference of two prefix sums, which in float32 would carry the rounding of everything
    before it, so a chunk and the whole signal would differ. The padded row is written straight into the
    float64 buffer that is then summed in place, and each difference straight into the output: two
    allocations, where a first-order group of 2**18 coefficients is ~2 MB each.
    """
    widths = np.asarray(widths, dtype=np.int64)
    T = x.shape[-1]
    H = int(widths.max()) // 2
    # c[j] = x[(j - H - 1) mod T]: one extra sample on the left, so that every window's sum is a difference
    # of two prefix sums C[i] = sum(c[: i + 1]) with both indices >= 0
    c = torch.empty(*x.shape[:-1], T + 2 * H + 1, dtype=torch.float64, device=x.device)
    if H + 1 <= T:  # circular padding by slices
        c[..., : H + 1] = x[..., T - H - 1 :]
        c[..., H + 1 : H + 1 + T] = x
        c[..., H + 1 + T :] = x[..., :H]
    else:  # windows wrapping more than once
        c[...] = x[..., torch.arange(-H - 1, T + H, device=x.device) % T]
    c.cumsum_(dim=-1)
    out = torch.empty(*x.shape, dtype=torch.float64, device=x.device)
    for f, w in enumerate(widths.tolist()):
        h = w // 2
        # window of x[t - h .. t + h] = c[t + H + 1 - h .. t + H + 1 + h]
        torch.sub(c[..., f, H + 1 + h : H + 1 + h + T], c[..., f, H - h : H - h + T], out=out[..., f, :])
    return out


def window_mean(x: torch.Tensor, widths: Sequence[int]) -> torch.Tensor:
    """Centred circular moving mean along the last axis, of odd width ``widths[f]`` for row ``f``.

    :func:`window_sum` divided by the widths, in ``x``'s dtype.
    """
    w = torch.as_tensor(np.asarray(widths, dtype=np.float64))[:, None]
    return (window_sum(x, widths) / w).to(x.dtype)


def _fold_t(x: torch.Tensor, factor: int) -> torch.Tensor:
    if factor == 1:
        return x
    n = x.shape[-1]
    return x.reshape(*x.shape[:-1], factor, n // factor).mean(dim=-2)


@dataclass
class ScatteringThresholder:
    """The thresholding stage of the front end, built by it from its config.

    See :class:`~scatterbird.pipeline.frontend.scattering.Scattering`.

    Parameters
    ----------
    scattering : Scattering
        The front end whose filters are thresholded.
    mode : str
        One of ``THRESHOLD_MODES`` other than ``"none"``.
    order2 : bool
        Also threshold the second-order wavelet coefficients.

    Attributes
    ----------
    block : int
        Samples per noise block (``NOISE_BLOCK_HOPS`` frames): each filter's noise level is constant on it.
    window : int
        Samples in the noise window (a whole number of blocks, ~``NOISE_WINDOW_S``).
    tap_reach : int
        Half the noise window plus one block: the rule filters are cut to it.
    smooth_half : int
        Half the longest decision window (``RULE_WINDOW_MAX_S``), in samples; 0 outside ``risk``.
    reach : int
        Samples on each side of a coefficient on which its keep-or-kill decision depends, beyond the
        wavelet's own support (``tap_reach + smooth_half``): what streaming adds to the margin, once per
        thresholded order.
    """

    scattering: object
    mode: str
    order2: bool = False
    reach: int = field(init=False)

    def __post_init__(self) -> None:
        if self.mode not in THRESHOLD_MODES or self.mode == "none":
            raise ValueError(f"mode must be one of {', '.join(THRESHOLD_MODES[1:])}; got {self.mode!r}")
        sc = self.scattering
        self.hop = int(sc.hop)
        self.block = NOISE_BLOCK_HOPS * self.hop  # the noise level is constant over such blocks
        half_blocks = max(1, int(round(NOISE_WINDOW_S * sc.config.sample_rate / self.block / 2)))
        self.window = 2 * half_blocks * self.block  # noise window in samples, a whole number of blocks
        self.tap_reach = self.window // 2 + self.block
        self.smooth_half = int(RULE_WINDOW_MAX_S * sc.config.sample_rate) // 2 if self.mode == "risk" else 0
        self.reach = self.tap_reach + self.smooth_half
        self.universal = math.sqrt(2.0 * math.log(self.window))
        self.rule1 = None
        self.want2 = self.order2 and sc.config.max_order == 2
        # taps are cut from filters at a reference length beyond twice their half-width
        self.n_ref = 1 << int(math.ceil(math.log2(2 * self.tap_reach + 2)))
        if self.mode == "risk":
            # built filter by filter (the stack would be ~84 MB), once: then read from the filter cache
            key = {"what": "rule1", "config": sc.config.to_json(), "n": self.n_ref, "cap": self.tap_reach,
                   "k1": sc.first_order_k().tolist()}
            self.rule1 = cached(
                key, lambda: _RuleBank(sc.psi1_filters(self.n_ref), sc.first_order_k(), cap=self.tap_reach)
            )
        self._rule2: dict[tuple, _RuleBank] = {}

    # -- noise level -----------------------------------------------------------------------------------
    def noise_level(self, a2: torch.Tensor, k: int, n: int) -> torch.Tensor:
        """Robust per-filter noise variance ``E|n|^2`` around each coefficient.

        Parameters
        ----------
        a2 : Tensor, shape (..., T)
            ``|y|^2`` of coefficients taken every ``2**k`` samples of a circular buffer of ``n`` samples.
        k : int
            log2 decimation of the coefficients (``2**k <= hop``).
        n : int
            Buffer length in samples (a multiple of ``hop``).

        Returns
        -------
        Tensor, shape (..., T)
            ``median(|y|^2) / ln 2`` over the noise window centred on the coefficient's block.

        Notes
        -----
        Blocks of ``block`` samples are counted from the buffer's first sample. The streaming front end
        starts every buffer a multiple of ``block`` samples after the previous one (its margin is a multiple
        of ``block``), so the blocks, hence the levels, are the same in every chunk and in the whole signal.
        """
        B = self.block
        step = max(1 << k, self.hop // NOISE_POINTS_PER_HOP)  # samples between the points fed to the median
        pts = a2[..., :: step >> k]
        npts = pts.shape[-1]
        per_block, per_window = B // step, self.window // step
        nb = -(-n // B)
        # window of block b: points [b*per_block + per_block/2 - per_window/2, ... + per_window), circular
        left = per_window // 2 - per_block // 2
        length = (nb - 1) * per_block + per_window
        idx = (torch.arange(length, device=a2.device) - left) % npts
        win = pts[..., idx].unfold(-1, per_window, per_block)
        med = win.median(dim=-1).values / _LN2
        T = a2.shape[-1]
        per = B >> k  # coefficients per block
        if per * med.shape[-1] == T:  # whole blocks (every streaming buffer): repeat, no index tensor
            return med.repeat_interleave(per, dim=-1)
        block_of = (torch.arange(T, device=a2.device) << k) // B
        return med[..., block_of]

    # -- the decision ------------------------------------------------------------------------------------
    def decision_widths(self, bandwidth: np.ndarray, k: int, k_signal: int = 0) -> np.ndarray:
        """Decision-window lengths, in coefficients, of filters of effective bandwidth ``bandwidth``.

        Parameters
        ----------
        bandwidth : ndarray
            Effective noise bandwidth of each filter, in cycles per sample of the signal it filters.
        k : int
            log2 step of the coefficients on that signal's grid.
        k_signal : int
            log2 subsampling of that signal relative to the audio (the first-order modulus for order 2).

        Returns
        -------
        ndarray of int
            Odd window lengths: ``RULE_INDEPENDENT / bandwidth`` samples, rounded to an odd count of
            coefficients, at most ``smooth_half`` samples on each side (``RULE_WINDOW_MAX_S``).
        """
        samples = RULE_INDEPENDENT / np.asarray(bandwidth, dtype=np.float64)
        half = np.round(samples / 2**k).astype(np.int64) // 2
        # a window may not reach further than the streaming margin allows
        half = np.clip(half, 0, (self.smooth_half >> k_signal) >> k)
        return 2 * half + 1

    def _gain(
        self,
        y: torch.Tensor,
        z: torch.Tensor | None,
        rho: torch.Tensor | None,
        k: int,
        n: int,
        widths: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Real gain in [0, 1] per coefficient (0/1 up to the ramp, or the soft-threshold shrinkage)."""
        a2 = y.real.square()
        a2.addcmul_(y.imag, y.imag)  # |y|^2, one allocation
        s2 = self.noise_level(a2, k, n)
        if self.mode == "universal-soft":
            # shrink the modulus by the threshold, keep the phase
            return (1.0 - torch.sqrt(s2 * self.universal**2 / a2.clamp_min(1e-30))).clamp_min(0.0)
        if self.mode == "risk":
            del a2
            stat = y.real * z.real
            stat.addcmul_(y.imag, z.imag)  # Re(conj(y) z): the plug-in estimate, noise included
            del z  # the caller holds no other reference: freed here
            thr = s2.mul_(2.0 * rho[:, None])  # twice the keep cost (s2 is not needed after this)
            if widths is not None:
                # kill and keep costs summed over the coefficient's decision window (see RULE_INDEPENDENT);
                # the decision compares the sums as it would the means (it is scale-free). One after the
                # other, so that each float32 statistic is freed as soon as its sums exist.
                stat = window_sum(stat, widths)
                thr = window_sum(thr, widths)
                return decision(stat, thr, inplace=True).to(y.real.dtype)
        else:  # universal-hard
            stat, thr = a2, s2.mul_(self.universal**2)
        return decision(stat, thr, inplace=True)

    def first_order_gains(self, X: torch.Tensor, U1: list[torch.Tensor], groups) -> list[torch.Tensor]:
        """Gains of the first-order coefficients of buffers with spectrum ``X`` (B, n).

        ``U1[g]`` is (B, filters in group g, n / 2**k_g), as in the front end; returns real tensors of the
        same shapes.
        """
        n = X.shape[-1]
        out = []
        for g, u in zip(groups, U1):
            rho = widths = None
            if self.rule1 is not None:
                idx = list(g.index)
                rho = torch.from_numpy(self.rule1.rho[idx].astype(np.float32)).to(X.device)
                widths = self.decision_widths(self.rule1.bandwidth[idx], g.k)
            # z is passed without a name here, so that _gain can free it once it is used (peak memory)
            out.append(
                self._gain(
                    u,
                    self._rule_coefficients(X, self.rule1, idx, g.k) if self.rule1 is not None else None,
                    rho,
                    g.k,
                    n,
                    widths,
                )
            )
        return out

    @staticmethod
    def _rule_coefficients(X: torch.Tensor, bank: _RuleBank, index: list[int], k: int) -> torch.Tensor:
        """``(x * h)(2**k t)`` for the rule filters ``index`` of ``bank``; ``X`` is (..., n) -> (..., F, T)."""
        return torch.fft.ifft(bank.band(X.shape[-1], index, k, X.device).apply(X))

    def first_order(self, X: torch.Tensor, U1: list[torch.Tensor], groups) -> list[torch.Tensor]:
        """Threshold the first-order coefficients (see :meth:`first_order_gains`)."""
        return [u * g for u, g in zip(U1, self.first_order_gains(X, U1, groups))]

    def _second_bank(self, k1: int, plan) -> _RuleBank:
        key = (k1,) + tuple(int(i) for _, n2s, *_ in plan for i in n2s)
        bank = self._rule2.get(key)
        if bank is None:
            sc = self.scattering
            filters, steps = [], []
            for k2, n2s, *_ in plan:
                for i in n2s:
                    filters.append(sc._filter(self.n_ref, sc._psi2_meta[int(i)], k1))
                    steps.append(int(k2))
            bank = _RuleBank(np.stack(filters), steps, cap=self.tap_reach >> k1)
            self._rule2[key] = bank
        return bank

    def second_order(self, Uh: torch.Tensor, V: list[torch.Tensor], k1: int, plan) -> list[torch.Tensor]:
        """Threshold the second-order coefficients of one first-order group.

        Parameters
        ----------
        Uh : Tensor, shape (B, G1, n1)
            Spectra of the first-order moduli (each a real signal at ``2**k1`` subsampling).
        V : list of Tensor
            Per entry ``(k2, n2s, ...)`` of ``plan``: complex coefficients (B, G1, len(n2s), n1 / 2**k2).
        k1 : int
            log2 subsampling of the group.
        plan : sequence of (k2, n2s, ...)
            The second-order filters (all of them form one frame of each modulus signal).
        """
        if not self.want2 or not plan:
            return V
        n1 = Uh.shape[-1]
        n = n1 << k1
        if self.mode == "risk":
            bank = self._second_bank(k1, plan)
            rho_all = torch.from_numpy(bank.rho.astype(np.float32)).to(Uh.device)
        out, pos = [], 0
        for (k2, n2s, *_), v in zip(plan, V):
            m = len(n2s)
            z = rho = widths = None
            if self.mode == "risk":
                z = self._rule_coefficients(Uh, bank, list(range(pos, pos + m)), int(k2))
                rho = rho_all[pos : pos + m]
                widths = self.decision_widths(bank.bandwidth[pos : pos + m], int(k2), k1)
            out.append(v * self._gain(v, z, rho, k1 + k2, n, widths))
            pos += m
        return out


def pipeline_gains(
    x: np.ndarray, thresholders: Sequence[ScatteringThresholder | None], frame: ConvFrame
) -> list[list[np.ndarray]]:
    """Gains the front end's first-order stage gives each coefficient of a signal, for several stages.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Real signal, taken as circular (``n`` a multiple of the noise block).
    thresholders : sequence of ScatteringThresholder or None
        Stages sharing one front end (``None``: keep everything, mode ``none``).
    frame : ConvFrame
        The front end's first-order frame at length ``n`` (:meth:`ConvFrame.from_scattering`).

    Returns
    -------
    list
        Per stage, a list of K float64 arrays (filter by filter), as :meth:`ConvFrame.analyse` lays out
        coefficients. The coefficients are computed in float32 as in the front end.
    """
    x = np.asarray(x, dtype=np.float64)
    live = [t for t in thresholders if t is not None]
    groups = U1 = X = None
    if live:
        ks = live[0].scattering.first_order_k()
        groups = [FilterGroup(int(k), tuple(int(i) for i in np.nonzero(ks == k)[0])) for k in sorted(set(ks))]
        psi = torch.from_numpy(frame.filters.astype(np.float32))
        X = torch.fft.fft(torch.from_numpy(x.astype(np.float32)))[None]
        U1 = [torch.fft.ifft(_fold_t(X[:, None, :] * psi[list(g.index)], 2**g.k)) for g in groups]
    out = []
    for th in thresholders:
        if th is None:
            out.append([np.ones(frame.n // int(m)) for m in frame.steps])
            continue
        gains: list[np.ndarray] = [np.empty(0)] * frame.K
        for g, gg in zip(groups, th.first_order_gains(X, U1, groups)):
            for j, i in enumerate(g.index):
                gains[i] = gg[0, j].numpy().astype(np.float64)
        out.append(gains)
    return out


def denoise(
    x: np.ndarray, thresholder: ScatteringThresholder | None, frame: ConvFrame | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Threshold a signal's first-order coefficients as the front end does, and rebuild it through the dual.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Real signal, taken as circular (``n`` a multiple of the thresholder's noise block).
    thresholder : ScatteringThresholder or None
        The stage to apply (``None``: keep everything, the ``none`` mode).
    frame : ConvFrame, optional
        The first-order frame at length ``n`` (built from the thresholder's front end if omitted).

    Returns
    -------
    x_hat : ndarray, float64, shape (n,)
        ``D Re(Phi^*(a y))``, the estimate of ``frame.project(clean)``.
    gains : list of ndarray
        The gain ``a`` of every first-order coefficient, filter by filter.
    """
    x = np.asarray(x, dtype=np.float64)
    if frame is None:
        if thresholder is None:
            raise ValueError("pass the frame when no thresholder is given")
        frame = ConvFrame.from_scattering(thresholder.scattering, x.size)
    (gains,) = pipeline_gains(x, [thresholder], frame)
    return frame.synthesise([c * a for c, a in zip(frame.analyse(x), gains)]), gains


