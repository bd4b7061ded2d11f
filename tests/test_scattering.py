"""pipeline/frontend/scattering.py: streamed == whole, agreement with kymatio, known answers, metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# kymatio's own transform, imported through its 1-D frontend: the top-level kymatio.numpy/kymatio.torch
# import the 3-D module, which breaks on SciPy >= 1.15.
from kymatio.scattering1d.frontend.numpy_frontend import ScatteringNumPy1D

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.scattering import Scattering, concatenate, scatter_file


def bank(**fields) -> FeatureConfig:
    """The scattering transform alone: thresholding (the default, tested in test_thresholding.py) off."""
    return FeatureConfig(threshold="none", **fields)


SMALL = bank(sample_rate=8000, J=6, Q1=4, Q2=1)

#: The bandwidth grid's distance to kymatio's coefficients, as a fraction of each channel's largest value, for
#: the default configuration, and for the others tested (Q2=2, or J=6 at 8 kHz, where the second order's
#: modulus aliases more); docs/scattering-grid.md says why these bounds are harmless.
GRID_BOUND = 1e-2
OTHER_GRID_BOUND = 6e-2


def birdish(n: int, sr: int, seed: int = 0) -> np.ndarray:
    """Noise plus a few chirps: energy in many channels, so every channel is exercised."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = 0.05 * rng.standard_normal(n)
    for _ in range(4):
        c = rng.uniform(0, n / sr)
        f = rng.uniform(0.05, 0.35) * sr
        x += np.exp(-((t - c) ** 2) / (2 * 0.05**2)) * np.sin(2 * np.pi * (f * t + 0.3 * f * (t - c) ** 2))
    return x.astype(np.float32)


def streamed(sc: Scattering, x: np.ndarray, block: int, batch: int = 1) -> np.ndarray:
    blocks = [x[i : i + block] for i in range(0, x.size, block)]
    return concatenate(list(sc.stream(blocks, batch=batch))).S


# -- streamed == whole ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config", [SMALL, bank(), bank(grid="kymatio")], ids=["small", "default", "default-kymatio-grid"]
)
@pytest.mark.parametrize("length_chunks", [0.3, 1.0, 2.7])
def test_streamed_equals_whole(config, length_chunks):
    sc = Scattering(config, fft_size=None if config is SMALL else 2**16)
    n = max(3 * sc.hop, int(length_chunks * sc.core) + 123)
    x = birdish(n, config.sample_rate)
    whole = sc.whole(x)
    assert whole.S.shape == (sc.n_channels, sc.n_frames(n))
    for block in (997, 8192, n):
        s = streamed(sc, x, block)
        assert s.shape == whole.S.shape
        # log-domain difference: float32 rounding, over every frame (ends included)
        assert np.max(np.abs(s - whole.S)) < 2e-4, block


def test_stream_chunk_sizes_and_batching_agree():
    x = birdish(60000, 8000, seed=3)
    ref = Scattering(SMALL).whole(x).S
    for fft_size in (2**14, 2**15, 2**17):
        sc = Scattering(SMALL, fft_size=fft_size)
        for batch in (1, 3):
            assert np.max(np.abs(streamed(sc, x, 5000, batch) - ref)) < 2e-4


def test_stream_start_times_are_consecutive():
    sc = Scattering(SMALL, fft_size=2**14)
    parts = list(sc.stream([birdish(50000, 8000)]))
    assert len(parts) > 2
    frame = 0
    for p in parts:
        assert p.start_time == pytest.approx(frame * sc.hop / 8000)
        frame += p.n_frames
    assert frame == sc.n_frames(50000)


# -- agreement with kymatio -------------------------------------------------------------------------
def kymatio_distance(config: FeatureConfig, n: int = 2**15, scattering: Scattering | None = None):
    """Per order (1, 2): the largest and the median over channels of ``max|ours - kymatio| / max|kymatio|``,
    over frames one margin away from the ends (kymatio reflect-pads differently there)."""
    x = birdish(n, config.sample_rate, seed=5).astype(np.float64)
    kym = ScatteringNumPy1D(J=config.J, shape=n, Q=(config.Q1, config.Q2))
    ref = kym(x)  # (channels, frames); kymatio's order: 0, first order, second order
    meta = kym.meta()
    sc = scattering or Scattering(config)
    ours_sg = sc.whole(x.astype(np.float32))
    ours = np.exp(ours_sg.S.astype(np.float64)) - config.log_eps
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours_sg.order, meta["order"])
    edge = int(np.ceil(sc.margin / 2**config.J))
    inner = slice(edge, ref.shape[1] - edge)
    out = {}
    for order in (1, 2):
        rows = meta["order"] == order
        a, b = ours[rows, inner], ref[rows, inner]
        dist = np.max(np.abs(a - b), axis=1) / np.abs(b).max(axis=1)
        out[order] = (float(dist.max()), float(np.median(dist)))
    return out


