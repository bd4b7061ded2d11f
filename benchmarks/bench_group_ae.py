"""Group autoencoder (models/spline/group_ae.py): generalisation gap with and without the Lie-group regulariser.

(a) An autoencoder on (C, 5)-frame windows of standardised log-scattering sequences of SYNTHETIC clips
(data/synthetic.py ``make_clip``, bird and no-bird, 8 kHz, J=6, Q1=4, no threshold) is trained on 50, 200 and
1,000 windows with ``group_weight`` 0 (plain) and > 0 (group), several seeds; held-out windows come from other
clips. Printed: train and held-out reconstruction MSE per element, the gap (held-out minus train) and R (the
regulariser's value on the training encodings), mean +- sd over seeds.

(b) (``--detector``) the inversion detector with few labels (40 labelled synthetic clips + unlabelled ones) and
a pre-trained front (``front_pretrain`` none / plain / group): held-out ROC AUC, a few seeds.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_group_ae.py [--quick] [--detector [--no-gap]]
[--weights 0 1 10]``; (a) takes ~3-4 min on one core, (b) ~3 min.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from scatterbird.data.synthetic import make_clip
from scatterbird.models.spline.group_ae import generalisation_gap, sample_windows
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.scattering import Scattering

SR = 8000
WIDTH = 5


def scatter_clips(n: int, seed: int, duration: float = 5.0, snr_db: tuple[float, float] = (-5.0, 10.0)
                  ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(T, C) log-scattering sequences of ``n`` synthetic clips (alternately bird / no bird, bird SNR uniform in
    ``snr_db``), their labels and the first-order channel mask."""
    sc = Scattering(FeatureConfig(sample_rate=SR, J=6, Q1=4, threshold="none"))
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    order = None
    for i in range(n):
        bird = bool(i % 2)
        x, _, _ = make_clip(duration, SR, hasbird=bird, snr_db=float(rng.uniform(*snr_db)),
                            background_kind=str(rng.choice(["pink", "white", "brown"])), rng=rng)
        g = sc.whole(x)
        seqs.append(np.ascontiguousarray(g.S.T, dtype=np.float32))
        labels.append(int(bird))
        order = g.order
    return seqs, np.array(labels), np.asarray(order) == 1


def standardise(train: list[np.ndarray], *others: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Per-channel standardisation with the training frames' statistics."""
    frames = np.concatenate(train, axis=0)
    mean, std = frames.mean(0), np.maximum(frames.std(0), 1e-6)
    return [[(s - mean) / std for s in group] for group in (train, *others)]


def mean_sd(values: list[float]) -> str:
    a = np.asarray(values, dtype=np.float64)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.4f}"


def gap_table(sizes: list[int], seeds: list[int], weights: list[float], n_clips: int, steps: int) -> None:
    t0 = time.perf_counter()
    seqs, _, first = scatter_clips(2 * n_clips, seed=1)
    train_seqs, test_seqs = standardise(seqs[:n_clips], seqs[n_clips:])
    C = train_seqs[0].shape[1]
    test = sample_windows(test_seqs, WIDTH, 1000, seed=99)
    print(f"data: SYNTHETIC clips (data/synthetic.py make_clip, 5 s, {SR} Hz, half with birds), scattering J=6 Q1=4 "
          f"threshold none -> C = {C} channels ({int(first.sum())} first order), windows of {WIDTH} frames; "
          f"train windows from {n_clips} clips, 1000 held-out windows from {n_clips} other clips; "
          f"{steps} Adam steps, latent 16, hidden 64; seeds {seeds}; features {time.perf_counter() - t0:.0f} s\n")
    print("| train windows | group_weight | train MSE | held-out MSE | gap | R (train) | fit s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        for gw in weights:
            rows = []
            for seed in seeds:
                train = sample_windows(train_seqs, WIDTH, n, seed=seed)
                rows.append(generalisation_gap(train, test, group_weight=gw, first_order=first, seed=seed, steps=steps))
            cols = [mean_sd([r[k] for r in rows]) for k in ("train_error", "test_error", "gap", "group")]
            print(f"| {n} | {gw:g} | {' | '.join(cols)} | {np.mean([r['seconds'] for r in rows]):.1f} |", flush=True)


def detector_table(seeds: list[int], n_labelled: int, quick: bool) -> None:
    from sklearn.metrics import roc_auc_score

    from scatterbird.models.inversion import InversionDetector

    # low SNR: at the gap table's -5..10 dB every variant reaches AUC 1 on these clips
    seqs, y, first = scatter_clips(n_labelled + 80 + 80, seed=7, snr_db=(-25.0, -15.0))
    lab, ylab = seqs[:n_labelled], y[:n_labelled]
    unl = seqs[n_labelled : n_labelled + 80]
    test, ytest = seqs[n_labelled + 80 :], y[n_labelled + 80 :]
    pool = 12  # frames averaged per step (~0.1 s), as the bundled model's pool_s
    def pooled(group):
        return [s[: len(s) // pool * pool].reshape(-1, pool, s.shape[1]).mean(1) for s in group]
    lab, unl, test = pooled(lab), pooled(unl), pooled(test)
    print(f"\n(b) inversion detector, SYNTHETIC clips (bird SNR -25..-15 dB): {n_labelled} labelled, {len(unl)} "
          f"unlabelled, {len(test)} held-out clips (frames pooled by {pool}); widths (16, 16), front_channels 16, "
          f"front_kernel 5, front_group_weight 1; seeds {seeds}\n")
    print("| front_pretrain | held-out ROC AUC | fit s |")
    print("|---|---:|---:|")
    for pre in ("off", "none", "plain", "group"):
        aucs, secs = [], []
        for seed in seeds:
            kw = {} if pre == "off" else dict(front_channels=16, front_kernel=5, front_pretrain=pre,
                                               front_first_order=np.flatnonzero(first).tolist())
            det = InversionDetector(widths=(16, 16), max_epochs=6 if quick else 25, random_state=seed, **kw)
            t = time.perf_counter()
            det.fit(lab, ylab, unl)
            secs.append(time.perf_counter() - t)
            aucs.append(roc_auc_score(ytest, det.predict_proba(test)))
        name = "no front (today's network)" if pre == "off" else pre
        print(f"| {name} | {mean_sd(aucs)} | {np.mean(secs):.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: one size, two seeds, few steps")
    ap.add_argument("--detector", action="store_true", help="also (b): the inversion detector's front")
    ap.add_argument("--no-gap", action="store_true", help="skip (a), the generalisation-gap table")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 10.0], help="group weights to compare")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.no_gap:
        pass
    elif args.quick:
        gap_table([50], [0, 1], args.weights, n_clips=6, steps=60)
    else:
        gap_table([50, 200, 1000], [0, 1, 2], args.weights, n_clips=20, steps=500)
    if args.detector:
        detector_table([0, 1] if args.quick else [0, 1, 2], 40, args.quick)


if __name__ == "__main__":
    main()
