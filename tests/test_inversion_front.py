"""The inversion detector's optional front (models/inversion.py ``front_*``): the pre-trained group
autoencoder's encoder becomes the first convolution, the network stays piecewise affine for the spline view,
and detectors without a front (the bundled model among them) keep their network, files and hashes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detector_conformance import check_detector, easy_sequences
from torch import nn

from scatterbird.models import inversion as inv
from scatterbird.models.base import DetectorError
from scatterbird.models.inversion import InversionDetector, InversionNet, TimeCentre, TimePool
from scatterbird.models.registry import load_detector
from scatterbird.models.spline.group_ae import encoder_as_conv
from scatterbird.models.spline.network import spline_view

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def short_pretraining(monkeypatch):
    monkeypatch.setattr(inv, "FRONT_STEPS", 20)  # the mechanics, not the quality, are tested here


class Spy:
    """Records what the detector's fit passes to, and gets from, fit_group_autoencoder."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = inv.fit_group_autoencoder

        def spy(windows, **kw):
            out = real(windows, **kw)
            self.calls.append((windows, kw, out))
            return out

        monkeypatch.setattr(inv, "fit_group_autoencoder", spy)


def _front_detector(**kw) -> InversionDetector:
    base = dict(widths=(4, 4), front_channels=3, front_kernel=5, max_epochs=2, random_state=0)
    return InversionDetector(**{**base, **kw})


def test_default_network_is_unchanged():
    det = InversionDetector()
    net = det._build_net(6)
    kinds = [type(m) for m in net.layers]
    assert kinds == [TimeCentre, nn.Conv1d, nn.LeakyReLU, nn.Conv1d, nn.LeakyReLU, nn.Conv1d, nn.LeakyReLU,
                     TimePool, nn.Linear]
    assert net.front is None and net.n_layers == 5 == len(det.loss_weights().recon)
    assert not any(k.startswith("front") for k in det.get_params())


def test_bundled_model_keeps_its_recorded_hash_and_loads():
    from scatterbird.data.default_model import default_model_info
    from scatterbird.models.registry import default_detector

    info = default_model_info()
    model = default_detector()
    assert model.model_hash == info["model_hash"]
    members = getattr(model, "members_", [model])
    assert all(isinstance(m, InversionDetector) and m.net_.front is None for m in members)


def test_front_layer_and_layer_count():
    net = InversionNet(6, (4, 4), front_channels=3, front_kernel=5)
    assert net.front is net.layers[1] and net.front.kernel_size == (5,) and net.front.padding == (2,)
    assert net.layers[3].in_channels == 3 and net.n_layers == 5
    det = _front_detector()
    assert len(det.loss_weights().recon) == 5  # two conv blocks + the front + pooling + read-out
    with pytest.raises(ValueError):
        InversionNet(6, (4,), front_channels=3, front_kernel=4)


def test_front_starts_as_the_pretrained_encoder(monkeypatch):
    spy = Spy(monkeypatch)
    seqs, y = easy_sequences(24, 6, seed=0)
    unl, _ = easy_sequences(10, 6, seed=3)
    det = _front_detector(max_epochs=0, front_first_order=[1, 2, 3, 4]).fit(seqs, y, unl)
    (windows, kw, ae), = spy.calls
    weight, bias = encoder_as_conv(ae.encoder, 6, 5)
    torch.testing.assert_close(det.net_.front.weight, weight, rtol=0, atol=0)
    torch.testing.assert_close(det.net_.front.bias, bias, rtol=0, atol=0)
    assert kw["group_weight"] == 1.0 and kw["latent"] == 3
    np.testing.assert_array_equal(kw["first_order"], [False, True, True, True, True, False])
    # windows of the standardised, time-centred training and unlabeled sequences: every window's source
    # frames are centred per channel, so the window means stay small relative to their spread
    xs = det._standardise(seqs + unl)
    centred = [s - s.mean(0, keepdims=True) for s in xs]
    w0 = windows[0]
    assert any(np.allclose(c[t : t + 5].T, w0, atol=1e-5) for c in centred for t in range(c.shape[0] - 4))
    assert det.front_pretraining_["windows"] == len(windows)


def test_plain_and_none_pretraining(monkeypatch):
    spy = Spy(monkeypatch)
    seqs, y = easy_sequences(24, 6, seed=0)
    _front_detector(max_epochs=0, front_pretrain="plain").fit(seqs, y)
    assert spy.calls[-1][1]["group_weight"] == 0.0
    np.testing.assert_array_equal(spy.calls[-1][1]["first_order"], np.zeros(6, dtype=bool))  # time shift only
    det = _front_detector(max_epochs=0, front_pretrain="none").fit(seqs, y)
    assert len(spy.calls) == 1 and det.front_pretraining_ is None
    with torch.random.fork_rng():  # "none": the random initialisation of the same seeded network
        torch.manual_seed(0)
        fresh = det._build_net(6)
    torch.testing.assert_close(det.net_.front.weight, fresh.front.weight, rtol=0, atol=0)
    with pytest.raises(DetectorError, match="front_pretrain"):
        _front_detector(front_pretrain="grouped").fit(seqs, y)


def test_front_detector_fits_saves_and_loads(tmp_path):
    seqs, y = easy_sequences(24, 6, seed=0)
    test, _ = easy_sequences(8, 6, seed=5, min_len=3, max_len=40)
    det = _front_detector(front_first_order=[1, 2, 3])
    det.fit(seqs, y)
    path = tmp_path / "front.pt"
    det.save(path)
    params = json.loads(torch.load(path, weights_only=True)["params_json"])
    assert params["front_channels"] == 3 and params["front_first_order"] == [1, 2, 3]
    again = load_detector(path)
    np.testing.assert_array_equal(again.predict_proba(test), det.predict_proba(test))
    assert again.model_hash == det.model_hash and again.net_.front is not None
    assert again.front_pretraining_ == det.front_pretraining_


def test_front_model_hash_is_reproducible_and_a_mask_is_refused():
    """Two identical seeded fits give one hash (the pre-training record holds no timing); a boolean mask
    given for the channel indices is refused rather than read as the indices 0 and 1."""
    seqs, y = easy_sequences(24, 6, seed=0)
    hashes = {_front_detector(max_epochs=1, front_first_order=[1, 2]).fit(seqs, y).model_hash for _ in range(2)}
    assert len(hashes) == 1
    mask = [False, True, True, False, False, False]
    with pytest.raises(DetectorError, match="indices, not a boolean mask"):
        _front_detector(max_epochs=0, front_first_order=mask).fit(seqs, y)


def test_front_detector_conformance(tmp_path):
    check_detector(lambda seed: _front_detector(random_state=seed), tmp_path, n_channels=12)


def test_spline_view_accepts_the_front_network():
    torch.manual_seed(0)
    net = InversionNet(6, (4, 4), front_channels=3, front_kernel=5).eval()
    view = spline_view(net)
    x = torch.randn(2, 6, 11, dtype=torch.float64)
    torch.testing.assert_close(view(x), net.double()(x))
    assert view.n_layers == 4  # front, two conv blocks, the max half of the time pooling


def test_old_model_files_load_without_front_params(tmp_path):
    seqs, y = easy_sequences(24, 6, seed=0)
    det = InversionDetector(widths=(4,), max_epochs=1).fit(seqs, y)
    path = tmp_path / "old.pt"
    det.save(path)
    payload = torch.load(path, weights_only=True)
    assert not any(k.startswith("front") for k in json.loads(payload["params_json"]))  # as files before them
    again = load_detector(path)
    assert again.front_channels == 0 and again.net_.front is None and again.model_hash == det.model_hash
