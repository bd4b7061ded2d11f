"""pipeline/evaluate.py and data/manifest.py: challenge loaders, AUC and its interval, evaluate, crossval, CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import roc_auc_score

from scatterbird.data.manifest import DATASETS, development_sets, lookup, write_challenge_like
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.evaluate.run import (
    DatasetError,
    bootstrap_auc_ci,
    bootstrap_aucs,
    crossval,
    evaluate,
    harmonic_mean,
    load_dataset,
    load_datasets,
    parse_dataset_arg,
    read_labels,
    roc_auc,
)
from simple_detector import SimpleDetector

#: Fast features for the tests that do not need the pipeline's default configuration.
FAST = FeatureConfig(sample_rate=8000, J=6, Q1=4, max_order=1, threshold="none")


def _write_csv(path: Path, rows, header=("itemid", "datasetid", "hasbird")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def _touch_wavs(folder: Path, ids, sr: int = 8000, seconds: float = 0.05) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        sf.write(folder / f"{i}.wav", np.zeros(int(sr * seconds), np.float32), sr)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One feature cache for the module: each synthetic clip is scattered once."""
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def challenge(tmp_path_factory) -> dict[str, Path]:
    """Synthetic stand-ins of the three development sets, in their published layouts (2 s clips, 8 kHz)."""
    return write_challenge_like(tmp_path_factory.mktemp("challenge"), 8, duration=2.0, sr=8000, seed=1)


# -- manifest -----------------------------------------------------------------------------------------------
def test_manifest_holds_the_six_datasets_with_published_counts():
    counts = {d.name: d.n_items for d in DATASETS}
    assert counts == {
        "ff1010bird": 7690, "warblrb10k": 8000, "BirdVox-DCASE-20k": 20000,
        "warblrb10k_test": 2000, "Chernobyl": 6620, "PolandNFC": 4000,
    }
    assert [d.name for d in development_sets()] == ["ff1010bird", "warblrb10k", "BirdVox-DCASE-20k"]
    assert all(d.n_positive is None for d in DATASETS if d.role == "evaluation")
    assert lookup("freefield1010").name == "ff1010bird" and lookup("BIRDVOX").name == "BirdVox-DCASE-20k"
    assert lookup("my-own-meadow") is None


# -- loaders: published layouts -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, label_file, datasetid",
    [
        ("ff1010bird", "ff1010bird_metadata_2018.csv", "ff1010bird"),
        ("warblrb10k", "warblrb10k_public_metadata_2018.csv", "warblrb10k"),
        ("BirdVox-DCASE-20k", "BirdVoxDCASE20k_csvpublic.csv", "BirdVox-DCASE-20k"),
    ],
)
@pytest.mark.parametrize("nested", [False, True])
def test_published_layout_is_recognised_and_counts_checked(tmp_path, name, label_file, datasetid, nested):
    # archive unpacked in place (ROOT/wav + ROOT/labels.csv) or one folder down (ROOT/<zip name>/wav)
    ids = ["0a1b", "1c2d", "2e3f", "3f40"]
    root = tmp_path / "unpacked"
    _touch_wavs((root / "archive" / "wav") if nested else (root / "wav"), ids)
    _write_csv(root / label_file, [(i, datasetid, k % 2) for k, i in enumerate(ids)])
    d = load_dataset(root)  # recognised without a name, by its label file
    assert d.name == name
    assert [c.itemid for c in d.clips] == ids and d.positives == 2
    expected = lookup(name).n_items
    msgs = d.problems()
    assert len(msgs) == 1 and f"published dataset has {expected:,} clips; 4 were found" in msgs[0]
    assert not d.incomplete  # a partial copy is reported, but every listed clip is there
    # an alias names it too, and the label CSV itself is an accepted path
    alias = {"ff1010bird": "freefield1010", "warblrb10k": "warblr", "BirdVox-DCASE-20k": "birdvox"}[name]
    assert load_dataset(root / label_file, alias).name == name


