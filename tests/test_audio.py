"""pipeline/frontend/audio.py: format round trips, resampling, block independence, bounded memory, bad inputs."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from scatterbird.pipeline.frontend.audio import AudioError, audio_info, load_audio, stream_audio


def tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def collect(path, sr, **kw) -> np.ndarray:
    return np.concatenate(list(stream_audio(path, sr, **kw)))


# -- format round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fmt,subtype,ext,exact",
    [
        ("WAV", "FLOAT", ".wav", True),
        ("WAV", "PCM_16", ".wav", False),
        ("FLAC", "PCM_16", ".flac", False),
        ("OGG", "VORBIS", ".ogg", None),
        ("MP3", "MPEG_LAYER_III", ".mp3", None),
    ],
)
def test_format_round_trip(tmp_path, fmt, subtype, ext, exact):
    sr = 22050
    x = tone(1000, sr, 1.5) + tone(3000, sr, 1.5, 0.2)
    path = tmp_path / f"clip{ext}"
    sf.write(path, x, sr, format=fmt, subtype=subtype)
    info = audio_info(path)
    assert info.sample_rate == sr and info.channels == 1
    y = collect(path, sr)
    if exact is None:  # lossy codecs: MP3 adds encoder delay/padding, so compare length loosely and spectrum
        assert abs(y.size - x.size) < 0.1 * sr
        spec = np.abs(np.fft.rfft(y[: x.size] if y.size >= x.size else np.pad(y, (0, x.size - y.size))))
        freqs = np.fft.rfftfreq(x.size, 1 / sr)
        assert abs(freqs[np.argmax(spec)] - 1000) < 5
    else:
        assert y.size == x.size
        assert abs(info.duration - 1.5) < 1e-9
        np.testing.assert_allclose(y, x, atol=0 if exact else 1.0 / 2**15)


def test_channels_are_averaged(tmp_path):
    sr = 16000
    a, b, c = tone(500, sr, 1), tone(700, sr, 1), np.zeros(sr, np.float32)
    sf.write(tmp_path / "three.wav", np.stack([a, b, c], 1), sr, subtype="FLOAT")
    y = collect(tmp_path / "three.wav", sr)
    np.testing.assert_allclose(y, (a + b + c) / 3, atol=1e-7)


# -- resampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [8000, 44100, 48000, 96000])
def test_resampled_sine_keeps_frequency_and_amplitude(tmp_path, rate):
    f0, amp, out_sr = 1234.0, 0.4, 22050
    sf.write(tmp_path / "s.wav", tone(f0, rate, 2.0, amp), rate, subtype="FLOAT")
    y = collect(tmp_path / "s.wav", out_sr)
    assert abs(y.size - 2.0 * out_sr) <= 2
    mid = y[out_sr // 4 : -out_sr // 4]  # away from the resampler's edge transients
    win = np.hanning(mid.size)
    spec = np.abs(np.fft.rfft(mid * win))
    k = int(np.argmax(spec))
    # parabolic interpolation of the peak for sub-bin frequency
    a, b, c = np.log(spec[k - 1 : k + 2])
    peak = k + 0.5 * (a - c) / (a - 2 * b + c)
    assert abs(peak * out_sr / mid.size - f0) < 0.5
    assert abs(np.sqrt(2) * np.sqrt(np.mean(mid**2)) - amp) < 1e-3


@pytest.mark.parametrize("rate", [44100, 8000])
def test_block_size_does_not_change_output(tmp_path, rate):
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(3 * rate)).astype(np.float32)
    sf.write(tmp_path / "n.wav", x, rate, subtype="FLOAT")
    small = collect(tmp_path / "n.wav", 22050, block_seconds=0.013)
    large = collect(tmp_path / "n.wav", 22050, block_seconds=5.0)
    assert small.size == large.size
    np.testing.assert_allclose(small, large, atol=2e-6)


def test_same_rate_passes_samples_through(tmp_path):
    x = tone(440, 22050, 0.7)
    sf.write(tmp_path / "p.wav", x, 22050, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "p.wav", 22050), x)


def test_memory_does_not_grow_with_length(tmp_path):
    """Peak Python-heap memory while streaming a 16x longer file stays the same (within a block)."""
    sr = 8000
    rng = np.random.default_rng(1)
    peaks = []
    for minutes in (1, 16):
        path = tmp_path / f"{minutes}.wav"
        with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as f:
            for _ in range(minutes):
                f.write((0.1 * rng.standard_normal(60 * sr)).astype(np.float32))
        tracemalloc.start()
        total = 0
        for block in stream_audio(path, 22050, block_seconds=1.0):
            total += block.size
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert abs(total - minutes * 60 * 22050) <= 2
    # the 16-minute file holds 41 MB of float32 output; the peak must stay near the 1-minute one
    assert peaks[1] < peaks[0] + 200_000, peaks


# -- bad inputs -----------------------------------------------------------------------------------
def _reason(path) -> str:
    with pytest.raises(AudioError) as info:
        collect(path, 22050)
    assert str(path) in str(info.value)
    return info.value.reason


def test_missing_file(tmp_path):
    assert "not found" in _reason(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    assert "empty" in _reason(tmp_path / "empty.wav")


def test_text_file_named_wav(tmp_path):
    (tmp_path / "notes.wav").write_text("field notes, not audio\n" * 20)
    assert "format" in _reason(tmp_path / "notes.wav")


def test_truncated_wav(tmp_path):
    sf.write(tmp_path / "full.wav", tone(800, 22050, 1.0), 22050, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    assert "truncated" in _reason(tmp_path / "cut.wav")


def test_header_only_wav(tmp_path):
    sf.write(tmp_path / "full.wav", tone(800, 22050, 1.0), 22050, subtype="PCM_16")
    (tmp_path / "hdr.wav").write_bytes((tmp_path / "full.wav").read_bytes()[:30])
    assert "unreadable" in _reason(tmp_path / "hdr.wav") or "format" in _reason(tmp_path / "hdr.wav")


def test_zero_samples(tmp_path):
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 22050, subtype="PCM_16")
    assert "zero samples" in _reason(tmp_path / "zero.wav")


def test_one_sample_file(tmp_path):
    sf.write(tmp_path / "one.wav", np.array([0.1], np.float32), 22050, subtype="PCM_16")
    assert "too short" in _reason(tmp_path / "one.wav")


@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "infinite")])
def test_non_finite_samples_report_their_time(tmp_path, bad, word):
    sr = 16000
    x = tone(300, sr, 2.0)
    x[int(1.25 * sr)] = bad
    sf.write(tmp_path / "bad.wav", x, sr, subtype="FLOAT")
    reason = _reason(tmp_path / "bad.wav")
    assert word in reason and "1.250000 s" in reason
