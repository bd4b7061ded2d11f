"""Tests of pipeline/frontend/thresholding.py: the frame algebra against dense matrices and Monte Carlo, the rule's
orthonormal limit, the pipeline stage (noise level, pure noise, a tone), streaming, and the denoising
benchmark's claims on a few draws."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend import thresholding
from scatterbird.pipeline.frontend.scattering import Scattering, concatenate
from scatterbird.pipeline.frontend.thresholding import (
    ConvFrame,
    ScatteringThresholder,
    denoise,
    dense_rule,
    pipeline_gains,
)

torch.set_num_threads(1)
SR = 22050


# -- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_frame() -> ConvFrame:
    """A small Morlet bank (14 filters, decimations 1..8) at n = 128: small enough for dense matrices."""
    return ConvFrame.from_scattering(Scattering(FeatureConfig(sample_rate=8000, J=4, Q1=4)), 128)


@pytest.fixture(scope="module")
def mid_frame() -> ConvFrame:
    return ConvFrame.from_scattering(Scattering(FeatureConfig(sample_rate=8000, J=5, Q1=8)), 1024)


@pytest.fixture(scope="module")
def front_end() -> Scattering:
    """The pipeline's default bank (J=9, Q=8 at 22.05 kHz) with risk thresholding."""
    return Scattering(FeatureConfig(threshold="risk"))


@pytest.fixture(scope="module")
def stages(front_end):
    return {
        "none": None,
        "universal-hard": ScatteringThresholder(front_end, "universal-hard"),
        "risk": front_end._thresholder,
    }


@pytest.fixture(scope="module")
def frame16(front_end) -> ConvFrame:
    return ConvFrame.from_scattering(front_end, 2**16)


def circulant(spectrum: np.ndarray) -> np.ndarray:
    """The real matrix of circular filtering by a real, symmetric Fourier response."""
    n = spectrum.size
    return np.real(np.fft.ifft(np.fft.fft(np.eye(n), axis=0) * spectrum[:, None], axis=0))


