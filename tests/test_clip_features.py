"""Tests of pipeline/clip_features.py: the features of many clips are the same in this process and on worker
processes, come back in the clips' order, and an unreadable clip is a reason, not an exception."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scatterbird.data.synthetic import write_dataset
from scatterbird.pipeline.clip_features import FeatureCache, clip_sequence, compute_features, compute_sequences
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.datasets import Clip
from scatterbird.pipeline.frontend.features import scattering_for

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
        if c.path != broken:  # an independent computation of the same clip, and the workers' result
            np.testing.assert_array_equal(a, clip_sequence(c.path, CONFIG, scattering_for(CONFIG)))
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # workers use one torch thread: float32 rounding
    # the workers filled the cache: one process now reads every clip back
    cache = FeatureCache(tmp_path / "cache", CONFIG)
    fs = compute_features([Path(c.path) for c in clips], CONFIG, cache, progress=False)
    assert (cache.hits, cache.misses) == (len(wavs), 0) and [str(p) for p, _ in fs.failed] == [str(broken)]
