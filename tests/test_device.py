"""The device option (pipeline/device.py): names resolved and refused, the commands' ``--device`` checked before
any work, ``auto`` on a machine without CUDA, and the detectors' device setting. The CUDA tests run only where a
CUDA device is usable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from detector_conformance import easy_sequences
from simple_detector import FAST_CONFIG, write_recordings

import scatterbird
from scatterbird import cli
from scatterbird.errors import OptionError
from scatterbird.models.inversion import InversionDetector
from scatterbird.models.registry import load_detector
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.datasets import load_dataset
from scatterbird.pipeline.detect.batch import DetectParams, run_detect
from scatterbird.pipeline.detect.store import STORE_NAME, ResultsStore
from scatterbird.pipeline.device import detector_on, resolve_device
from scatterbird.pipeline.evaluate import run as evaluate_run
from scatterbird.pipeline.evaluate.run import evaluate, score_sequences
from scatterbird.pipeline.frontend.features import extract_features, scattering_for
from scatterbird.pipeline.train import training
from scatterbird.pipeline.train.training import run_train

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")
NO_CUDA_MESSAGE = (f"--device cuda: no CUDA device is available (torch.cuda.is_available() is False; this PyTorch "
                   f"build: {torch.__version__}, CUDA {torch.version.cuda or 'none'}); use --device cpu")
DETECT_OPTS = ["--window", "2", "--hop", "1", "-q", "--no-report", "--format", "csv"]


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without a usable CUDA device, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two CUDA devices, as far as the device check can tell (nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recs")
    write_recordings(folder, [("a.wav", 3.0, True), ("b.flac", 2.5, False)])
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tiny Bird Audio Detection style folder: four 1 s clips and their labels."""
    root = tmp_path_factory.mktemp("bad")
    (root / "wav").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        sf.write(root / "wav" / f"c{i}.wav", 0.1 * rng.standard_normal(8000), 8000)
    (root / "labels.csv").write_text("itemid,datasetid,hasbird\n" + "".join(f"c{i},tiny,{i % 2}\n" for i in range(4)))
    return root


@pytest.fixture(scope="module")
def fitted() -> InversionDetector:
    """A small inversion detector fitted on the CPU."""
    X, y = easy_sequences(24, 6, seed=1)
    return InversionDetector(widths=(4, 4), max_epochs=2, validation_fraction=0, random_state=0).fit(X, y)


