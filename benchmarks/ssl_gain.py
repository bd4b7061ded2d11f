"""Does the semi-supervised inversion loss help? AUC with few labels plus many unlabeled clips.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ssl_gain.py [--labels 10 30 100] [--seeds 5] [--unlabeled 1000]

A synthetic Bird-Audio-Detection-like set is made with ``data.synthetic`` (all five background kinds, bird
SNR drawn in ``--snr`` dB, background level 0.01-0.1, half the clips with 1-4 calls): a pool of labelled
clips, ``--unlabeled`` unlabeled clips (their labels never used) and a test set. The same network
(:class:`models.inversion.InversionNet`) is trained three ways, for each number of labelled clips and each
seed, with the same number of gradient steps, batch layout (16 labelled + 16 unlabeled), validation split
and early stopping:

* ``CE``: cross-entropy on the labelled clips only;
* ``CE+H``: plus the entropy of the prediction on unlabeled clips (with its warm-up);
* ``inversion``: plus the multiscale reconstruction sum_l ||R^(l) - z^(l)||^2 (the spec's weights).

It prints, per labelled count and loss, the test ROC AUC as mean +- standard deviation over seeds (and
min-max), the paired difference to ``CE`` (same labelled clips, same seed), and the training time per epoch.

To keep the default run near 15 minutes on one core, the clips are 5 s long and the features are
first-order scattering only (63 channels at the default J=9, Q1=8, 22,050 Hz), average-pooled by 2 frames
(108 steps of 46 ms per clip); at most 8 epochs of 32 steps. The features are computed once through the
pipeline's scattering front end (about 0.2 s per clip, ~5 minutes for the 1,600 clips) and cached in
``benchmarks/.cache/``; the training then takes ~10 minutes (three losses). ``--variants`` adds
sensitivity rows the spec leaves open (reconstruction weight x0.1 or x0.01, targets detached).
``--table-from run.json`` reprints the table of a run saved with ``--json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from scatterbird.data.synthetic import BACKGROUNDS, make_clip  # noqa: E402
from scatterbird.models.inversion import InversionDetector  # noqa: E402
from scatterbird.pipeline.config import FeatureConfig  # noqa: E402
from scatterbird.pipeline.detect.windows import pool_sequence  # noqa: E402
from scatterbird.pipeline.frontend.scattering import Scattering  # noqa: E402

VARIANTS = {
    "CE": {"entropy_weight": 0.0, "recon_scale": 0.0},
    "CE+H": {"recon_scale": 0.0},
    "inversion": {},
    # Sensitivity rows, not run by default (--variants ...): the spec leaves these choices open.
    "inv-x0.1": {"recon_scale": 0.1},
    "inv-x0.01": {"recon_scale": 0.01},
    "inv-detach": {"detach_target": True},
}
DEFAULT_VARIANTS = ["CE", "CE+H", "inversion"]


def make_features(
    n: int, seed: int, config: FeatureConfig, duration: float, snr: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic clips -> (features (n, n_frames, n_channels) float32, labels (n,))."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    sc = Scattering(config)
    feats, labels = [], []
    for _ in tqdm(range(n), desc=f"clips (seed {seed})", leave=False):
        hasbird = bool(rng.random() < 0.5)
        mix, _, _ = make_clip(
            duration, config.sample_rate, hasbird=hasbird, snr_db=float(rng.uniform(*snr)),
            background_kind=str(rng.choice(list(BACKGROUNDS))), noise_level=float(rng.uniform(0.01, 0.1)), rng=rng,
        )
        feats.append(sc.whole(mix).S.T)
        labels.append(int(hasbird))
    return np.stack(feats).astype(np.float32), np.array(labels)


def cached_features(name: str, n: int, seed: int, config: FeatureConfig, duration: float, snr, cache: Path):
    key = hashlib.sha256(json.dumps([name, n, seed, config.hash, duration, list(snr)]).encode()).hexdigest()[:16]
    f = cache / f"ssl_gain_{name}_{key}.npz"
    if f.exists():
        with np.load(f) as z:
            return z["X"], z["y"]
    X, y = make_features(n, seed, config, duration, snr)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(f, X=X, y=y)
    return X, y


def pick_labelled(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices, half of each class, drawn with ``seed`` (different clips for each seed)."""
    rng = np.random.default_rng(1000 + seed)
    idx = [rng.permutation(np.nonzero(y == c)[0])[: n // 2 + (n % 2) * c] for c in (0, 1)]
    return np.sort(np.concatenate(idx))


def _paired(rs: list[dict], base: dict[int, float]) -> str:
    """Mean +- std of the paired AUC differences to ``base`` (per seed), and the wins."""
    if not base or not rs:
        return f"{'':>21}"
    d = np.array([r["auc"] - base[r["seed"]] for r in rs])
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    return f"{d.mean():+.3f} +- {sd:.3f} ({int((d > 0).sum())}/{len(d)})"


def print_table(runs: list[dict], args: dict) -> None:
    """The summary table: AUC per labelled count and loss, and paired differences to CE and to CE+H."""
    seeds = sorted({r["seed"] for r in runs})
    print(f"test ROC AUC over {len(seeds)} seeds: mean +- std [min, max]; 'vs CE' / 'vs CE+H' = paired AUC "
          f"difference (same labelled clips, same seed), mean +- std (wins/seeds); {args['epochs']} epochs max x "
          f"{args['steps']} steps, batch 16 labelled + 16 unlabeled, {args['unlabeled']} unlabeled clips, "
          f"{args['test']} test clips")
    print(f"{'labels':>6} {'loss':10} {'AUC':>24}   {'vs CE':>21}   {'vs CE+H':>21} {'s/epoch':>8}")
    for n in args["labels"]:
        base = {v: {r["seed"]: r["auc"] for r in runs if r["n"] == n and r["loss"] == v} for v in ("CE", "CE+H")}
        for name in args["variants"]:
            rs = [r for r in runs if r["n"] == n and r["loss"] == name]
            if not rs:
                continue
            a = np.array([r["auc"] for r in rs])
            t = np.mean([r["s_per_epoch"] for r in rs])
            vs_ce = _paired(rs, base["CE"]) if name != "CE" else f"{'':>21}"
            vs_h = _paired(rs, base["CE+H"]) if name not in ("CE", "CE+H") else f"{'':>21}"
            print(f"{n:6d} {name:10s} {a.mean():.3f} +- {a.std(ddof=1) if len(a) > 1 else 0:.3f} "
                  f"[{a.min():.3f}, {a.max():.3f}]   {vs_ce}   {vs_h} {t:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=int, nargs="+", default=[10, 30, 100])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--unlabeled", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=200, help="labelled pool the labelled clips are drawn from")
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--snr", type=float, nargs=2, default=[-20.0, -5.0], help="bird SNR range in dB")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=32, help="gradient steps per epoch (same for every loss)")
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    ap.add_argument("--order", type=int, default=1, choices=(1, 2))
    ap.add_argument("--pool-frames", type=int, default=2, help="average-pool this many frames (after the cache)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write every run's numbers to this file")
    ap.add_argument("--table-from", metavar="JSON", help="only print the table of a run saved with --json")
    args = ap.parse_args()
    if args.table_from:
        saved = json.loads(Path(args.table_from).read_text())
        print_table(saved["runs"], saved["args"])
        return
    torch.set_num_threads(args.threads)
    from sklearn.metrics import roc_auc_score

    config = FeatureConfig(max_order=args.order)
    cache = Path(__file__).resolve().parent / ".cache"
    t0 = time.perf_counter()
    snr = tuple(args.snr)
    Xp, yp = cached_features("pool", args.pool, 1, config, args.duration, snr, cache)
    Xu, _ = cached_features("unlabeled", args.unlabeled, 2, config, args.duration, snr, cache)
    Xt, yt = cached_features("test", args.test, 3, config, args.duration, snr, cache)
    t_feat = time.perf_counter() - t0
    if args.pool_frames > 1:  # the pipeline's pooling, applied to the cached native frames
        step_s = args.pool_frames / config.frame_rate
        Xp, Xu, Xt = (np.stack([pool_sequence(x, config.frame_rate, step_s) for x in X]) for X in (Xp, Xu, Xt))
    print(f"features: pool {Xp.shape}, unlabeled {Xu.shape}, test {Xt.shape} ({t_feat:.0f} s, config "
          f"{config.hash}, order {args.order}, {args.duration} s clips, SNR {snr[0]:g}..{snr[1]:g} dB, "
          f"frames pooled by {args.pool_frames})", flush=True)
    unl = list(Xu)
    test = list(Xt)

    runs = []
    for n in args.labels:
        for seed in range(args.seeds):
            li = pick_labelled(yp, n, seed)
            for name in args.variants:
                det = InversionDetector(
                    max_epochs=args.epochs, steps_per_epoch=args.steps, warmup_epochs=2, patience=4,
                    random_state=seed, **VARIANTS[name],
                )
                t1 = time.perf_counter()
                det.fit(list(Xp[li]), yp[li], unlabeled=unl)
                wall = time.perf_counter() - t1
                auc = float(roc_auc_score(yt, det.predict_proba(test)))
                per_epoch = float(np.mean([h["seconds"] for h in det.history_]))
                runs.append({"n": n, "seed": seed, "loss": name, "auc": auc, "s_per_epoch": per_epoch,
                             "epochs": len(det.history_), "best_epoch": det.best_epoch_, "fit_s": wall})
                print(f"  n={n:4d} seed={seed} {name:10s} AUC {auc:.3f}  {per_epoch:5.2f} s/epoch  "
                      f"{len(det.history_)} epochs (best {det.best_epoch_})", flush=True)

    print()
    print_table(runs, vars(args))
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
