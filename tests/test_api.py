"""The public API of ``import scatterbird``: detect on arrays and files, errors under one root."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from simple_detector import FAST_CONFIG

import scatterbird
from scatterbird.data.synthetic import make_clip
from scatterbird.errors import AudioError, DatasetError, ScatterbirdError
from scatterbird.pipeline.detect.batch import DetectParams, detect_file

SR = FAST_CONFIG.sample_rate


@pytest.fixture(scope="module")
def recording() -> np.ndarray:
    x, _, _ = make_clip(7.0, SR, hasbird=True, snr_db=12.0, background_kind="pink", n_events=3, rng=5)
    return x.astype(np.float32)


def test_the_documented_names_are_exported():
    for name in scatterbird.__all__:
        assert getattr(scatterbird, name) is not None, name
    assert issubclass(scatterbird.ScatterbirdError, Exception)
    assert scatterbird.FeatureConfig().hash == scatterbird.FeatureConfig().hash


def test_an_array_scores_as_the_same_audio_read_from_a_file(model, recording, tmp_path):
    path = tmp_path / "rec.wav"
    sf.write(path, recording, SR, subtype="FLOAT")  # float32 at the pipeline rate: the file holds the same samples
    det = scatterbird.load_detector(model)
    from_file = detect_file(path, det, DetectParams(window_s=2.0, hop_s=1.0, min_conf=0.5))
    from_array = scatterbird.detect(recording, sample_rate=SR, model=det, window_s=2.0, hop_s=1.0)
    assert from_file.status == from_array.status == "done"
    assert from_array.path == "<array>" and from_array.duration_s == pytest.approx(7.0)
    np.testing.assert_array_equal(from_array.windows[:, :2], from_file.windows[:, :2])
    np.testing.assert_allclose(from_array.windows[:, 2], from_file.windows[:, 2], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(from_array.events, from_file.events, rtol=1e-6, atol=1e-9)
    assert len(from_array.windows) == 6  # windows 0-2 ... 5-7 s, the last aligned to the end


def test_a_stereo_array_is_its_channel_mean_and_another_rate_is_resampled(model, recording):
    det = scatterbird.load_detector(model)
    mono = scatterbird.detect(recording, sample_rate=SR, model=det, window_s=2.0, hop_s=1.0)
    stereo = np.stack([recording * 1.5, recording * 0.5], axis=1)
    both = scatterbird.detect(stereo, sample_rate=SR, model=det, window_s=2.0, hop_s=1.0)
    assert both.channels == 2
    np.testing.assert_allclose(both.windows, mono.windows, rtol=1e-5, atol=1e-7)
    doubled = np.repeat(recording, 2)  # the same signal at twice the rate (a crude but band-limited-enough copy)
    up = scatterbird.detect(doubled, sample_rate=2 * SR, model=det, window_s=2.0, hop_s=1.0)
    np.testing.assert_array_equal(up.windows[:, :2], mono.windows[:, :2])
    assert up.source_rate == 2 * SR


def test_files_and_folders_give_one_result_per_file_and_a_bad_file_does_not_stop_the_rest(model, recording, tmp_path):
    sf.write(tmp_path / "a.wav", recording, SR)
    sf.write(tmp_path / "b.flac", recording[: SR * 3], SR)
    (tmp_path / "c.wav").write_bytes(b"RIFF not audio")
    results = scatterbird.detect(tmp_path, model=model, window_s=2.0, hop_s=1.0)
    assert [r.path.rsplit("/", 1)[1] for r in results] == ["a.wav", "b.flac", "c.wav"]
    assert [r.status for r in results] == ["done", "done", "failed"]
    assert results[2].error
    assert len(results[1].windows) == 2  # 0-2 s and the end-aligned 1-3 s


def test_bad_inputs_raise_errors_under_the_one_root(model, recording, tmp_path):
    with pytest.raises(AudioError, match="sample_rate"):
        scatterbird.detect(recording, model=model)
    bad = recording.copy()
    bad[100] = np.nan
    with pytest.raises(AudioError, match="NaN or infinite sample at sample 100"):
        scatterbird.detect(bad, sample_rate=SR, model=model)
    with pytest.raises(AudioError, match="shape"):
        scatterbird.detect(np.zeros((2, 2, 2)), sample_rate=SR, model=model)
    with pytest.raises(DatasetError, match="nothing to detect"):
        scatterbird.detect(tmp_path / "missing", model=model)
    with pytest.raises(ScatterbirdError, match="model file not found"):
        scatterbird.detect(recording, sample_rate=SR, model=tmp_path / "none.pt")
