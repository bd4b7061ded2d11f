"""pipeline/frontend/bands.py: band-limited folded products equal the full-length product and fold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kymatio.scattering1d.filter_bank import scattering_filter_factory

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.bands import FilterStack, band
from scatterbird.pipeline.frontend.scattering import Scattering


def full_fold(Y: np.ndarray, h: np.ndarray, d: int) -> np.ndarray:
    """kymatio's way: the whole product, then the mean over the 2**d periods of the spectrum."""
    p = Y * h
    return p.reshape(*p.shape[:-1], 2**d, -1).mean(-2)


@pytest.fixture(scope="module")
def filters():
    m = 2**13
    phi, psi1, psi2 = scattering_filter_factory(m, 7, (4, 1), 2**7)
    return m, phi, psi1, psi2


@pytest.mark.parametrize("d", [0, 1, 3, 5])
@pytest.mark.parametrize("half", [False, True])
def test_band_product_equals_full_product_and_fold(filters, d, half):
    m, _, psi1, _ = filters
    H = np.stack([p["levels"][0] for p in psi1])
    x = np.random.default_rng(d).standard_normal((2, m))
    ref = full_fold(np.fft.fft(x)[:, None, :], H, d)
    Y = np.fft.rfft(x) if half else np.fft.fft(x)
    out = band(H, d, half=half).apply(torch.from_numpy(Y.astype(np.complex64))).numpy()
    assert out.shape == ref.shape == (2, len(psi1), m >> d)
    assert np.abs(out - ref).max() < 1e-6 * np.abs(ref).max()


def test_a_filter_wider_than_the_output_band_is_folded(filters):
    """The low-pass at the frame rate is wider than the band it is folded to: several rows are summed."""
    m, phi, _, _ = filters
    h = phi["levels"][0]
    b = band(h, 7, half=True)
    assert b.rows >= 2 and b.single
    x = np.random.default_rng(1).standard_normal((3, m))
    ref = full_fold(np.fft.fft(x), h, 7)
    out = b.apply(torch.from_numpy(np.fft.rfft(x).astype(np.complex64))).numpy()
    assert out.shape == (3, m >> 7)
    assert np.abs(out - ref).max() < 1e-6 * np.abs(ref).max()


def test_band_keeps_only_the_filters_support(filters):
    m, _, psi1, _ = filters
    h = psi1[0]["levels"][0]
    b = band(h, 0)
    assert b.rows == 1  # full spectrum, no aliasing: the pieces are written, not added
    kept = np.concatenate([np.arange(lo, lo + w.shape[0]) for lo, _, w in b.segments[0]])
    assert kept.size < 0.5 * m  # the highest filter lives on well under half the circle
    assert np.abs(h[np.setdiff1d(np.arange(m), kept)]).max() <= 1e-8 * np.abs(h).max()


def test_wrong_spectrum_length_is_refused(filters):
    m, _, psi1, _ = filters
    with pytest.raises(ValueError, match="spectrum of length"):
        band(psi1[0]["levels"][0], 1).apply(torch.zeros(m // 2 + 1, dtype=torch.complex64))


def test_front_end_builds_each_filter_as_kymatio_does():
    """Filters built one at a time (to keep long buffers' banks small) equal kymatio's factory output."""
    sc = Scattering(FeatureConfig(threshold="none"))
    n = 2**14
    phi_f, psi1_f, psi2_f = sc._factory(n)
    for meta, ref in zip(sc._psi1_meta, psi1_f):
        np.testing.assert_array_equal(sc._filter(n, meta), ref["levels"][0])
    for meta, ref in zip(sc._psi2_meta, psi2_f):
        for level, lev in enumerate(ref["levels"]):
            np.testing.assert_array_equal(sc._filter(n, meta, level), lev)
    for level, lev in enumerate(phi_f["levels"]):
        np.testing.assert_array_equal(sc._filter(n, None, level), lev)


@pytest.mark.parametrize("n", [2**12, 2**15])
@pytest.mark.parametrize(
    "xi, sigma", [(0.35, 0.1), (0.35, 0.03), (0.01, 0.002), (0.4, 0.17), (0.2, 0.5), (None, 0.1 / 512), (None, 0.1)]
)
def test_morlet_builder_is_kymatios_bit_for_bit(n, xi, sigma):
    """Only the Gaussian samples that do not underflow are evaluated; the filter must not change at all
    (sigma up to 0.5 takes kymatio's 5 periods)."""
    from kymatio.scattering1d.filter_bank import adaptive_choice_P, gauss_1d, morlet_1d

    from scatterbird.pipeline.frontend.scattering import morlet_fourier

    ref = morlet_1d(n, xi, sigma) if xi else gauss_1d(n, sigma)
    np.testing.assert_array_equal(morlet_fourier(n, xi, sigma), ref)
    assert min(adaptive_choice_P(sigma), 5) >= 2


@pytest.mark.parametrize("d, half", [(0, False), (3, True), (7, True)])
def test_a_band_read_row_by_row_equals_the_stacked_one(filters, d, half):
    """A FilterStack (rows built on access) gives the same band as the stacked array, gather (d=7: wider
    than the output band) and contiguous pieces alike, and each row is built once."""
    m, phi, psi1, _ = filters
    H = np.stack([p["levels"][0] for p in psi1] + [phi["levels"][0]])
    built = []

    def row(i: int) -> np.ndarray:
        built.append(i)
        return H[i]

    stack = FilterStack(m, H.shape[0], row)
    assert len(stack) == H.shape[0] and stack.shape == H.shape
    a, b = band(H, d, half=half), band(stack, d, half=half)
    assert built == list(range(H.shape[0]))
    Y = np.fft.rfft if half else np.fft.fft
    x = torch.from_numpy(Y(np.random.default_rng(2).standard_normal((2, m))).astype(np.complex64))
    np.testing.assert_array_equal(a.apply(x).numpy(), b.apply(x).numpy())
    with pytest.raises(IndexError):
        stack[H.shape[0]]


def test_a_band_refuses_rows_of_different_lengths():
    with pytest.raises(ValueError, match="different lengths"):
        band([np.ones(16), np.ones(32)], 0)