KYMATIO_CONFIGS = [SMALL, bank(J=8, Q1=8, Q2=2, sample_rate=22050), bank()]


@pytest.mark.parametrize("config", KYMATIO_CONFIGS, ids=["J6Q4", "J8Q8-2", "default"])
def test_kymatio_grid_matches_kymatio(config):
    for order, (worst, median) in kymatio_distance(config.replace(grid="kymatio")).items():
        assert worst < 1e-3, order
        assert median < 1e-5, order  # most channels far tighter than the bound


@pytest.mark.parametrize("config", KYMATIO_CONFIGS, ids=["J6Q4", "J8Q8-2", "default"])
def test_bandwidth_grid_is_within_its_bound_of_kymatio(config):
    assert config.grid == "bandwidth"
    bound = GRID_BOUND if config == bank() else OTHER_GRID_BOUND
    for order, (worst, median) in kymatio_distance(config).items():
        assert worst < bound, order
        assert median < GRID_BOUND / 2, order  # most channels far tighter


class _CoarserGrid(Scattering):
    """The bandwidth grid with every first-order rate halved once more (at most to the frame rate)."""

    def _set_grid(self, *args):
        super()._set_grid(*args)
        self._k1 = [min(k + 1, self.log2_T) for k in self._k1]


def test_a_grid_coarser_than_the_bandwidth_breaks_the_bound():
    """The bound is not slack: sampling each modulus at half the rate the bandwidth asks for aliases it."""
    config = bank()
    dist = kymatio_distance(config, scattering=_CoarserGrid(config))
    assert max(worst for worst, _ in dist.values()) > GRID_BOUND


def test_bandwidth_grid_is_coarser_than_kymatios():
    """No wavelet is sampled more finely than on kymatio's grid, and the first order keeps at most half as
    many coefficients per audio sample."""
    bw, ky = Scattering(bank()), Scattering(bank(grid="kymatio"))
    k_bw, k_ky = bw.first_order_k(), ky.first_order_k()
    assert np.all(k_bw >= k_ky) and all(a >= b for a, b in zip(bw._j2, ky._j2))
    assert np.sum(2.0**-k_bw) <= 0.51 * np.sum(2.0**-k_ky)


