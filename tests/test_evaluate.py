"""pipeline/evaluate/: evaluate, crossval, their outputs and the CLI, on synthetic challenge-like data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from simple_detector import SimpleDetector
from test_datasets import _touch_wavs, _write_csv
from test_metrics import pairwise_auc

from scatterbird.cli import EXIT_OK, EXIT_USAGE, main
from scatterbird.data.manifest import write_challenge_like
from scatterbird.errors import DatasetError
from scatterbird.pipeline.clip_features import compute_sequences
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.datasets import Clip, Dataset, load_dataset
from scatterbird.pipeline.evaluate.metrics import harmonic_mean
from scatterbird.pipeline.evaluate.results import DatasetResult, metrics_for, worst_clips
from scatterbird.pipeline.evaluate.run import crossval, evaluate

#: Fast features for the tests that do not need the pipeline's default configuration.
FAST = FeatureConfig(sample_rate=8000, J=6, Q1=4, max_order=1, threshold="none")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One feature cache for the module: each synthetic clip is scattered once."""
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def challenge(tmp_path_factory) -> dict[str, Path]:
    """Synthetic stand-ins of the three development sets, in their published layouts (2 s clips, 8 kHz)."""
    return write_challenge_like(tmp_path_factory.mktemp("challenge"), 8, duration=2.0, sr=8000, seed=1)


# -- evaluate and crossval end to end ---------------------------------------------------------------------
def _fit_simple(dataset, config=FAST, cache=None) -> SimpleDetector:
    seqs, _ = compute_sequences(dataset.clips, config, cache_dir=cache, progress=False)
    det = SimpleDetector().fit(seqs, [c.label for c in dataset.clips])
    det.feature_config = config
    return det


def test_evaluate_scores_every_clip_and_lists_unreadable_ones(challenge, cache, tmp_path, capsys):
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
    # AUCs against the pairwise count on the written scores; the harmonic mean of them
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    aucs = []
    for name in ("warblrb10k", "BirdVox-DCASE-20k"):
        got = [(int(r["hasbird"]), float(r["prob"])) for r in rows if r["dataset"] == name and r["prob"]]
        y, p = zip(*got)
        ref = pairwise_auc(y, p)
        assert metrics["datasets"][name]["roc_auc"] == pytest.approx(ref, abs=1e-6)
        lo, hi = metrics["datasets"][name]["roc_auc_ci95"]
        assert lo <= ref + 1e-9 and ref - 1e-9 <= hi
        aucs.append(ref)
    assert metrics["harmonic_mean_auc"] == pytest.approx(2 / (1 / aucs[0] + 1 / aucs[1]), abs=1e-6)
    assert metrics["feature_config_hash"] == FAST.hash and metrics["model"]["kind"] == SimpleDetector.kind
    # the submission form: itemid,prob for every labelled clip, the unreadable one with the flagged default
    with open(out / "predictions.csv") as f:
        pred = list(csv.reader(f))
    assert pred[0] == ["itemid", "prob"] and len(pred) == 1 + 8 + 8
    assert [r[0] for r in pred[1:]] == [c.itemid for d in targets for c in d.clips]
    written = {r[0]: r[1] for r in pred[1:]}
    assert written[bad.stem] == "0.500000"
    scored = {r["itemid"]: r["prob"] for r in rows if r["prob"]}
    assert all(written[i] == p for i, p in scored.items()) and len(scored) == 15
    with open(out / "predictions_defaulted.csv") as f:
        flagged = list(csv.DictReader(f))
    assert [(r["dataset"], r["itemid"], r["prob"]) for r in flagged] == [("warblrb10k", bad.stem, "0.500000")]
    assert flagged[0]["reason"] == metrics["failed"][0]["reason"]
    assert metrics["failed"][0]["prob_in_predictions"] == 0.5
    err = capsys.readouterr().err
    assert "1 clip(s) could not be read; predictions.csv gives them prob 0.5" in err
    assert run.n_failed == 1
    # a rerun where every clip reads leaves no stale list of defaulted clips
    evaluate(det, [ds["BirdVox-DCASE-20k"]], out, cache_dir=cache, n_boot=0, n_worst=0, progress=False)
    assert not (out / "predictions_defaulted.csv").exists()
    assert "could not be read" not in capsys.readouterr().err


def test_crossval_gives_one_result_per_held_out_dataset(challenge, cache, tmp_path):
    datasets = [load_dataset(p) for p in challenge.values()]
    seen_unlabeled = []

    class Recording(SimpleDetector):
        kind = "test-recording-logistic"

        def fit(self, sequences, labels, unlabeled=None):
            seen_unlabeled.append(None if unlabeled is None else len(unlabeled))
            return super().fit(sequences, labels)

    run = crossval(
        datasets, Recording, tmp_path / "cv", config=FAST, semi_supervised=True, cache_dir=cache, n_boot=100,
        n_worst=1, progress=False,
    )
    assert [r.metrics.name for r in run.results] == ["ff1010bird", "warblrb10k", "BirdVox-DCASE-20k"]
    assert [r.train_on for r in run.results] == [
        ["warblrb10k", "BirdVox-DCASE-20k"], ["ff1010bird", "BirdVox-DCASE-20k"], ["ff1010bird", "warblrb10k"],
    ]
    assert seen_unlabeled == [8, 8, 8]  # the held-out audio, unlabeled
    metrics = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert set(metrics["datasets"]) == {"ff1010bird", "warblrb10k", "BirdVox-DCASE-20k"}
    aucs = [metrics["datasets"][n]["roc_auc"] for n in metrics["datasets"]]
    assert metrics["harmonic_mean_auc"] == pytest.approx(harmonic_mean(aucs), abs=1e-5)
    with open(tmp_path / "cv" / "predictions.csv") as f:
        assert sum(1 for _ in f) == 1 + 24  # every clip scored once, by the fold that held it out
    # without the semi-supervised option the held-out audio is never passed
    seen_unlabeled.clear()
    crossval(datasets[:2], Recording, None, config=FAST, semi_supervised=False, cache_dir=cache, n_boot=0, progress=False)
    assert seen_unlabeled == [None, None]


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
    with pytest.raises(SystemExit) as exit_info:
        main(["crossval", "--kind", "no-such-kind", "--dataset", str(challenge["ff1010bird"]), "-o", str(out), "-q"])
    assert exit_info.value.code == EXIT_USAGE and "invalid choice: 'no-such-kind'" in capsys.readouterr().err


