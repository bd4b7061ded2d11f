"""Real-time factor of scatterbird's scattering front end vs kymatio's own Scattering1D, same audio, same run.

    .venv/bin/python benchmarks/bench_scattering.py [--seconds 120] [--J 9] [--q1 8] [--q2 1] [--threads 2]
        [--threshold risk]

Both transforms get the same synthetic bird-like audio at 22,050 Hz. kymatio (torch frontend) processes it
in 2**16-sample chunks, each one call (its usual use on long audio; chunk borders are not stitched, so it
does slightly less work than a streamed transform). Ours streams it with the margins that make chunked ==
whole. Real-time factor = audio seconds / wall seconds. The operation-count floor counts the complex
multiply-adds of the FFT products and the FFTs themselves (5 N log2 N flops per complex FFT of length N).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time

import numpy as np
import torch

from scatterbird.data.synthetic import make_clip  # noqa: E402
from scatterbird.pipeline.config import FeatureConfig  # noqa: E402
from scatterbird.pipeline.frontend.scattering import Scattering  # noqa: E402


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _band_bins(b) -> int:
    """Spectrum bins a band multiplies (its filters' supports, not the full output band)."""
    if b.segments is not None:
        return sum(w.shape[0] for pieces in b.segments for _, _, w in pieces)
    return int((b.weight[..., 0] if b.half else b.weight).ne(0).sum())


def flop_floor(sc: Scattering, n_samples: int) -> float:
    """Flops of a streamed transform of n_samples: the FFTs on kymatio's subsampling grid (5 N log2 N per
    complex FFT of length N, half that for a real one) and 6 per complex product over the bins where the
    filters live; thresholding adds its rule-filter FFTs and products. Counted per chunk, times chunks."""
    n = sc.fft_size
    chunks = math.ceil(n_samples / sc.core)
    cfft = lambda m: 5 * m * math.log2(max(m, 2))  # noqa: E731
    rfft = lambda m: 0.5 * cfft(m)  # noqa: E731
    bank = sc._bank(n)
    lt = sc.log2_T
    total = cfft(n) + rfft(n) + 6 * _band_bins(bank.phi0) + cfft(n >> lt)  # X, |x| -> order 0
    for gi, g in enumerate(bank.groups):
        m1 = n >> g.k
        G = len(g.index)
        total += 6 * _band_bins(bank.psi1[gi]) + G * (cfft(m1) + rfft(m1))  # U1, then |U1| -> spectrum
        if sc._thresholder is not None and sc._thresholder.rule1 is not None:
            rule = sc._thresholder.rule1.band(n, list(g.index), g.k)
            total += 6 * _band_bins(rule) + G * cfft(m1)  # the rule coefficients
        total += G * (6 * _band_bins(bank.phi1[gi]) + cfft(m1 >> max(lt - g.k, 0)))  # S1
        for p in bank.plan2[gi] if bank.plan2 else []:
            m2 = m1 >> p.k2
            P = G * len(p.n2s)
            total += 6 * G * _band_bins(p.psi) + P * (cfft(m2) + rfft(m2))  # U2, |U2| -> spectrum
            total += P * (6 * _band_bins(p.phi) + cfft(m2 >> max(lt - g.k - p.k2, 0)))  # S2
    return total * chunks


def rss_of_mode(threshold: str, seconds: float, threads: int) -> float:
    """Peak RSS (MB) of a fresh process that imports the pipeline and streams ``seconds`` of audio."""
    code = (
        "import numpy as np, torch; torch.set_num_threads(%d)\n"
        "from scatterbird import FeatureConfig, Scattering\n"
        "x = np.random.default_rng(0).standard_normal(int(%f * 22050)).astype(np.float32) * 0.05\n"
        "sc = Scattering(FeatureConfig(threshold=%r))\n"
        "for _ in sc.stream(x[i : i + 22050] for i in range(0, x.size, 22050)): pass\n"
        "print(int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024)\n"
    ) % (threads, seconds, threshold)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--J", type=int, default=9)
    ap.add_argument("--q1", type=int, default=8)
    ap.add_argument("--q2", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threshold", default="risk", help="thresholding mode timed beside 'none' (default %(default)s)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sr = 22050
    modes = ["none"] + ([args.threshold] if args.threshold != "none" else [])
    # each in a fresh process, reporting its own address space's peak (VmHWM): ru_maxrss would carry this
    # process's peak across fork and exec
    rss = {m: rss_of_mode(m, 60.0, args.threads) for m in modes}
    x, _, _ = make_clip(args.seconds, sr, hasbird=True, snr_db=5, background_kind="pink", n_events=20, rng=0)
    block = sr  # 1 s blocks, as the audio reader delivers them
    blocks = [x[i : i + block] for i in range(0, x.size, block)]
    fronts = {m: Scattering(FeatureConfig(sample_rate=sr, J=args.J, Q1=args.q1, Q2=args.q2, threshold=m)) for m in modes}
    for sc in fronts.values():  # build filters once (cached), as a long batch would
        list(sc.stream(blocks[: max(1, int(2 * sc.fft_size / sr))]))

    from kymatio.scattering1d.frontend.torch_frontend import ScatteringTorch1D

    chunk = 2**16
    kym = ScatteringTorch1D(J=args.J, shape=chunk, Q=(args.q1, args.q2))
    xt = torch.from_numpy(np.pad(x, (0, (-x.size) % chunk)).reshape(-1, chunk))

    def run_kym():
        with torch.no_grad():
            for row in xt:
                kym(row)

    run_kym()
    # interleaved repeats, best of each: load changes on a shared machine hit every transform alike
    best = {name: math.inf for name in ["kymatio"] + modes}
    for _ in range(args.repeats):
        best["kymatio"] = min(best["kymatio"], best_of(run_kym, 1))
        for m, sc in fronts.items():
            best[m] = min(best[m], best_of(lambda: [None for _ in sc.stream(blocks)], 1))

    from scatterbird.pipeline.frontend.scattering import concatenate

    print(f"audio: {args.seconds:.0f} s at {sr} Hz; J={args.J} Q=({args.q1},{args.q2}); "
          f"{fronts['none'].n_channels} channels; torch threads={args.threads}; best of {args.repeats}")
    print(f"{'transform':<38}{'wall s':>8}{'x real time':>13}{'vs kymatio':>12}{'GFLOP floor':>13}{'GFLOP/s':>9}"
          f"{'peak RSS MB':>13}")
    t_kym = best["kymatio"]
    print(f"{'kymatio Scattering1D (torch, 2^16)':<38}{t_kym:>8.2f}{args.seconds / t_kym:>13.1f}{1.0:>12.2f}")
    for m, sc in fronts.items():
        t = best[m]
        flops = flop_floor(sc, x.size)
        print(f"{'scatterbird streamed, threshold=' + m:<38}{t:>8.2f}{args.seconds / t:>13.1f}{t_kym / t:>12.2f}"
              f"{flops / 1e9:>13.2f}{flops / t / 1e9:>9.2f}{rss[m]:>13.0f}")
    for m, sc in fronts.items():
        # streamed == whole on the first 15 s (one FFT over a long odd-sized buffer is slow)
        excerpt = x[: 15 * sr]
        streamed_S = concatenate(list(sc.stream([excerpt[i : i + block] for i in range(0, excerpt.size, block)]))).S
        max_diff = float(np.abs(streamed_S - sc.whole(excerpt).S).max())
        print(f"threshold={m}: streamed vs whole-signal, max |difference| of log features {max_diff:.2e} "
              f"({streamed_S.shape[0]} channels x {streamed_S.shape[1]} frames; {sc.fft_size}-sample chunks, "
              f"margin {sc.margin})")
    print("GFLOP floor: the FFTs on kymatio's subsampling grid plus the products over the filters' supports "
          "(benchmarks/bench_scattering.py:flop_floor); peak RSS: a fresh process streaming 60 s")


if __name__ == "__main__":
    main()