# -- resolve_device ----------------------------------------------------------------------------------------
def test_cpu_and_auto_without_cuda_are_the_cpu(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_is_cuda_where_cuda_is_usable(two_gpus):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda:x", "cuda:", "cuda:-1", "", "mps"])
def test_an_unknown_name_is_refused_and_named(name):
    with pytest.raises(OptionError, match="unknown device; choose one of cpu, cuda, auto or cuda:N") as info:
        resolve_device(name)
    assert str(info.value).startswith(f"--device {name}:")


def test_cuda_without_a_cuda_device_says_so_and_what_to_use(no_cuda):
    with pytest.raises(OptionError) as info:
        resolve_device("cuda")
    assert str(info.value) == NO_CUDA_MESSAGE
    with pytest.raises(OptionError, match=r"^--device cuda:0: no CUDA device is available"):
        resolve_device("cuda:0")
    with pytest.raises(OptionError, match=r"^device cuda: .*; use device cpu$"):
        resolve_device("cuda", option="device")  # the Python API's spelling


def test_a_cuda_index_out_of_range_is_refused(two_gpus, monkeypatch):
    with pytest.raises(OptionError, match=r"^--device cuda:2: no such CUDA device; this machine has 2 \(cuda:0 to cuda:1\)$"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(OptionError, match=r"this machine has 1 \(cuda:0\)$"):
        resolve_device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


# -- detector_on ---------------------------------------------------------------------------------------------
def test_detector_on_sets_the_device_in_the_block_and_restores_it():
    det = InversionDetector()
    assert det.device == "cpu"
    with detector_on(det, torch.device("cuda", 1)) as inside:
        assert inside is det and det.device == "cuda:1"
    assert det.device == "cpu"
    with pytest.raises(RuntimeError), detector_on(det, "cuda"):
        raise RuntimeError("scoring failed")
    assert det.device == "cpu"  # also after an error


def test_detector_on_leaves_a_detector_without_a_device_alone():
    class CpuOnly:
        pass

    det = CpuOnly()
    with detector_on(det, "cuda") as inside:
        assert inside is det and not hasattr(det, "device")


def test_the_device_is_no_hyperparameter_and_leaves_the_model_file_alone(fitted, tmp_path, monkeypatch):
    det = fitted
    assert "device" not in det.get_params()
    det.save(tmp_path / "a.pt")
    before = det.model_hash
    monkeypatch.setattr(det, "device", "cuda:3", raising=False)  # never used here: only saved and hashed
    det.save(tmp_path / "b.pt")
    assert det.model_hash == before
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert load_detector(tmp_path / "b.pt").device == "cpu"


def test_score_sequences_on_the_cpu_equals_predict_proba(fitted):
    X, _ = easy_sequences(12, 6, seed=3)
    scored = score_sequences(fitted, X, batch=5, device="auto" if not CUDA else "cpu")
    np.testing.assert_allclose(scored, fitted.predict_proba(X), rtol=0, atol=1e-6)  # other batches: other padding
    assert fitted.device == "cpu"


def test_one_front_end_per_configuration_and_device(no_cuda):
    sc = scattering_for(FAST_CONFIG, "cpu")
    assert sc.device == torch.device("cpu")
    assert scattering_for(FAST_CONFIG, "auto") is sc and scattering_for(FAST_CONFIG) is sc
    with pytest.raises(OptionError, match=r"^device cuda: no CUDA device is available"):
        scattering_for(FAST_CONFIG, "cuda")


def test_the_python_api_takes_a_device(no_cuda, model):
    audio = np.random.default_rng(0).standard_normal(8000 * 3).astype(np.float32) * 0.1
    plain = scatterbird.detect(audio, sample_rate=8000, model=model, window_s=2.0, hop_s=1.0)
    auto = scatterbird.detect(audio, sample_rate=8000, model=model, window_s=2.0, hop_s=1.0, device="auto")
    np.testing.assert_array_equal(auto.windows, plain.windows)
    with pytest.raises(OptionError, match=r"^device cuda: .*; use device cpu$"):
        scatterbird.detect(audio, sample_rate=8000, model=model, device="cuda")
    with pytest.raises(OptionError, match="unknown device"):
        scatterbird.train("never.pt", dataset="nowhere", device="gpu")
    with pytest.raises(OptionError, match="no CUDA device"):
        scatterbird.evaluate({"x": "nowhere"}, "never", model=model, device="cuda")


# -- the commands ------------------------------------------------------------------------------------------
def _command(name: str, tmp_path: Path, model: Path, recordings: Path, dataset: Path) -> tuple[list[str], Path]:
    """A command line of ``name`` with tiny real inputs, and the output it would create."""
    out = tmp_path / f"{name}-out"
    argv = {
        "detect": ["detect", str(recordings), "-o", str(out), "--model", str(model), *DETECT_OPTS],
        "features": ["features", str(recordings), "-o", str(out), "-q", "--sr", "8000", "-J", "6", "--q1", "4",
                     "--threshold", "none"],
        "evaluate": ["evaluate", "--dataset", f"tiny={dataset}", "-o", str(out), "--model", str(model), "-q"],
        "train": ["train", str(dataset), "-o", str(out / "model.pt"), "-q", "--param", "max_epochs=1"],
    }[name]
    return argv, out


@pytest.mark.parametrize("command", ["detect", "evaluate", "features", "train"])
def test_device_cuda_without_a_gpu_exits_2_with_one_line_before_any_work(
    command, no_cuda, model, recordings, dataset, tmp_path, capsys, monkeypatch
):
    called = []
    for name in ("run_detect", "evaluate", "extract_features", "run_train", "load_detector", "load_datasets"):
        monkeypatch.setattr(cli, name, lambda *a, _n=name, **k: called.append(_n))
    argv, out = _command(command, tmp_path, model, recordings, dataset)
    assert cli.main([*argv, "--device", "cuda"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"scatterbird {command}: error: {NO_CUDA_MESSAGE}\n"
    assert called == [] and not out.exists()


@pytest.mark.parametrize("command", ["detect", "evaluate", "features", "train"])
def test_an_unknown_device_exits_2_naming_the_option(command, model, recordings, dataset, tmp_path, capsys):
    argv, out = _command(command, tmp_path, model, recordings, dataset)
    assert cli.main([*argv, "--device", "gpu"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    message = "--device gpu: unknown device; choose one of cpu, cuda, auto or cuda:N"
    assert err == [f"scatterbird {command}: error: {message}"]
    assert not out.exists()


def test_the_device_reaches_the_library_resolved(no_cuda, monkeypatch, tmp_path):
    seen = {}

    def fake(name):
        def run(*a, **kw):
            seen[name] = kw["device"]
            raise OptionError(f"{name} stops here")  # the one handler turns it into exit 2

        return run

    for name, attr in (("train", "run_train"), ("evaluate", "evaluate"), ("features", "extract_features"),
                       ("detect", "run_detect")):
        monkeypatch.setattr(cli, attr, fake(name))
    monkeypatch.setattr(cli, "load_datasets", lambda *a, **k: [])
    monkeypatch.setattr(cli, "load_detector", lambda path: None)
    (tmp_path / "a.wav").write_bytes(b"")
    common = ["-o", str(tmp_path / "o"), "-q", "--device", "auto"]
    for argv in (["train", str(tmp_path)], ["evaluate"], ["features", str(tmp_path / "a.wav")],
                 ["detect", str(tmp_path / "a.wav")]):
        assert cli.main([*argv, *common]) == cli.EXIT_USAGE
    assert seen == {"train": "cpu", "evaluate": "cpu", "features": "cpu", "detect": "cpu"}


class _Stop(Exception):
    """Stops a run once the call under test has been seen."""


def test_evaluate_and_training_compute_their_features_on_the_device(no_cuda, monkeypatch, fitted, dataset, tmp_path):
    seen = []

    def spy(*a, **kw):
        seen.append(kw["device"])
        raise _Stop

    monkeypatch.setattr(evaluate_run, "compute_sequences", spy)
    monkeypatch.setattr(training, "compute_features", spy)
    with pytest.raises(_Stop):
        evaluate(fitted, [load_dataset(dataset)], None, device="auto", progress=False)
    with pytest.raises(_Stop):
        run_train(tmp_path / "m.pt", dataset=dataset, device="auto", progress=False, cache_dir=tmp_path / "cache")
    assert seen == ["cpu", "cpu"]


def test_a_detector_fits_on_the_device_and_keeps_its_own_setting(no_cuda):
    class Recorder:
        device = "cpu"

        def fit(self, sequences, labels, unlabeled=None):
            self.fitted_on = self.device
            return self

    data = training.TrainingData(sequences=[np.zeros((3, 2), np.float32)] * 2, labels=np.array([0, 1]),
                                 unlabeled=[], labelled_ids=["a", "b"])
    det = training.fit_detector(Recorder(), data, FeatureConfig(), device="auto")
    assert det.fitted_on == "cpu" and det.device == "cpu"
    with pytest.raises(OptionError, match="no CUDA device"):
        training.fit_detector(Recorder(), data, FeatureConfig(), device="cuda")


def test_the_other_commands_have_no_device_option():
    for argv in (["export", "x"], ["report", "x"], ["merge", "x"], ["failures", "x"]):
        assert "device" not in cli.build_parser().parse_args(argv)


def test_the_library_checks_the_device_before_any_work(no_cuda, model, recordings, dataset, tmp_path):
    det = load_detector(model)
    for call in (
        lambda out: run_detect([recordings], out, model_path=model, params=DetectParams(2.0, 1.0), device="cuda"),
        lambda out: extract_features([(recordings / "a.wav", recordings)], out, det.feature_config, device="cuda"),
        lambda out: evaluate(det, [], out, device="cuda"),
        lambda out: run_train(out / "m.pt", dataset=dataset, device="cuda", progress=False),
    ):
        out = tmp_path / "out"
        with pytest.raises(OptionError, match="no CUDA device is available"):
            call(out)
        assert not out.exists()


def _rows(outdir: Path):
    with ResultsStore(outdir / STORE_NAME) as st:
        run = st.run()
        return st.windows(run.id), st.events(run.id), json.loads(run.params_json)["device"]


def test_device_auto_detects_on_the_cpu_here_with_the_rows_of_device_cpu(model, recordings, tmp_path):
    for device in ("cpu", "auto"):
        argv = ["detect", str(recordings), "-o", str(tmp_path / device), "--model", str(model), *DETECT_OPTS]
        assert cli.main([*argv, "--device", device]) == cli.EXIT_OK
    (wc, ec, dc), (wa, ea, da) = _rows(tmp_path / "cpu"), _rows(tmp_path / "auto")
    assert dc == "cpu" and da == ("cuda" if CUDA else "cpu")
    assert len(wc) == len(wa) > 0
    assert [w[:3] for w in wc] == [w[:3] for w in wa]
    np.testing.assert_allclose([w[3] for w in wa], [w[3] for w in wc], rtol=0, atol=1e-4 if CUDA else 0)
    assert [e[:3] for e in ec] == [e[:3] for e in ea]


# -- on a CUDA device --------------------------------------------------------------------------------------
@needs_cuda
def test_a_short_detect_on_cuda_equals_the_cpu(model, recordings, tmp_path):
    for device in ("cpu", "cuda"):
        run_detect([recordings], tmp_path / device, model_path=model, params=DetectParams(2.0, 1.0), device=device)
    (wc, _, _), (wg, _, dg) = _rows(tmp_path / "cpu"), _rows(tmp_path / "cuda")
    assert dg == "cuda" and [w[:3] for w in wc] == [w[:3] for w in wg]
    np.testing.assert_allclose([w[3] for w in wg], [w[3] for w in wc], rtol=0, atol=1e-4)


@needs_cuda
def test_predict_proba_and_fit_on_cuda_equal_the_cpu_and_save_a_cpu_model(tmp_path):
    X, y = easy_sequences(24, 6, seed=1)
    T, _ = easy_sequences(10, 6, seed=2, min_len=5, max_len=70)
    det = InversionDetector(widths=(4, 4), max_epochs=3, validation_fraction=0, random_state=0).fit(X, y)
    on_cpu = det.predict_proba(T)
    with detector_on(det, "cuda"):
        on_gpu = det.predict_proba(T)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=0, atol=1e-4)
    assert {p.device.type for p in det.net_.parameters()} == {"cpu"}  # back on the CPU after scoring

    trained = InversionDetector(widths=(4, 4), max_epochs=3, validation_fraction=0, random_state=0)
    with detector_on(trained, "cuda"):
        trained.fit(X, y)
    assert {p.device.type for p in trained.net_.parameters()} == {"cpu"}
    np.testing.assert_allclose(trained.predict_proba(T), on_cpu, rtol=0, atol=1e-3)  # same start, same batches
    trained.save(tmp_path / "m.pt")
    assert load_detector(tmp_path / "m.pt").predict_proba(T).shape == (10,)