def test_complete_copy_has_no_problems_and_other_label_versions_are_noted(tmp_path):
    ids = [f"c{i}" for i in range(5)]
    _touch_wavs(tmp_path / "wav", ids)
    _write_csv(tmp_path / "ff1010bird_metadata_2018.csv", [(i, "ff1010bird", int(k < 2)) for k, i in enumerate(ids)])
    d = load_dataset(tmp_path)
    d.expected_items, d.expected_positive = 5, 2  # as if this were the whole published set
    assert d.problems() == []
    d.expected_positive = 3
    assert d.problems() == ["ff1010bird: 2 clips labelled hasbird=1; the published labels have 3 (another label version?)"]


def test_missing_clip_and_unlisted_audio_are_listed(tmp_path):
    _touch_wavs(tmp_path / "wav", ["a", "b", "stray"])
    _write_csv(tmp_path / "mine.csv", [("a", "mine", 1), ("b", "mine", 0), ("gone", "mine", 1)])
    d = load_dataset(tmp_path, "mine")
    assert [c.itemid for c in d.clips] == ["a", "b"]
    assert d.missing == ["gone"] and d.unlisted == ["stray"] and d.incomplete
    text = "\n".join(d.problems())
    assert "1 clip(s) listed in mine.csv have no audio" in text and "gone" in text
    assert "not in mine.csv and are not used: stray" in text


def test_bad_rows_are_skipped_with_line_numbers(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text(
        "\ufeffItemID,datasetid,hasbird\n"  # a BOM and another case: still the header
        "a,x,1\n"
        "b,x,2\n"  # not 0/1
        ",x,0\n"  # empty itemid
        "c,x\n"  # a field short
        "a,x,0\n"  # duplicate with a conflicting label
        "d.wav,x,0\n"  # extension dropped
        "e,x,\n"  # empty label in a labelled file
        "\n"
        "f,x,1.0\n"
    )
    rows = read_labels(p)
    assert rows.has_labels and rows.rows == [("a", "x", 1), ("d", "x", 0), ("f", "x", 1)]
    bad = dict(rows.bad)
    assert sorted(bad) == [3, 4, 5, 6, 8]
    assert "hasbird must be 0 or 1, got '2'" in bad[3]
    assert "empty itemid" in bad[4]
    assert "expected 3 fields" in bad[5]
    assert "duplicate itemid, first on line 2" in bad[6] and "conflicting" in bad[6]
    assert "empty hasbird" in bad[8]
    _touch_wavs(tmp_path / "wav", ["a", "d", "f"])
    d = load_dataset(tmp_path)
    assert len(d.clips) == 3 and d.incomplete
    assert "5 bad row(s) in labels.csv skipped: line 3:" in d.problems()[0]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty label file"),
        ("name,hasbird\na,1\n", "no 'itemid' column"),
    ],
)
def test_unusable_label_file_says_why(tmp_path, content, message):
    p = tmp_path / "labels.csv"
    p.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_labels(p)


