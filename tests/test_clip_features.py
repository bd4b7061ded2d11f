"""Tests of pipeline/clip_features.py: the features of many clips are the same in this process and on worker
processes, and the same scattered in batches as streamed one by one; they come back in the clips' order, and an
unreadable clip is a reason, not an exception."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scatterbird.data.synthetic import write_dataset
from scatterbird.pipeline import clip_features
from scatterbird.pipeline.clip_features import FeatureCache, clip_sequence, compute_features, compute_sequences
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.datasets import Clip
from scatterbird.pipeline.detect.windows import WindowSpec
from scatterbird.pipeline.frontend.features import scattering_for
from scatterbird.pipeline.frontend.scattering import Scattering

CONFIG = FeatureConfig(sample_rate=8000, J=6, Q1=4, max_order=1, threshold="none")


def test_one_process_and_two_workers_give_the_same_sequences_in_order(tmp_path):
    write_dataset(tmp_path / "bad", 20, duration=1.0, seed=5)
    wavs = sorted((tmp_path / "bad" / "wav").glob("*.wav"))
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio\n" * 10)
    clips = [Clip(p.stem, p, 0, "x") for p in [*wavs[:7], broken, *wavs[7:]]]
    serial, why = compute_sequences(clips, CONFIG, progress=False)
    pooled, why2 = compute_sequences(clips, CONFIG, progress=False, workers=2, cache_dir=tmp_path / "cache")
    assert why == why2 and [w is None for w in why] == [c.path != broken for c in clips]
    assert "unrecognised audio format" in why[7] and serial[7] is None and pooled[7] is None
    for c, a, b in zip(clips, serial, pooled):
        if c.path != broken:  # the clip streamed alone (batches round differently), and the workers' result
            np.testing.assert_allclose(a, clip_sequence(c.path, CONFIG, scattering_for(CONFIG)), rtol=0, atol=2e-4)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # workers use one torch thread: float32 rounding
    # the workers filled the cache: one process now reads every clip back
    cache = FeatureCache(tmp_path / "cache", CONFIG)
    fs = compute_features([Path(c.path) for c in clips], CONFIG, cache, progress=False)
    assert (cache.hits, cache.misses) == (len(wavs), 0) and [str(p) for p, _ in fs.failed] == [str(broken)]


def _clip_folder(folder: Path) -> list[Path]:
    """Short WAV clips of mixed lengths (some equal), rates and channel counts, and one that is not audio."""
    folder.mkdir()
    rng = np.random.default_rng(7)
    paths = []
    for i, (seconds, rate, channels) in enumerate(
        [(1.0, 8000, 1), (1.0, 8000, 1), (0.7, 16000, 2), (1.0, 11025, 1), (0.05, 8000, 1), (1.3, 8000, 2)]
    ):
        n = int(seconds * rate)
        t = np.arange(n) / rate
        x = 0.05 * rng.standard_normal((n, channels)) + 0.3 * np.sin(2 * np.pi * rng.uniform(300, 3000) * t)[:, None]
        paths.append(folder / f"clip{i}.wav")
        sf.write(paths[-1], x.astype(np.float32), rate)
    broken = folder / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00")
    paths.insert(3, broken)
    return paths


def test_short_clips_are_scattered_in_batches_as_streamed_one_by_one(tmp_path, monkeypatch):
    paths = _clip_folder(tmp_path / "clips")
    clips = [Clip(p.stem, p, 0, "x") for p in paths]
    batches = []
    scatter = clip_features.scatter_clips

    def counted(sc, signals, **kw):
        batches.append(len(signals))
        return scatter(sc, signals, **kw)

    monkeypatch.setattr(clip_features, "scatter_clips", counted)
    seqs, why = compute_sequences(clips, CONFIG, progress=False, cache_dir=tmp_path / "cache")
    assert batches == [len(paths) - 1]  # one job: every readable clip in one call
    assert [w is None for w in why] == [p.name != "broken.wav" for p in paths]
    assert "unrecognised audio format" in why[3] and seqs[3] is None
    sc = scattering_for(CONFIG)
    for p, got in zip(paths, seqs):
        if p.name != "broken.wav":  # the old per-clip path: the file streamed alone
            old = clip_sequence(p, CONFIG, sc)
            assert got.shape == old.shape
            np.testing.assert_allclose(got, old, rtol=0, atol=2e-4)
    # a cached clip is read back, not recomputed
    cache = FeatureCache(tmp_path / "cache", CONFIG)
    fs = compute_features(paths, CONFIG, cache, progress=False)
    assert (cache.hits, cache.misses) == (len(paths) - 1, 0) and batches == [len(paths) - 1]
    assert [str(p) for p, _ in fs.failed] == [str(paths[3])]


def test_a_clip_longer_than_a_batch_is_streamed(tmp_path, monkeypatch):
    paths = [p for p in _clip_folder(tmp_path / "clips") if p.name != "broken.wav"]
    monkeypatch.setattr(clip_features, "MAX_BATCH_SAMPLES", 9000)  # above 1.0 s at 8 kHz, below 1.3 s
    streamed = []
    stream = Scattering.stream

    def counted(sc, blocks, **kw):
        streamed.append(1)
        return stream(sc, blocks, **kw)

    monkeypatch.setattr(Scattering, "stream", counted)
    fs = compute_features(paths, CONFIG, progress=False)
    assert streamed == [1] and fs.paths == paths  # clip5 (1.3 s) alone, and in its place
    monkeypatch.undo()
    for p, (got,) in zip(paths, fs.sequences):
        np.testing.assert_allclose(got, clip_sequence(p, CONFIG, scattering_for(CONFIG)), rtol=0, atol=2e-4)


@pytest.mark.parametrize("windows", [None, WindowSpec(0.5, 0.25)])
def test_the_device_reaches_the_front_end(tmp_path, monkeypatch, windows):
    paths = [p for p in _clip_folder(tmp_path / "clips") if p.name != "broken.wav"][:2]
    asked = []

    def front_end(config, device="cpu"):
        asked.append(device)
        return scattering_for(config)

    monkeypatch.setattr(clip_features, "scattering_for", front_end)
    if windows is None:
        seqs, _ = compute_sequences([Clip(p.stem, p, 0, "x") for p in paths], CONFIG, progress=False, device="meta")
        assert all(s is not None for s in seqs)
    else:
        assert len(compute_features(paths, CONFIG, windows=windows, progress=False, device="meta").paths) == 2
    assert asked and set(asked) == {"meta"}
