"""RNTK Gram matrices: time and memory of models/rntk.py against a per-pair loop and the arithmetic floor;
training sizes; AUC against the inversion detector.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rntk.py [--sizes 500 2000 5000] [--steps 64]
        [--channels 64] [--layers 1] [--activation relu] [--budget-mb 512]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rntk.py --train 5000 --nystroem 20000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rntk.py --auc

Gram (default): for each N, the symmetric RNTK Gram of N random sequences of ``--steps`` steps x
``--channels`` channels (float64), computed in a fresh subprocess so that its peak memory is its own:

* ``ours``: :meth:`models.rntk.RNTK.gram` (tiles within ``--budget-mb``), CPU seconds and wall seconds;
* ``loop``: the straightforward implementation, a Python loop over pairs and, inside, over time steps
  (scalar math; each pair's inner products in one NumPy call; every sequence's own trajectory computed once
  beforehand), timed on ``--loop-pairs`` pairs and scaled to the N (N + 1) / 2 pairs of the Gram;
* ``floor``: the operation count at this core's measured rates: per pair and step, 2 m flops of inner
  products plus, per layer, about 13 arithmetic flops at the measured float64 GEMM rate, and the two
  transcendental functions that cannot be avoided (an arcsine, and a square root or its reciprocal: the
  reciprocal square root is the cheaper and is counted) at torch's measured vectorised rate; over
  N (N + 1) / 2 pairs;
* peak memory: the subprocess's peak resident set size above its size once the data is built, with the
  N x N x 8 bytes of the output shown apart.

The machine is shared, so the ratios use CPU seconds (``time.process_time``) of one thread; wall seconds are
printed too.

``--train N...`` / ``--nystroem N...``: time and peak memory of ``RNTKClassifier.fit`` on N synthetic
sequences (40 steps x 64 channels, a planted band in half of them), one kernel setting and one C (so the
number is the cost of one training, not of a grid), exact or with ``--landmarks`` Nystroem landmarks; each
in a subprocess; AUC on 1,000 held-out sequences.

``--auc``: the synthetic challenge-like split of ``benchmarks/ssl_gain.py`` (5 s clips, first-order
scattering, bird SNR -20..-5 dB, the same cached features): the RNTK classifier (its default grid, frames
pooled to ``--pool`` s, centring and all decided by its cross-validation) against the inversion detector
(ssl_gain's training schedule, frames pooled by 2, with and without the 1,000 unlabeled clips), test ROC
AUC on the 400 test clips for ``--labels`` labelled clips and ``--seeds`` seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from scatterbird.models.rntk import RNTK, RNTKClassifier  # noqa: E402


def _rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _data(n: int, steps: int, channels: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((steps, channels)) for _ in range(n)]


# -- the straightforward baseline ----------------------------------------------------------------------
def loop_gram_time(X: list[np.ndarray], kern: RNTK, n_pairs: int) -> float:
    """CPU seconds per pair of a per-pair, per-step Python loop over the recursion."""
    L, act = kern.n_layers, kern.activation
    sw2, su2, sb2, sv2 = (s * s for s in (kern.sigma_w, kern.sigma_u, kern.sigma_b, kern.sigma_v))
    m = X[0].shape[1]
    own = kern._own(X)  # noqa: SLF001  (each sequence's own Sigma(l, t), as the loop would precompute)
    sig = [s.numpy() for s in own.sig]

    def dual(a: float, b: float, c: float) -> tuple[float, float]:
        if act == "relu":
            sab = math.sqrt(a * b)
            rho = max(-1.0, min(1.0, c / sab))
            th = math.acos(rho)
            v = sab / (2 * math.pi) * (rho * (math.pi - th) + math.sqrt(1 - rho * rho))
            return v, (math.pi - th) / (2 * math.pi)
        q = (1 + 2 * a) * (1 + 2 * b)
        return 2 / math.pi * math.asin(2 * c / math.sqrt(q)), 4 / math.pi / math.sqrt(q - 4 * c * c)

    rng = np.random.default_rng(1)
    pairs = rng.integers(0, len(X), size=(n_pairs, 2))
    T = X[0].shape[0]
    t0 = time.process_time()
    for i, j in pairs:
        ip = (X[i] * X[j]).sum(axis=1) * (su2 / m)
        S = [0.0] * L
        Th = [0.0] * L
        for t in range(T):
            for l in range(L):
                if l == 0:
                    u, tu = ip[t], 0.0
                else:
                    v, vp = dual(sig[l - 1][i, t], sig[l - 1][j, t], S[l - 1])
                    u, tu = su2 * v, su2 * vp * Th[l - 1]
                if t == 0:
                    w = tw = 0.0
                else:
                    v, vp = dual(sig[l][i, t - 1], sig[l][j, t - 1], S[l])
                    w, tw = sw2 * v, sw2 * vp * Th[l]
                S[l] = w + u + sb2
                Th[l] = S[l] + tu + tw
        v, vp = dual(sig[L - 1][i, T - 1], sig[L - 1][j, T - 1], S[L - 1])
        _ = sv2 * (v + vp * Th[L - 1])
    return (time.process_time() - t0) / n_pairs


# -- the floor ------------------------------------------------------------------------------------------
def measured_rates(tile: int, channels: int) -> dict[str, float]:
    """This core's float64 GEMM flop rate and per-element cost of torch's vectorised asin/sqrt/rsqrt."""

    def cpu(fn, reps: int) -> float:
        fn()
        t0 = time.process_time()
        for _ in range(reps):
            fn()
        return (time.process_time() - t0) / reps

    a = torch.randn(2048, 2048, dtype=torch.float64)
    gemm = 2 * 2048**3 / cpu(lambda: a @ a, 3)
    x = torch.randn(tile, channels, dtype=torch.float64)
    gemm_tile = 2 * tile * tile * channels / cpu(lambda: x @ x.T, 50)
    r = torch.rand(tile, tile, dtype=torch.float64) * 1.8 - 0.9
    p = r.abs() + 0.1
    n = r.numel()
    return {
        "gemm_flops": max(gemm, gemm_tile),
        "asin_s": cpu(lambda: torch.asin(r), 50) / n,
        "sqrt_s": cpu(lambda: torch.sqrt(p), 50) / n,
        "rsqrt_s": cpu(lambda: torch.rsqrt(p), 50) / n,
    }


def floor_seconds(n: int, steps: int, channels: int, layers: int, activation: str, rates: dict[str, float]) -> float:
    pairs = n * (n + 1) / 2
    per_step = (2 * channels + 13 * layers) / rates["gemm_flops"]
    per_step += layers * (rates["asin_s"] + rates["rsqrt_s"])  # sqrt(s) = s * rsqrt(s) is the cheaper way
    return pairs * steps * per_step


# -- subprocess workers ------------------------------------------------------------------------------------
def worker_gram(args: argparse.Namespace) -> dict:
    X = _data(args.n, args.steps, args.channels)
    kern = RNTK(activation=args.activation, n_layers=args.layers, memory_budget_mb=args.budget_mb)
    base = _current_rss_mb()
    t0, w0 = time.process_time(), time.perf_counter()
    G = kern.gram(X)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    assert G.shape == (args.n, args.n) and np.isfinite(G).all()
    return {"cpu": cpu, "wall": wall, "peak_mb": _rss_mb() - base, "out_mb": G.nbytes / 2**20,
            "tile": kern.tile_size(args.steps, args.channels)}


def planted(n: int, seed: int, steps: int = 40, channels: int = 64) -> tuple[list[np.ndarray], np.ndarray]:
    """Half the sequences carry a raised band (channels 10-14, +2) over a quarter of their steps."""
    rng = np.random.default_rng(seed)
    X, y = [], np.arange(n) % 2
    for i in range(n):
        x = rng.standard_normal((steps, channels)).astype(np.float32)
        if y[i]:
            a = int(rng.integers(0, steps - steps // 4))
            x[a : a + steps // 4, 10:15] += 2.0
        X.append(x)
    return X, y


def worker_train(args: argparse.Namespace) -> dict:
    from sklearn.metrics import roc_auc_score

    X, y = planted(args.n, seed=1)
    Xt, yt = planted(1000, seed=2)
    det = RNTKClassifier(method=args.method, n_landmarks=args.landmarks, param_grid={}, C=[1.0], cv=2,
                         max_exact=10**9, random_state=0, memory_budget_mb=args.budget_mb)
    base = _current_rss_mb()
    t0, w0 = time.process_time(), time.perf_counter()
    det.fit(X, y)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    auc = float(roc_auc_score(yt, det.predict_proba(Xt)))
    return {"cpu": cpu, "wall": wall, "peak_mb": _rss_mb() - base, "auc": auc,
            "n_ref": int(det.tensors_["ref_lengths"].numel())}


def run_worker(kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker {kind} {kw} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- AUC against the inversion detector ------------------------------------------------------------------
def auc_comparison(args: argparse.Namespace) -> None:
    from sklearn.metrics import roc_auc_score

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ssl_gain import VARIANTS, cached_features, pick_labelled  # the same split, the same cache

    from scatterbird.models.inversion import InversionDetector
    from scatterbird.pipeline.config import FeatureConfig
    from scatterbird.pipeline.detect.windows import pool_frames

    config = FeatureConfig(max_order=1)
    cache = ROOT / "benchmarks" / ".cache"
    snr = (-20.0, -5.0)
    Xp, yp = cached_features("pool", 200, 1, config, 5.0, snr, cache)
    Xu, _ = cached_features("unlabeled", 1000, 2, config, 5.0, snr, cache)
    Xt, yt = cached_features("test", 400, 3, config, 5.0, snr, cache)
    fr = config.frame_rate
    rntk_seq = lambda X: [pool_frames(x.T, fr, args.pool) for x in X]  # noqa: E731
    inv_seq = lambda X: [pool_frames(x.T, fr, 2 / fr) for x in X]  # noqa: E731  (ssl_gain's 2-frame pooling)
    Rp, Rt = rntk_seq(Xp), rntk_seq(Xt)
    Ip, Iu, It = inv_seq(Xp), inv_seq(Xu), inv_seq(Xt)
    print(f"split: {len(Xp)} labelled pool, {len(Xu)} unlabeled, {len(Xt)} test clips of 5 s; RNTK steps "
          f"{Rp[0].shape}, inversion steps {Ip[0].shape}")
    print(f"{'labels':>6} {'seed':>4} {'RNTK':>6} {'inv CE':>7} {'inv full':>8}  RNTK choice (CPU s: RNTK, inversion)")
    rows = []
    for n in args.labels:
        for seed in range(args.seeds):
            li = pick_labelled(yp, n, seed) if n < len(yp) else np.arange(len(yp))
            t0 = time.process_time()
            det = RNTKClassifier(random_state=seed).fit([Rp[i] for i in li], yp[li])
            a_r = roc_auc_score(yt, det.predict_proba(Rt))
            t_r = time.process_time() - t0
            res = {}
            t0 = time.process_time()
            for name in ("CE", "inversion"):
                inv = InversionDetector(max_epochs=8, steps_per_epoch=32, warmup_epochs=2, patience=4,
                                        random_state=seed, **VARIANTS[name])
                inv.fit([Ip[i] for i in li], yp[li], unlabeled=Iu if name == "inversion" else None)
                res[name] = roc_auc_score(yt, inv.predict_proba(It))
            t_i = time.process_time() - t0
            kp = det.extra_["kernel_params"]
            rows.append((n, seed, a_r, res["CE"], res["inversion"]))
            print(f"{n:6d} {seed:4d} {a_r:6.3f} {res['CE']:7.3f} {res['inversion']:8.3f}  "
                  f"sigma_w={kp['sigma_w']:.3g} sigma_u={kp['sigma_u']:.3g} centre={kp['centre']} "
                  f"{kp['kernel']}/{kp['readout']} C={det.extra_['reg']:g} ({t_r:.0f}, {t_i:.0f})", flush=True)
    a = np.array([r[2:] for r in rows])
    for n in args.labels:
        sel = np.array([r[0] == n for r in rows])
        m, s = a[sel].mean(0), a[sel].std(0)
        print(f"mean {n:3d} labels: RNTK {m[0]:.3f} +- {s[0]:.3f}, inversion CE-only {m[1]:.3f} +- {s[1]:.3f}, "
              f"inversion + 1000 unlabeled {m[2]:.3f} +- {s[2]:.3f}")


# -- main ------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[500, 2000, 5000], help="Gram sizes N")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--activation", default="relu", choices=("relu", "erf"))
    ap.add_argument("--budget-mb", type=float, default=512.0)
    ap.add_argument("--loop-pairs", type=int, default=300)
    ap.add_argument("--train", type=int, nargs="*", default=[], help="exact training sizes")
    ap.add_argument("--nystroem", type=int, nargs="*", default=[], help="Nystroem training sizes")
    ap.add_argument("--landmarks", type=int, default=1000)
    ap.add_argument("--auc", action="store_true", help="RNTK against the inversion detector")
    ap.add_argument("--labels", type=int, nargs="+", default=[30, 100, 200])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pool", type=float, default=0.1, help="RNTK step in seconds for --auc")
    # internal: one measurement in a fresh process
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.worker == "gram":
        print(json.dumps(worker_gram(args)))
        return
    if args.worker == "train":
        print(json.dumps(worker_train(args)))
        return

    if args.sizes:
        kern = RNTK(activation=args.activation, n_layers=args.layers, memory_budget_mb=args.budget_mb)
        tile = kern.tile_size(args.steps, args.channels)
        rates = measured_rates(tile, args.channels)
        X = _data(200, args.steps, args.channels, seed=5)
        loop_pair = loop_gram_time(X, kern, args.loop_pairs)
        print(f"RNTK Gram, {args.activation}, L={args.layers}, {args.steps} steps x {args.channels} channels, float64, "
              f"one thread, tile {tile} (budget {args.budget_mb:g} MiB)")
        print(f"rates on this core: GEMM {rates['gemm_flops'] / 1e9:.1f} GFLOP/s, asin {rates['asin_s'] * 1e9:.1f} ns, "
              f"sqrt {rates['sqrt_s'] * 1e9:.1f} ns, rsqrt {rates['rsqrt_s'] * 1e9:.1f} ns per element; "
              f"loop {loop_pair * 1e6:.0f} us per pair ({args.loop_pairs} pairs)")
        print(f"{'N':>6} {'ours cpu s':>10} {'wall s':>8} {'ns/pair-step':>12} {'loop s (scaled)':>15} "
              f"{'loop/ours':>9} {'floor s':>8} {'ours/floor':>10} {'peak MiB':>9} {'(output MiB)':>12}")
        for n in args.sizes:
            r = run_worker("gram", n=n, steps=args.steps, channels=args.channels, layers=args.layers,
                           activation=args.activation, budget_mb=args.budget_mb)
            pairs = n * (n + 1) / 2
            loop_s = loop_pair * pairs
            fl = floor_seconds(n, args.steps, args.channels, args.layers, args.activation, rates)
            print(f"{n:6d} {r['cpu']:10.1f} {r['wall']:8.1f} {r['cpu'] / (pairs * args.steps) * 1e9:12.1f} "
                  f"{loop_s:15.0f} {loop_s / r['cpu']:9.0f} {fl:8.1f} {r['cpu'] / fl:10.2f} {r['peak_mb']:9.0f} "
                  f"{r['out_mb']:12.0f}", flush=True)

    for method, sizes in (("exact", args.train), ("nystroem", args.nystroem)):
        for n in sizes:
            r = run_worker("train", n=n, method=method, landmarks=args.landmarks, budget_mb=args.budget_mb)
            print(f"train {method:8s} N={n:6d}: {r['cpu']:7.1f} cpu s, {r['wall']:7.1f} wall s, "
                  f"peak +{r['peak_mb']:.0f} MiB, {r['n_ref']} reference sequences, test AUC {r['auc']:.3f}",
                  flush=True)

    if args.auc:
        auc_comparison(args)


if __name__ == "__main__":
    main()
