"""Benchmark of the first-order thresholding stage (pipeline/frontend/thresholding.py).

(a) Denoising: synthetic bird-like clips (``data.synthetic.make_clip``) with a known clean version, plus white
    and coloured noise at SNR -10, -5, 0, 5 and 10 dB, ``--draws`` clips each. Every mode thresholds the
    clip's first-order coefficients exactly as the front end does (float32, noise level estimated from the
    noisy clip), the clip is rebuilt through the dual frame (float64), and the mean squared error against
    ``frame.project(clean)`` (the clean clip in the band the filters cover) is reported per mode.
    ``oracle`` is the paper's rule with the clean clip and the true noise level known: the floor the
    plug-in rule would reach with a perfect estimate of the signal term.
(b) Cost: streaming front-end time over ``--cost-seconds`` of audio with and without thresholding,
    measured in the same run (best of ``--reps``).
(c) Frame diagnostics: where the dual Gram rows put their mass (which lags and neighbours the rule uses),
    and what the rule does at the edges of the bank.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_thresholding.py            # 50 draws: ~5 min on a free core
    OMP_NUM_THREADS=1 python benchmarks/bench_thresholding.py --quick    # 5 draws, ~1 min
    OMP_NUM_THREADS=1 python benchmarks/bench_thresholding.py --only-cost
    ... --grid kymatio                                                      # on kymatio's grid (default: bandwidth)
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from scatterbird.data.synthetic import make_clip  # noqa: E402
from scatterbird.pipeline.config import GRIDS, FeatureConfig  # noqa: E402
from scatterbird.pipeline.frontend.scattering import Scattering  # noqa: E402
from scatterbird.pipeline.frontend.thresholding import (  # noqa: E402
    ConvFrame,
    ScatteringThresholder,
    gram_row_profile,
    pipeline_gains,
)

MODES = ("none", "universal-hard", "universal-soft", "risk")
SNRS = (-10, -5, 0, 5, 10)
NOISES = ("white", "pink")
#: Clip length in samples: 2.97 s at 22.05 kHz (a multiple of the noise block).
N_SAMPLES = 2**16


def make_setup(n: int = N_SAMPLES, config: FeatureConfig | None = None) -> dict:
    """Front end, one thresholder per mode (sharing it) and the first-order frame at length ``n``."""
    config = (config or FeatureConfig()).replace(threshold="risk", threshold_order2=False)
    sc = Scattering(config)
    # the risk stage is the front end's own; the others share its filters
    stages = {m: None if m == "none" else ScatteringThresholder(sc, m) for m in MODES if m != "risk"}
    stages["risk"] = sc._thresholder
    return {"scattering": sc, "stages": stages, "frame": ConvFrame.from_scattering(sc, n), "n": n}


def clip_seed(seed: int, noise: str, snr: float, draw: int) -> np.random.Generator:
    return np.random.default_rng([seed, NOISES.index(noise) if noise in NOISES else 99, int(snr) + 100, draw])


def trial(setup: dict, snr: float, noise: str, rng: np.random.Generator, oracle: bool = True) -> dict[str, float]:
    """Mean squared reconstruction error of every mode on one clip."""
    frame: ConvFrame = setup["frame"]
    n = setup["n"]
    sr = setup["scattering"].config.sample_rate
    mix, _, clean = make_clip(n / sr, sr, hasbird=True, snr_db=snr, background_kind=noise, rng=rng)
    target = frame.project(clean)
    coefs = frame.analyse(mix)
    modes = list(setup["stages"])
    out = {}
    for mode, gains in zip(modes, pipeline_gains(mix, [setup["stages"][m] for m in modes], frame)):
        # keeping everything rebuilds tau * mix exactly
        est = frame.project(mix) if mode == "none" else frame.synthesise([c * a for c, a in zip(coefs, gains)])
        out[mode] = float(np.mean((est - target) ** 2))
    if oracle:
        X = np.fft.fft(clean.astype(np.float64))
        c_clean = frame.analyse_spectrum(X)
        kill = [(np.conj(c) * z).real for c, z in zip(c_clean, frame.analyse_spectrum(X, frame.rule_filters))]
        noise_var = np.array([np.mean(np.abs(a - b) ** 2) for a, b in zip(coefs, c_clean)])  # realised E|n|^2
        keep = [kc > nu for kc, nu in zip(kill, frame.rho * noise_var)]
        out["oracle"] = float(np.mean((frame.synthesise([c * a for c, a in zip(coefs, keep)]) - target) ** 2))
    return out


def denoising_table(
    setup: dict, draws: int, snrs=SNRS, noises=NOISES, seed: int = 0, oracle: bool = True, progress: bool = False
) -> dict[tuple[str, float], dict[str, np.ndarray]]:
    """``(noise, snr) -> mode -> errors over draws``."""
    table = {}
    for noise in noises:
        for snr in snrs:
            rows: dict[str, list[float]] = {}
            for d in range(draws):
                for mode, e in trial(setup, snr, noise, clip_seed(seed, noise, snr, d), oracle).items():
                    rows.setdefault(mode, []).append(e)
            table[(noise, snr)] = {m: np.array(v) for m, v in rows.items()}
            if progress:
                print(f"  {noise:>5} {snr:+4.0f} dB done", file=sys.stderr, flush=True)
    return table


def print_table(table) -> None:
    modes = list(next(iter(table.values())))
    print("mean squared error x 1e-4 (in brackets: dB relative to none); +/- is the standard error")
    head = f"{'noise':>6} {'SNR':>5} " + " ".join(f"{m:>22}" for m in modes)
    print(head)
    for (noise, snr), rows in table.items():
        base = rows["none"].mean()
        cells = []
        for m in modes:
            v = rows[m]
            se = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0
            cells.append(f"{v.mean() * 1e4:8.3f}+/-{se * 1e4:5.3f} [{10 * np.log10(v.mean() / base):+5.1f}]")
        print(f"{noise:>6} {snr:+5.0f} " + " ".join(f"{c:>22}" for c in cells))
    print()
    for m in ("none", "universal-hard"):
        wins = [f"{noise} {snr:+.0f}" for (noise, snr), rows in table.items() if rows["risk"].mean() < rows[m].mean()]
        print(f"risk < {m}: {len(wins)}/{len(table)} cells ({', '.join(wins) or 'none'})")


def cost(seconds: float, reps: int, modes=("none", "risk"), grid: str = "bandwidth") -> dict[str, tuple[float, Scattering]]:
    """Best-of-``reps`` streaming time of ``seconds`` of white noise per mode (banks built beforehand)."""
    x = np.random.default_rng(0).standard_normal(int(seconds * 22050)).astype(np.float32) * 0.05
    blocks = [x[i : i + 22050] for i in range(0, x.size, 22050)]
    scs = {m: Scattering(FeatureConfig(threshold=m, grid=grid)) for m in modes}
    for sc in scs.values():
        list(sc.stream(blocks[: max(1, int(2 * sc.fft_size / 22050))]))  # builds the FFT-length banks
    best = {m: np.inf for m in modes}
    for _ in range(reps):
        for m, sc in scs.items():  # interleaved, so that load changes hit every mode alike
            t = time.perf_counter()
            for _part in sc.stream(blocks):
                pass
            best[m] = min(best[m], time.perf_counter() - t)
    return {m: (best[m], scs[m]) for m in modes}


def diagnostics(setup: dict) -> None:
    """Which lags and filters the rule's Gram sums use, and the bank's edges."""
    frame: ConvFrame = setup["frame"]
    sc = setup["scattering"]
    rule = setup["stages"]["risk"].rule1
    xi = sc.psi1_xi * sc.config.sample_rate
    print("dual Gram row of one coefficient: share of its squared mass per neighbouring filter (lag holding 99 %)")
    for k in (0, 5, 9, 10, 30, 55, 60, 61):
        prof = gram_row_profile(frame, k, max_offset=3)
        lag0 = prof.pop("lag0")[0]
        cells = " ".join(f"{d:+d}:{s * 100:5.1f}%({r})" for d, (s, r) in sorted(prof.items()))
        print(f"  filter {k:2d} ({xi[k]:7.1f} Hz, step {frame.steps[k]:3d}): lag 0 alone {lag0 * 100:5.1f}% | {cells}")
    # edges: keep-cost factor relative to a tight frame, and the rule filters' time supports
    f = np.fft.fftfreq(frame.n)
    print("edges: rho * S_hat(xi) (1 where the frame is locally tight), rule-filter half-width (samples), band")
    pos = (f > 0) & frame.band
    band = (f[pos].min() * sc.config.sample_rate, f[pos].max() * sc.config.sample_rate)
    for k in (0, 1, 2, 30, 58, 59, 60, 61):
        i = int(round(sc.psi1_xi[k] * frame.n))
        rho_s = frame.rho[k] * frame.response[i]
        print(f"  filter {k:2d} ({xi[k]:7.1f} Hz): rho*S = {rho_s:6.3f}, taps +/-{rule.half[k]}")
    print(f"  band rebuilt exactly: {band[0]:.1f} .. {band[1]:.0f} Hz")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=50, help="clips per (noise, SNR) cell")
    ap.add_argument("--quick", action="store_true", help="5 draws, 20 s of audio for the cost")
    ap.add_argument("--noise", default=",".join(NOISES), help="comma-separated backgrounds (white,pink,brown,...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", choices=GRIDS, default="bandwidth", help="sampling grid of the front end (default %(default)s)")
    ap.add_argument("--cost-seconds", type=float, default=30.0, help="audio streamed for the cost")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-cost", action="store_true")
    ap.add_argument("--only-cost", action="store_true")
    ap.add_argument("--no-oracle", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.draws, args.cost_seconds, args.reps = 5, 20.0, 2
    torch.set_num_threads(1)

    if not args.only_cost:
        t0 = time.perf_counter()
        setup = make_setup(config=FeatureConfig(grid=args.grid))
        print(f"set-up {time.perf_counter() - t0:.1f} s; clips of {setup['n']} samples, {args.draws} draws per cell\n")
        diagnostics(setup)
        print()
        t0 = time.perf_counter()
        noises = tuple(args.noise.split(","))
        table = denoising_table(
            setup, args.draws, noises=noises, seed=args.seed, oracle=not args.no_oracle, progress=True
        )
        print(f"(a) denoising ({time.perf_counter() - t0:.0f} s)")
        print_table(table)
    if not args.no_cost:
        res = cost(args.cost_seconds, args.reps, ("none", "universal-hard", "risk"), args.grid)
        base = res["none"][0]
        print(f"\n(b) front-end cost, streaming {args.cost_seconds:.0f} s of audio, best of {args.reps}")
        for m, (t, sc) in res.items():
            print(
                f"  {m:>15}: {t:6.2f} s  ({t / args.cost_seconds * 60:5.2f} s per audio minute, x{t / base:4.2f})"
                f"  fft_size {sc.fft_size}, margin {sc.margin}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
