"""Calibration: reliability bins, the expected calibration error, temperature scaling, a detector's temperature
(applied to its scores, saved with it, absent from old files) and the ECE with its diagram in the report."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from detector_conformance import easy_sequences
from simple_detector import SimpleDetector

from scatterbird.data.default_model import DEFAULT_MODEL_PATH, default_model_info
from scatterbird.errors import DetectorError
from scatterbird.models.base import TEMPERATURE_KEY, Detector
from scatterbird.models.registry import load_detector
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.datasets import Clip, Dataset
from scatterbird.pipeline.evaluate.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from scatterbird.pipeline.evaluate.outputs import write_outputs
from scatterbird.pipeline.evaluate.results import DatasetResult, RunResult, metrics_for

FAST = FeatureConfig(sample_rate=8000, J=6, Q1=4, max_order=1, threshold="none")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def slow_ece(labels, probs, n_bins):
    """The ECE by its definition, one bin at a time (bins [k/n, (k+1)/n), the last one closed)."""
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        inside = [(y, p) for y, p in zip(labels, probs) if lo <= p < hi or (k == n_bins - 1 and p == 1.0)]
        if inside:
            acc = sum(y for y, _ in inside) / len(inside)
            conf = sum(p for _, p in inside) / len(inside)
            total += len(inside) * abs(acc - conf)
    return total / len(labels)


# -- reliability bins and ECE ------------------------------------------------------------------------------
def test_ece_hand_computed():
    # 10 bins of width 0.1; three are filled:
    #   [0.1, 0.2): 0.12 0.14 0.16 0.18, labels 0 0 0 1: conf 0.15,  acc 0.25, gap 0.10,  n 4
    #   [0.5, 0.6): 0.52 0.58,           labels 1 0:     conf 0.55,  acc 0.50, gap 0.05,  n 2
    #   [0.9, 1.0]: 0.92 0.94 0.96 1.0,  labels 1 1 1 1: conf 0.955, acc 1.00, gap 0.045, n 4
    # ECE = (4 * 0.10 + 2 * 0.05 + 4 * 0.045) / 10 = 0.068
    p = [0.12, 0.14, 0.16, 0.18, 0.52, 0.58, 0.92, 0.94, 0.96, 1.0]
    y = [0, 0, 0, 1, 1, 0, 1, 1, 1, 1]
    assert expected_calibration_error(y, p) == pytest.approx(0.068, abs=1e-12)
    r = reliability_bins(y, p)
    assert r.edges.tolist() == [k / 10 for k in range(11)]
    assert r.count.tolist() == [0, 4, 0, 0, 0, 2, 0, 0, 0, 4]
    filled = r.count > 0
    np.testing.assert_allclose(r.mean_predicted[filled], [0.15, 0.55, 0.955])
    np.testing.assert_allclose(r.observed[filled], [0.25, 0.5, 1.0])
    assert np.isnan(r.mean_predicted[~filled]).all() and np.isnan(r.observed[~filled]).all()
    # two bins: [0, 0.5) holds the first four (conf 0.15, acc 0.25), [0.5, 1] the other six
    # (conf (0.52 + 0.58 + 3.82) / 6 = 0.82, acc 5/6): (4 * 0.1 + 6 * |5/6 - 0.82|) / 10 = 0.048
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.048, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_ece_matches_its_definition_and_bins_count_every_clip(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    p = np.round(rng.random(n), 2)  # many scores on the bin edges
    p[:2] = [0.0, 1.0]
    y = rng.integers(0, 2, n)
    for n_bins in (1, 7, 10):
        assert expected_calibration_error(y, p, n_bins) == pytest.approx(slow_ece(y, p, n_bins), abs=1e-12)
        assert reliability_bins(y, p, n_bins).count.sum() == n
    q = reliability_bins(y, p, 5, strategy="quantile")
    assert q.count.sum() == n and q.edges[0] == 0.0 and q.edges[-1] == 1.0 and np.all(np.diff(q.edges) > 0)


def test_quantile_bins_hold_about_equal_counts():
    p = np.random.default_rng(4).random(1000) ** 3  # skewed towards 0: uniform bins would be very uneven
    r = reliability_bins(np.zeros(1000, int), p, 4, strategy="quantile")
    assert r.count.tolist() == [250, 250, 250, 250]
    assert reliability_bins(np.zeros(1000, int), p, 4).count[0] > 600


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one length"):
        expected_calibration_error([0, 1], [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match="strategy"):
        reliability_bins([0, 1], [0.5, 0.5], strategy="kmeans")
    with pytest.raises(DetectorError, match="single class"):
        fit_temperature([1, 1], [0.5, 0.9])
    with pytest.raises(DetectorError, match="> 0"):
        apply_temperature([0.5], 0.0)


# -- temperature -----------------------------------------------------------------------------------------
def test_apply_temperature_closed_form():
    # logit(0.8) = log 4; halved, log 2; sigmoid(log 2) = 2/3
    assert apply_temperature([0.8], 2.0)[0] == pytest.approx(2 / 3, abs=1e-15)
    assert apply_temperature([0.2], 2.0)[0] == pytest.approx(1 / 3, abs=1e-15)
    # 0, 1/2 and 1 are fixed points; the order is kept
    assert apply_temperature([0.0, 0.5, 1.0], 3.0).tolist() == [0.0, 0.5, 1.0]
    p = np.sort(np.random.default_rng(0).random(50))
    assert np.all(np.diff(apply_temperature(p, 0.5)) >= 0)
    np.testing.assert_array_equal(apply_temperature(p, 1.0), p)
    np.testing.assert_allclose(apply_temperature(apply_temperature(p, 2.0), 0.5), p, atol=1e-12)


def test_calibrated_data_has_ece_near_zero_and_temperature_near_one():
    rng = np.random.default_rng(1)
    p = _sigmoid(rng.normal(0.0, 2.0, 100_000))
    y = (rng.random(p.size) < p).astype(int)  # Bernoulli(p): calibrated by construction
    assert expected_calibration_error(y, p) < 0.01
    assert fit_temperature(y, p) == pytest.approx(1.0, abs=0.03)


def test_overconfident_scores_are_fitted_to_their_temperature():
    rng = np.random.default_rng(2)
    z = rng.normal(0.0, 1.5, 100_000)
    y = (rng.random(z.size) < _sigmoid(z)).astype(int)
    p = _sigmoid(2.0 * z)  # twice as confident as the truth
    t = fit_temperature(y, p)
    assert t == pytest.approx(2.0, abs=0.06)
    before, after = expected_calibration_error(y, p), expected_calibration_error(y, apply_temperature(p, t))
    assert before > 0.05 and after < 0.01


# -- a detector's temperature -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def simple():
    seqs, y = easy_sequences(40, 6, seed=1)
    det = SimpleDetector(C=100.0).fit(seqs, y)  # weakly regularised: confident
    det.feature_config = FeatureConfig()
    return det


def test_calibrate_sets_the_fitted_temperature_and_scores_follow_it(simple, tmp_path):
    held, yh = easy_sequences(60, 6, seed=3)
    det = load_detector(_saved(simple, tmp_path / "a.pt"))
    raw = det.predict_proba(held)
    hash_one = det.model_hash
    t = det.calibrate(held, yh)
    assert t == det.temperature == pytest.approx(fit_temperature(yh, raw), rel=1e-12) and t != 1.0
    np.testing.assert_allclose(det.predict_proba(held), apply_temperature(raw, t), rtol=0, atol=1e-15)
    assert det.calibrate(held, yh) == t  # fitted to the uncalibrated scores, not to the calibrated ones
    assert det.model_hash != hash_one  # other scores, another model
    # saved and loaded with the model
    path = _saved(det, tmp_path / "b.pt")
    extra = json.loads(torch.load(path, weights_only=True)["extra_json"])
    assert extra[TEMPERATURE_KEY] == t
    again = load_detector(path, expected_config=FeatureConfig())
    assert again.temperature == t and again.model_hash == det.model_hash
    np.testing.assert_array_equal(again.predict_proba(held), det.predict_proba(held))
    # back at T = 1: the uncalibrated model, its hash and its file's extra state
    again.temperature = 1.0
    assert again.model_hash == hash_one
    np.testing.assert_array_equal(again.predict_proba(held), raw)
    assert TEMPERATURE_KEY not in again._get_state()[1]
    with pytest.raises(DetectorError, match="> 0"):
        again.temperature = -1.0


def _saved(det: Detector, path):
    det.save(path)
    return path


def test_a_model_file_without_a_temperature_loads_unchanged(tmp_path):
    """A file saved before temperatures existed (the bundled model's file with its temperature taken out)
    loads with T = 1 and scores as its network does; saving it again writes the same extra state. The
    bundled model itself carries the temperature its description records."""
    bundled = load_detector(DEFAULT_MODEL_PATH)
    assert bundled.temperature == pytest.approx(default_model_info()["calibration"]["temperature"], rel=1e-3)
    assert bundled.model_hash == default_model_info()["model_hash"]
    payload = torch.load(DEFAULT_MODEL_PATH, weights_only=True)
    extra = json.loads(payload["extra_json"])
    assert extra.pop(TEMPERATURE_KEY) == bundled.temperature
    payload["extra_json"] = json.dumps(extra)
    old_file = tmp_path / "old.pt"
    torch.save(payload, old_file)
    det = load_detector(old_file)
    assert det.temperature == 1.0 and det.model_hash != bundled.model_hash
    seqs = [np.random.default_rng(k).standard_normal((12 + k, det.n_channels_)).astype(np.float32) for k in range(4)]
    raw = type(det).predict_proba.__wrapped__(det, seqs)  # the subclass's own scores
    np.testing.assert_array_equal(det.predict_proba(seqs), raw)
    new = torch.load(_saved(det, tmp_path / "m.pt"), weights_only=True)
    assert json.loads(new["extra_json"]) == extra
    # with a temperature, the same model scores differently, as the formula says
    det.temperature = 3.0
    np.testing.assert_allclose(det.predict_proba(seqs), apply_temperature(raw, 3.0), rtol=0, atol=1e-15)
    np.testing.assert_allclose(bundled.predict_proba(seqs), apply_temperature(raw, bundled.temperature), atol=1e-12)


def test_a_bad_temperature_in_a_file_is_refused(simple, tmp_path):
    path = _saved(simple, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["extra_json"] = json.dumps({**json.loads(payload["extra_json"]), TEMPERATURE_KEY: -2.0})
    torch.save(payload, path)
    with pytest.raises(DetectorError, match="temperature"):
        load_detector(path)


class _TwoColumns(SimpleDetector):
    """Scores as scikit-learn's (n, 2): no bird, bird."""

    kind = "test-calibration-two-columns"

    def predict_proba(self, sequences):
        p = super().predict_proba(sequences)  # the parent's wrapper must not apply the temperature as well
        return np.stack([1.0 - p, p], axis=1)


def test_two_column_scores_and_subclasses_get_the_temperature_once(simple):
    seqs, y = easy_sequences(20, 6, seed=5)
    det = _TwoColumns(C=100.0).fit(*easy_sequences(40, 6, seed=1))
    raw = det.predict_proba(seqs)
    assert raw.shape == (20, 2)
    det.temperature = 2.0
    out = det.predict_proba(seqs)
    np.testing.assert_allclose(out[:, 1], apply_temperature(raw[:, 1], 2.0), atol=1e-15)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-15)
    t = det.calibrate(seqs, y)
    assert t == pytest.approx(fit_temperature(y, raw[:, 1]), rel=1e-12)


