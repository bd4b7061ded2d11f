"""The bundled default model (data/default_model.pt): loads offline, matches the pipeline's features, scores
the bundled samples sensibly; and the bootstrap recipe's split never lets a source file into two folds."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from scatterbird.data.bootstrap import ALLOWED_PACKAGES, assign_folds, read_sources
from scatterbird.data.default_model import DEFAULT_MODEL_PATH, default_model_info
from scatterbird.models.registry import default_detector
from scatterbird.pipeline.config import FeatureConfig


@pytest.fixture(scope="module")
def model():
    # torch.load with weights_only=True, from the package folder: nothing is fetched
    return default_detector(FeatureConfig())


def test_default_model_loads_offline_with_the_pipeline_feature_config(model, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the default model must load without network access")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    again = default_detector(FeatureConfig())
    assert again.feature_config.hash == FeatureConfig().hash
    assert model.model_hash == again.model_hash
    assert DEFAULT_MODEL_PATH.stat().st_size < 5_000_000


def test_default_model_description_matches_the_weights(model):
    info = default_model_info()
    assert info["feature_config_hash"] == FeatureConfig().hash
    assert info["file_sha256"] == hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest()
    assert info["kind"] == model.kind
    val = info["validation"]["roc_auc_pooled_out_of_fold"]
    assert 0.5 < val["roc_auc"] <= 1.0 and val["roc_auc_ci95"][0] <= val["roc_auc"] <= val["roc_auc_ci95"][1]
    assert set(info["trained_on"]["packages"]) <= set(ALLOWED_PACKAGES)


def test_default_model_description_compares_the_grids_on_the_same_clips():
    # scripts/train_default_model.py --add-comparison: kymatio's grid validated on the same clips and folds
    val = default_model_info()["validation"]
    other = val["other_grids"]["kymatio"]
    config = FeatureConfig.from_dict(other["feature_config"])
    assert config == FeatureConfig(grid="kymatio") and config.hash == other["feature_config_hash"]
    assert set(other["paired_difference"]) == set(val["candidates"]) == set(other["candidates"])
    for name, diff in other["paired_difference"].items():
        mine, theirs = val["candidates"][name]["pooled_out_of_fold"], other["candidates"][name]["pooled_out_of_fold"]
        assert diff["n"] == mine["n"] == theirs["n"]
        assert diff["delta_roc_auc"] == pytest.approx(mine["roc_auc"] - theirs["roc_auc"], abs=1e-3)
        assert diff["delta_ci95"][0] <= diff["delta_roc_auc"] <= diff["delta_ci95"][1]


@pytest.mark.slow  # the bundled model on the bundled samples at the default (costly) features
def test_default_model_scores_bird_samples_above_the_others(model):
    from scatterbird.data.samples import SAMPLES, ensure_samples
    from scatterbird.pipeline.detect.batch import DetectParams, detect_file

    folder = ensure_samples()
    best = {}
    for name, hasbird, *_ in SAMPLES:
        res = detect_file(folder / name, model, DetectParams(10.0, 5.0, 0.5))
        assert res.status == "done", res.error
        best[name] = (hasbird, float(res.windows[:, 2].max()))  # windows: start_s, end_s, score
    birds = [p for hb, p in best.values() if hb]
    others = [p for hb, p in best.values() if not hb]
    assert min(birds) > max(others), best


def test_bootstrap_split_is_by_source_file():
    rows = read_sources()
    assert {r.package for r in rows} == set(ALLOWED_PACKAGES)
    assert sum(r.hasbird for r in rows) == 37 and sum(1 - r.hasbird for r in rows) == 54
    folds = assign_folds(rows, 4, seed=0)
    assert set(folds) == {r.file_key for r in rows}  # one fold per file: the cuts of a file stay together
    for k in range(4):
        files = [r for r in rows if folds[r.file_key] == k]
        assert {r.hasbird for r in files} == {0, 1}, f"fold {k} lacks a class"
    sizes = np.bincount(list(folds.values()), minlength=4)
    assert sizes.max() - sizes.min() <= 2
    assert assign_folds(rows, 4, seed=0) == folds  # reproducible
    assert json.dumps(folds, sort_keys=True)  # plain data, written into build.json
