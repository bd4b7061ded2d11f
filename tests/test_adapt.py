"""Tests of pipeline/train/adapt.py, InversionDetector.fine_tune and the ``adapt`` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from simple_detector import FAST_CONFIG, SimpleDetector, write_recordings
from sklearn.metrics import roc_auc_score

from scatterbird.cli import main
from scatterbird.data.synthetic import write_dataset
from scatterbird.errors import DetectorError, OptionError, TrainingError
from scatterbird.models import inversion
from scatterbird.models.inversion import InversionDetector, batch_split
from scatterbird.models.registry import load_detector
from scatterbird.pipeline.clip_features import compute_sequences
from scatterbird.pipeline.datasets import load_dataset
from scatterbird.pipeline.train import adapt
from scatterbird.pipeline.train.adapt import adapt_detector, run_adapt

torch.set_num_threads(1)


def _sequences(n: int, seed: int, noise_b: float, amp_a: float, amp_b: float) -> tuple[list[np.ndarray], np.ndarray]:
    """20 frames x 8 channels; a class-1 "call" of 4 frames at a random time, ``amp_a`` in channels 0-3 and
    ``amp_b`` in channels 4-7 over unit noise (``noise_b`` in channels 4-7)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    seqs = []
    for c in y:
        x = rng.standard_normal((20, 8))
        x[:, 4:] *= noise_b
        t = rng.integers(2, 14)
        x[t : t + 4, :4] += amp_a * c
        x[t : t + 4, 4:] += amp_b * c
        seqs.append(x.astype(np.float32))
    return seqs, y


@pytest.fixture(scope="module")
def shift():
    """A domain shift: at the training site calls show in both bands; at the user's site only in the first,
    and the second band is louder noise (scaled up 1.5x against the training statistics)."""
    X, y = _sequences(120, 0, 1.0, 1.5, 1.5)
    T, yt = _sequences(200, 1, 1.5, 1.5, 0.0)
    det = InversionDetector(widths=(8, 8), max_epochs=30, validation_fraction=0, random_state=0).fit(X, y)
    return det, X, y, T, yt


def test_adapting_moves_the_weights_and_keeps_the_rest(shift):
    det, X, y, T, _ = shift
    det.feature_config = FAST_CONFIG
    before = {k: v.clone() for k, v in det.net_.state_dict().items()}
    out = adapt_detector(det, T, X, y, epochs=2, lr=1e-3, seed=1)
    assert out is not det
    after = out.net_.state_dict()
    assert list(after) == list(before) and all(after[k].shape == before[k].shape for k in before)
    assert any(not torch.equal(after[k], before[k]) for k in before)
    assert all(torch.equal(det.net_.state_dict()[k], before[k]) for k in before)  # the original is untouched
    np.testing.assert_array_equal(out.mean_, det.mean_)
    np.testing.assert_array_equal(out.std_, det.std_)
    assert out.get_params() == det.get_params() and out.feature_config == det.feature_config
    assert np.abs(out.predict_proba(T) - det.predict_proba(T)).max() > 1e-3
    rec = out.adaptations_[-1]
    assert (rec["epochs"], rec["batch"], rec["n_unlabeled"], rec["n_labelled"]) == (2, [16, 16], 200, 120)
    assert rec["steps_per_epoch"] == 200 // 16 + 1 and len(out.history_) == 2


@pytest.mark.parametrize("size,share,expected", [(32, 0.5, (16, 16)), (32, 0.25, (8, 24)), (10, 0.01, (1, 9)),
                                                 (10, 0.99, (9, 1)), (5, 0.5, (2, 3))])
def test_batch_split(size, share, expected):
    assert batch_split(size, share) == expected


@pytest.mark.parametrize("size,share", [(1, 0.5), (32, 0.0), (32, 1.0), (32, -0.1)])
def test_batch_split_refuses(size, share):
    with pytest.raises(DetectorError):
        batch_split(size, share)


def test_every_batch_holds_the_labelled_share(shift, monkeypatch):
    det, X, y, T, _ = shift
    seen = []
    real = inversion.inversion_loss

    def spy(zs, Rs, lens, labels, weights, **kw):
        seen.append((int(labels.shape[0]), int(zs[-1].shape[0])))
        return real(zs, Rs, lens, labels, weights, **kw)

    monkeypatch.setattr(inversion, "inversion_loss", spy)
    adapt_detector(det, T[:48], X, y, epochs=2, labelled_share=0.25, lr=1e-3)
    # 32 items a batch, 8 of them labelled; 48 unlabeled in 24s: 2 steps an epoch
    assert seen == [(8, 32)] * 4


