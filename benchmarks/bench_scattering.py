"""Real-time factor of scatterbird's scattering front end vs kymatio's own Scattering1D, same audio, same run.

    .venv/bin/python benchmarks/bench_scattering.py [--seconds 120] [--J 9] [--q1 8] [--q2 1] [--threads 2]

Both transforms get the same synthetic bird-like audio at 22,050 Hz. kymatio (torch frontend) processes it
in 2**16-sample chunks, each one call (its usual use on long audio; chunk borders are not stitched, so it
does slightly less work than a streamed transform). Ours streams it with the margins that make chunked ==
whole. Real-time factor = audio seconds / wall seconds. The operation-count floor counts the complex
multiply-adds of the FFT products and the FFTs themselves (5 N log2 N flops per complex FFT of length N).
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.synthetic import make_clip  # noqa: E402
from pipeline.config import FeatureConfig  # noqa: E402
from pipeline.scattering import Scattering  # noqa: E402


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def flop_floor(sc: Scattering, n_samples: int) -> float:
    """Flops of a streamed transform of n_samples: FFT products and FFTs, per chunk times chunks."""
    n = sc.fft_size
    chunks = math.ceil(n_samples / sc.core)
    fft = lambda m: 5 * m * math.log2(max(m, 2))  # noqa: E731
    bank = sc._bank(n)
    total = fft(n) * 2 + 2 * fft(n >> sc.log2_T)  # input FFT (+ |x| for order 0), order-0 low-pass
    for gi, g in enumerate(bank.groups):
        m1 = n >> g.k
        G = len(g.index)
        total += G * (6 * n + fft(m1) + fft(m1) + 6 * m1 + fft(m1 >> max(sc.log2_T - g.k, 0)))
        for k2, n2s, rows in bank.plan2[gi] if bank.plan2 else []:
            m2 = m1 >> k2
            P = G * len(n2s)
            total += P * (6 * m1 + fft(m2) + fft(m2) + 6 * m2 + fft(m2 >> max(sc.log2_T - g.k - k2, 0)))
    return total * chunks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--J", type=int, default=9)
    ap.add_argument("--q1", type=int, default=8)
    ap.add_argument("--q2", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threshold", default="none")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sr = 22050
    x, _, _ = make_clip(args.seconds, sr, hasbird=True, snr_db=5, background_kind="pink", n_events=20, rng=0)

    config = FeatureConfig(sample_rate=sr, J=args.J, Q1=args.q1, Q2=args.q2, threshold=args.threshold)
    ours = Scattering(config)
    block = sr  # 1 s blocks, as the audio reader delivers them
    blocks = [x[i : i + block] for i in range(0, x.size, block)]
    run_ours = lambda: [None for _ in ours.stream(blocks)]  # noqa: E731
    run_ours()  # build filters once (cached), as a long batch would
    t_ours = best_of(run_ours, args.repeats)

    from kymatio.scattering1d.frontend.torch_frontend import ScatteringTorch1D

    chunk = 2**16
    kym = ScatteringTorch1D(J=args.J, shape=chunk, Q=(args.q1, args.q2))
    xt = torch.from_numpy(np.pad(x, (0, (-x.size) % chunk)).reshape(-1, chunk))

    def run_kym():
        with torch.no_grad():
            for row in xt:
                kym(row)

    run_kym()
    t_kym = best_of(run_kym, args.repeats)

    # Streamed == whole: the largest log-domain difference over every channel and frame.
    from pipeline.scattering import concatenate

    # (on the first 15 s: one FFT over a long odd-sized buffer is slow, and 15 s already spans 3 chunks)
    excerpt = x[: 15 * sr]
    streamed_S = concatenate(list(ours.stream([excerpt[i : i + block] for i in range(0, excerpt.size, block)]))).S
    whole_S = ours.whole(excerpt).S
    max_diff = float(np.abs(streamed_S - whole_S).max())

    flops = flop_floor(ours, x.size)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"audio: {args.seconds:.0f} s at {sr} Hz; J={args.J} Q=({args.q1},{args.q2}); "
          f"{ours.n_channels} channels; torch threads={args.threads}; threshold={args.threshold}")
    print(f"{'transform':<34}{'wall s':>9}{'x real time':>14}")
    print(f"{'kymatio Scattering1D (torch)':<34}{t_kym:>9.3f}{args.seconds / t_kym:>14.1f}")
    print(f"{'scatterbird (streamed)':<34}{t_ours:>9.3f}{args.seconds / t_ours:>14.1f}")
    print(f"ratio scatterbird / kymatio real-time factor: {t_kym / t_ours:.2f}x")
    print(f"operation floor (FFT products + FFTs, streamed): {flops / 1e9:.2f} GFLOP; "
          f"achieved {flops / t_ours / 1e9:.2f} GFLOP/s")
    print(f"streamed vs whole-signal, max |difference| of log features: {max_diff:.2e} "
          f"({streamed_S.shape[0]} channels x {streamed_S.shape[1]} frames, {ours.fft_size}-sample chunks)")
    print(f"peak RSS of this process: {rss:.0f} MB")


if __name__ == "__main__":
    main()