# -- known answers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("freq", [600.0, 2500.0, 7100.0])
def test_pure_tone_lights_nearest_first_order_channel(freq):
    config = bank()
    sc = Scattering(config)
    t = np.arange(2 * config.sample_rate) / config.sample_rate
    g = sc.whole((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
    first = g.order == 1
    energy = g.S[first][:, 10:-10].mean(axis=1)
    lit = g.frequency[first][np.argmax(energy)]
    nearest = g.frequency[first][np.argmin(np.abs(g.frequency[first] - freq))]
    assert lit == nearest


def test_silence_gives_log_eps():
    config = bank(sample_rate=8000, J=6, Q1=4, log_eps=1e-5)
    g = Scattering(config).whole(np.zeros(5000, np.float32))
    np.testing.assert_allclose(g.S, np.log(1e-5), atol=1e-6)


def test_order0_is_the_average_magnitude():
    """Order 0 is |x| averaged by the unit-DC-gain low-pass: a constant-amplitude square wave gives it."""
    config = bank(sample_rate=8000, J=6, Q1=4, log_eps=1e-9)
    x = np.where(np.arange(20000) % 16 < 8, 0.25, -0.25).astype(np.float32)
    g = Scattering(config).whole(x)
    np.testing.assert_allclose(np.exp(g.S[0, 5:-5]), 0.25, rtol=1e-4)


def test_metadata():
    config = bank()
    sc = Scattering(config)
    g = sc.whole(birdish(30000, config.sample_rate))
    assert g.frame_rate == pytest.approx(22050 / 512)
    assert g.start_time == 0.0
    assert g.config_hash == config.hash
    assert set(np.unique(g.order)) == {0, 1, 2}
    assert g.S.dtype == np.float32
    f1 = g.frequency[g.order == 1]
    assert np.all(np.diff(f1) < 0) and f1.max() < config.sample_rate / 2
    # second-order wavelets are slower than their first-order parent's bandwidth allows
    assert np.all(g.frequency2[g.order == 2] > 0) and np.all(g.frequency2[g.order < 2] == 0)
    assert g.times[1] - g.times[0] == pytest.approx(512 / 22050)


def test_first_order_hook_acts_before_the_modulus():
    """A hook that conjugates the coefficients changes nothing (the modulus is the same); one that zeros
    them kills every first- and second-order channel."""
    x = birdish(20000, 8000)
    plain = Scattering(SMALL).whole(x).S
    conj = Scattering(SMALL, first_order_hook=lambda us, groups: [u.conj() for u in us]).whole(x).S
    np.testing.assert_allclose(conj, plain, atol=1e-5)
    zero = Scattering(SMALL, first_order_hook=lambda us, groups: [torch.zeros_like(u) for u in us]).whole(x)
    assert np.allclose(zero.S[zero.order > 0], np.log(SMALL.log_eps), atol=1e-6)
    np.testing.assert_allclose(zero.S[0], plain[0])


def test_scatter_file_streams_from_disk(tmp_path):
    import soundfile as sf

    x = birdish(3 * 44100, 44100)
    sf.write(tmp_path / "c.flac", x, 44100)
    g = scatter_file(tmp_path / "c.flac", FeatureConfig())
    assert g.n_frames == Scattering(FeatureConfig()).n_frames(3 * 22050)


def test_bad_fft_size():
    with pytest.raises(ValueError, match="fft_size"):
        Scattering(SMALL, fft_size=1000)


def test_modulus_equals_torch_abs():
    from scatterbird.pipeline.frontend.scattering import modulus

    rng = np.random.default_rng(4)
    z = torch.from_numpy((rng.standard_normal((3, 1000)) + 1j * rng.standard_normal((3, 1000))).astype(np.complex64))
    z[0, :10] = 0  # exact zeros stay zero
    z[1, :10] = 1e-12 * z[1, :10]  # small coefficients
    np.testing.assert_allclose(modulus(z).numpy(), z.abs().numpy(), rtol=2e-7, atol=1e-18)
    assert (modulus(z)[0, :10] == 0).all()


def test_filter_banks_are_cached_per_instance():
    """Two front ends in one process keep their own banks (a cache shared by all instances made them evict
    each other's), and one instance keeps the two lengths it used last."""
    a, b = Scattering(SMALL, fft_size=2**14), Scattering(SMALL, fft_size=2**14)
    ba = a._bank(2**14)
    for _ in range(3):
        b._bank(2**14), b._bank(2**15), b._bank(2**16)
    assert a._bank(2**14) is ba
    assert b._bank(2**16) is b._bank(2**16) and list(b._banks) == [2**15, 2**16]


def test_a_second_front_end_reads_its_filters_from_the_disk_cache(tmp_path, monkeypatch):
    """Filters, the reference supports and the thresholding's rule filters are built once, then read back by
    any later front end of the same configuration, with identical output; a damaged file is rebuilt."""
    from scatterbird.pipeline.frontend import thresholding

    monkeypatch.setenv("SCATTERBIRD_FILTER_CACHE", str(tmp_path))
    config = FeatureConfig(sample_rate=8000, J=6, Q1=4, threshold="risk")
    x = birdish(20000, 8000)
    first = Scattering(config, fft_size=2**16).whole(x).S
    files = sorted(tmp_path.glob("*"))
    assert len(files) >= 3  # reference, rule filters, a bank

    def refuse(*args, **kwargs):
        raise AssertionError("rebuilt although cached")

    with monkeypatch.context() as m:
        m.setattr(Scattering, "_build_bank", refuse)
        m.setattr(Scattering, "_reference", refuse)
        m.setattr(thresholding._RuleBank, "__init__", refuse)
        again = Scattering(config, fft_size=2**16).whole(x).S
    np.testing.assert_array_equal(again, first)
    for f in files:
        f.write_bytes(b"garbage")
    np.testing.assert_array_equal(Scattering(config, fft_size=2**16).whole(x).S, first)
    assert all(f.stat().st_size > 100 for f in files)  # replaced by good files


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("threshold", ["none", "risk"])
def test_the_front_end_on_cuda_gives_the_cpu_frames(threshold):
    config = FeatureConfig(threshold=threshold)
    x = birdish(3 * config.sample_rate, config.sample_rate)
    cpu = Scattering(config).whole(x).S
    gpu = Scattering(config, device="cuda").whole(x).S
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape
    assert np.max(np.abs(gpu - cpu)) < (2e-4 if threshold == "none" else 1e-2)