def test_clear_errors_for_missing_things(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no label CSV found.*ff1010bird_metadata_2018.csv"):
        load_dataset(tmp_path / "empty", "ff1010bird")
    _write_csv(tmp_path / "noaudio" / "x.csv", [("a", "x", 1)])
    with pytest.raises(DatasetError, match="no audio folder found"):
        load_dataset(tmp_path / "noaudio")
    _touch_wavs(tmp_path / "other" / "wav", ["zzz"])
    _write_csv(tmp_path / "other" / "x.csv", [("a", "x", 1), ("b", "x", 0)])
    with pytest.raises(DatasetError, match=r"none of the 2 clips listed .* e\.g\. zzz\.wav"):
        load_dataset(tmp_path / "other")
    _write_csv(tmp_path / "two" / "a.csv", [("a", "x", 1)])
    _write_csv(tmp_path / "two" / "b.csv", [("a", "x", 1)])
    _touch_wavs(tmp_path / "two" / "wav", ["a"])
    with pytest.raises(DatasetError, match="several CSV files could hold the labels"):
        load_dataset(tmp_path / "two")


def test_hidden_labels_make_an_evaluation_set(tmp_path):
    _touch_wavs(tmp_path / "wav", ["p", "q"])
    _write_csv(tmp_path / "PolandNFC_metadata.csv", [("p", "PolandNFC", ""), ("q", "PolandNFC", "")])
    d = load_dataset(tmp_path, "polandnfc")
    assert d.name == "PolandNFC" and not d.has_labels
    assert any("labels are hidden" in m for m in d.problems())


def test_audio_and_labels_in_any_layout(tmp_path):
    _touch_wavs(tmp_path / "clips", ["a", "b"])
    lab = _write_csv(tmp_path / "elsewhere" / "meadow.csv", [("a", 1), ("b", 0)], header=("itemid", "hasbird"))
    (d,) = load_datasets(audio=[str(tmp_path / "clips")], labels=[str(lab)])
    assert d.name == "meadow" and len(d.clips) == 2 and d.expected_items is None
    with pytest.raises(DatasetError, match="go in pairs"):
        load_datasets(audio=[str(tmp_path / "clips")], labels=[])
    with pytest.raises(DatasetError, match="given twice: meadow"):
        load_datasets(audio=[str(tmp_path / "clips")] * 2, labels=[str(lab)] * 2)


def test_parse_dataset_arg(tmp_path):
    assert parse_dataset_arg("ff1010bird=/data/ff") == ("ff1010bird", "/data/ff")
    assert parse_dataset_arg("/data/ff") == (None, "/data/ff")
    odd = tmp_path / "a=b"
    odd.mkdir()
    assert parse_dataset_arg(str(odd)) == (None, str(odd))
    with pytest.raises(DatasetError, match="NAME=PATH"):
        parse_dataset_arg("=/x")


# -- metrics ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(rng.random(n), 1) if seed % 2 else rng.random(n)  # with and without ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_known_answers():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_bootstrap_replicates_are_scikit_learn_aucs_of_the_resamples():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 61)
    s = np.round(rng.random(61), 1)
    reps = bootstrap_aucs(y, s, n_boot=25, seed=11)
    # the same draws, made by hand: positives then negatives, each clip's multiplicity in data order
    draw = np.random.default_rng(11)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    cp = draw.multinomial(pos.size, np.full(pos.size, 1 / pos.size), size=25)
    cn = draw.multinomial(neg.size, np.full(neg.size, 1 / neg.size), size=25)
    for b in range(25):
        idx = np.r_[np.repeat(pos, cp[b]), np.repeat(neg, cn[b])]
        assert reps[b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)


def test_bootstrap_interval_brackets_the_auc_and_narrows_with_n():
    rng = np.random.default_rng(0)

    def data(n):
        y = rng.integers(0, 2, n)
        return y, y * 0.8 + rng.standard_normal(n)

    y, s = data(100)
    lo, hi = bootstrap_auc_ci(y, s, n_boot=500, seed=0)
    assert lo < roc_auc(y, s) < hi
    assert bootstrap_auc_ci(y, s, n_boot=500, seed=0) == (lo, hi)  # reproducible
    y2, s2 = data(2000)
    lo2, hi2 = bootstrap_auc_ci(y2, s2, n_boot=500, seed=0)
    assert hi2 - lo2 < 0.5 * (hi - lo)  # the width falls as 1/sqrt(n)
    assert all(math.isnan(v) for v in bootstrap_auc_ci([1, 1, 1], [0.1, 0.2, 0.3]))


def test_harmonic_mean():
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.8, 0.8, 0.8]) == pytest.approx(0.8)
    assert harmonic_mean([0.9, 0.0]) == 0.0
    assert math.isnan(harmonic_mean([])) and math.isnan(harmonic_mean([0.7, float("nan")]))


# -- evaluate and crossval end to end ---------------------------------------------------------------------
def _fit_simple(dataset, config=FAST, cache=None) -> SimpleDetector:
    from scatterbird.pipeline.evaluate.run import compute_sequences

    seqs, _ = compute_sequences(dataset.clips, config, cache_dir=cache, progress=False)
    det = SimpleDetector().fit(seqs, [c.label for c in dataset.clips])
    det.feature_config = config
    return det


