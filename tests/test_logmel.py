"""The log-mel baseline front end: values against an independent STFT, tone placement, shapes, cache, failures."""

from __future__ import annotations

import os
import pickle
from functools import partial

import librosa
import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from scatterbird.errors import ConfigError
from scatterbird.pipeline.frontend import logmel as logmel_module
from scatterbird.pipeline.frontend.logmel import LogMelConfig, logmel, logmel_clips

SR = 22050


def reference_logmel(x: np.ndarray, config: LogMelConfig) -> np.ndarray:
    """scipy's STFT (zeros half a window beyond each end), power, librosa's mel matrix, the same log."""
    n_fft, hop = config.n_fft, config.hop
    _, _, Z = signal.stft(x.astype(np.float64), window="hann", nperseg=n_fft, noverlap=n_fft - hop,
                          boundary="zeros", padded=True, detrend=False, return_onesided=True)
    Z = Z * signal.get_window("hann", n_fft).sum()  # undo scipy's 'spectrum' scaling
    power = np.abs(Z[:, : config.n_frames(x.size)]) ** 2  # padded=True may add a last frame
    M = librosa.filters.mel(sr=config.sample_rate, n_fft=n_fft, n_mels=config.n_mels, fmin=config.fmin,
                            fmax=config.f_max, htk=False, norm="slaney")
    return np.log(M @ power + config.log_eps).T


def write(path, x: np.ndarray, sr: int = SR) -> None:
    sf.write(path, x, sr, subtype="FLOAT")  # exact samples: the default PCM_16 would quantise them


