"""data/augment.py: each augmentation against a closed form (tone frequencies, filter gains, decay rates,
attenuation laws), plus lengths, dtypes and determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from scatterbird.data import augment

SR = 16000


def tone(f: float, seconds: float, sr: int = SR) -> np.ndarray:
    return np.sin(2 * np.pi * f * np.arange(int(seconds * sr)) / sr).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int = SR) -> float:
    m = 8 * x.size  # zero-padded: a fine grid for the peak
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size), m))
    return float(np.fft.rfftfreq(m, 1 / sr)[np.argmax(spec)])


def band_db(x: np.ndarray, lo: float, hi: float, sr: int = SR) -> float:
    f, p = signal.welch(x, sr, nperseg=1024)
    return float(10 * np.log10(np.mean(p[(f >= lo) & (f <= hi)])))


@pytest.mark.parametrize("semitones", [-3.0, -1.0, 2.0, 3.0])
def test_speed_change_moves_a_tone_by_the_ratio_and_shortens_by_it(semitones):
    x = tone(1000.0, 1.0)
    r = augment.semitones_to_ratio(semitones)
    y = augment.pitch_shift(x, semitones)
    assert y.dtype == np.float32
    assert abs(y.size - x.size / r) <= 2
    assert peak_hz(y) == pytest.approx(1000.0 * r, abs=2.0)
    assert r == pytest.approx(2 ** (semitones / 12))


def test_speed_change_by_one_is_the_identity_and_refuses_nonpositive_ratios():
    x = tone(440.0, 0.2)
    np.testing.assert_array_equal(augment.change_speed(x, 1.0), x)
    with pytest.raises(ValueError):
        augment.change_speed(x, 0.0)


def test_speed_up_removes_what_would_fold_over_nyquist():
    x = tone(7000.0, 0.5)  # times 1.5 would be 10.5 kHz, above the 8 kHz Nyquist
    y = augment.change_speed(x, 1.5)
    assert np.sqrt(np.mean(y[200:-200] ** 2)) < 0.01


def test_warp_reads_the_input_at_the_accumulated_rate():
    f = 300.0
    x = tone(f, 1.0)
    rate = augment.warp_rate(x.size, SR, np.random.default_rng(3), depth_semitones=1.0)
    y = augment.apply_warp(x, rate)
    p = np.concatenate(([0.0], np.cumsum(rate[:-1])))[: y.size]
    # linear interpolation of a sine is off by at most (2 pi f / sr)**2 / 8 of its amplitude
    tol = (2 * np.pi * f / SR) ** 2 / 8 + 1e-6
    np.testing.assert_allclose(y, np.sin(2 * np.pi * f * p / SR), atol=tol)
    assert p[-1] <= x.size - 1 and (y.size == rate.size or p[-1] + rate[y.size - 1] > x.size - 1)


def test_warp_rate_is_smooth_and_bounded_by_its_depth():
    rate = augment.warp_rate(SR * 2, SR, np.random.default_rng(0), depth_semitones=1.5)
    st = 12 * np.log2(rate)
    assert np.abs(st).max() <= 1.5 + 1e-9 and np.abs(st).max() >= 1.4  # the curve reaches its depth
    assert np.abs(np.diff(st)).max() < 1e-2  # no jumps from one sample to the next


def test_constant_warp_is_a_speed_change():
    x = tone(500.0, 1.0)
    y = augment.apply_warp(x, np.full(x.size, 1.25))
    assert abs(y.size - (x.size - 1) / 1.25 - 1) <= 1
    assert peak_hz(y) == pytest.approx(625.0, abs=2.0)


def test_time_warp_keeps_the_dtype_and_reaches_the_end_of_the_input():
    x = tone(500.0, 1.0)
    y = augment.time_warp(x, SR, np.random.default_rng(1), depth_semitones=2.0)
    assert y.dtype == np.float32
    lo, hi = x.size / augment.semitones_to_ratio(2.0), x.size / augment.semitones_to_ratio(-2.0)
    assert lo - 2 <= y.size <= hi + 2


def test_eq_with_zero_gains_is_the_identity():
    x = np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    for sos in (
        augment.peaking_sos(1000.0, 0.0, 2.0, SR),
        augment.shelf_sos("low", 300.0, 0.0, SR),
        augment.shelf_sos("high", 3000.0, 0.0, SR),
        augment.random_eq_sos(SR, np.random.default_rng(5), n_bands=(3, 3), gain_db=(0.0, 0.0)),
    ):
        np.testing.assert_allclose(augment.apply_sos(x, sos), x, atol=1e-5)


@pytest.mark.parametrize("gain", [-9.0, 6.0])
def test_peaking_and_shelf_gains_are_where_they_are_stated(gain):
    def db_at(sos, f):
        _, h = signal.sosfreqz(sos, worN=[f], fs=SR)
        return float(20 * np.log10(np.abs(h[0])))

    assert db_at(augment.peaking_sos(2000.0, gain, 1.5, SR), 2000.0) == pytest.approx(gain, abs=1e-6)
    assert db_at(augment.peaking_sos(2000.0, gain, 1.5, SR), 20.0) == pytest.approx(0.0, abs=0.05)
    assert db_at(augment.shelf_sos("low", 500.0, gain, SR), 1e-3) == pytest.approx(gain, abs=1e-3)
    assert db_at(augment.shelf_sos("low", 500.0, gain, SR), 7900.0) == pytest.approx(0.0, abs=0.05)
    assert db_at(augment.shelf_sos("high", 3000.0, gain, SR), 7999.0) == pytest.approx(gain, abs=0.05)
    assert db_at(augment.shelf_sos("high", 3000.0, gain, SR), 1e-3) == pytest.approx(0.0, abs=1e-3)


def test_band_limit_removes_energy_beyond_its_corners():
    x = np.random.default_rng(0).standard_normal(4 * SR).astype(np.float32)
    lp = augment.band_limit(x, SR, high=2000.0)
    assert lp.dtype == np.float32 and lp.size == x.size
    assert band_db(lp, 4000, 8000) - band_db(lp, 100, 1500) < -40  # an octave up: 8th order, >= 48 dB
    hp = augment.band_limit(x, SR, low=2000.0)
    assert band_db(hp, 50, 1000) - band_db(hp, 3000, 7000) < -40
    bp = augment.band_limit(x, SR, low=1000.0, high=2000.0)
    assert band_db(bp, 4000, 8000) - band_db(bp, 1200, 1800) < -40
    assert band_db(bp, 50, 500) - band_db(bp, 1200, 1800) < -40
    np.testing.assert_array_equal(augment.band_limit(x, SR), x)
    with pytest.raises(ValueError):
        augment.band_limit(x, SR, low=3000.0, high=2000.0)


@pytest.mark.parametrize("rt60", [0.3, 0.8, 1.5])
def test_reverb_tail_decays_60_db_in_rt60(rt60):
    ir = augment.reverb_ir(SR, rt60, 5.0, np.random.default_rng(2))
    assert ir.dtype == np.float32 and ir.size == int(np.ceil(rt60 * SR)) and ir[0] == 1.0
    tail = ir[1:].astype(np.float64)
    edc = np.cumsum(tail[::-1] ** 2)[::-1]  # Schroeder's backward integral
    edc_db = 10 * np.log10(edc / edc[0])
    t = np.arange(tail.size) / SR
    sel = (edc_db <= -5) & (edc_db >= -25)
    slope = np.polyfit(t[sel], edc_db[sel], 1)[0]  # dB per second
    assert -60 / slope == pytest.approx(rt60, rel=0.1)


@pytest.mark.parametrize("drr", [-3.0, 0.0, 12.0])
def test_reverb_direct_to_reverberant_ratio_is_as_drawn(drr):
    ir = augment.reverb_ir(SR, 0.5, drr, np.random.default_rng(0)).astype(np.float64)
    assert 10 * np.log10(ir[0] ** 2 / np.sum(ir[1:] ** 2)) == pytest.approx(drr, abs=1e-3)


def test_reverberate_keeps_the_tail_and_a_unit_ir_is_the_identity():
    x = tone(800.0, 0.25)
    ir = augment.reverb_ir(SR, 0.4, 3.0, np.random.default_rng(0))
    y = augment.reverberate(x, ir)
    assert y.dtype == np.float32 and y.size == x.size + ir.size - 1
    np.testing.assert_allclose(augment.reverberate(x, np.array([1.0], dtype=np.float32)), x, atol=1e-6)


def test_distance_gain_law():
    assert augment.distance_gain_db(0.0, 2.0) == pytest.approx(-20 * np.log10(2))  # 6 dB per doubling
    assert augment.distance_gain_db(4000.0, 1.0) == pytest.approx(0.0)
    k = augment.AIR_ABSORPTION_DB_PER_M_KHZ2
    assert augment.distance_gain_db(8000.0, 51.0) == pytest.approx(-20 * np.log10(51) - k * 64 * 50)


@pytest.mark.parametrize("f", [500.0, 4000.0, 7000.0])
def test_at_distance_attenuates_each_frequency_by_the_law(f):
    x = tone(f, 1.0)
    y = augment.at_distance(x, SR, 80.0)
    assert y.dtype == np.float32 and y.size == x.size
    mid = slice(x.size // 4, 3 * x.size // 4)
    got = 20 * np.log10(np.sqrt(np.mean(y[mid] ** 2)) / np.sqrt(np.mean(x[mid] ** 2)))
    assert got == pytest.approx(float(augment.distance_gain_db(f, 80.0)), abs=0.1)


def test_truncate_keeps_a_share_of_the_start_or_the_end():
    x = np.arange(1, 1001, dtype=np.float32)
    starts = ends = 0
    for seed in range(20):
        y = augment.truncate(x, SR, np.random.default_rng(seed), keep=(0.3, 0.7), fade_s=0.001)
        assert y.dtype == np.float32 and 300 <= y.size <= 700
        nf = int(0.001 * SR)
        if y[-1] == 0.0:  # the end is cut: faded to zero there, the start untouched
            np.testing.assert_array_equal(y[: y.size - nf], x[: y.size - nf])
            starts += 1
        else:
            assert y[0] == 0.0
            np.testing.assert_array_equal(y[nf:], x[x.size - y.size + nf :])
            ends += 1
    assert starts and ends


def test_fade_ramps():
    y = augment.fade(np.ones(10, dtype=np.float32), 4, 5)
    np.testing.assert_allclose(y[:4], [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(y[5:], [0.8, 0.6, 0.4, 0.2, 0.0], atol=1e-7)


def test_active_power_of_a_tone_burst_is_its_power_over_the_burst():
    sr = 1000  # 20-sample frames; a 50 Hz tone has whole periods in each
    x = np.zeros(2000)
    x[400:1400] = 0.5 * np.sin(2 * np.pi * 50 * np.arange(1000) / sr)
    assert augment.active_power(x, sr) == pytest.approx(0.125, rel=1e-9)


def test_draws_are_deterministic_for_a_seed():
    x = np.random.default_rng(9).standard_normal(3000).astype(np.float32)
    for fn in (
        lambda r: augment.time_warp(x, SR, r),
        lambda r: augment.random_eq(x, SR, r),
        lambda r: augment.reverb_ir(SR, 0.3, 0.0, r),
        lambda r: augment.truncate(x, SR, r),
    ):
        a, b, c = fn(np.random.default_rng(1)), fn(np.random.default_rng(1)), fn(np.random.default_rng(2))
        np.testing.assert_array_equal(a, b)
        assert a.shape != c.shape or not np.array_equal(a, c)