def shannon_frame(n: int = 64) -> ConvFrame:
    """Analytic dyadic Shannon wavelets: an orthonormal basis of the real signals without DC and Nyquist."""
    filters, steps = [], []
    lo = 1
    while lo < n // 2:
        w = lo  # band [lo, 2 lo), decimated by n / w: alias-free, one coefficient per bin
        f = np.zeros(n)
        f[lo : lo + w] = math.sqrt(2 * n / w)
        filters.append(f)
        steps.append(int(math.log2(n // w)))
        lo += w
    return ConvFrame(np.array(filters), steps)


# -- frame algebra --------------------------------------------------------------------------------------
def test_pipeline_bank_is_alias_free_and_dual_reconstructs_the_band(frame16):
    fr = frame16
    assert fr.alias_level < 1e-20  # the diagonal frame operator is exact
    f = np.fft.fftfreq(fr.n) * SR
    band = f[(f > 0) & fr.band]
    assert band.min() < 10 and band.max() > 10000  # ~6.7 Hz .. 10.1 kHz
    rng = np.random.default_rng(0)
    x = np.fft.ifft(np.fft.fft(rng.standard_normal(fr.n)) * fr.band).real
    rebuilt = fr.synthesise(fr.analyse(x))
    assert np.linalg.norm(rebuilt - x) / np.linalg.norm(x) < 1e-5


def test_fast_operators_equal_dense_matrices(tiny_frame):
    fr = tiny_frame
    phi = fr.dense()
    D = circulant(fr.inverse)
    G, Gt = phi @ phi.T, phi @ D @ D @ phi.T
    rng = np.random.default_rng(1)
    x = rng.standard_normal(fr.n)
    c = fr.analyse(x)
    cf = fr.flatten(c)
    np.testing.assert_allclose(fr.flatten(fr.gram(c)), G @ cf, atol=1e-10 * np.abs(G @ cf).max())
    np.testing.assert_allclose(fr.flatten(fr.dual_gram(c)), Gt @ cf, atol=1e-10 * np.abs(Gt @ cf).max())
    np.testing.assert_allclose(fr.synthesise(c), D @ phi.T @ cf, atol=1e-10)
    # the rule's sums over every filter and lag: G~ c is the analysis by the rule filters; diag(G~G) per row
    groups = fr.row_groups()
    kill = np.bincount(groups, cf * (Gt @ cf))
    np.testing.assert_allclose(np.concatenate(fr.kill_cost(x)), kill, atol=1e-10 * np.abs(kill).max())
    diag = np.bincount(groups, np.einsum("ij,ji->i", Gt, G))
    per_row = np.concatenate([np.full(fr.n // m, v) for v, m in zip(fr.gram_diag, fr.steps)])
    np.testing.assert_allclose(diag, per_row, atol=1e-12)
    # in the band, the regularised dual is the canonical dual (pseudo-inverse)
    xb = np.fft.ifft(np.fft.fft(x) * fr.band).real
    np.testing.assert_allclose(np.linalg.pinv(phi) @ fr.flatten(fr.analyse(xb)), xb, atol=1e-10)


@pytest.mark.parametrize("coloured", [False, True])
def test_closed_form_risk_equals_dense_formula(tiny_frame, coloured):
    fr = tiny_frame
    rng = np.random.default_rng(2)
    x = rng.standard_normal(fr.n)
    mask = [rng.random(fr.n // m) < 0.6 for m in fr.steps]
    f = np.abs(np.fft.fftfreq(fr.n))
    psd = 0.3 / (f + 0.02) if coloured else np.full(fr.n, 0.3)
    phi = fr.dense()
    D = circulant(fr.inverse)
    a = fr.flatten_mask(mask)
    bias = D @ phi.T @ ((1 - a) * fr.flatten(fr.analyse(x)))
    C = phi @ circulant(psd) @ phi.T  # coefficient noise covariance
    Gt = phi @ D @ D @ phi.T
    dense = bias @ bias + a @ (Gt * C.T) @ a  # tr(A G~ A C)
    assert fr.risk(mask, x, psd) == pytest.approx(dense, rel=1e-9)


@pytest.mark.parametrize("coloured", [False, True])
def test_closed_form_risk_equals_monte_carlo(mid_frame, coloured):
    fr = mid_frame
    n = fr.n
    t = np.arange(n)
    clean = np.sin(2 * np.pi * (0.05 * t + 0.1 * t**2 / n)) * np.hanning(n) + 0.5 * np.sin(2 * np.pi * 0.31 * t)
    f = np.abs(np.fft.fftfreq(n))
    psd = 0.02 / (f + 0.01) if coloured else np.full(n, 0.25)
    rng = np.random.default_rng(3)

    def noise():
        return np.fft.ifft(np.sqrt(psd) * np.fft.fft(rng.standard_normal(n))).real

    mask = fr.keep_plugin(clean + noise(), psd)  # a realistic mask, then held fixed
    target = fr.project(clean)
    c = fr.analyse(clean)
    errs = []
    for _ in range(2000):
        y = [ci + ni for ci, ni in zip(c, fr.analyse(noise()))]
        errs.append(np.sum((fr.synthesise([a * yi for a, yi in zip(mask, y)]) - target) ** 2))
    errs = np.array(errs)
    se = errs.std(ddof=1) / np.sqrt(errs.size)
    assert abs(errs.mean() - fr.risk(mask, clean, psd)) < 4 * se


# -- the rule -------------------------------------------------------------------------------------------
def test_rule_in_an_orthonormal_basis_is_the_oracle_and_the_sqrt2_threshold():
    rng = np.random.default_rng(4)
    phi, _ = np.linalg.qr(rng.standard_normal((48, 48)))
    sigma = 0.7
    c = rng.standard_normal(48) * np.where(rng.random(48) < 0.3, 3.0, 0.4)
    y = c + sigma * rng.standard_normal(48)
    np.testing.assert_array_equal(dense_rule(phi, c, sigma, plugin=False), c**2 > sigma**2)
    np.testing.assert_array_equal(dense_rule(phi, y, sigma, plugin=True), np.abs(y) > math.sqrt(2) * sigma)


def test_convolutional_rule_in_an_orthonormal_wavelet_basis():
    fr = shannon_frame(64)
    phi = fr.dense()
    np.testing.assert_allclose(phi @ phi.T, np.eye(phi.shape[0]), atol=1e-12)  # orthonormal real frame
    sigma = 0.5
    rng = np.random.default_rng(5)
    x = rng.standard_normal(fr.n) * 2.0
    x = np.fft.ifft(np.fft.fft(x) * fr.band).real
    y = x + sigma * rng.standard_normal(fr.n)
    cy, cx = fr.analyse(y), fr.analyse(x)
    np.testing.assert_allclose(fr.keep_cost(sigma**2), fr.noise_variance(sigma**2))  # = 2 sigma^2 (Re and Im)
    ev = fr.noise_variance(sigma**2)
    for a, c, v in zip(fr.keep_oracle(x, sigma**2), cx, ev):
        np.testing.assert_array_equal(a, np.abs(c) ** 2 > v)  # |c|^2 > E|n|^2: sigma^2 per real coordinate
    plug = fr.keep_plugin(y, sigma**2)
    for a, c, v in zip(plug, cy, ev):
        np.testing.assert_array_equal(a, np.abs(c) > math.sqrt(2 * v))  # the sqrt(2) sigma hard threshold
    dense = dense_rule(phi, fr.flatten(cy), sigma, plugin=True, groups=fr.row_groups())
    np.testing.assert_array_equal(dense, np.concatenate(plug))


def test_rule_filters_and_keep_costs_of_the_pipeline_match_the_frame(front_end):
    rule = front_end._thresholder.rule1
    n = 2**17
    fr = ConvFrame.from_scattering(front_end, n)
    spectra = rule.spectra(n).numpy().astype(np.float64)
    cut = [k for k, h in enumerate(rule.half) if h == front_end._thresholder.tap_reach]
    assert cut == [60, 61]  # only the two lowest duals are windowed to the streaming reach
    for k in range(fr.K):
        ref = fr.rule_filters[k]
        err = np.abs(spectra[k] - ref).max() / np.abs(ref).max()
        assert err < (2e-2 if k in cut else 1e-5), k
        assert rule.rho[k] == pytest.approx(fr.rho[k], rel=2e-2 if k in cut else 1e-6)
    # the band-limited product (pipeline/frontend/bands.py) equals the full folded product
    x = torch.from_numpy(np.random.default_rng(10).standard_normal(n).astype(np.float32))
    X = torch.fft.fft(x)[None]
    ks = front_end.first_order_k()
    for k in sorted(set(ks)):
        idx = [int(i) for i in np.nonzero(ks == k)[0]]
        if front_end.config.grid == "kymatio":
            assert rule.band(n, idx, int(k)).rows == 1  # alias-free: one bin per output bin
        fast = ScatteringThresholder._rule_coefficients(X, rule, idx, int(k))
        full = torch.fft.ifft((X[:, None, :] * rule.spectra(n)[idx]).reshape(1, len(idx), 2**k, -1).mean(2))
        assert float((fast - full).abs().max() / full.abs().max()) < 1e-6


# -- noise level ----------------------------------------------------------------------------------------
def test_noise_level_equals_a_slow_loop():
    sc = Scattering(FeatureConfig(sample_rate=8000, J=6, threshold="universal-hard"))
    th = sc._thresholder
    n, k = 2**15, 2
    rng = np.random.default_rng(6)
    a2 = torch.from_numpy(rng.exponential(size=(2, 3, n >> k)).astype(np.float32))
    fast = th.noise_level(a2, k, n).numpy()
    step = max(1 << k, th.hop // 4)
    for t in rng.integers(0, n >> k, size=40):
        b = (t << k) // th.block
        centre = b * th.block + th.block // 2
        pos = (centre - th.window // 2 + step * np.arange(th.window // step)) % n
        vals = np.sort(a2.numpy()[..., pos >> k], axis=-1)
        lower_median = vals[..., vals.shape[-1] // 2 - 1]
        np.testing.assert_allclose(fast[..., t], lower_median / math.log(2), rtol=1e-6)


def test_noise_level_under_a_loud_call_is_the_contaminated_median(front_end, frame16):
    """A tone filling a quarter of the window moves the median to the noise's 2/3 quantile: ln 3 / ln 2
    times the true level in the filters it dominates; the other filters keep the true level."""
    th = front_end._thresholder
    n = frame16.n
    assert th.window >= n  # every window sees the whole (circular) clip
    rng = np.random.default_rng(7)
    sigma, amp, f0 = 0.05, 2.0, 3000.0
    x = sigma * rng.standard_normal(n)
    x[: n // 4] += amp * np.sin(2 * np.pi * f0 / SR * np.arange(n // 4))
    X = torch.fft.fft(torch.from_numpy(x.astype(np.float32)))[None]
    ks = front_end.first_order_k()
    k = int(ks[np.argmin(np.abs(front_end.psi1_xi * SR - f0))])  # the group holding 3 kHz
    idx = [i for i, kk in enumerate(ks) if kk == k]
    psi = torch.from_numpy(frame16.filters[idx].astype(np.float32))
    u = torch.fft.ifft((X[:, None, :] * psi).reshape(1, len(idx), 2**k, -1).mean(2))
    est = th.noise_level(u.real**2 + u.imag**2, k, n)[0].numpy().mean(-1)
    truth = sigma**2 * frame16.noise_variance(1.0)[idx]
    tone = (amp / 2 * frame16.filters[idx, int(round(f0 / SR * n))]) ** 2  # |tone coefficient|^2
    loud, quiet = tone > 100 * truth, tone < 0.01 * truth
    assert loud.sum() >= 3 and quiet.sum() >= 2
    np.testing.assert_allclose(est[loud], truth[loud] * math.log(3) / math.log(2), rtol=0.15)
    np.testing.assert_allclose(est[quiet], truth[quiet], rtol=0.12)


# -- the pipeline stage ---------------------------------------------------------------------------------
def test_pure_noise_is_killed(stages, frame16):
    rng = np.random.default_rng(8)
    x = 0.05 * rng.standard_normal(frame16.n)
    none_out, risk_out, hard_out = (
        np.sum(denoise(x, stages[m], frame16)[0] ** 2) for m in ("none", "risk", "universal-hard")
    )
    g_risk, g_hard = pipeline_gains(x, [stages["risk"], stages["universal-hard"]], frame16)
    kept = np.array([np.mean(g > 0.5) for g in g_risk])
    # the rule sums the plug-in statistic (|y|^2-like, exponential for noise) over RULE_INDEPENDENT = 16
    # independent samples and keeps when the sum exceeds twice its mean: the Gamma(16) tail beyond 32
    tail = scipy.stats.gamma.sf(2 * thresholding.RULE_INDEPENDENT, thresholding.RULE_INDEPENDENT)
    assert tail == pytest.approx(6.6e-4, rel=0.01)
    assert tail / 3 < kept[2:42].mean() < 3 * tail  # measured 6.6e-4
    assert kept.max() < 0.02
    assert max(np.mean(g > 0.5) for g in g_hard) < 2e-3
    assert risk_out < 0.01 * none_out  # measured 1.3e-3
    assert hard_out < 0.01 * none_out


def test_single_coefficient_rule_is_the_sqrt2_sigma_threshold(monkeypatch, front_end, frame16):
    """With decision windows of one coefficient the stage is the paper's per-coefficient plug-in rule:
    keep when |y|^2 > 2 E|n|^2, a fraction exp(-2) = 13.5 % of pure noise."""
    monkeypatch.setattr(thresholding, "RULE_INDEPENDENT", 1e-9)
    th = front_end._thresholder
    assert all(set(th.decision_widths(th.rule1.bandwidth, k)) == {1} for k in range(10))
    rng = np.random.default_rng(8)
    x = 0.05 * rng.standard_normal(frame16.n)
    (g_risk,) = pipeline_gains(x, [th], frame16)
    kept = np.array([np.mean(g > 0.5) for g in g_risk])
    # (per filter, the estimated noise level's sampling error moves it by a few points)
    assert abs(kept[2:42].mean() - math.exp(-2)) < 0.01
    assert np.all((kept[2:42] > 0.08) & (kept[2:42] < 0.2))


def test_window_mean_equals_a_slow_loop():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((2, 4, 37)).astype(np.float32))
    widths = [1, 5, 5, 81]  # 81 > 37: wraps more than once, as a circular filter
    out = thresholding.window_mean(x, widths).numpy()
    xn = x.numpy().astype(np.float64)
    for f, w in enumerate(widths):
        h = w // 2
        for t in range(37):
            ref = np.mean([xn[:, f, (t + d) % 37] for d in range(-h, h + 1)], axis=0)
            np.testing.assert_allclose(out[:, f, t], ref, rtol=1e-5, atol=1e-6)


def test_window_sum_is_float64_and_the_mean_times_the_width():
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((3, 50)).astype(np.float32))
    widths = [3, 1, 101]
    s = thresholding.window_sum(x, widths)
    assert s.dtype == torch.float64 and s.shape == x.shape
    m = thresholding.window_mean(x, widths)
    np.testing.assert_allclose(s.numpy(), m.numpy() * np.array(widths)[:, None], rtol=1e-5, atol=1e-5)
    # width 1: the row itself, exactly
    np.testing.assert_array_equal(s[1].numpy(), x[1].numpy().astype(np.float64))


def test_decision_in_place_equals_the_copying_one():
    rng = np.random.default_rng(6)
    stat = torch.from_numpy(rng.uniform(0, 2, 1000))
    thr = torch.ones(1000, dtype=torch.float64)
    ref = thresholding.decision(stat, thr)
    assert (stat.numpy() <= 2).all() and (thr == 1).all()  # not touched
    # 0 below thr * 0.995, 1 above thr * 1.005, linear between
    expect = np.clip((stat.numpy() - 1) / 0.01 + 0.5, 0, 1)
    np.testing.assert_allclose(ref.numpy(), expect, atol=1e-9)
    out = thresholding.decision(stat.clone(), thr.clone(), inplace=True)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


def test_noise_level_equals_a_slow_median_per_block(front_end):
    """Each coefficient gets the lower median / ln 2 of the points in the noise window centred on its block,
    whether the buffer holds whole blocks (every streaming buffer: the levels are repeated) or not (indexed)."""
    th = front_end._thresholder
    rng = np.random.default_rng(7)
    for k in (0, 3):
        for n in (4 * th.block, 4 * th.block + th.hop):
            a2 = rng.exponential(size=(1, 2, n >> k)).astype(np.float32)
            levels = th.noise_level(torch.from_numpy(a2), k, n).numpy()
            assert levels.shape == a2.shape
            step = max(1 << k, th.hop // thresholding.NOISE_POINTS_PER_HOP)
            pts = a2[..., :: step >> k]
            per_block, per_window = th.block // step, th.window // step
            for t in range(0, n >> k, 97):
                b = (t << k) // th.block
                lo = b * per_block + per_block // 2 - per_window // 2
                win = np.sort(pts[..., np.arange(lo, lo + per_window) % pts.shape[-1]], axis=-1)
                ref = win[..., (per_window - 1) // 2] / math.log(2)
                np.testing.assert_allclose(levels[..., t], ref, rtol=1e-6)


def test_decision_windows_hold_the_same_number_of_independent_samples(front_end):
    th = front_end._thresholder
    sr = front_end.config.sample_rate
    b = th.rule1.bandwidth * sr  # Hz
    # a Morlet's effective noise bandwidth is proportional to its centre frequency above the low edge
    ratio = b / (front_end.psi1_xi * sr)
    assert np.ptp(ratio[:40]) < 0.05 * ratio[:40].mean()
    ks = front_end.first_order_k()
    w = np.array([th.decision_widths(th.rule1.bandwidth[[i]], int(k))[0] for i, k in enumerate(ks)])
    assert np.all(w % 2 == 1)
    step_s = 2.0**ks / sr
    w = w * step_s  # seconds
    uncapped = thresholding.RULE_INDEPENDENT / b < thresholding.RULE_WINDOW_MAX_S - step_s
    # 12 ms at 9.6 kHz .. ~1.48 s for kymatio's constant-bandwidth filters below 80 Hz; the lowest is capped
    assert uncapped[:55].all() and not uncapped[-1]
    # each window holds RULE_INDEPENDENT independent samples, to the rounding to an odd count of coefficients
    assert np.all(np.abs(w * b - thresholding.RULE_INDEPENDENT)[uncapped] <= 1.5 * (b * step_s)[uncapped])
    for k in range(9):
        half = th.decision_widths(th.rule1.bandwidth, k) // 2 * 2**k
        assert half.max() <= th.smooth_half  # within the streaming margin
        assert th.smooth_half == int(thresholding.RULE_WINDOW_MAX_S * sr) // 2


def test_a_strong_tone_survives(stages, frame16, front_end):
    """A 0.6 s tone (a call; anything lasting more than half the 3 s noise window is, by construction,
    background in its filter) survives in its channel, and only there and then."""
    rng = np.random.default_rng(9)
    n = frame16.n
    t = np.arange(n)
    on = (t > n // 3) & (t < n // 3 + int(0.6 * SR))
    x = 0.05 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 3000 / SR * t) * on
    nearest = int(np.argmin(np.abs(front_end.psi1_xi * SR - 3000)))
    step = int(frame16.steps[nearest])
    inside = on[::step] & np.roll(on, 2000)[::step] & np.roll(on, -2000)[::step]  # 90 ms from the ends
    outside = ~(np.roll(on, 4000) | np.roll(on, -4000) | on)[::step]
    far = np.abs(np.log2(front_end.psi1_xi * SR / 3000)) > 1
    for mode in ("risk", "universal-hard"):
        (gains,) = pipeline_gains(x, [stages[mode]], frame16)
        g = gains[nearest] > 0.5
        assert g[inside].mean() == 1.0, mode
        assert g[outside].mean() < 0.2, mode
        # elsewhere, the pure-noise rate: ~7e-4 for risk, ~0 for universal-hard
        assert np.mean([np.mean(gg > 0.5) for gg, f in zip(gains, far) if f]) < 0.01, mode


# -- streaming --------------------------------------------------------------------------------------------
def _stream_vs_whole(config: FeatureConfig, fft_size: int, seconds: float):
    from scatterbird.data.synthetic import make_clip

    sc = Scattering(config, fft_size=fft_size)
    mix, _, _ = make_clip(seconds, config.sample_rate, hasbird=True, snr_db=0, background_kind="pink", rng=11)
    cut = [0, 3001, 17000, mix.size // 2, mix.size]
    streamed = concatenate(list(sc.stream([mix[a:b] for a, b in zip(cut, cut[1:])]))).S
    whole = sc.whole(mix).S
    edge = sc.margin // sc.hop + 1
    assert streamed.shape == whole.shape and whole.shape[1] > 2 * edge + 50
    return np.abs(streamed - whole)[:, edge:-edge], sc


# Float32 FFT error is relative to a buffer's total energy, so coefficients in weak bands (the high bands of
# pink noise next to a loud call) are accurate to ~1e-5..1e-4 only, and buffers of different lengths round
# differently; the 1 % decision ramp turns that into gain differences 100 times larger for the coefficients
# inside it (more of them with the windowed rule, whose statistic varies slowly). Measured here: `none`
# 2e-6; `risk` max 2.8e-4, 99.9 % below 1.2e-4 (log units).
def test_streamed_equals_whole_with_risk_thresholding():
    d, sc = _stream_vs_whole(FeatureConfig(sample_rate=8000, J=7, threshold="risk"), 2**16, 14.0)
    assert sc.core < 8000 * 14 / 3  # several chunks
    assert np.quantile(d, 0.999) < 2e-4
    assert d.max() < 1e-3


def test_streamed_equals_whole_with_second_order_thresholding():
    d, sc = _stream_vs_whole(FeatureConfig(sample_rate=8000, J=7, threshold="risk", threshold_order2=True), 2**17, 24.0)
    assert sc.core < 8000 * 24 / 2
    # second-order coefficients are less accurate still (the FFT of |U1| is dominated by its mean)
    assert np.quantile(d, 0.999) < 5e-4
    assert d.max() < 1e-2


def test_modes_change_the_features():
    rng = np.random.default_rng(12)
    x = (0.05 * rng.standard_normal(8000 * 5)).astype(np.float32)
    out = {}
    for mode in ("none", "universal-hard", "universal-soft", "risk"):
        sc = Scattering(FeatureConfig(sample_rate=8000, J=7, threshold=mode))
        out[mode] = sc.whole(x).S
        assert np.isfinite(out[mode]).all()
    order1 = sc.order == 1
    for mode in ("universal-hard", "universal-soft", "risk"):
        assert out[mode][order1].mean() < out["none"][order1].mean() - 0.5, mode  # noise removed
    assert len({FeatureConfig(threshold=m).hash for m in out}) == 4


# -- the denoising benchmark's set-up, few draws -----------------------------------------------------------
@pytest.fixture(scope="module")
def bench_table():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_thresholding.py"
    spec = importlib.util.spec_from_file_location("bench_thresholding", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    setup = bench.make_setup(n=2**15)
    return bench.denoising_table(setup, draws=2, snrs=(-5, 0, 5, 10), noises=("white", "pink"), seed=1, oracle=False)


def test_risk_beats_no_thresholding_at_every_snr(bench_table):
    for cell, rows in bench_table.items():
        assert rows["risk"].mean() < 0.1 * rows["none"].mean(), cell  # measured -13 to -22 dB


def test_risk_beats_universal_hard_at_every_snr(bench_table):
    for cell, rows in bench_table.items():
        # with a margin: measured 2.5-8 dB lower (50 draws per cell, benchmarks/bench_thresholding.py)
        assert rows["risk"].mean() < 0.8 * rows["universal-hard"].mean(), cell