def test_evaluate_scores_every_clip_and_lists_unreadable_ones(challenge, cache, tmp_path):
    import shutil

    ds = {n: load_dataset(p) for n, p in challenge.items()}
    det = _fit_simple(ds["ff1010bird"], cache=cache)
    # a copy of warblrb10k with one clip damaged: listed, not fatal
    broken = tmp_path / "warblr"
    shutil.copytree(challenge["warblrb10k"], broken)
    bad = sorted((broken / "wav").glob("*.wav"))[0]
    bad.write_bytes(b"RIFF not really a wav file")
    targets = [load_dataset(broken, "warblrb10k"), ds["BirdVox-DCASE-20k"]]
    out = tmp_path / "out"
    run = evaluate(det, targets, out, cache_dir=cache, n_boot=200, n_worst=1, progress=False)

    metrics = json.loads((out / "metrics.json").read_text())
    w = metrics["datasets"]["warblrb10k"]
    assert w["n"] == 8 and w["n_scored"] == 7 and w["n_failed"] == 1
    assert metrics["failed"][0]["itemid"] == bad.stem and metrics["failed"][0]["reason"]
    # AUCs against scikit-learn on the written scores; the harmonic mean of them
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    aucs = []
    for name in ("warblrb10k", "BirdVox-DCASE-20k"):
        got = [(int(r["hasbird"]), float(r["prob"])) for r in rows if r["dataset"] == name and r["prob"]]
        y, p = zip(*got)
        ref = roc_auc_score(y, p)
        assert metrics["datasets"][name]["roc_auc"] == pytest.approx(ref, abs=1e-6)
        lo, hi = metrics["datasets"][name]["roc_auc_ci95"]
        assert lo <= ref + 1e-9 and ref - 1e-9 <= hi
        aucs.append(ref)
    assert metrics["harmonic_mean_auc"] == pytest.approx(2 / (1 / aucs[0] + 1 / aucs[1]), abs=1e-6)
    assert metrics["feature_config_hash"] == FAST.hash and metrics["model"]["kind"] == SimpleDetector.kind
    # the submission form: itemid,prob for every scored clip
    with open(out / "predictions.csv") as f:
        pred = list(csv.reader(f))
    assert pred[0] == ["itemid", "prob"] and len(pred) == 1 + 7 + 8
    assert bad.stem not in {r[0] for r in pred}
    assert run.n_failed == 1


def test_crossval_gives_one_result_per_held_out_dataset(challenge, cache, tmp_path):
    datasets = [load_dataset(p) for p in challenge.values()]
    seen_unlabelled = []

    class Recording(SimpleDetector):
        kind = "test-recording-logistic"

        def fit(self, sequences, labels, unlabeled=None):
            seen_unlabelled.append(None if unlabeled is None else len(unlabeled))
            return super().fit(sequences, labels)

    run = crossval(
        datasets, Recording, tmp_path / "cv", config=FAST, semi_supervised=True, cache_dir=cache, n_boot=100,
        n_worst=1, progress=False,
    )
    assert [r.metrics.name for r in run.results] == ["ff1010bird", "warblrb10k", "BirdVox-DCASE-20k"]
    assert [r.train_on for r in run.results] == [
        ["warblrb10k", "BirdVox-DCASE-20k"], ["ff1010bird", "BirdVox-DCASE-20k"], ["ff1010bird", "warblrb10k"],
    ]
    assert seen_unlabelled == [8, 8, 8]  # the held-out audio, unlabelled
    metrics = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert set(metrics["datasets"]) == {"ff1010bird", "warblrb10k", "BirdVox-DCASE-20k"}
    aucs = [metrics["datasets"][n]["roc_auc"] for n in metrics["datasets"]]
    assert metrics["harmonic_mean_auc"] == pytest.approx(harmonic_mean(aucs), abs=1e-5)
    with open(tmp_path / "cv" / "predictions.csv") as f:
        assert sum(1 for _ in f) == 1 + 24  # every clip scored once, by the fold that held it out
    # without the semi-supervised option the held-out audio is never passed
    seen_unlabelled.clear()
    crossval(datasets[:2], Recording, None, config=FAST, semi_supervised=False, cache_dir=cache, n_boot=0, progress=False)
    assert seen_unlabelled == [None, None]


def test_crossval_refuses_hidden_labels_and_single_dataset(challenge, tmp_path):
    d = load_dataset(challenge["ff1010bird"])
    with pytest.raises(DatasetError, match="at least two"):
        crossval([d], SimpleDetector, None, config=FAST, progress=False)
    _touch_wavs(tmp_path / "wav", ["p"])
    _write_csv(tmp_path / "Chernobyl_metadata.csv", [("p", "Chernobyl", "")])
    hidden = load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="hidden in: Chernobyl"):
        crossval([d, hidden], SimpleDetector, None, config=FAST, progress=False)


