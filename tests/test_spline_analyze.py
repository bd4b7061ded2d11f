"""`scatterbird analyze` end to end on a small synthetic set: every promised file is written, the HTML page
links only to files that exist, and models that are not piecewise-affine networks are refused."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from scatterbird import cli
from scatterbird.data.synthetic import make_clip
from scatterbird.models.spline.testing import random_inversion_net
from scatterbird.pipeline.analysis.report import FIGURES, write_report
from scatterbird.pipeline.analysis.run import STAGES, AnalysisOptions, ClipSet, run_analysis, spline_model
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.scattering import Scattering, scatter_file

torch.set_num_threads(1)

CONFIG = FeatureConfig(sample_rate=8000, J=6, Q1=4, threshold="none")
#: Generative stages at test size (the defaults train for a minute).
SMALL_GENERATIVE = ["--em-iters", "4", "--gan-couplings", "0,100", "--gan-steps", "150", "--ae-sizes", "20,60", "--ae-steps", "60"]
SMALL_OPTIONS = dict(em_iters=4, gan_couplings=(0.0, 100.0), gan_steps=150, ae_sizes=(20, 60), ae_steps=60)


def _linked(html: str) -> list[str]:
    return re.findall(r"(?:src|href)='([^']+)'", html) + re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    """Six 1-s clips (three with birds) at 8 kHz, their labels, and a small inversion detector fitted on them."""
    inversion = pytest.importorskip("scatterbird.models.inversion")
    d = tmp_path_factory.mktemp("analyze")
    (d / "wav").mkdir()
    rows = ["itemid,datasetid,hasbird"]
    for i in range(6):
        bird = i % 2 == 0
        mix, _, _ = make_clip(1.0, 8000, hasbird=bird, snr_db=10.0, background_kind="pink", n_events=1, rng=i)
        sf.write(d / "wav" / f"clip{i}.wav", mix, 8000)
        rows.append(f"clip{i},synthetic,{int(bird)}")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    sc = Scattering(CONFIG)
    seqs = [np.ascontiguousarray(scatter_file(d / "wav" / f"clip{i}.wav", scattering=sc).S.T) for i in range(6)]
    det = inversion.InversionDetector(
        widths=(4, 4), max_epochs=1, recon_scale=0.0, validation_fraction=0.0, warmup_epochs=0, random_state=0
    )
    det.fit(seqs, [1, 0, 1, 0, 1, 0])
    det.feature_config = CONFIG
    det.save(d / "model.pt")
    return d


def test_analyze_writes_every_promised_file(synthetic_set, tmp_path, capsys):
    d = synthetic_set
    out = tmp_path / "report"
    code = cli.main([
        "analyze", str(d / "wav"), "--model", str(d / "model.pt"), "--labels", str(d / "labels.csv"),
        "-o", str(out), "--detail-clips", "2", "--slice-grid", "30", "--cache", str(tmp_path / "cache"), "-q",
        *SMALL_GENERATIVE,
    ])
    assert code == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert {"analysis.json", "index.html", *FIGURES} <= names
    html = (out / "index.html").read_text()
    links = _linked(html)
    assert set(FIGURES) <= set(links)
    for link in links:
        assert (out / link).is_file(), link
    s = json.loads((out / "analysis.json").read_text())
    assert s["n_clips"] == 6 and s["labelled"] and s["n_bird"] == 3
    assert set(STAGES) <= set(s)
    assert len(s["codes"]["per_layer"]) == 3  # two leaky-ReLU layers and the time max-pool
    assert s["codes"]["per_layer"][0]["knn1_accuracy"] is not None
    assert s["power_diagram"]["regions_along"]["time_shift"]["regions"]["mean"] >= 1
    assert [r["beta"] for r in s["beta_sweep"]][0] == 1.0 and s["beta_sweep"][0]["agreement"] == 1.0
    assert set(s["rugosity"]["per_direction"]) == {
        "time_shift", "frequency_shift", "gain", "noise",
        "random@time_shift", "random@frequency_shift", "random@gain", "random@noise",
    }
    assert s["model"]["kind"] == "inversion"
    assert "6 clip(s)" in capsys.readouterr().out
    # the generative stages: every clip scored, the EM likelihood never went down, one row per coupling and
    # per (size, regulariser)
    em = s["em_novelty"]
    assert len(em["per_clip"]) == 6 and em["reference"] == "labels"
    assert sorted(r["role"] for r in em["per_clip"]).count("fitted") == 2  # every other no-bird clip
    h = em["log_likelihood_history"]
    assert len(h) >= 2 and all(b >= a - 1e-9 for a, b in zip(h, h[1:]))
    assert em["n_regions"] >= 1 and 0.0 <= em["auc_bird_vs_held_out_no_bird"] <= 1.0
    assert [r["coupling"] for r in s["gan_ensemble"]["per_coupling"]] == [0.0, 100.0]
    assert all(0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0 for r in s["gan_ensemble"]["per_coupling"])
    rows = s["group_ae"]["rows"]
    assert [(r["train_windows"], r["group_weight"]) for r in rows] == [(20, 0.0), (20, 1.0), (60, 0.0), (60, 1.0)]
    assert all(abs(r["gap"] - (r["test_error"] - r["train_error"])) < 1e-9 for r in rows)
    label = {f"clip{i}": int(i % 2 == 0) for i in range(6)}  # both halves hold both classes
    for half in ("train_clips", "held_out_clips"):
        assert {label[c] for c in s["group_ae"][half]} == {0, 1}
    assert not set(s["group_ae"]["train_clips"]) & set(s["group_ae"]["held_out_clips"])
    for heading in ("Exact-likelihood novelty", "Generator ensembles", "Group autoencoder"):
        assert heading in html


def test_analyze_without_labels_and_with_some_stages(synthetic_set, tmp_path):
    """Unlabeled clips and a subset of stages: only those stages' figures, the page links only them, a clip's
    name is escaped, and every table sits in a horizontally scrolling box."""
    net, (c, t) = random_inversion_net(0, n_channels=5, n_frames=20)
    rng = np.random.default_rng(0)
    clip_names = ["<script>alert(1)</script>", *(f"c{i}" for i in range(1, 4))]  # a name holding markup
    clips = ClipSet(clip_names, [rng.normal(size=(t + i, c)).astype(np.float32) for i in range(4)])
    an = run_analysis(spline_model(net, n_channels=c), clips, AnalysisOptions(stages=("codes", "beta_sweep"), detail_clips=2))
    assert an.summary["n_frames"] == t  # cropped to the shortest clip
    assert "same_class_shared_region" not in an.summary["codes"]["per_layer"][0]
    written = write_report(tmp_path, an)
    names = {p.name for p in written}
    assert names == {"codes.png", "hamming.png", "beta_sweep.png", "analysis.json", "index.html"}
    html = (tmp_path / "index.html").read_text()
    for link in _linked(html):
        assert (tmp_path / link).is_file()
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as text
    assert html.count("<table") == html.count('<div class="scroll"><table') > 0  # wide tables scroll, not overflow


def test_analyze_refuses_a_model_without_a_network(synthetic_set, tmp_path, capsys):
    from simple_detector import SimpleDetector

    rng = np.random.default_rng(0)
    det = SimpleDetector().fit([rng.normal(size=(5, 3)) for _ in range(4)], [0, 1, 0, 1])
    det.feature_config = CONFIG
    det.save(tmp_path / "simple.pt")
    code = cli.main(["analyze", str(synthetic_set / "wav"), "--model", str(tmp_path / "simple.pt"), "-o", str(tmp_path / "o"), "-q"])
    assert code == 2
    assert "no piecewise-affine torch network" in capsys.readouterr().err
    code = cli.main(["analyze", str(synthetic_set / "wav"), "--model", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "o"), "-q"])
    assert code == 2


def test_the_analysed_function_is_the_detectors(synthetic_set):
    """The spline view with the detector's standardisation gives the detector's own probabilities."""
    from scatterbird.models.registry import load_detector
    from scatterbird.pipeline.analysis.run import load_clips

    det = load_detector(synthetic_set / "model.pt")
    clips = load_clips([synthetic_set / "wav"], CONFIG)
    model = spline_model(det)
    with torch.no_grad():
        p = torch.stack([torch.sigmoid(model.log_odds(model.to_input(s)[None]))[0] for s in clips.sequences]).numpy()
    assert np.allclose(p, det.predict_proba(clips.sequences), atol=1e-5)


def test_analyze_refuses_too_few_inputs_before_computing_features(synthetic_set, tmp_path, capsys, monkeypatch):
    """Two inputs (or three, one without a label) fail at once with the reason: no feature is computed."""
    import shutil

    from scatterbird.pipeline.analysis import run as analysis_run

    def no_features(*args, **kwargs):
        raise AssertionError("features were computed before the input count was checked")

    monkeypatch.setattr(analysis_run, "compute_features", no_features)
    monkeypatch.setattr(analysis_run, "scattering_for", no_features)
    wav = tmp_path / "wav"
    wav.mkdir()
    for i in range(2):
        shutil.copy(synthetic_set / "wav" / f"clip{i}.wav", wav)
    args = ["analyze", str(wav), "--model", str(synthetic_set / "model.pt"), "-o", str(tmp_path / "o"),
            "--cache", str(tmp_path / "cache"), "-q"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "error: at least 3 clips are needed, 2 usable input file(s) found" in err
    assert not (tmp_path / "o").exists()
    # a third file without a label in the labels file does not count
    shutil.copy(synthetic_set / "wav" / "clip2.wav", wav / "unlabelled.wav")
    assert cli.main([*args, "--labels", str(synthetic_set / "labels.csv")]) == 2
    err = capsys.readouterr().err
    assert "at least 3 clips are needed, 2 usable input file(s) found; not used: 1 (" in err
    assert "unlabelled.wav: no label in the labels file" in err


def test_analyze_caches_features_in_the_user_cache_not_next_to_the_model(synthetic_set, tmp_path, monkeypatch, capsys):
    """No --cache: the features go to $SCATTERBIRD_CACHE/features/<config hash>/; the model's folder gets
    nothing (the bundled model's folder is inside the installed package)."""
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes((synthetic_set / "model.pt").read_bytes())
    monkeypatch.setenv("SCATTERBIRD_CACHE", str(tmp_path / "user-cache"))
    code = cli.main(["analyze", str(synthetic_set / "wav"), "--model", str(model_dir / "model.pt"), "-o", str(tmp_path / "o"),
                     "--stages", "templates", "--detail-clips", "1", "-q"])
    assert code == 0, capsys.readouterr().err
    assert len(list((tmp_path / "user-cache" / "features" / CONFIG.hash).glob("*.npz"))) == 6
    assert [p.name for p in model_dir.iterdir()] == ["model.pt"]


@pytest.mark.slow  # the bundled model's default features are costly
def test_analyze_with_the_bundled_model_caches_in_the_user_cache(tmp_path, monkeypatch, capsys):
    """No --cache: the features go to $SCATTERBIRD_CACHE/features/<config hash>/, nothing next to the bundled
    model inside the installed package."""
    from scatterbird.models.registry import default_model_path, load_detector

    model = default_model_path()
    if not model.is_file():
        pytest.skip("no bundled model in this checkout")
    package_data = model.parent

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in package_data.rglob("*") if "__pycache__" not in p.parts}

    before = snapshot()
    monkeypatch.setenv("SCATTERBIRD_CACHE", str(tmp_path / "user-cache"))
    config = load_detector(model).feature_config
    wav = tmp_path / "wav"
    wav.mkdir()
    for i in range(3):
        mix, _, _ = make_clip(1.0, config.sample_rate, hasbird=i == 0, snr_db=10.0, background_kind="pink", n_events=1, rng=i)
        sf.write(wav / f"c{i}.wav", mix, config.sample_rate)
    code = cli.main(["analyze", str(wav), "-o", str(tmp_path / "o"), "--stages", "templates", "--detail-clips", "1", "-q"])
    assert code == 0, capsys.readouterr().err
    cached = list((tmp_path / "user-cache" / "features" / config.hash).glob("*.npz"))
    assert len(cached) == 3
    assert snapshot() == before and not (package_data / ".cache").exists()


