"""Tests of models/ensemble.py: the mean of several detectors, its file format, temperature and adaptation."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from detector_conformance import check_detector, easy_sequences
from simple_detector import FAST_CONFIG, SimpleDetector

from scatterbird.data.synthetic import make_clip
from scatterbird.errors import DetectorError, OptionError
from scatterbird.models.ensemble import EnsembleDetector
from scatterbird.models.inversion import InversionDetector
from scatterbird.models.registry import available_detectors, build_detector, load_detector
from scatterbird.pipeline.analysis.run import AnalysisOptions, analysed_detector, analyze_inputs
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.device import detector_on
from scatterbird.pipeline.frontend.scattering import Scattering, scatter_file
from scatterbird.pipeline.train.adapt import adapt_detector, check_adaptable

torch.set_num_threads(1)

#: Tiny, fast inversion members (one block, a few epochs, no validation split).
TINY = {"widths": (4,), "max_epochs": 3, "validation_fraction": 0.0}


@pytest.fixture(scope="module")
def data():
    X, y = easy_sequences(40, 12, seed=1)
    T, yt = easy_sequences(16, 12, seed=2, min_len=5, max_len=90)
    return X, y, T, yt


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _, _ = data
    ens = EnsembleDetector(member_params=TINY, random_state=5).fit(X, y)
    ens.feature_config = FeatureConfig()
    return ens


def _inversion(seed: int, X, y) -> InversionDetector:
    det = InversionDetector(**TINY, random_state=seed).fit(X, y)
    det.feature_config = FeatureConfig()
    return det


def test_the_kind_is_registered_and_built_by_name():
    assert available_detectors()["ensemble"] is EnsembleDetector
    det = build_detector("ensemble", {"n_members": 3, "member_params": TINY}, seed=7)
    assert (det.member_kind, det.n_members, det.random_state) == ("inversion", 3, 7)


def test_scores_are_the_mean_of_members_trained_independently(fitted, data):
    X, y, T, _ = data
    # member i is the member kind seeded random_state + i: trained again here on its own, it scores the same
    alone = [_inversion(5, X, y).predict_proba(T), _inversion(6, X, y).predict_proba(T)]
    p = fitted.predict_proba(T)
    assert p.shape == (len(T),)
    np.testing.assert_allclose(p, (alone[0] + alone[1]) / 2, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(p, np.mean([m.predict_proba(T) for m in fitted.members_], axis=0), rtol=0, atol=1e-12)


def test_fitted_members_differ_by_their_seed(fitted):
    a, b = fitted.members_
    assert (a.random_state, b.random_state) == (5, 6)
    assert all(isinstance(m, InversionDetector) and m.widths == (4,) for m in fitted.members_)
    wa, wb = a.net_.state_dict(), b.net_.state_dict()
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    assert all(m.feature_config == FeatureConfig() for m in fitted.members_)  # the ensemble's config, shared


def test_unlabeled_clips_reach_members_that_take_them(data, monkeypatch):
    X, y, T, _ = data
    seen = []
    original = InversionDetector.fit

    def spy(self, sequences, labels, unlabeled=None):
        seen.append(None if unlabeled is None else len(unlabeled))
        return original(self, sequences, labels, unlabeled=unlabeled)

    monkeypatch.setattr(InversionDetector, "fit", spy)
    EnsembleDetector(member_params=TINY).fit(X, y, unlabeled=T)
    assert seen == [len(T), len(T)]


def test_save_load_round_trip_gives_identical_scores_and_hash(fitted, data, tmp_path):
    T = data[2]
    path = tmp_path / "ensemble.pt"
    fitted.save(path)
    payload = torch.load(path, weights_only=True)  # plain data only, as for every model file
    assert payload["kind"] == "ensemble"
    assert {k.split(".", 1)[0] for k in payload["tensors"]} == {"m0", "m1"}
    again = load_detector(path, expected_config=FeatureConfig())
    assert isinstance(again, EnsembleDetector) and again.model_hash == fitted.model_hash
    np.testing.assert_array_equal(again.predict_proba(T), fitted.predict_proba(T))
    assert [m.random_state for m in again.members_] == [5, 6]
    assert all(m.feature_config == FeatureConfig() for m in again.members_)


def test_the_hash_follows_every_members_weights(data):
    X, y, _, _ = data
    a, b, c = (_inversion(s, X, y) for s in (0, 1, 2))
    ab, ac = EnsembleDetector.from_members([a, b]), EnsembleDetector.from_members([a, c])
    assert ab.model_hash != ac.model_hash
    before = ab.model_hash
    with torch.no_grad():
        next(b.net_.parameters())[0] += 1e-3  # member 1 only
    assert ab.model_hash != before


def test_from_members_keeps_them_and_describes_them(data):
    X, y, T, _ = data
    a, b = _inversion(3, X, y), _inversion(4, X, y)
    ens = EnsembleDetector.from_members([a, b])
    assert ens.members_[0] is a and ens.members_[1] is b
    assert (ens.member_kind, ens.n_members, ens.random_state) == ("inversion", 2, 3)
    assert ens.member_params["widths"] == [4] and "random_state" not in ens.member_params
    assert ens.feature_config == FeatureConfig() and ens.n_channels_ == 12
    np.testing.assert_allclose(ens.predict_proba(T), (a.predict_proba(T) + b.predict_proba(T)) / 2, atol=1e-12)
    b.set_params(lr=0.5)  # the members' hyperparameters differ now: no shared member_params
    assert EnsembleDetector.from_members([a, b]).member_params is None


def test_from_members_refuses_what_cannot_be_averaged(data):
    X, y, _, _ = data
    a = _inversion(0, X, y)
    simple = SimpleDetector().fit(X, y)
    simple.feature_config = FeatureConfig()
    with pytest.raises(DetectorError, match="one kind"):
        EnsembleDetector.from_members([a, simple])
    other = _inversion(1, X, y)
    other.feature_config = FAST_CONFIG
    with pytest.raises(DetectorError, match="feature configuration"):
        EnsembleDetector.from_members([a, other])
    narrow = InversionDetector(**TINY).fit([s[:, :8] for s in X], y)
    narrow.feature_config = FeatureConfig()
    with pytest.raises(DetectorError, match="channel count"):
        EnsembleDetector.from_members([a, narrow])
    hot = _inversion(2, X, y)
    hot.temperature = 2.0
    with pytest.raises(DetectorError, match="temperature"):
        EnsembleDetector.from_members([a, hot])
    unfitted = InversionDetector()
    unfitted.feature_config = FeatureConfig()
    with pytest.raises(DetectorError, match="member 1 .inversion. is not fitted"):
        EnsembleDetector.from_members([a, unfitted])
    with pytest.raises(DetectorError, match="cannot be ensembles"):
        EnsembleDetector.from_members([EnsembleDetector.from_members([a])])
    with pytest.raises(DetectorError, match="at least one"):
        EnsembleDetector.from_members([])


def test_bad_settings_are_refused(data):
    X, y, T, _ = data
    with pytest.raises(DetectorError, match="random_state"):
        EnsembleDetector(member_params={"random_state": 1}).fit(X, y)
    with pytest.raises(DetectorError, match="unknown member kind 'nope'"):
        EnsembleDetector(member_kind="nope").fit(X, y)
    with pytest.raises(DetectorError, match="n_members"):
        EnsembleDetector(n_members=0).fit(X, y)
    with pytest.raises(DetectorError, match="not fitted"):
        EnsembleDetector().predict_proba(T)


def test_the_temperature_applies_once_to_the_mean(fitted, data, tmp_path):
    T = data[2]
    mean = np.mean([m.predict_proba(T) for m in fitted.members_], axis=0).astype(np.float64)
    ens = EnsembleDetector.from_members(fitted.members_)
    ens.temperature = 2.5
    by_hand = 1.0 / (1.0 + np.exp(-(np.log(mean) - np.log1p(-mean)) / 2.5))
    np.testing.assert_allclose(ens.predict_proba(T), by_hand, rtol=1e-9, atol=1e-12)
    assert all(m.temperature == 1.0 for m in ens.members_)
    ens.feature_config = FeatureConfig()
    ens.save(tmp_path / "hot.pt")
    again = load_detector(tmp_path / "hot.pt")
    assert again.temperature == 2.5 and all(m.temperature == 1.0 for m in again.members_)
    np.testing.assert_allclose(again.predict_proba(T), by_hand, rtol=1e-9, atol=1e-12)


def test_the_device_reaches_the_members(fitted):
    with detector_on(fitted, "cuda:7"):  # only recorded here, nothing computes
        assert fitted.device == "cuda:7" and [m.device for m in fitted.members_] == ["cuda:7"] * 2
    assert fitted.device == "cpu" and [m.device for m in fitted.members_] == ["cpu"] * 2


def test_adapting_an_ensemble_adapts_every_member(fitted, data):
    X, y, T, _ = data
    fitted.temperature = 1.7
    try:
        before = [{k: v.clone() for k, v in m.net_.state_dict().items()} for m in fitted.members_]
        out = adapt_detector(fitted, T, X, y, epochs=1, lr=1e-2, seed=11)
    finally:
        fitted.temperature = 1.0
    assert isinstance(out, EnsembleDetector) and out is not fitted and len(out.members_) == 2
    for old, new, orig in zip(before, out.members_, fitted.members_):
        assert new is not orig
        assert any(not torch.equal(new.net_.state_dict()[k], old[k]) for k in old)  # moved
        assert all(torch.equal(orig.net_.state_dict()[k], old[k]) for k in old)  # the original untouched
        assert new.feature_config == fitted.feature_config
    assert [m.adaptations_[-1]["random_state"] for m in out.members_] == [11, 12]
    assert all(m.adaptations_[-1]["dropped_calibration_temperature"] == 1.7 for m in out.members_)
    assert out.temperature == 1.0 and out.feature_config == fitted.feature_config
    assert out.get_params() == fitted.get_params()


def test_only_ensembles_of_inversion_detectors_adapt(data):
    X, y, _, _ = data
    simple = EnsembleDetector(member_kind="test-simple-logistic").fit(X, y)
    with pytest.raises(OptionError, match="an ensemble of 'test-simple-logistic' detectors"):
        check_adaptable(simple)
    with pytest.raises(OptionError, match="no fitted members"):
        check_adaptable(EnsembleDetector())


def test_analysis_takes_the_first_member(fitted):
    det, note = analysed_detector(fitted)
    assert det is fitted.members_[0] and "member 0" in note
    single = fitted.members_[1]
    assert analysed_detector(single) == (single, None)


def test_analyze_reads_an_ensemble_file_through_its_first_member(tmp_path):
    config = FeatureConfig(sample_rate=8000, J=6, Q1=4, threshold="none")
    (tmp_path / "wav").mkdir()
    for i in range(4):
        mix, _, _ = make_clip(1.0, 8000, hasbird=i % 2 == 0, snr_db=10.0, background_kind="pink", n_events=1, rng=i)
        sf.write(tmp_path / "wav" / f"clip{i}.wav", mix, 8000)
    sc = Scattering(config)
    seqs = [np.ascontiguousarray(scatter_file(tmp_path / "wav" / f"clip{i}.wav", scattering=sc).S.T) for i in range(4)]
    ens = EnsembleDetector(member_params={**TINY, "max_epochs": 1}).fit(seqs, [1, 0, 1, 0])
    ens.feature_config = config
    ens.save(tmp_path / "model.pt")
    analysis, _, _ = analyze_inputs(
        [tmp_path / "wav"], tmp_path / "out", model_path=tmp_path / "model.pt",
        options=AnalysisOptions(stages=("templates",)), cache_dir=tmp_path / "cache",
    )
    m = analysis.summary["model"]
    assert m["kind"] == "ensemble" and m["model_hash"] == ens.model_hash and "member 0 is analysed" in m["note"]
    assert "member 0 is analysed" in (tmp_path / "out" / "index.html").read_text()


def test_conformance(tmp_path):
    check_detector(lambda seed: EnsembleDetector(member_params=TINY, random_state=seed), tmp_path)
