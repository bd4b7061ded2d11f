"""GAN ensembles on disconnected data: sample quality across the coupling lambda, and use as an augmenter.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gan_ensemble.py [--quick] [--seeds 3] [--aug-seeds 5]

(a) Known disconnected clusters (synthetic: three 2-D Gaussians, sd 0.5, centres (-4, 0), (4, 0), (0, 6),
    600 points): one generator (K = 1) against K = 3 ensembles for each lambda of ``--lambdas``: k-NN precision
    and recall (k = 3, 600 fakes), clusters covered (per-cluster recall >= 0.5), mass between clusters (share
    of fakes farther than 3 sd from every centre), relative parameter spread; mean +- sd over seeds.

(b) Augmentation of bird features with few labels (synthetic audio, ``data/synthetic.py``): 2-s clips at
    8 kHz, bird clips holding 1-2 calls of one call type each (``--kinds``, the disconnected clusters), bird
    SNR uniform in [-10, 5] dB, and as many bird-free clips, over five background kinds. Feature per clip:
    time mean and max of the log scattering (``Scattering(FeatureConfig(sample_rate=8000, J=6, Q1=4,
    threshold="none"))``), standardised and projected by PCA (fitted on all clips, no labels) to ``--dims``.
    Half the clips are the test set; from the other half, n labelled birds and n labelled bird-free clips.
    A class-balanced L2 logistic regression is trained on them alone (``none``), with Gaussian jitter
    copies of the labelled birds (``jitter``, sd 0.5 x the labelled birds' per-dimension sd), or with
    samples of a GAN fitted on the labelled bird features only (``gan K=1``, ``gan K=3 lambda``); the
    added birds are 5 x n and the positive class keeps the same total weight. Test ROC AUC, mean +- sd over
    ``--aug-seeds`` seeds. The same for a nearest-neighbour score (distance to the nearest bird-free clip
    minus distance to the nearest bird, labelled or generated), which is sensitive to where added birds lie.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.optimize import minimize

from scatterbird.data.synthetic import make_clip
from scatterbird.models.spline.gan_ensemble import fit_gan_ensemble
from scatterbird.models.spline.sample_quality import cluster_coverage, knn_precision_recall, support_components
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.evaluate.metrics import roc_auc
from scatterbird.pipeline.frontend.scattering import Scattering

CENTRES = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 6.0]])
SD = 0.5
BACKGROUNDS = ("pink", "brown", "white", "wind", "rain")


def ms(v) -> str:
    v = np.asarray(v, dtype=float)
    return f"{v.mean():.3f} +- {v.std(ddof=1) if v.size > 1 else 0.0:.3f}"


# -- (a) ------------------------------------------------------------------------------------------------------


def clusters(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    return CENTRES[rng.integers(0, 3, n)] + SD * rng.standard_normal((n, 2))


def part_a(args: argparse.Namespace) -> None:
    configs = [(1, 0.0)] + [(3, float(lam)) for lam in args.lambdas]
    res: dict[tuple[int, float], dict[str, list[float]]] = {c: {} for c in configs}
    for seed in range(args.seeds):
        x = clusters(args.n, seed)
        for K, lam in configs:
            t0 = time.perf_counter()
            ens = fit_gan_ensemble(x, K, lam, steps=args.steps, seed=seed)
            secs = time.perf_counter() - t0
            fake = ens.sample(args.n, seed=seed + 1)
            pr = knn_precision_recall(x, fake)
            cc = cluster_coverage(fake, CENTRES, 3 * SD)
            # per-cluster recall with the true clusters
            lab = np.argmin(((x[:, None] - CENTRES[None]) ** 2).sum(-1), 1)
            rec = [knn_precision_recall(x[lab == c], fake, k=3)["recall"] for c in range(3)]
            row = {"precision": pr["precision"], "recall": pr["recall"], "covered": sum(r >= 0.5 for r in rec),
                   "between": cc["outside"], "spread": ens.parameter_spread(), "seconds": secs}
            for key, v in row.items():
                res[(K, lam)].setdefault(key, []).append(v)
    print(f"\n### (a) Three separated 2-D Gaussians (synthetic), n = {args.n}, {args.steps} steps, "
          f"{args.seeds} seeds (mean +- sd)\n")
    print("| model | lambda | precision | recall | clusters covered (of 3) | mass between clusters | "
          "parameter spread | s per fit |")
    print("|---|---|---|---|---|---|---|---|")
    for K, lam in configs:
        r = res[(K, lam)]
        if K == 1:
            name, lam_s, spread = "single GAN (K=1)", "-", "-"
        else:
            name, lam_s, spread = "ensemble K=3", f"{lam:g}", ms(r["spread"])
        print(f"| {name} | {lam_s} | {ms(r['precision'])} | {ms(r['recall'])} | {ms(r['covered'])} | "
              f"{ms(r['between'])} | {spread} | {np.mean(r['seconds']):.1f} |")


# -- (b) ------------------------------------------------------------------------------------------------------


def clip_features(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled log-scattering features, labels (1 bird) and call type (-1 none) of the synthetic clips."""
    sc = Scattering(FeatureConfig(sample_rate=8000, J=6, Q1=4, threshold="none"))
    rng = np.random.default_rng(12345)
    feats, y, kind = [], [], []
    n_bird = args.per_kind * len(args.kinds)
    for i in range(2 * n_bird):
        bird = i < n_bird
        k = i % len(args.kinds) if bird else -1
        x, _, _ = make_clip(2.0, 8000, hasbird=bird, snr_db=float(rng.uniform(-10, 5)),
                            background_kind=str(rng.choice(BACKGROUNDS)),
                            n_events=int(rng.integers(1, 3)), kinds=(args.kinds[k],) if bird else ("chirp",),
                            rng=int(rng.integers(2**31)))
        S = sc.whole(x).S
        feats.append(np.concatenate([S.mean(1), S.max(1)]))
        y.append(int(bird))
        kind.append(k)
    return np.array(feats), np.array(y), np.array(kind)