def test_generative_stages_say_why_they_are_skipped(tmp_path):
    """No bird clip: the ensemble stage is skipped with the reason (shown on the page); clips shorter than the
    autoencoder's window likewise; the EM stage still runs on the no-bird clips."""
    net, (c, t) = random_inversion_net(0, n_channels=5, n_frames=16)
    rng = np.random.default_rng(1)
    clips = ClipSet([f"c{i}" for i in range(6)], [rng.normal(size=(t, c)).astype(np.float32) for _ in range(6)],
                    labels=np.zeros(6, dtype=int))
    opts = AnalysisOptions(stages=("gan_ensemble", "group_ae", "em_novelty"), ae_window=t + 1, **SMALL_OPTIONS)
    an = run_analysis(spline_model(net, n_channels=c), clips, opts)
    assert an.summary["gan_ensemble"] == {"skipped": "no bird clip (by labels)"}
    assert "shorter than the" in an.summary["group_ae"]["skipped"]
    assert an.summary["em_novelty"]["reference"] == "labels"
    written = {p.name for p in write_report(tmp_path, an)}
    assert "gan_ensemble.png" not in written and "group_ae.png" not in written and "em_novelty.png" in written
    html = (tmp_path / "index.html").read_text()
    assert "Skipped: no bird clip (by labels)." in html


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stages", "codes,em_novelty,gans"], "--stages: unknown stage(s) gans; known: templates"),
        (["--gan-couplings", "0,lots"], "--gan-couplings: expected comma-separated float values, got '0,lots'"),
        (["--gan-couplings", "-1"], "--gan-couplings: couplings must be >= 0"),
        (["--ae-sizes", "1,10"], "--ae-sizes: sizes must be >= 2 windows"),
    ],
)
def test_analyze_names_a_wrong_option(synthetic_set, tmp_path, capsys, args, message):
    code = cli.main(["analyze", str(synthetic_set / "wav"), "--model", str(synthetic_set / "model.pt"),
                     "-o", str(tmp_path / "o"), "-q", *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_failing_generative_fit_is_reported_and_the_other_stages_kept(monkeypatch):
    from scatterbird.pipeline.analysis import generative

    def broken(*args, **kwargs):
        raise ValueError("initial log-likelihood is not finite")

    monkeypatch.setattr(generative, "fit_em", broken)
    net, (c, t) = random_inversion_net(0, n_channels=5, n_frames=24)
    rng = np.random.default_rng(2)
    clips = ClipSet([f"c{i}" for i in range(6)], [rng.normal(size=(t, c)).astype(np.float32) for _ in range(6)],
                    labels=np.array([1, 0, 1, 0, 1, 0]))
    an = run_analysis(spline_model(net, n_channels=c), clips,
                      AnalysisOptions(stages=("codes", "em_novelty", "group_ae"), ae_window=3, **SMALL_OPTIONS))
    assert an.summary["em_novelty"] == {"skipped": "failed: initial log-likelihood is not finite"}
    assert "per_layer" in an.summary["codes"] and len(an.summary["group_ae"]["rows"]) == 4