def test_cli_crossval_kind_and_its_deprecated_alias(challenge, cache, tmp_path, capsys):
    """--kind names the detector trained in each fold; --model KIND still works, with a warning."""
    fast = ["--sr", str(FAST.sample_rate), "-J", str(FAST.J), "--q1", str(FAST.Q1), "--order", str(FAST.max_order),
            "--threshold", FAST.threshold]
    data = ["--dataset", str(challenge["ff1010bird"]), "--dataset", str(challenge["warblrb10k"])]
    out = tmp_path / "cv"
    rc = main(["crossval", "--kind", SimpleDetector.kind, "--param", "C=0.5", *data, "-o", str(out),
               "--bootstrap", "20", "--worst", "0", "--cache", str(cache), "-q", *fast])
    text = capsys.readouterr()
    assert rc == EXIT_OK, text.err
    assert "deprecated" not in text.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["kind"] == SimpleDetector.kind and metrics["model"]["params"] == {"C": 0.5}
    assert set(metrics["datasets"]) == {"ff1010bird", "warblrb10k"}
    # the old spelling: the kind it names is the one built (its bad parameter fails before any feature work)
    rc = main(["crossval", "--model", SimpleDetector.kind, "--param", "nope=1", *data, "-o", str(out), "-q", *fast])
    err = capsys.readouterr().err.splitlines()
    assert rc == EXIT_USAGE
    assert err[0] == (f"scatterbird crossval: warning: --model KIND is deprecated and will name a model file; "
                      f"use --kind {SimpleDetector.kind}")
    assert err[1].startswith(f"scatterbird crossval: error: detector '{SimpleDetector.kind}' takes no parameter 'nope'")


def _result(tmp_path, y, s) -> DatasetResult:
    clips = [Clip(f"c{i}", tmp_path / f"c{i}.wav", v, "d") for i, v in enumerate(y)]
    data = Dataset("d", tmp_path / "d.csv", tmp_path, clips=clips)
    reasons = [None] * len(y)
    return DatasetResult(data, np.asarray(s, dtype=float), reasons, metrics_for(data, np.asarray(s, dtype=float), reasons, 200, 0))


def test_worst_clips_are_defined_by_rank(tmp_path):
    """The highest-scoring negatives and the lowest-scoring positives, whatever the threshold: the case of the
    issue (negatives at 0.13 listed, a positive at 0.18 not) cannot happen with a list long enough."""
    y = [0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.13, 0.9, 0.8, 0.95, 0.18, 0.99]
    r = _result(tmp_path, y, s)
    fp, fn = worst_clips(r, 5)
    assert fp == [2, 1, 0]  # every negative, highest first (0.9, 0.13, 0.1)
    assert fn == [5, 3, 4, 6]  # every positive, lowest first (0.18, 0.8, 0.95, 0.99)
    assert worst_clips(r, 2) == ([2, 1], [5, 3])
    # ties keep the label file's order; an unreadable clip is never listed
    r = _result(tmp_path, [0, 0, 1, 1], [0.4, 0.4, 0.4, 0.7])
    assert worst_clips(r, 2) == ([0, 1], [2, 3])
    r.reasons[0] = "unreadable"
    r.scores[0] = np.nan
    assert worst_clips(r, 2) == ([1], [2, 3])


def test_small_sample_warning(tmp_path):
    """A three-clip AUC of 1 with the interval [1, 1] is flagged: in metrics.json, the table and the report."""
    r = _result(tmp_path, [0, 1, 1], [0.1, 0.8, 0.9])
    m = r.metrics
    assert m.auc == 1.0 and m.ci == (1.0, 1.0)
    j = m.to_json()
    assert j["small_sample"] is True
    assert "2 clip(s) with birds and 1 without" in j["warning"] and "not meaningful" in j["warning"]
    # ten of each class: no warning
    big = _result(tmp_path, [0] * 10 + [1] * 10, np.linspace(0, 1, 20))
    assert big.metrics.warning is None and big.metrics.to_json()["small_sample"] is False
    # nine positives: warned
    assert _result(tmp_path, [0] * 10 + [1] * 9, np.linspace(0, 1, 19)).metrics.warning
    from scatterbird.pipeline.evaluate.results import RunResult

    run = RunResult("evaluate", [r, big], FAST, {"kind": "test"}, 1.0)
    table = run.table()
    assert "1.000*" in table and f"* d: {m.warning}" in table
    assert table.count("*") == 2  # the big set is not marked


def test_evaluate_help_shows_a_single_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert "95%" in out and "95%%" not in out