def pca(F: np.ndarray, dims: int) -> np.ndarray:
    Z = (F - F.mean(0)) / (F.std(0) + 1e-8)
    _, _, Vt = np.linalg.svd(Z, full_matrices=False)
    return Z @ Vt[:dims].T


def logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """Weighted L2 logistic regression (weights w sum to 1 per class); returns (coef..., bias)."""
    Xb = np.hstack([X, np.ones((X.shape[0], 1))])
    s = 2 * y - 1

    def f(beta):
        m = s * (Xb @ beta)
        loss = np.sum(w * np.logaddexp(0, -m)) + 0.5 * l2 * beta[:-1] @ beta[:-1] / len(y)
        g = -(Xb.T @ (w * s * (1 / (1 + np.exp(m))))) + np.r_[l2 * beta[:-1] / len(y), 0]
        return loss, g

    return minimize(f, np.zeros(Xb.shape[1]), jac=True, method="L-BFGS-B").x


def nn_score(X: np.ndarray, y: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Nearest-neighbour score: distance to the nearest negative minus distance to the nearest positive."""
    d = np.sqrt(((Q[:, None] - X[None]) ** 2).sum(-1))
    return d[:, y == 0].min(1) - d[:, y == 1].min(1)


def balanced(y: np.ndarray) -> np.ndarray:
    """Weights giving each class half of the total weight."""
    return np.where(y == 1, 0.5 / max(1, (y == 1).sum()), 0.5 / max(1, (y == 0).sum()))


def part_b(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    F, y, kind = clip_features(args)
    X = pca(F, args.dims)
    t_feat = time.perf_counter() - t0
    n = len(y)
    comps = support_components(X[y == 1])
    # how well the pieces of support match the call types: share of each piece's clips of its main type
    kb = kind[y == 1]
    purity = [np.bincount(kb[comps == c]).max() / (comps == c).sum() for c in range(comps.max() + 1)]
    methods = ["none", "jitter", "gan K=1", "gan K=3 lambda=0", f"gan K=3 lambda={args.aug_lambda:g}"]
    res: dict[tuple[int, str], list[float]] = {}
    fit_s: list[float] = []
    for seed in range(args.aug_seeds):
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        test, train = perm[: n // 2], perm[n // 2:]
        for n_lab in args.labels:
            pos = rng.choice(train[y[train] == 1], n_lab, replace=False)
            neg = rng.choice(train[y[train] == 0], n_lab, replace=False)
            Xl, yl = X[np.r_[pos, neg]], np.r_[np.ones(n_lab), np.zeros(n_lab)].astype(int)
            n_aug = 5 * n_lab
            for m in methods:
                if m == "none":
                    extra = np.zeros((0, X.shape[1]))
                elif m == "jitter":
                    sd = X[pos].std(0)
                    extra = X[pos][rng.integers(0, n_lab, n_aug)] + 0.5 * sd * rng.standard_normal((n_aug, X.shape[1]))
                else:
                    K = 1 if "K=1" in m else 3
                    lam = 0.0 if (K == 1 or m.endswith("=0")) else args.aug_lambda
                    t1 = time.perf_counter()
                    ens = fit_gan_ensemble(X[pos], K, lam, steps=args.aug_steps, batch=64, seed=seed)
                    fit_s.append(time.perf_counter() - t1)
                    extra = ens.sample(n_aug, seed=seed + 7)
                Xa = np.vstack([Xl, extra])
                ya = np.r_[yl, np.ones(len(extra), dtype=int)]
                beta = logistic(Xa, ya, balanced(ya))
                score = np.hstack([X[test], np.ones((len(test), 1))]) @ beta
                res.setdefault((n_lab, m), []).append(roc_auc(y[test], score))
                res.setdefault((n_lab, m, "nn"), []).append(roc_auc(y[test], nn_score(Xa, ya, X[test])))
    print(f"\n### (b) Augmentation with GAN samples (synthetic clips: call types {', '.join(args.kinds)}, "
          f"{args.per_kind} bird clips per type + {args.per_kind * len(args.kinds)} bird-free; features: pooled "
          f"log scattering -> PCA {args.dims} dims; {args.aug_seeds} seeds; test = {n // 2} clips)\n")
    print(f"Bird features: {len(purity)} connected pieces of support (k-NN balls, k = 3; sizes "
          f"{np.bincount(comps[comps >= 0]).tolist()}, {int((comps < 0).sum())} tail points) for "
          f"{len(args.kinds)} call types; share of each piece's main call type {np.round(purity, 2).tolist()}. Features {t_feat:.0f} s; one augmenter fit "
          f"{np.mean(fit_s) if fit_s else 0:.1f} s ({args.aug_steps} steps).\n")
    for tag, name in (((), "logistic regression"), (("nn",), "nearest-neighbour score")):
        print(f"\n{name}: test ROC AUC\n")
        print("| labelled birds (+ as many bird-free) | " + " | ".join(methods) + " |")
        print("|---" * (len(methods) + 1) + "|")
        for n_lab in args.labels:
            print(f"| {n_lab} | " + " | ".join(ms(res[(n_lab, m, *tag)]) for m in methods) + " |")
        for n_lab in args.labels:
            base = np.array(res[(n_lab, "none", *tag)])
            diffs = {m: np.array(res[(n_lab, m, *tag)]) - base for m in methods[1:]}
            print(f"\nAUC change vs none, {name}, {n_lab} labels (paired over seeds, mean +- sd): "
                  + "; ".join(f"{m}: {d.mean():+.3f} +- {d.std(ddof=1) if d.size > 1 else 0:.3f}"
                              for m, d in diffs.items()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.01, 0.1, 1.0, 10.0, 100.0])
    ap.add_argument("--kinds", nargs="+", default=["trill", "harmonic", "buzz"])
    ap.add_argument("--per-kind", type=int, default=80)
    ap.add_argument("--dims", type=int, default=4)
    ap.add_argument("--labels", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--aug-steps", type=int, default=800)
    ap.add_argument("--aug-lambda", type=float, default=0.1)
    ap.add_argument("--aug-seeds", type=int, default=5, help="seeds of part (b)")
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.n, args.steps, args.lambdas = 2, 200, 100, [0.0, 10.0]
        args.per_kind, args.labels, args.aug_steps, args.aug_seeds = 10, [5], 50, 2
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if not args.skip_a:
        part_a(args)
    if not args.skip_b:
        part_b(args)
    print(f"\nTotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