# -- in the evaluation outputs ----------------------------------------------------------------------------
def _result(tmp_path, name, y, s) -> DatasetResult:
    clips = [Clip(f"{name}{i}", tmp_path / f"{name}{i}.wav", v, name) for i, v in enumerate(y)]
    data = Dataset(name, tmp_path / f"{name}.csv", tmp_path, clips=clips)
    s = np.asarray(s, dtype=float)
    return DatasetResult(data, s, [None] * len(y), metrics_for(data, s, [None] * len(y), 50, 0))


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs += [v for k, v in attrs if k == "src"]

    def handle_data(self, data):
        self.text.append(data)


def test_report_and_metrics_show_the_ece_and_the_reliability_diagram(tmp_path):
    rng = np.random.default_rng(6)
    sets = []
    for name in ("setA", "setB"):
        p = np.round(rng.random(40), 3)
        y = (rng.random(40) < p).astype(int)
        sets.append(_result(tmp_path, name, y, p))
    run = RunResult("crossval", sets, FAST, {"kind": "test"}, None)
    run.bootstrap = {"replicates": 50, "seed": 0}
    for r in sets:
        assert r.metrics.ece == pytest.approx(slow_ece(r.dataset.labels, r.scores, 10), abs=1e-12)
    out = tmp_path / "out"
    write_outputs(run, out, {})
    metrics = json.loads((out / "metrics.json").read_text())
    for r in sets:
        assert metrics["datasets"][r.metrics.name]["ece"] == round(r.metrics.ece, 6)
    y = np.concatenate([r.dataset.labels for r in sets])
    s = np.concatenate([r.scores for r in sets])
    assert metrics["pooled_out_of_fold"]["ece"] == pytest.approx(slow_ece(y, s, 10), abs=1e-6)
    page = _Text()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    text = " ".join(page.text)
    assert "reliability.png" in page.imgs and (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert "ECE" in text and "expected calibration error" in text
    for r in sets:
        assert f"{r.metrics.ece:.3f}" in text
    assert "all held-out clips pooled" in text and f"{metrics['pooled_out_of_fold']['ece']:.3f}" in text
    assert "ECE" in run.table().splitlines()[0] and f"{sets[0].metrics.ece:.3f}" in run.table()


def test_no_ece_for_hidden_labels_or_scores_that_are_not_probabilities(tmp_path):
    r = _result(tmp_path, "d", [0, 1, 1], [-2.0, 0.5, 3.0])  # decision values, not probabilities
    assert r.metrics.auc == 1.0 and r.metrics.ece is None and r.metrics.to_json()["ece"] is None
    run = RunResult("evaluate", [r], FAST, {"kind": "test"}, 1.0)
    write_outputs(run, tmp_path / "out", {})
    assert not (tmp_path / "out" / "reliability.png").exists()
    assert math.isnan(expected_calibration_error([], []))


def test_training_again_drops_the_temperature_fitted_to_the_old_scores():
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((20, 3)).astype(np.float32) + (i % 2) for i in range(40)]
    y = np.array([i % 2 for i in range(40)])
    det = SimpleDetector().fit(xs, y)
    det.temperature = 2.5
    assert det._get_state()[1]["calibration_temperature"] == 2.5
    det.fit(xs, y)
    assert det.temperature == 1.0 and "calibration_temperature" not in det._get_state()[1]