def test_cli_evaluate_and_crossval(challenge, cache, tmp_path, capsys):
    from scatterbird.cli import EXIT_OK, EXIT_USAGE, main

    det = _fit_simple(load_dataset(challenge["ff1010bird"]), cache=cache)
    model = tmp_path / "m.pt"
    det.save(model)
    out = tmp_path / "ev"
    rc = main([
        "evaluate", "--model", str(model), "--dataset", f"warblr={challenge['warblrb10k']}",
        "--dataset", str(challenge["BirdVox-DCASE-20k"]), "-o", str(out), "--bootstrap", "50", "--worst", "1",
        "--cache", str(cache), "-q",
    ])
    text = capsys.readouterr()
    assert rc == EXIT_OK, text.err
    assert "harmonic mean AUC" in text.out and "BirdVox-DCASE-20k" in text.out
    assert "the published dataset has 8,000 clips; 8 were found" in text.err
    assert {"metrics.json", "predictions.csv", "report.html", "roc.png"} <= {p.name for p in out.iterdir()}

    rc = main(["evaluate", "--model", str(model), "--dataset", str(tmp_path / "nowhere"), "-o", str(out), "-q"])
    assert rc == EXIT_USAGE and "not found" in capsys.readouterr().err
    rc = main(["crossval", "--model", "no-such-kind", "--dataset", str(challenge["ff1010bird"]), "-o", str(out), "-q"])
    assert rc == EXIT_USAGE and "unknown detector kind 'no-such-kind'" in capsys.readouterr().err


def test_one_folder_with_every_label_file(tmp_path):
    # a common way to unpack the development sets: one wav/ for all, the label files side by side
    _touch_wavs(tmp_path / "wav", ["f1", "f2", "w1", "w2"])
    _write_csv(tmp_path / "ff1010bird_metadata_2018.csv", [("f1", "ff1010bird", 1), ("f2", "ff1010bird", 0)])
    _write_csv(tmp_path / "warblrb10k_public_metadata_2018.csv", [("w1", "warblrb10k", 1), ("w2", "warblrb10k", 0)])
    with pytest.raises(DatasetError, match="label files of several datasets are here"):
        load_dataset(tmp_path)
    d = load_dataset(tmp_path, "warblr")
    assert d.name == "warblrb10k" and [c.itemid for c in d.clips] == ["w1", "w2"]
    assert d.unlisted == ["f1", "f2"]  # the other set's clips are named, not used
    # the wav folder itself: its label files are beside it
    assert [c.itemid for c in load_dataset(tmp_path / "wav", "ff1010bird").clips] == ["f1", "f2"]


def test_shared_label_file_is_filtered_by_datasetid(tmp_path):
    _touch_wavs(tmp_path / "wav", ["c1", "c2"])
    _write_csv(
        tmp_path / "dcase2018_task3_bird_examplesubmission.csv",
        [("c1", "Chernobyl", ""), ("c2", "Chernobyl", ""), ("p1", "PolandNFC", ""), ("x1", "warblrb10k", "")],
    )
    d = load_dataset(tmp_path, "Chernobyl")
    assert [c.itemid for c in d.clips] == ["c1", "c2"] and d.missing == [] and not d.has_labels


def test_worst_clips_are_ranking_mistakes_only(tmp_path):
    from scatterbird.pipeline.evaluate.run import Clip, Dataset, DatasetResult, _metrics_for, worst_clips

    y = [0, 0, 0, 1, 1, 1, 1]
    s = np.array([0.1, 0.7, 0.9, 0.8, 0.95, 0.6, 0.99])
    clips = [Clip(f"c{i}", tmp_path / f"c{i}.wav", v, "d") for i, v in enumerate(y)]
    data = Dataset("d", tmp_path / "d.csv", tmp_path, clips=clips)
    reasons = [None] * len(y)
    r = DatasetResult(data, s, reasons, _metrics_for(data, s, reasons, 0, 0))
    fp, fn = worst_clips(r, 5)
    # c2 (0.9) outranks c3 and c5; c1 (0.7) outranks c5; c0 (0.1) outranks none
    assert fp == [2, 1]
    # c5 (0.6) is outranked by c1 and c2; c3 (0.8) by c2; c4 and c6 by none
    assert fn == [5, 3]
    assert worst_clips(r, 1) == ([2], [5])
