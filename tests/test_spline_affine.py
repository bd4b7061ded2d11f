"""Stage 1 (affine form and templates) and the spline view, on small random piecewise-affine networks."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from scatterbird.models.spline import SplineNet, affine_form, explicit_affine, spline_view, template_stats
from scatterbird.models.spline.testing import RANDOM_NETS, random_inversion_net

torch.set_num_threads(1)

HAS_INVERSION = importlib.util.find_spec("scatterbird.models.inversion") is not None


def _nets():
    out = [pytest.param(name, id=name) for name in RANDOM_NETS]
    out.append(pytest.param("inversion", id="inversion", marks=pytest.mark.skipif(not HAS_INVERSION, reason="no models.inversion")))
    return out


def _build(name: str, seed: int = 0):
    if name == "inversion":
        return random_inversion_net(seed)
    return RANDOM_NETS[name](seed)


@pytest.mark.parametrize("name", _nets())
def test_affine_form_reconstructs_the_output(name):
    net, shape = _build(name)
    view = spline_view(net)
    x = torch.randn(5, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    form = affine_form(view, x)
    recon = (form.A * x.unsqueeze(1)).flatten(2).sum(-1) + form.B
    assert torch.allclose(recon, view(x), rtol=0, atol=1e-12)
    assert torch.allclose(form.out, net(x), rtol=0, atol=1e-12)  # the view computes what the network does


@pytest.mark.parametrize("name", _nets())
def test_templates_are_the_input_gradients_and_the_explicit_composition(name):
    """A[x] by autograd (input gradients of the logits) equals W^L D^{L-1} ... D^1 W^1 composed from the
    layers' own affine maps with frozen codes (forward passes on basis vectors only)."""
    net, shape = _build(name)
    view = spline_view(net)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.randn(1, *shape, dtype=torch.float64, generator=g)
        form = affine_form(view, x)
        A, B = explicit_affine(view, x)
        assert torch.allclose(form.A[0].reshape(A.shape), A, rtol=0, atol=1e-10)
        assert torch.allclose(form.B[0], B, rtol=0, atol=1e-10)
        xg = x.clone().requires_grad_(True)
        out = net(xg)
        for c in range(out.shape[1]):
            (grad,) = torch.autograd.grad(out[0, c], xg, retain_graph=True)
            assert torch.allclose(grad[0], form.A[0, c], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", _nets())
def test_affine_form_holds_on_the_whole_region(name):
    """f(x') = A[x] x' + B[x] for every x' with the codes of x."""
    net, shape = _build(name)
    view = spline_view(net)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, *shape, dtype=torch.float64, generator=g)
    form = affine_form(view, x)
    codes = view.codes(x)
    checked = 0
    for scale in (1e-1, 1e-2, 1e-3, 1e-4):
        xp = x + scale * torch.randn(x.shape, dtype=torch.float64, generator=g)
        if all(torch.equal(a, b) for a, b in zip(view.codes(xp), codes)):
            pred = (form.A[0] * xp).flatten(1).sum(-1) + form.B[0]
            assert torch.allclose(view(xp)[0], pred, rtol=0, atol=1e-11)
            checked += 1
    assert checked >= 2


def test_template_stats_known_answers():
    """A linear network with orthogonal class rows: overlap 0; bias share and input cosine by hand."""
    lin = nn.Linear(3, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
        lin.bias.copy_(torch.tensor([1.0, -3.0]))
    x = torch.tensor([[2.0, 1.0, 2.0]], dtype=torch.float64)
    st = template_stats(lin, x)
    assert st.overlap.item() == 0.0
    # matched = (2, 2); bias = (1, -3): shares 1/3 and 3/5
    assert torch.allclose(st.matched, torch.tensor([[2.0, 2.0]], dtype=torch.float64))
    assert torch.allclose(st.bias_share, torch.tensor([[1 / 3, 3 / 5]], dtype=torch.float64))
    assert torch.allclose(st.input_cosine, torch.tensor([[2 / 3, 1 / 3]], dtype=torch.float64))


def test_spline_view_refuses_what_is_not_piecewise_affine():
    with pytest.raises(TypeError, match="Tanh"):
        SplineNet(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
    with pytest.raises(ValueError, match="training mode"):
        SplineNet(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train())
    net, _ = RANDOM_NETS["mlp"](0)
    view = spline_view(net.float(), dtype=torch.float64)
    assert next(net.parameters()).dtype == torch.float32  # the original network is left as it was
    assert view.n_layers == 3 and view.affine_prefix == 1


@pytest.mark.skipif(not HAS_INVERSION, reason="no models.inversion")
def test_spline_view_of_the_inversion_network_sees_its_representations():
    """The view's layer outputs are the network's own z^(l) (block ends after each nonlinearity)."""
    net, shape = random_inversion_net(0)
    view = spline_view(net)
    x = torch.randn(2, *shape, dtype=torch.float64)
    ours = view.layer_outputs(x)
    theirs = net.representations(x)[1:]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert np.isfinite(affine_form(view, x).B.numpy()).all()