def test_adapting_recovers_a_shifted_domain(shift):
    det, X, y, T, yt = shift
    auc0 = roc_auc_score(yt, det.predict_proba(T))
    adapted = adapt_detector(det, T, X, y, epochs=10, lr=1e-3)
    auc1 = roc_auc_score(yt, adapted.predict_proba(T))
    assert auc1 > auc0 + 0.1 and auc1 > 0.95, (auc0, auc1)
    assert roc_auc_score(y, adapted.predict_proba(X)) > 0.95  # the labelled share keeps the old domain
    # Without the class-balance term the entropy calls the whole new domain "no bird" (why the term is there).
    collapsed = adapt_detector(det, T, X, y, epochs=10, lr=1e-3, balance=0.0)
    assert collapsed.predict_proba(T).mean() < 0.15


def test_refusals(shift):
    det, X, y, T, _ = shift
    simple = SimpleDetector().fit(X, y)
    with pytest.raises(OptionError, match="'test-simple-logistic'"):
        adapt_detector(simple, T, X, y)
    with pytest.raises(OptionError, match="epochs"):
        adapt_detector(det, T, X, y, epochs=0)
    with pytest.raises(OptionError, match="labelled share"):
        adapt_detector(det, T, X, y, labelled_share=1.0)
    with pytest.raises(TrainingError, match="both bird"):
        adapt_detector(det, T, X, np.ones_like(y))
    with pytest.raises(DetectorError, match="not fitted"):
        InversionDetector().fine_tune(X, y, T)


# -- the command ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A tiny labelled folder, three recordings and an unreadable one, and a tiny inversion model (8 kHz)."""
    root = tmp_path_factory.mktemp("site")
    write_dataset(root / "lab", 12, duration=2.0, sr=8000, snr_db=(10.0, 20.0), seed=3)
    write_recordings(root / "rec", [("a.wav", 5.0, True), ("b.wav", 4.0, False), ("c.wav", 3.0, True)])
    (root / "rec" / "broken.wav").write_bytes(b"not a sound file")
    clips = load_dataset(root / "lab").clips
    seqs, _ = compute_sequences(clips, FAST_CONFIG, progress=False)
    det = InversionDetector(widths=(4, 4), max_epochs=2, validation_fraction=0).fit(seqs, [c.label for c in clips])
    det.feature_config = FAST_CONFIG
    det.save(root / "model.pt")
    return root, det


def test_cli_adapts_and_writes_a_loadable_model(site, tmp_path, capsys):
    root, det = site
    out = tmp_path / "adapted.pt"
    args = ["adapt", str(root / "rec"), "-o", str(out), "--model", str(root / "model.pt"), "--labelled",
            str(root / "lab"), "--epochs", "1", "--lr", "0.01", "--cache", str(tmp_path / "cache"), "-q"]
    assert main(args) == 1  # adapted, but one recording could not be read
    captured = capsys.readouterr()
    assert "broken.wav" in captured.err
    assert "3 window(s) of 10 s from 3 recording(s), with 12 labelled clip(s)" in captured.out
    new = load_detector(out, expected_config=FAST_CONFIG)
    assert isinstance(new, InversionDetector) and new.feature_config == det.feature_config
    assert new.model_hash != det.model_hash
    rec = new.adaptations_[-1]
    assert rec["windows"] == 3 and rec["labelled_from"] == str(root / "lab") and rec["base_model_hash"] == det.model_hash


def test_cli_errors(site, tmp_path, capsys):
    root, _ = site
    model = ["--model", str(root / "model.pt"), "--labelled", str(root / "lab"), "-q"]
    (tmp_path / "empty").mkdir()
    assert main(["adapt", str(tmp_path / "empty"), "-o", str(tmp_path / "m.pt"), *model]) == 2
    assert main(["adapt", str(root / "rec"), "-o", str(tmp_path), *model]) == 2
    assert main(["adapt", str(root / "rec"), "-o", str(tmp_path / "m.pt"), *model, "--labelled-share", "0"]) == 2
    err = capsys.readouterr().err
    assert "hold no audio files" in err and "is a directory" in err and "labelled share" in err
    assert not (tmp_path / "m.pt").exists()


def test_without_a_corpus_the_labelled_share_is_synthetic(site, tmp_path, monkeypatch):
    root, _ = site
    monkeypatch.setattr(adapt, "corpus_fold_dirs", list)
    monkeypatch.setattr(adapt, "bootstrap_fold_dirs", list)
    report = run_adapt([root / "rec" / "a.wav"], tmp_path / "m.pt", model=root / "model.pt", epochs=1,
                       synthetic_clips=4, progress=False)
    assert any("synthetic" in n and "build_corpus.py" in n for n in report.notes)
    assert report.n_labelled == 4 and 0 < report.n_labelled_birds < 4
    assert (tmp_path / ".cache").is_dir() and (tmp_path / "m.pt").is_file()
