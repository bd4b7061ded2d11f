"""Tests of models/rntk.py: the RNTK / NNGP kernel against an empirical wide RNN and an independent slow
implementation, its structure (symmetry, PSD, end alignment, tiling), and the RNTKClassifier detector."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from detector_conformance import check_detector, easy_sequences

from scatterbird.models.base import DetectorError
from scatterbird.models.rntk import RNTK, VARIANTS, RNTKClassifier, _nystroem_features, erf_dual, relu_dual


# ------------------------------------------------------------------------------------------------
# An independent slow implementation: plain Python over pairs and time steps, written from the spec's
# end-aligned recursion (paper 3, section 3(a)), with scalar math.
# ------------------------------------------------------------------------------------------------
def _dual(act: str, a: float, b: float, c: float) -> tuple[float, float]:
    if act == "relu":
        sab = math.sqrt(a * b)
        rho = 0.0 if sab == 0 else max(-1.0, min(1.0, c / sab))
        th = math.acos(rho)
        v = sab / (2 * math.pi) * (rho * (math.pi - th) + math.sqrt(max(0.0, 1 - rho * rho)))
        return v, (math.pi - th) / (2 * math.pi)
    q = (1 + 2 * a) * (1 + 2 * b)
    return 2 / math.pi * math.asin(2 * c / math.sqrt(q)), 4 / math.pi / math.sqrt(q - 4 * c * c)


def _own(x, act, L, sw, su, sb, sh):
    """Sigma(l, t)(x, x) for every layer and step of one sequence."""
    T, m = x.shape
    sig = [[0.0] * T for _ in range(L)]
    for t in range(T):
        for l in range(L):
            if l == 0:
                u = su**2 / m * float(np.dot(x[t], x[t]))
            else:
                u = su**2 * _dual(act, sig[l - 1][t], sig[l - 1][t], sig[l - 1][t])[0]
            w = sw**2 * sh**2 if t == 0 else sw**2 * _dual(act, sig[l][t - 1], sig[l][t - 1], sig[l][t - 1])[0]
            sig[l][t] = w + u + sb**2
    return sig


def slow_pair(x, y, act="relu", L=1, sw=1.3, su=1.0, sb=0.3, sh=0.5, sv=1.0, same=False, readout="last"):
    """(RNTK, NNGP) of one pair; ``same`` marks a sample with itself (shared initial state)."""
    if x.shape[0] > y.shape[0]:
        return slow_pair(y, x, act, L, sw, su, sb, sh, sv, same, readout)
    T, Tp, m = x.shape[0], y.shape[0], x.shape[1]
    tau = Tp - T  # x's step t meets y's step t + tau (end alignment)
    ox, oy = _own(x, act, L, sw, su, sb, sh), _own(y, act, L, sw, su, sb, sh)
    S = [[0.0] * T for _ in range(L)]
    Th = [[0.0] * T for _ in range(L)]
    acc_n = acc_g = 0.0
    for t in range(T):
        for l in range(L):
            if l == 0:
                u, tu = su**2 / m * float(np.dot(x[t], y[t + tau])), 0.0
            else:
                v, vp = _dual(act, ox[l - 1][t], oy[l - 1][t + tau], S[l - 1][t])
                u, tu = su**2 * v, su**2 * vp * Th[l - 1][t]
            if t == 0:  # first aligned step: no W-term, except the shared initial state of a sample with itself
                w, tw = (sw**2 * sh**2 if same and tau == 0 else 0.0), 0.0
            else:
                v, vp = _dual(act, ox[l][t - 1], oy[l][t - 1 + tau], S[l][t - 1])
                w, tw = sw**2 * v, sw**2 * vp * Th[l][t - 1]
            S[l][t] = w + u + sb**2
            Th[l][t] = S[l][t] + tu + tw
        v, vp = _dual(act, ox[L - 1][t], oy[L - 1][t + tau], S[L - 1][t])
        acc_g += sv**2 * v
        acc_n += sv**2 * (v + vp * Th[L - 1][t])
    if readout == "avg":
        return acc_n / math.sqrt(T * Tp), acc_g / math.sqrt(T * Tp)
    return sv**2 * (v + vp * Th[L - 1][T - 1]), sv**2 * v


SIGMAS = dict(sigma_w=1.3, sigma_u=0.9, sigma_b=0.3, sigma_h=0.5, sigma_v=1.2)


def _seqs(lengths, m=3, seed=0, offset=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [offset + scale * rng.standard_normal((t, m)) for t in lengths]


@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_equals_slow_implementation(act, L):
    X = _seqs((5, 5, 3, 7, 1, 4), seed=L)
    k = RNTK(activation=act, n_layers=L, **SIGMAS)
    p = [SIGMAS[s] for s in ("sigma_w", "sigma_u", "sigma_b", "sigma_h", "sigma_v")]
    grams = k.grams(X)
    cross = k.grams(X[4:], X[:4])
    for readout in ("last", "avg"):
        ref = np.array(
            [[slow_pair(X[i], X[j], act, L, *p, same=i == j, readout=readout) for j in range(6)] for i in range(6)]
        )
        for ki, kernel in enumerate(("ntk", "gp")):
            np.testing.assert_allclose(grams[(kernel, readout)], ref[..., ki], rtol=1e-10, atol=0)
            # two sets are different samples: no sample-identity term anywhere
            ref_x = np.array(
                [[slow_pair(X[4 + i], X[j], act, L, *p, readout=readout)[ki] for j in range(4)] for i in range(2)]
            )
            np.testing.assert_allclose(cross[(kernel, readout)], ref_x, rtol=1e-10, atol=0)


def test_dual_activations_known_values():
    # ReLU on the diagonal: E[relu(u)^2] = a/2, E[1(u>0)] = 1/2; orthogonal inputs: sqrt(ab)/(2 pi), 1/4.
    a, b = torch.tensor(2.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    v, vp = relu_dual(a, a, a)
    assert v.item() == pytest.approx(1.0) and vp.item() == pytest.approx(0.5)
    v, vp = relu_dual(a, b, torch.tensor(0.0, dtype=torch.float64))
    assert v.item() == pytest.approx(math.sqrt(6) / (2 * math.pi)) and vp.item() == pytest.approx(0.25)
    # zero variance (zero input, sigma_b = 0) gives zeros, not NaN (pitfall 4)
    z = torch.tensor(0.0, dtype=torch.float64)
    assert relu_dual(z, a, z)[0].item() == 0.0
    # erf: Monte Carlo check of both expectations
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[0.7, 0.4], [0.4, 1.1]], dtype=torch.float64)
    uv = torch.randn(400_000, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    v, vp = erf_dual(cov[0, 0], cov[1, 1], cov[0, 1])
    mc_v = (torch.erf(uv[:, 0]) * torch.erf(uv[:, 1])).mean()
    dphi = lambda u: 2 / math.sqrt(math.pi) * torch.exp(-u * u)  # noqa: E731
    mc_vp = (dphi(uv[:, 0]) * dphi(uv[:, 1])).mean()
    assert v.item() == pytest.approx(mc_v.item(), abs=4e-3)
    assert vp.item() == pytest.approx(mc_vp.item(), abs=6e-3)


# ------------------------------------------------------------------------------------------------
# The empirical NTK of finite, wide, weight-tied RNNs in the NTK parameterisation
# ------------------------------------------------------------------------------------------------
def _empirical(X, act, L, n, seed, sw, su, sb, sh, sv, draws=1, brute=False, dtype=torch.float32):
    """Empirical kernels of ``draws`` networks that share their n x n matrices (W, and U of layers >= 2);
    every other parameter and initial state is drawn per network.

    Sequences are run end-aligned in one batch: a sequence's hidden state stays at its initial state until
    its first step. Two readouts share the recurrent part: "last" (one V on the last hidden state) and
    "avg" (an independent V_k per step k counted from the end, scaled by 1/sqrt(T)). The NTK is the sum over
    every parameter of gradient inner products; ``brute`` takes it from autograd's per-sample gradients of
    all parameters (slow, small n), otherwise it is assembled by the chain rule from the gradients with
    respect to the pre-activations (dg f) and the layers' inputs: for W, sum_{t,s} <dg_t f(x), dg_s f(x')>
    <h_{t-1}(x), h_{s-1}(x')> sigma_w^2 / n, and likewise for U and b.

    Returns
    -------
    dict of (kernel, readout) to ndarray (draws, B, B)
    """
    gen = torch.Generator().manual_seed(seed)
    big = torch.Generator().manual_seed(10_000 + seed)
    B, m, k = len(X), X[0].shape[1], draws
    lens = np.array([x.shape[0] for x in X])
    T = int(lens.max())
    start = torch.from_numpy(T - lens).repeat(k)  # per column: network-major, then sequence
    xs = torch.zeros(T, m, B, dtype=dtype)
    for i, x in enumerate(X):
        xs[T - len(x) :, :, i] = torch.from_numpy(x).to(dtype)
    phi = torch.relu if act == "relu" else torch.erf
    W = [torch.randn(n, n, generator=big, dtype=dtype) for _ in range(L)]
    U = [torch.randn(k, n, m, generator=gen, dtype=dtype)]
    U += [torch.randn(n, n, generator=big, dtype=dtype) for _ in range(1, L)]
    b = [torch.randn(n, k, 1, generator=gen, dtype=dtype) for _ in range(L)]
    V_last = torch.randn(n, k, 1, generator=gen, dtype=dtype)
    V_avg = torch.randn(T, n, k, 1, generator=gen, dtype=dtype)  # V_avg[j]: step j of the common grid
    h = [sh * torch.randn(n, k * B, generator=gen, dtype=dtype) for _ in range(L)]
    params = W + U + b + [V_last, V_avg]
    for p in params:
        p.requires_grad_(brute)
    pres, prev, ins, tops = [], [], [], []
    for g in range(T):
        active = (start <= g)[None, :]
        inp = None
        for l in range(L):
            if l == 0:
                inp_l = xs[g]
                u_in = torch.einsum("knm,mb->nkb", U[0], xs[g]).reshape(n, k * B) * (su / math.sqrt(m))
            else:
                inp_l = inp
                u_in = (su / math.sqrt(n)) * (U[l] @ inp)
            pre = (sw / math.sqrt(n)) * (W[l] @ h[l]) + u_in + sb * b[l].expand(n, k, B).reshape(n, k * B)
            if not brute:
                pre.requires_grad_(True)
            pres.append(pre)
            prev.append(h[l])
            ins.append(inp_l)
            h[l] = torch.where(active, phi(pre), h[l])
            inp = h[l]
        tops.append(h[L - 1] * active)
    lt = torch.from_numpy(lens).to(dtype).repeat(k)
    f = {
        "last": (sv / math.sqrt(n)) * (V_last * h[L - 1].reshape(n, k, B)).sum(0).reshape(-1),
        "avg": sum((sv / math.sqrt(n)) * (V_avg[g] * tops[g].reshape(n, k, B)).sum(0).reshape(-1) for g in range(T))
        / torch.sqrt(lt),
    }

    def per_net(A, Bm):  # (n, k*B) x (n, k*B) -> (k, B, B) Gram of the columns of each network
        return torch.einsum("nki,nkj->kij", A.reshape(n, k, B).double(), Bm.reshape(n, k, B).double())

    out = {}
    gp = {
        "last": (sv**2 / n) * per_net(h[L - 1], h[L - 1]),
        "avg": sum((sv**2 / n) * per_net(tops[g], tops[g]) for g in range(T))
        / torch.sqrt(lt[:B, None] * lt[None, :B]).double(),
    }
    for readout in ("last", "avg"):
        out[("gp", readout)] = gp[readout].detach().numpy()
        if brute:
            assert k == 1
            rows = []
            for i in range(B):
                grads = torch.autograd.grad(f[readout][i], params, retain_graph=True, allow_unused=True)
                rows.append(torch.cat([q.reshape(-1) for q in grads if q is not None]))  # unused: the other readout
            J = torch.stack(rows).double()
            out[("ntk", readout)] = (J @ J.T).detach().numpy()[None]
            continue
        D = torch.autograd.grad(f[readout].sum(), pres, retain_graph=True)  # columns do not interact
        K = gp[readout].clone()
        for l in range(L):
            sel = slice(l, T * L, L)
            Dm = torch.stack(D[sel]).double().reshape(T, n, k, B)
            Hm = torch.stack(prev[sel]).double().reshape(T, n, k, B)
            DD = torch.einsum("tnki,snkj->tskij", Dm, Dm)
            K += (sw**2 / n) * (DD * torch.einsum("tnki,snkj->tskij", Hm, Hm)).sum((0, 1))
            if l == 0:
                II = torch.einsum("tmi,smj->tsij", xs.double(), xs.double())[:, :, None]
                K += (su**2 / m) * (DD * II).sum((0, 1))
            else:
                Im = torch.stack(ins[sel]).double().reshape(T, n, k, B)
                K += (su**2 / n) * (DD * torch.einsum("tnki,snkj->tskij", Im, Im)).sum((0, 1))
            K += sb**2 * DD.sum((0, 1))
        out[("ntk", readout)] = K.detach().numpy()
    return out


def test_empirical_ntk_assembly_equals_autograd_jacobians():
    """The chain-rule assembly used below is the true J J^T of all parameters (checked at small width)."""
    X = _seqs((3, 1, 4), seed=5, offset=0.5)
    for act, L in (("relu", 2), ("erf", 1)):
        args = (X, act, L, 24, 3, 1.3, 0.9, 0.3, 0.5, 1.2)
        fast = _empirical(*args, dtype=torch.float64)
        brute = _empirical(*args, brute=True, dtype=torch.float64)
        for v in VARIANTS:
            np.testing.assert_allclose(fast[v], brute[v], rtol=1e-10, atol=1e-12)


# Widths >= 2000 as asked. One network's NTK at this width is off by 4-7 % per entry for these 4-step inputs
# (mostly the cross-time gradient terms, which vanish only in the limit), and the error of the average falls
# as 1 / sqrt(networks). So many networks are averaged: `draws` networks per draw of the n x n matrices
# share those (cheap: one batched GEMM), `seeds` independent draws of them. The counts give a standard error
# of about 0.4-0.6 % per entry; on 3 disjoint seed ranges the largest error of any entry of any variant
# stayed under 1.6 % (see the closing report of issue #5), so the 3 % bar holds with margin. Pooled over
# 160 seeds x 4 draws the 2-layer ReLU errors are all below 0.5 %: no bias at this width.
EMPIRICAL = [  # (activation, layers, sigma_w, width, seeds, draws per seed)
    ("relu", 1, 1.3, 2000, 24, 8),
    ("erf", 1, 1.0, 2000, 16, 8),
    ("relu", 2, 1.3, 2000, 96, 4),
    ("erf", 2, 1.0, 2000, 24, 6),
]


@pytest.mark.slow  # Monte Carlo over wide random RNNs
@pytest.mark.parametrize("act,L,sw,n,seeds,draws", EMPIRICAL)
def test_matches_empirical_ntk_of_wide_rnns(act, L, sw, n, seeds, draws):
    # Lengths 3, 3, 1, 4 in one batch: equal lengths, a single step, and end alignment with offsets 1-3.
    # Inputs with a mean keep every entry well away from zero (erf is odd), so relative errors are meaningful.
    X = _seqs((3, 3, 1, 4), seed=1, offset=1.0, scale=0.5)
    su, sb, sh, sv = 1.0, 0.4, 0.5, 1.0
    kern = RNTK(activation=act, n_layers=L, sigma_w=sw, sigma_u=su, sigma_b=sb, sigma_h=sh, sigma_v=sv)
    theory = kern.grams(X)
    runs = [_empirical(X, act, L, n, s, sw, su, sb, sh, sv, draws=draws) for s in range(seeds)]
    for v in VARIANTS:
        emp = np.concatenate([r[v] for r in runs]).mean(axis=0)
        rel = np.abs(emp - theory[v]) / np.abs(theory[v])
        # ("gp", *) is the NTK with only the readout trained: the GP kernel is checked the same way
        assert rel.max() < 0.03, f"{v}: max relative error {rel.max():.4f}\nempirical\n{emp}\ntheory\n{theory[v]}"


# ------------------------------------------------------------------------------------------------
# Structure
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("act", ["relu", "erf"])
def test_gram_is_symmetric_and_psd(act):
    X = _seqs(np.random.default_rng(3).integers(1, 25, size=40), m=5, seed=3)
    k = RNTK(activation=act, n_layers=2, sigma_w=1.4, sigma_b=0.2, sigma_h=0.3)
    for v, G in k.grams(X, tile=16).items():
        assert np.array_equal(G, G.T), v
        w = np.linalg.eigvalsh(G)
        assert w.min() > -1e-10 * w.max(), (v, w.min(), w.max())


@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("L", [1, 2])
def test_end_alignment_zero_prefix_is_invisible_only_without_bias(act, L):
    """With sigma_b = sigma_h = 0 a zero input leaves the hidden state at exactly zero, so prepending zero
    steps changes nothing: x against [0; x] equals x against itself, end-aligned. With a bias the zero steps
    drive the state (the spec's reason never to zero-pad), and the kernel changes."""
    x = _seqs((6,), m=4, seed=7)[0]
    xp = np.concatenate([np.zeros((3, 4)), x])
    k0 = RNTK(activation=act, n_layers=L, sigma_w=1.2, sigma_b=0.0, sigma_h=0.0)
    for v, G in k0.grams([x, xp]).items():
        if v[1] == "avg":  # the zero steps add nothing to the sum over steps, only to its 1/sqrt(T T') scale
            G = G * np.sqrt(np.outer([6, 9], [6, 9]))
        # Equal sequences sit at rho = 1, where arccos has an infinite slope: a rounding of 1e-16 in the
        # covariance moves the kernel by ~1e-8 (the diagonal of one set is computed exactly instead).
        np.testing.assert_allclose(G, G[0, 0], rtol=1e-7, err_msg=str(v))
    kb = RNTK(activation=act, n_layers=L, sigma_w=1.2, sigma_b=0.5, sigma_h=0.0, normalize=True)
    G = kb.gram([x, xp])
    assert G[0, 1] < 1 - 1e-4


def test_end_alignment_first_common_step_has_no_w_term():
    """A 1-step x against a 3-step y (ReLU, one layer): only x_1 against y_3, with y's own variance at its
    step 3 and no W-term, worked out by hand from the spec's formulas."""
    sw, su, sb, sh, sv = 1.3, 0.8, 0.4, 0.6, 1.1
    x = np.array([[0.5, -1.0]])
    y = np.array([[1.0, 0.2], [-0.3, 0.7], [0.9, 0.4]])
    m = 2
    # y's own variance: Sigma(1) = sw^2 sh^2 + su^2/m |y1|^2 + sb^2; Sigma(t) = sw^2 Sigma(t-1)/2 + ...
    s = sw**2 * sh**2 + su**2 / m * y[0] @ y[0] + sb**2
    for t in (1, 2):
        s = sw**2 * s / 2 + su**2 / m * y[t] @ y[t] + sb**2
    a = sw**2 * sh**2 + su**2 / m * x[0] @ x[0] + sb**2
    c = su**2 / m * x[0] @ y[2] + sb**2
    rho = c / math.sqrt(a * s)
    theta = math.acos(rho)
    K = sv**2 * math.sqrt(a * s) / (2 * math.pi) * (math.sin(theta) + (math.pi - theta) * rho)
    ntk = K + sv**2 * (math.pi - theta) / (2 * math.pi) * c  # Theta(1) = Sigma(1)
    k = RNTK(activation="relu", sigma_w=sw, sigma_u=su, sigma_b=sb, sigma_h=sh, sigma_v=sv)
    g = k.grams([x], [y], variants=[("ntk", "last"), ("gp", "last")])
    assert g[("gp", "last")][0, 0] == pytest.approx(K, rel=1e-13)
    assert g[("ntk", "last")][0, 0] == pytest.approx(ntk, rel=1e-13)


def test_end_alignment_forgets_a_prefix_below_the_edge_of_stability():
    """sigma_w = 1 (ReLU): the state forgets at rate 1/2 per step, so x and [p; x] become alike as x grows
    (aligned at their ends); at sigma_w = sqrt(2) nothing is forgotten and they stay apart."""
    rng = np.random.default_rng(11)
    p = rng.standard_normal((5, 3)) * 3
    x = rng.standard_normal((30, 3))

    def gap(sw, t):
        G = RNTK(sigma_w=sw, sigma_b=0.2, normalize=True).gram([x[-t:], np.concatenate([p, x[-t:]])])
        return 1 - G[0, 1]

    forgetful = [gap(1.0, t) for t in (2, 5, 10, 20, 30)]
    assert all(a > b for a, b in zip(forgetful, forgetful[1:])) and forgetful[-1] < 1e-3
    assert gap(math.sqrt(2), 30) > 0.1


def test_tiling_gives_the_same_gram(tmp_path):
    X = _seqs(np.random.default_rng(2).integers(1, 12, size=23), m=4, seed=2)
    Y = _seqs((4, 9, 1, 6, 6), m=4, seed=9)
    k = RNTK(activation="erf", n_layers=2, sigma_h=0.4, readout="avg")
    whole = k.grams(X, tile=1000)
    whole_xy = k.grams(X, Y, tile=1000)
    for tile in (1, 3, 7):
        for v, G in k.grams(X, tile=tile).items():
            np.testing.assert_allclose(G, whole[v], rtol=1e-13, atol=0, err_msg=str(v))
        for v, G in k.grams(X, Y, tile=tile).items():
            np.testing.assert_allclose(G, whole_xy[v], rtol=1e-13, atol=0, err_msg=str(v))
    # a small memory budget picks small tiles by itself, and the output may be a memory map
    small = RNTK(activation="erf", n_layers=2, sigma_h=0.4, readout="avg", memory_budget_mb=0.05)
    assert small.tile_size(11, 4) < len(X)
    out = np.lib.format.open_memmap(tmp_path / "g.npy", mode="w+", dtype=np.float64, shape=(len(X), len(X)))
    small.gram(X, kernel="ntk", out=out)
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"), whole[("ntk", "avg")], rtol=1e-13, atol=0)


def test_normalized_kernel_is_cosine():
    X = _seqs((3, 8, 5, 1), seed=4)
    raw = RNTK(sigma_h=0.3).gram(X)
    cos = RNTK(sigma_h=0.3, normalize=True).gram(X)
    d = np.sqrt(np.diag(raw))
    np.testing.assert_allclose(cos, raw / d[:, None] / d[None, :], rtol=1e-13)
    np.testing.assert_allclose(np.diag(cos), 1.0, rtol=1e-13)
    np.testing.assert_allclose(RNTK(sigma_h=0.3).diag(X), np.diag(raw), rtol=1e-13)


def test_nystroem_features_reproduce_the_gram_with_all_landmarks():
    X = _seqs((4, 2, 6, 3, 5, 5), seed=6)
    k = RNTK(sigma_h=0.5, normalize=True)
    G = k.gram(X, kernel="ntk", readout="avg")
    phi, _ = _nystroem_features(k, X, np.arange(len(X)), [("ntk", "avg")])[("ntk", "avg")]
    np.testing.assert_allclose(phi @ phi.T, G, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------
def test_bad_input_gives_clear_errors():
    k = RNTK()
    good = np.zeros((4, 3))
    with pytest.raises(DetectorError, match="different channel counts"):
        k.gram([good, np.zeros((4, 5))])
    with pytest.raises(DetectorError, match="3 are expected"):
        k.gram([good], [np.zeros((4, 5))])
    with pytest.raises(DetectorError, match=r"X\[1\]: empty sequence"):
        k.gram([good, np.zeros((0, 3))])
    with pytest.raises(DetectorError, match=r"X\[0\]: contains NaN"):
        k.gram([np.full((2, 3), np.nan)])
    with pytest.raises(DetectorError, match="no sequences"):
        k.gram([])
    with pytest.raises(DetectorError, match="expected shape"):
        k.gram([np.zeros(5)])
    with pytest.raises(ValueError, match="activation"):
        RNTK(activation="tanh")
    with pytest.raises(ValueError, match="sigma_w"):
        RNTK(sigma_w=float("nan"))
    det = RNTKClassifier()
    X, y = easy_sequences(10)
    with pytest.raises(DetectorError, match="channel"):
        det.fit(X[:-1] + [np.zeros((5, 4), np.float32)], y)
    with pytest.raises(DetectorError, match="NaN"):
        det.fit(X[:-1] + [np.full((5, 12), np.nan, np.float32)], y)
    with pytest.raises(DetectorError, match="empty"):
        det.fit(X[:-1] + [np.zeros((0, 12), np.float32)], y)
    with pytest.raises(DetectorError, match="not fitted"):
        det.predict_proba(X)
    with pytest.raises(DetectorError, match="param_grid"):
        RNTKClassifier(param_grid={"sigma_q": [1.0]}).fit(X, y)


# ------------------------------------------------------------------------------------------------
# The detector
# ------------------------------------------------------------------------------------------------
def test_conformance(tmp_path):
    check_detector(lambda seed: RNTKClassifier(random_state=seed), tmp_path)


def test_conformance_nystroem_ridge_isotonic(tmp_path):
    make = lambda seed: RNTKClassifier(  # noqa: E731
        random_state=seed, method="nystroem", n_landmarks=12, solver="krr", calibration="isotonic",
        activation="erf", n_layers=2, param_grid={}
    )
    check_detector(make, tmp_path)


def test_separates_an_easy_set():
    from sklearn.metrics import roc_auc_score

    X, y = easy_sequences(100, seed=3)
    Xt, yt = easy_sequences(200, seed=4, min_len=10, max_len=80)
    det = RNTKClassifier(random_state=0).fit(X, y)
    auc = roc_auc_score(yt, det.predict_proba(Xt))
    assert auc > 0.95, auc
    assert det.extra_["method"] == "exact" and det.extra_["cv_auc"] > 0.9
    # Nystroem with half of the set as landmarks still separates it
    ny = RNTKClassifier(random_state=0, method="nystroem", n_landmarks=50).fit(X, y)
    assert roc_auc_score(yt, ny.predict_proba(Xt)) > 0.95


def test_from_options_parses_command_line_values():
    det = RNTKClassifier.from_options(
        activation="erf", layers="2", sigma_w="1.0,1.2", C="1,10", readout="last", normalize="false",
        landmarks="300", seed="4", method=None,
    )
    assert det.param_grid == {"sigma_w": [1.0, 1.2]}
    assert det.C == [1.0, 10.0] and det.n_layers == 2 and det.n_landmarks == 300 and det.random_state == 4
    assert det.normalize is False and det.readout == "last" and det.method == "auto"
    with pytest.raises(DetectorError, match="unknown rntk option 'sigma_q'"):
        RNTKClassifier.from_options(sigma_q="1")
    with pytest.raises(DetectorError, match="n_layers"):
        RNTKClassifier.from_options(layers="two")
    with pytest.raises(DetectorError, match="one value"):
        RNTKClassifier.from_options(cv="3,4")


def test_platt_calibration_never_reverses_the_ranking():
    from scatterbird.models.rntk import _platt

    d = np.array([-2.0, -1.0, -0.5, 0.0, 1.0, 2.0, 0.3, -0.2])
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    a, c = _platt(d, y)
    assert a > 0.5  # a real slope where the decisions rank the classes
    # decisions pooled over folds may slope the wrong way: the fallback keeps the order at the base rate
    a, c = _platt(-d, y)
    p = 1 / (1 + np.exp(-(a * d + c)))
    assert a > 0 and np.all(np.diff(p[np.argsort(d)]) >= 0)
    np.testing.assert_allclose(p, p.mean(), atol=1e-5)
    assert abs(p.mean() - 0.5) < 0.05
