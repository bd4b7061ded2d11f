"""Tests of pipeline/train/training.py and the ``train`` command: inputs, errors, feature cache, end to end."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch

from scatterbird import cli
from scatterbird.cli import main
from scatterbird.data.synthetic import write_dataset
from scatterbird.errors import DatasetError, DetectorError
from scatterbird.models.inversion import InversionDetector
from scatterbird.models.registry import build_detector, load_detector
from scatterbird.models.rntk import RNTKClassifier
from scatterbird.pipeline import clip_features
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.datasets import load_dataset, read_labels
from scatterbird.pipeline.train import training
from scatterbird.pipeline.train.training import (
    TrainingError,
    parse_params,
    prepare_training_data,
    run_train,
    split_labelled,
)

torch.set_num_threads(1)

#: First order only and short clips: the filter banks and the features take a fraction of the default's time.
CONFIG = FeatureConfig(max_order=1, threshold="none")  # fast features; thresholding: test_thresholding.py
FAST = {"max_epochs": 3, "widths": [8, 8]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small BAD-style folder (16 clips of 2 s, loud birds) and a folder of two 12 s unlabeled recordings."""
    root = tmp_path_factory.mktemp("bad")
    write_dataset(root / "bad", 16, duration=2.0, snr_db=(10.0, 20.0), seed=3)
    write_dataset(root / "unl", 2, duration=12.0, seed=4, datasetid="unl")
    return root


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if features are computed or a detector is fitted."""

    def boom(*args, **kwargs):
        raise AssertionError("work started before the input was validated")

    monkeypatch.setattr(training, "compute_features", boom)
    monkeypatch.setattr(InversionDetector, "fit", boom)


# -- labels and inputs -----------------------------------------------------------------------------------
def _labels(tmp_path, text):
    f = tmp_path / "labels.csv"
    f.write_text(text)
    return f


def test_read_labels_and_dataset_layout(dataset):
    d = load_dataset(dataset / "bad", require_labels=True)
    assert d.audio_dir == dataset / "bad" / "wav" and d.labels_path.name == "synthetic.csv"  # not events.csv
    assert len(d.clips) == 16 and d.clips[0].itemid == "synthetic_00000" and set(d.labels.tolist()) == {0, 1}
    assert all(c.path.stem == c.itemid and c.path.exists() for c in d.clips)


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty label file"),
        ("itemid,hasbird\n", "no usable row"),
        ("itemid,label\na,1\n", "no 'hasbird' column"),
        ("itemid,hasbird\na,yes\n", "no usable row.*line 2: a: hasbird must be 0 or 1"),
    ],
)
def test_bad_label_files(dataset, tmp_path, text, match, no_training):
    with pytest.raises(DatasetError, match=match):
        run_train(tmp_path / "m.pt", audio=dataset / "bad" / "wav", labels=_labels(tmp_path, text), config=CONFIG)


def test_split_labelled_is_stratified_and_seeded(dataset):
    clips = load_dataset(dataset / "bad").clips
    kept, hidden = split_labelled(clips, 0.25, seed=1)
    assert len(kept) + len(hidden) == len(clips) and {c.label for c in kept} == {0, 1}
    assert [c.itemid for c in kept] == [c.itemid for c in split_labelled(clips, 0.25, seed=1)[0]]
    assert split_labelled(clips, 1.0) == (clips, [])
    with pytest.raises(TrainingError, match="fraction"):
        split_labelled(clips, 0.0)


# -- bad input: a clear error before any work --------------------------------------------------------
def test_error_labels_name_missing_audio(dataset, tmp_path, no_training):
    text = "itemid,hasbird\nsynthetic_00000,1\nnot_there,0\nalso_missing,1\n"
    with pytest.raises(DatasetError, match=r"2 of 3 labelled itemids have no audio file .*not_there, also_missing"):
        run_train(tmp_path / "m.pt", audio=dataset / "bad" / "wav", labels=_labels(tmp_path, text), config=CONFIG)


def test_error_single_class(dataset, tmp_path, no_training):
    text = "itemid,hasbird\nsynthetic_00000,0\nsynthetic_00001,0\n"
    with pytest.raises(TrainingError, match="single class: every clip is no-bird"):
        run_train(tmp_path / "m.pt", audio=dataset / "bad" / "wav", labels=_labels(tmp_path, text), config=CONFIG)


def test_error_unlabeled_folder_without_audio(dataset, tmp_path, no_training):
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    with pytest.raises(TrainingError, match="hold no audio files"):
        run_train(tmp_path / "m.pt", dataset=dataset / "bad", unlabeled=[empty], config=CONFIG)
    with pytest.raises(TrainingError, match="not found"):
        run_train(tmp_path / "m.pt", dataset=dataset / "bad", unlabeled=[tmp_path / "absent"], config=CONFIG)


def test_error_bad_model_and_options(dataset, tmp_path, no_training):
    with pytest.raises(DetectorError, match="unknown detector kind 'nope'"):
        run_train(tmp_path / "m.pt", dataset=dataset / "bad", model="nope", config=CONFIG)
    with pytest.raises(DetectorError, match="takes no parameter 'epochs'"):
        run_train(tmp_path / "m.pt", dataset=dataset / "bad", params={"epochs": 3}, config=CONFIG)
    with pytest.raises(TrainingError, match="either a dataset folder or both"):
        run_train(tmp_path / "m.pt", config=CONFIG)
    with pytest.raises(TrainingError, match="is a directory"):
        run_train(tmp_path, dataset=dataset / "bad", config=CONFIG)


def test_cli_reports_input_errors(dataset, tmp_path, capsys, no_training):
    rc = main(["train", "--audio", str(dataset / "bad" / "wav"), "--labels", str(_labels(tmp_path, "")),
               "-o", str(tmp_path / "m.pt"), "--order", "1", "--threshold", "none", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("scatterbird train: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "m.pt").exists()


def test_cli_kind_and_its_deprecated_alias(tmp_path, capsys, monkeypatch):
    """--kind chooses the detector (and the RNTK's default pooling); --model KIND still works, with a warning."""
    calls = []

    def fake_run_train(output, *, model, config, **kwargs):
        calls.append((model, config.pool_s))
        raise TrainingError("stopped before any work")

    monkeypatch.setattr(cli, "run_train", fake_run_train)
    args = ["train", str(tmp_path / "data"), "-o", str(tmp_path / "m.pt"), "-q"]
    assert main(args + ["--kind", "rntk"]) == 2
    err = capsys.readouterr().err
    assert "deprecated" not in err and "scatterbird train: error: stopped before any work" in err
    assert main(args + ["--model", "rntk"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("scatterbird train: warning: --model KIND is deprecated and will name a model file; "
                      "use --kind rntk")
    assert err[1] == "scatterbird train: error: stopped before any work"
    assert main(args) == 2
    assert calls == [("rntk", 0.25), ("rntk", 0.25), ("inversion", cli.INVERSION_DEFAULT_POOL_S)]
    for bad in (["--kind", "nope"], ["--model", "model.pt"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args + bad)
        assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert len(calls) == 3


def test_parse_params_and_build():
    assert parse_params(["max_epochs=3", "widths=[8, 8]", "name=abc"]) == {
        "max_epochs": 3, "widths": [8, 8], "name": "abc"}
    with pytest.raises(TrainingError, match="KEY=VALUE"):
        parse_params(["oops"])
    det = build_detector("inversion", {"max_epochs": 2}, seed=7)
    assert isinstance(det, InversionDetector) and det.random_state == 7 and det.max_epochs == 2


# -- features, cache, end to end -------------------------------------------------------------------
@pytest.fixture(scope="module")
def warm(dataset, tmp_path_factory):
    """Features of the whole test set computed once into a cache that later tests read back."""
    cache = tmp_path_factory.mktemp("cache")
    kw = dict(dataset=dataset / "bad", unlabeled=[dataset / "unl" / "wav"], config=CONFIG, cache_dir=cache,
              window_s=5.0, progress=False)
    return cache, kw, prepare_training_data(**kw)


def test_features_windows_and_cache(dataset, warm):
    cache, kw, first = warm
    n_frames_2s = -(-2 * CONFIG.sample_rate // CONFIG.hop_samples)
    assert len(first.sequences) == 16 and all(s.shape == (n_frames_2s, 63) for s in first.sequences)
    # 12 s recordings in 5 s windows: [0,5), [5,10) and the end-aligned [7,12)
    assert first.n_unlabeled_files == 2 and len(first.unlabeled) == 6
    assert (first.cache_hits, first.cache_misses) == (0, 18)
    assert (cache / CONFIG.hash / "config.json").exists()

    second = prepare_training_data(**kw)
    assert (second.cache_hits, second.cache_misses) == (18, 0)
    for a, b in zip(first.sequences + first.unlabeled, second.sequences + second.unlabeled):
        np.testing.assert_array_equal(a, b)


def test_cache_is_keyed_by_config_and_file(dataset, warm, tmp_path):
    cache, kw, _ = warm
    src = sorted((dataset / "unl" / "wav").glob("*.wav"))[0]
    wav = shutil.copy(src, tmp_path / "copy.wav")
    # Another configuration does not reuse the features of the first.
    pooled = CONFIG.replace(pool_s=0.5)
    clips = [sorted((dataset / "bad" / "wav").glob("*.wav"))[0]]
    fs = clip_features.compute_features(clips, pooled, clip_features.FeatureCache(cache, pooled), progress=False)
    assert fs.sequences[0][0].shape == (4, 63)  # 2 s in steps of 0.5 s
    c = clip_features.FeatureCache(cache, CONFIG)
    clip_features.compute_features(clips, CONFIG, c, progress=False)
    assert (c.hits, c.misses) == (1, 0)
    # A changed recording is recomputed.
    c = clip_features.FeatureCache(cache, CONFIG)
    clip_features.compute_features([wav], CONFIG, c, progress=False)
    st = os.stat(wav)
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    clip_features.compute_features([wav], CONFIG, c, progress=False)
    assert (c.hits, c.misses) == (0, 2)


def test_labelled_fraction_hides_labels(dataset, warm):
    cache, kw, _ = warm
    data = prepare_training_data(dataset=dataset / "bad", config=CONFIG, cache_dir=cache, labelled_fraction=0.25,
                                 progress=False)
    y = np.array([v for _, _, v in read_labels(dataset / "bad" / "synthetic.csv").rows])
    expected = sum(max(1, int(round(0.25 * np.sum(y == c)))) for c in (0, 1))
    assert len(data.labels) == expected and set(data.labels.tolist()) == {0, 1}
    assert data.n_hidden == 16 - expected and len(data.unlabeled) == 16 - expected
    assert data.cache_misses == 0


def test_train_end_to_end_from_the_command_line(dataset, warm, tmp_path, capsys):
    model = tmp_path / "out" / "model.pt"
    shutil.copytree(warm[0], model.parent / ".cache")  # the default cache place: next to the model
    args = ["train", str(dataset / "bad"), "--unlabeled", str(dataset / "unl" / "wav"), "-o", str(model),
            "--order", "1", "--threshold", "none", "--window", "5", "--pool", "0", "--param", "max_epochs=3", "--param", "widths=[8, 8]", "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "16 labelled clip(s)" in out and "6 unlabeled window(s)" in out and "18 from the cache, 0 computed" in out
    # 16 clips are too few to hold out 5 of each class: the summary says so rather than print nothing
    assert "no validation score (too few labelled clips of a class" in out
    det = load_detector(model, expected_config=CONFIG)
    assert isinstance(det, InversionDetector) and det.n_channels_ == 63 and det.max_epochs == 3
    p = det.predict_proba(warm[2].sequences)
    assert p.shape == (16,) and np.all((p >= 0) & (p <= 1))


def _separable(n_per_class: int = 12, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Feature sequences (20 frames x 8 channels), a loud "call" in 4 channels for class 1 (the detector removes
    each band's mean: the class must show over time): enough clips to hold out 5 per class."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_per_class)
    seqs = []
    for c in y:
        x = rng.standard_normal((20, 8))
        x[8:12, :4] += 4.0 * c
        seqs.append(x.astype(np.float32))
    return seqs, y


def test_train_prints_the_detectors_validation_score(dataset, warm, tmp_path, capsys, monkeypatch):
    seqs, y = _separable()
    real = warm[2]
    data = dataclasses.replace(real, sequences=seqs, labels=y, unlabeled=[], labelled_ids=[str(i) for i in range(24)])
    monkeypatch.setattr(training, "prepare_training_data", lambda **kw: data)  # features: tested above
    model = tmp_path / "model.pt"
    args = ["train", str(dataset / "bad"), "-o", str(model), "-q", "--param", "max_epochs=3",
            "--param", "widths=[8, 8]", "--param", "validation_fraction=0.45"]  # 5 of each class held out
    assert main(args) == 0
    out = capsys.readouterr().out
    det = load_detector(model)  # the score travels in the model file
    assert det.n_validation_ == 10 and 0.5 < det.validation_auc_ <= 1.0 and 0 <= det.best_epoch_ < 3
    assert (f"; validation ROC AUC {det.validation_auc_:.3f} on 10 held-out labelled clip(s) "
            f"(epoch {det.best_epoch_ + 1} of 3 kept);") in out


def test_the_validation_score_is_the_kept_epochs():
    seqs, y = _separable(seed=1)
    det = build_detector("inversion", {**FAST, "max_epochs": 4, "validation_fraction": 0.45}, 0).fit(seqs, y)
    assert det.validation_auc_ == max(h["val_auc"] for h in det.history_)
    assert det.validation_auc_ == det.history_[det.best_epoch_]["val_auc"] and det.n_validation_ == 10
    assert training.validation_summary(det).startswith(f"validation ROC AUC {det.validation_auc_:.3f} on 10 ")
    no_split = build_detector("inversion", {**FAST, "max_epochs": 1}, 0).fit(seqs[6:18], y[6:18])
    assert no_split.validation_auc_ is None and no_split.n_validation_ == 0
    assert training.validation_summary(no_split).startswith("no validation score")
    assert training.validation_summary(object()) is None  # a detector that keeps none: nothing to say


def test_unreadable_labelled_recording_is_reported_not_fatal(dataset, warm, tmp_path):
    cache, _, _ = warm
    rows = [(item, y) for item, _, y in read_labels(dataset / "bad" / "synthetic.csv").rows]
    pick = [next(r for r in rows if r[1] == 0), next(r for r in rows if r[1] == 1), rows[2]]
    audio = tmp_path / "wav"
    audio.mkdir()
    for item, _ in pick:  # links resolve to the cached recordings: no feature is recomputed
        (audio / f"{item}.wav").symlink_to(dataset / "bad" / "wav" / f"{item}.wav")
    (audio / "broken.wav").write_bytes(b"RIFF not really a wave file")
    labels = _labels(tmp_path, "itemid,hasbird\n" + "".join(f"{i},{y}\n" for i, y in pick) + "broken,1\n")
    data = prepare_training_data(audio=audio, labels=labels, config=CONFIG, cache_dir=cache, progress=False)
    assert data.labelled_ids == [i for i, _ in pick] and data.cache_misses == 0
    assert len(data.failed) == 1 and data.failed[0][0].endswith("broken.wav")


def test_bad_label_rows_are_skipped_and_reported(dataset, warm, tmp_path, capsys):
    """A bad row (unparseable label, empty or repeated itemid) is skipped and named by its line; training goes on."""
    cache = warm[0]
    rows = [(item, y) for item, _, y in read_labels(dataset / "bad" / "synthetic.csv").rows]
    text = "itemid,hasbird\n" + "".join(f"{i},{y}.0\n" for i, y in rows)  # floats equal to 0 or 1 are labels
    text += f"{rows[0][0]},1\nx,yes\n,0\n"  # lines 18, 19, 20
    labels = _labels(tmp_path, text)
    data = prepare_training_data(audio=dataset / "bad" / "wav", labels=labels, config=CONFIG, cache_dir=cache,
                                 progress=False)
    assert data.labelled_ids == [i for i, _ in rows] and data.labels.tolist() == [y for _, y in rows]
    assert data.cache_misses == 0
    bad = dict(data.dataset.bad_rows)
    assert sorted(bad) == [18, 19, 20]
    assert "duplicate itemid, first on line 2" in bad[18] and "got 'yes'" in bad[19] and "empty itemid" in bad[20]
    # the command line prints them and exits with "some inputs could not be used"
    model = tmp_path / "m.pt"
    args = ["train", "--audio", str(dataset / "bad" / "wav"), "--labels", str(labels), "-o", str(model), "--order", "1",
            "--threshold", "none", "--param", "max_epochs=1", "--param", "widths=[8, 8]", "--cache", str(cache), "-q"]
    assert main(args) == 1 and model.exists()
    err = capsys.readouterr().err
    assert "3 bad row(s) in labels.csv skipped: line 18:" in err and "line 20: empty itemid" in err


def test_train_rntk_from_the_command_line_pools_to_quarter_seconds(dataset, warm, tmp_path, capsys):
    """`--kind rntk` without --pool trains on 0.25 s steps, and the saved config says so."""
    model = tmp_path / "rntk.pt"
    args = ["train", str(dataset / "bad"), "-o", str(model), "--kind", "rntk", "--order", "1", "--threshold", "none", "-q",
            "--cache", str(warm[0])]
    assert main(args) == 0
    assert "cross-validated ROC AUC" in capsys.readouterr().out  # its own validation score
    det = load_detector(model, expected_config=CONFIG.replace(pool_s=0.25))
    assert isinstance(det, RNTKClassifier) and det.feature_config.pool_s == 0.25