def tone(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_values_equal_an_independent_stft_and_mel_matrix():
    rng = np.random.default_rng(1)
    x = (tone(2500.0, 1.3) + 0.01 * rng.standard_normal(int(1.3 * SR))).astype(np.float32)
    for config in (LogMelConfig(), LogMelConfig(n_mels=128, fmin=0.0, fmax=8000.0, n_fft=2048, hop=256)):
        got = logmel(x, config)
        ref = reference_logmel(x, config)
        assert got.shape == ref.shape == (config.n_frames(x.size), config.n_mels)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("band", [5, 20, 40, 55])
def test_a_pure_tone_peaks_in_the_band_centred_on_it(band):
    config = LogMelConfig()
    # band k's triangle rises from edge k to its peak at edge k + 1 and falls to zero at edge k + 2
    edges = librosa.mel_frequencies(config.n_mels + 2, fmin=config.fmin, fmax=config.f_max, htk=False)
    spec = logmel(tone(edges[band + 1]), config)
    assert int(np.argmax(spec[5:-5].mean(0))) == band  # frames away from the zero-padded ends


def test_a_tone_between_two_centres_peaks_in_one_of_the_two_bands_containing_it():
    config = LogMelConfig()
    edges = librosa.mel_frequencies(config.n_mels + 2, fmin=config.fmin, fmax=config.f_max, htk=False)
    f = 0.5 * (edges[31] + edges[32])  # inside bands 30 (edges 30..32) and 31 (edges 31..33) only
    assert int(np.argmax(logmel(tone(f), config)[5:-5].mean(0))) in (30, 31)


@pytest.mark.parametrize("n", [1, 511, 512, 513, 1000, 220500])
def test_frame_count_is_that_of_centred_frames(n):
    config = LogMelConfig()
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    assert logmel(x, config).shape == (1 + n // 512, 64)


def test_a_ten_second_clip_has_as_many_frames_as_its_scattering_sequence():
    assert LogMelConfig().n_frames(10 * SR) == 431  # compute_sequences: (431, 300) with the default FeatureConfig


def test_config_hash_is_stable_and_follows_every_field():
    c = LogMelConfig()
    assert c.hash == LogMelConfig().hash and len(c.hash) == 16
    assert LogMelConfig.from_dict(c.to_dict()) == c
    others = {LogMelConfig(n_mels=128).hash, LogMelConfig(hop=256).hash, LogMelConfig(fmax=8000.0).hash,
              LogMelConfig(log_eps=1e-5).hash, LogMelConfig(fmin=0.0).hash}
    assert len(others) == 5 and c.hash not in others


@pytest.mark.parametrize("changes", [{"hop": 0}, {"hop": 2048}, {"n_mels": 0}, {"fmin": -1.0},
                                     {"fmax": 20000.0}, {"fmin": 5000.0, "fmax": 4000.0}, {"log_eps": 0.0},
                                     {"schema": 2}, {"sample_rate": 10}])
def test_bad_configs_are_refused(changes):
    with pytest.raises(ConfigError):
        LogMelConfig(**changes)


def test_clips_are_read_mono_at_the_pipeline_rate(tmp_path):
    config = LogMelConfig()
    x = tone(3000.0, 2.0)
    write(tmp_path / "a.wav", x, SR)
    hi = tone(3000.0, 2.0, sr=44100)
    write(tmp_path / "b.wav", np.stack([hi, hi], axis=1), 44100)  # stereo at 44.1 kHz
    (a, b), reasons = logmel_clips([tmp_path / "a.wav", tmp_path / "b.wav"], config, progress=False)
    assert reasons == [None, None]
    np.testing.assert_allclose(a, logmel(x, config), atol=1e-6)
    assert b.shape == a.shape == (config.n_frames(2 * SR), 64)
    inner = slice(5, -5)  # the resampler's edges aside, the same tone gives the same spectrogram
    np.testing.assert_allclose(b[inner], a[inner], atol=0.05)


def test_cache_round_trip_and_an_edited_file_is_recomputed(tmp_path, monkeypatch):
    config = LogMelConfig()
    clip = tmp_path / "clip.wav"
    write(clip, tone(1000.0), SR)
    cache = tmp_path / "cache"
    (first,), _ = logmel_clips([clip], config, cache_dir=cache, progress=False)
    entries = list((cache / config.hash).glob("*.npy"))
    assert len(entries) == 1 and (cache / config.hash / "config.json").read_text().strip() == config.to_json()

    def refuse(*args, **kwargs):
        raise AssertionError("computed although cached")

    monkeypatch.setattr(logmel_module, "logmel", refuse)
    (again,), reasons = logmel_clips([clip], config, cache_dir=cache, progress=False)
    assert reasons == [None] and again.dtype == np.float32
    np.testing.assert_array_equal(again, first)
    monkeypatch.undo()

    write(clip, tone(4000.0), SR)  # the same size: only the modification time tells
    st = clip.stat()
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (edited,), _ = logmel_clips([clip], config, cache_dir=cache, progress=False)
    np.testing.assert_allclose(edited, logmel(tone(4000.0), config), atol=1e-6)
    assert not np.allclose(edited, first)
    assert len(list((cache / config.hash).glob("*.npy"))) == 2


def test_a_damaged_cache_entry_is_recomputed(tmp_path):
    config = LogMelConfig()
    clip = tmp_path / "clip.wav"
    write(clip, tone(1000.0), SR)
    (first,), _ = logmel_clips([clip], config, cache_dir=tmp_path, progress=False)
    (entry,) = (tmp_path / config.hash).glob("*.npy")
    entry.write_bytes(b"not an array")
    (again,), reasons = logmel_clips([clip], config, cache_dir=tmp_path, progress=False)
    assert reasons == [None]
    np.testing.assert_array_equal(again, first)


def test_unreadable_clips_give_none_and_a_reason(tmp_path):
    good = tmp_path / "good.wav"
    write(good, tone(1000.0), SR)
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio")
    missing = tmp_path / "missing.wav"
    specs, reasons = logmel_clips([junk, good, missing], LogMelConfig(), cache_dir=tmp_path / "c", progress=False)
    assert specs[0] is None and specs[2] is None and specs[1] is not None
    assert reasons[1] is None
    assert isinstance(reasons[0], str) and reasons[0]
    assert isinstance(reasons[2], str) and reasons[2]


def test_the_job_sent_to_worker_processes_survives_pickling(tmp_path):
    # spawning real workers costs seconds of imports; the executor is tested in test_executor.py, so what
    # is checked here is what crosses the process boundary: the job and its result
    config = LogMelConfig()
    clip = tmp_path / "clip.wav"
    write(clip, tone(800.0, 0.5))
    job = pickle.loads(pickle.dumps(partial(logmel_module._logmel_job, config=config, cache=tmp_path)))
    out = pickle.loads(pickle.dumps(job([clip, tmp_path / "missing.wav"])))
    np.testing.assert_array_equal(out[str(clip)], logmel(tone(800.0, 0.5), config))
    assert isinstance(out[str(tmp_path / "missing.wav")], str)
