"""The bundled default model (data/default_model.pt): loads offline, matches its description (the corpus it
was trained on, the recipe chosen by leave-package-out validation, its calibration), scores the bundled
samples sensibly; and the bootstrap recipe's split never lets a source file into two folds."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from scatterbird import cli
from scatterbird.data.bootstrap import ALLOWED_PACKAGES, assign_folds, read_sources
from scatterbird.data.corpus import read_lists
from scatterbird.data.default_model import DEFAULT_MODEL_PATH, default_model_info
from scatterbird.models.registry import default_detector
from scatterbird.pipeline.config import FeatureConfig


@pytest.fixture(scope="module")
def info():
    return default_model_info()


@pytest.fixture(scope="module")
def model(info):
    # torch.load with weights_only=True, from the package folder: nothing is fetched
    return default_detector(FeatureConfig.from_dict(info["feature_config"]))


def test_default_model_loads_offline_with_its_recorded_feature_config(model, info, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the default model must load without network access")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    again = default_detector()
    assert again.feature_config.hash == info["feature_config_hash"] == model.feature_config.hash
    assert model.model_hash == again.model_hash == info["model_hash"]
    assert DEFAULT_MODEL_PATH.stat().st_size < 5_000_000
    # the pipeline's default features, pooled as `train` pools for the inversion network, are the bundled
    # model's: `scatterbird train` with its defaults makes a model comparable with it
    assert FeatureConfig(pool_s=cli.INVERSION_DEFAULT_POOL_S).hash == info["feature_config_hash"]


def test_default_model_description_matches_the_weights_and_the_corpus(model, info):
    assert info["file_sha256"] == hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest()
    assert info["kind"] == model.kind
    # only the listed packages, at the listed versions (every other package's sound is reserved)
    versions = read_lists().versions
    packages = info["trained_on"]["packages"]
    assert set(packages) <= set(versions) and len(packages) == len(versions)
    assert all(p["version"] == versions[name] and len(p["sha256"]) == 64 for name, p in packages.items())


def test_default_model_recipe_is_the_best_leave_package_out_row_that_can_be_bundled(info):
    val = info["validation"]
    rows = val["results"]["package"]

    def trained(r):  # the recipes whose models the pipeline can run: scattering, trained on the corpus
        return r["features"] == "scatter" and not r["previous_model"] and not r["train_build"]

    def parts(name):  # an ensemble row's members, or the row itself
        return [rows[m]["recipe"] for m in rows[name]["recipe"].get("members", [])] or [rows[name]["recipe"]]

    bundleable = [n for n in rows if all(trained(r) for r in parts(n))
                  and len({(r["threshold"], r["pool_s"]) for r in parts(n)}) == 1]
    assert val["chosen"] == info["candidate"] == max(bundleable, key=lambda n: rows[n]["pooled_roc_auc"])
    chosen = rows[val["chosen"]]
    member = parts(val["chosen"])[0]
    assert FeatureConfig.from_dict(info["feature_config"]) == FeatureConfig(threshold=member["threshold"],
                                                                           pool_s=member["pool_s"])
    auc, (lo, hi) = chosen["pooled_roc_auc"], chosen["pooled_ci95"]
    assert 0.5 < lo <= auc <= hi <= 1.0
    assert val["roc_auc_pooled_out_of_fold"]["roc_auc"] == auc
    # one fold per package with birds, each reported (a fold without real birds would show here)
    assert sorted(p for f in chosen["folds"] for p in f["bird_packages"]) == sorted(info["trained_on"]["bird_packages"])
    assert all(0.5 < f["roc_auc"] <= 1.0 and f["n_bird"] > 0 for f in chosen["folds"])


def test_default_model_is_calibrated_on_out_of_fold_scores(model, info):
    cal = info["calibration"]
    assert model.temperature == pytest.approx(cal["temperature"], rel=1e-3)
    assert cal["ece_after"] < cal["ece_before"]


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
