"""Tests of models/inversion.py: the inversion against explicit Jacobians, the loss, the detector."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from detector_conformance import check_detector, easy_sequences
from torch.autograd.functional import jacobian

from scatterbird.models.base import DetectorError
from scatterbird.models.inversion import (
    InversionDetector,
    InversionNet,
    LossWeights,
    inversion,
    inversion_loss,
    layer_reconstructions,
    spec_loss_weights,
)

torch.set_num_threads(1)


def random_net(seed: int = 0, n_channels: int = 4, widths=(5, 6), slope: float = 0.2) -> InversionNet:
    """A small random network in float64 (so that exact identities hold to ~1e-12)."""
    torch.manual_seed(seed)
    net = InversionNet(n_channels, widths, kernel_size=3, negative_slope=slope).double()
    for p in net.parameters():  # larger biases than the default init: many activation patterns
        torch.nn.init.normal_(p, std=0.7)
    return net


def flat_jacobian(f, x: torch.Tensor) -> torch.Tensor:
    """Jacobian of f at x as a (f(x).numel(), x.numel()) matrix."""
    out = f(x)
    return jacobian(f, x).reshape(out.numel(), x.numel())


# -- inversion = A[x]^T z -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inversion_is_jacobian_transpose_times_logits(seed):
    net = random_net(seed)
    x = torch.randn(1, 4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + seed))
    z = net(x).detach()
    A = flat_jacobian(net, x)  # (2, 28): the rows are the class templates
    expected = (A.T @ z.reshape(-1)).reshape(x.shape)
    torch.testing.assert_close(inversion(net, x), expected, rtol=0, atol=1e-6)
    assert expected.abs().max() > 1e-3  # not a trivially zero comparison


def test_network_is_affine_on_its_region():
    """z = A[x] x + B[x] with B[x] = z - A[x] x, and the same (A, B) hold at a nearby input."""
    net = random_net(3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 7, dtype=torch.float64, generator=g)
    A = flat_jacobian(net, x)
    z = net(x).detach().reshape(-1)
    B = z - A @ x.reshape(-1)
    torch.testing.assert_close(A @ x.reshape(-1) + B, z, rtol=0, atol=1e-12)
    # A nearby point is in the same linear region, so the same affine map gives its logits exactly.
    x2 = x + 1e-7 * torch.randn(x.shape, dtype=torch.float64, generator=g)
    torch.testing.assert_close(net(x2).detach().reshape(-1), A @ x2.reshape(-1) + B, rtol=0, atol=1e-12)
    # ... and a far one is not (the network is piecewise affine, not affine).
    x3 = x + 3.0 * torch.randn(x.shape, dtype=torch.float64, generator=g)
    assert (net(x3).detach().reshape(-1) - (A @ x3.reshape(-1) + B)).abs().max() > 1e-3


def test_layer_reconstructions_equal_layer_jacobian_products():
    net = random_net(4, widths=(5, 6, 3))
    x = torch.randn(1, 4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    zs, Rs, _ = layer_reconstructions(net, x)
    L = net.n_layers
    assert len(zs) == L + 1 and len(Rs) == L
    # Explicit Jacobian of each block A^(l) = d z^(l) / d z^(l-1), at the current input.
    Js = [flat_jacobian(lambda z, l=l: net.block_forward(l, z)[0], zs[l - 1].detach()) for l in range(1, L + 1)]
    for l in range(L):
        v = zs[L].detach().reshape(-1)
        for J in reversed(Js[l:]):  # R^(l) = A^(l+1)^T ... A^(L)^T z^(L)
            v = J.T @ v
        torch.testing.assert_close(Rs[l].reshape(-1), v, rtol=0, atol=1e-9)
        assert v.abs().max() > 1e-6


def test_padded_batch_equals_items_alone():
    net = random_net(5)
    g = torch.Generator().manual_seed(2)
    items = [torch.randn(1, 4, t, dtype=torch.float64, generator=g) for t in (1, 6, 11)]
    x = torch.zeros(3, 4, 11, dtype=torch.float64)
    for i, it in enumerate(items):
        x[i, :, : it.shape[-1]] = it[0]
    lengths = torch.tensor([1, 6, 11])
    zs, Rs, lens = layer_reconstructions(net, x, lengths)
    for i, it in enumerate(items):
        z1, R1, _ = layer_reconstructions(net, it)
        torch.testing.assert_close(zs[-1][i], z1[-1][0], rtol=0, atol=1e-12)
        n = it.shape[-1]
        torch.testing.assert_close(Rs[0][i, :, :n], R1[0][0], rtol=0, atol=1e-12)


# -- the loss --------------------------------------------------------------------------------------------
def test_reconstruction_loss_differentiates_through_the_inversion():
    """d/dW ||R^(0) - x||^2 is non-zero and matches finite differences: only double back-prop gives it,
    since the target x does not depend on the weights at all."""
    net = random_net(6)
    x = torch.randn(2, 4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def loss() -> torch.Tensor:
        _, Rs, _ = layer_reconstructions(net, x, create_graph=True)
        return (Rs[0] - x).pow(2).sum()

    params = dict(net.named_parameters())
    grads = torch.autograd.grad(loss(), list(params.values()))
    assert all(gr.abs().max() > 1e-6 for gr in grads)
    convs = [f"layers.{i}" for i, m in enumerate(net.layers) if isinstance(m, torch.nn.Conv1d)]
    linear = f"layers.{len(net.layers) - 1}"
    for name, index in [(convs[0] + ".weight", (1, 2, 0)), (convs[1] + ".bias", (3,)), (linear + ".weight", (1, 4))]:
        p, eps = params[name], 1e-6
        with torch.no_grad():
            p[index] += eps
            up = float(loss())
            p[index] -= 2 * eps
            down = float(loss())
            p[index] += eps
        numeric = (up - down) / (2 * eps)
        analytic = float(grads[list(params).index(name)][index])
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8), name


def test_default_weights_are_the_spec():
    det = InversionDetector(widths=(8, 8, 8))
    w = det.loss_weights()
    L = 5  # three convolution blocks, the time pooling, the read-out
    assert w.ce == pytest.approx(1 / math.log(2)) and w.entropy == pytest.approx(1 / math.log(2))
    assert w.recon == pytest.approx((1 / L,) * L) and w.recon_per_dim
    assert w == spec_loss_weights(L, 2)
    # ... and the loss applies them as 1/(L * D^(l)) to ||R^(l) - z^(l)||^2.
    net = random_net(7, widths=(8, 8, 8))
    x = torch.randn(3, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    zs, Rs, lens = layer_reconstructions(net, x, create_graph=True)
    y = torch.tensor([1, 0])
    terms = inversion_loss(zs, Rs, lens, y, w)
    manual_recon = sum(
        float((R - z).detach().pow(2).sum()) / (x.shape[0] * L * z[0].numel()) for R, z in zip(Rs, zs[:-1])
    )
    assert float(terms["recon"].detach()) == pytest.approx(manual_recon, rel=1e-10)
    logp = torch.log_softmax(zs[-1].detach(), 1)
    ce = -float(logp[[0, 1], [1, 0]].mean())
    ent = -float((logp[2].exp() * logp[2]).sum())
    assert float(terms["total"].detach()) == pytest.approx((ce + ent) / math.log(2) + manual_recon, rel=1e-10)


@pytest.mark.parametrize(
    "params, off",
    [({"ce_weight": 0.0}, "ce"), ({"entropy_weight": 0.0}, "entropy"), ({"recon_scale": 0.0}, "recon")],
)
def test_each_term_switches_off(params, off):
    det = InversionDetector(widths=(8, 8), **params)
    net = random_net(8, widths=(8, 8))
    x = torch.randn(4, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    zs, Rs, lens = layer_reconstructions(net, x, create_graph=True)
    y = torch.tensor([1, 0])
    w = det.loss_weights()
    terms = {k: v.detach() for k, v in inversion_loss(zs, Rs, lens, y, w).items()}
    assert float(terms[off]) == 0.0
    on = {"ce": w.ce * terms["ce"], "entropy": w.entropy * terms["entropy"], "recon": terms["recon"]}
    assert all(float(v) > 0 for k, v in on.items() if k != off)
    assert float(terms["total"]) == pytest.approx(sum(float(v) for k, v in on.items() if k != off))


def test_explicit_recon_weights_and_entropy_ramp():
    net = random_net(9)
    x = torch.randn(2, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    zs, Rs, lens = layer_reconstructions(net, x, create_graph=True)
    w = LossWeights(ce=0.0, entropy=1.0, recon=(0.0, 2.0, 0.0, 0.0), recon_per_dim=False)
    terms = inversion_loss(zs, Rs, lens, torch.tensor([1]), w, entropy_ramp=0.0)
    assert float(terms["total"].detach()) == pytest.approx(2.0 * float((Rs[1] - zs[1]).detach().pow(2).sum()) / 2)
    with pytest.raises(DetectorError, match="recon_weights"):
        InversionDetector(widths=(8, 8), recon_weights=[1.0, 1.0]).loss_weights()


# -- the detector ------------------------------------------------------------------------------------
def test_cross_entropy_alone_learns_an_easy_set():
    X, y = easy_sequences(60, 12, seed=3)
    T, yt = easy_sequences(100, 12, seed=4, min_len=10, max_len=80)
    det = InversionDetector(entropy_weight=0, recon_scale=0, max_epochs=30, random_state=1).fit(X, y)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(yt, det.predict_proba(T)) > 0.95


def test_full_loss_trains_and_lowers_the_reconstruction_error():
    X, y = easy_sequences(24, 12, seed=5)
    U, _ = easy_sequences(48, 12, seed=6)
    det = InversionDetector(widths=(8, 8), max_epochs=8, warmup_epochs=2, validation_fraction=0, random_state=2)
    det.fit(X, y, unlabeled=U)
    h = det.history_
    assert len(h) == 8 and all(np.isfinite([r["total"] for r in h]))
    assert h[0]["entropy"] == 0.0  # warm-up: the entropy term starts at weight 0
    assert h[-1]["recon"] < h[0]["recon"]
    assert h[-1]["entropy"] > 0  # the unlabeled clips were used


def test_conformance(tmp_path):
    check_detector(lambda seed: InversionDetector(widths=(8, 8), max_epochs=15, random_state=seed), tmp_path)


def test_not_fitted_and_bad_unlabeled():
    with pytest.raises(DetectorError, match="not fitted"):
        InversionDetector().predict_proba([np.zeros((5, 3), np.float32)])
    X, y = easy_sequences(10, 6)
    with pytest.raises(DetectorError, match="channels"):
        InversionDetector(max_epochs=1).fit(X, y, unlabeled=[np.zeros((5, 7), np.float32)])


# -- training options from the spline analyses (orthogonality penalty, beta-VQ) ----------------------
def test_ortho_penalty_option_lowers_template_overlap_of_the_readout():
    from detector_conformance import easy_sequences

    from scatterbird.models.inversion import InversionDetector
    from scatterbird.models.spline.penalties import weight_overlap

    seqs, y = easy_sequences(40, 12, seed=3)
    kw = dict(widths=(8, 8), max_epochs=4, steps_per_epoch=8, recon_scale=0.0, random_state=0)
    plain = InversionDetector(**kw).fit(seqs, y)
    ortho = InversionDetector(**kw, ortho_penalty=5.0, ortho_variant="weights").fit(seqs, y)
    assert weight_overlap(ortho.net_.layers[-1].weight.detach()) < weight_overlap(plain.net_.layers[-1].weight.detach())


def test_betavq_activation_at_beta_one_is_the_hard_network():
    import torch

    from scatterbird.models.inversion import InversionNet

    torch.manual_seed(0)
    hard = InversionNet(6, widths=(4, 4))
    soft = InversionNet(6, widths=(4, 4), activation="betavq", beta=1.0)
    soft.load_state_dict(hard.state_dict())
    x = torch.randn(3, 6, 17)
    torch.testing.assert_close(soft(x), hard(x), rtol=0, atol=0)
    softer = InversionNet(6, widths=(4, 4), activation="betavq", beta=0.5)
    softer.load_state_dict(hard.state_dict())
    assert not torch.allclose(softer(x), hard(x))


def test_bad_ortho_variant_is_named():
    from detector_conformance import easy_sequences

    from scatterbird.models.base import DetectorError
    from scatterbird.models.inversion import InversionDetector

    seqs, y = easy_sequences(20, 12)
    with pytest.raises(DetectorError, match="ortho_variant"):
        InversionDetector(ortho_variant="diagonal").fit(seqs, y)
