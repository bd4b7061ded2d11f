"""Real-time factor of scatterbird's scattering front end vs kymatio's own Scattering1D, same audio, same run,
with each target of issue 15 printed beside the measured figure.

    .venv/bin/python benchmarks/bench_scattering.py [--seconds 120] [--repeats 2] [--threads 2]
        [--threshold risk] [--J 9] [--q1 8] [--q2 1] [--kymatio-batch 8] [--no-rss] [--no-startup]

Both transforms get the same synthetic bird-like audio at 22,050 Hz, in float32, with the same torch thread
count; every time is the best of ``--repeats`` interleaved runs (load on a shared machine hits every
transform alike). Real-time factor = audio seconds / wall seconds.

- **kymatio at its best**: its ``Scattering1D`` (torch frontend) called on batches of ``--kymatio-batch``
  2**16-sample chunks at once, its filters built outside the timing. The old one-chunk-per-call timing is a
  second row; "vs kymatio" divides by the faster of the two. Chunk borders are not stitched, so kymatio does
  slightly less work than a streamed transform.
- **scatterbird**: streamed in 1 s blocks (as the audio reader delivers them) with the margins that make
  chunked == whole, for ``threshold`` none and ``--threshold``, on kymatio's grid
  (``FeatureConfig(grid="kymatio")``) and on the bandwidth-matched grid (``grid="bandwidth"``, the default).
  Filters are built before the timing. For each mode, the distance of the bandwidth grid's coefficients to
  kymatio's grid: per channel ``max_t |S_bw - S_ky| / max_t S_ky`` on ``exp`` of the log features, the
  largest over the channels of each scattering order.
- **Peak RSS**: a fresh process that imports the pipeline (or kymatio) and transforms 60 s (VmHWM).
- **Worker start-up**: a fresh interpreter that imports the pipeline, builds ``Scattering(FeatureConfig())``
  and its filter bank for the streaming buffer and transforms one buffer, timed from launch to exit, with the
  filter cache (``SCATTERBIRD_FILTER_CACHE``, a temporary folder) cold, then warm.

The operation-count floor counts the complex multiply-adds of the band-limited Fourier products and the FFTs
(5 N log2 N flops per complex FFT of length N) on the front end's own grid (:func:`flop_floor`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from scatterbird.data.synthetic import make_clip  # noqa: E402
from scatterbird.pipeline.config import FeatureConfig  # noqa: E402
from scatterbird.pipeline.frontend.scattering import Scattering, concatenate  # noqa: E402

#: Whether this checkout's FeatureConfig has the sampling-grid choice (issue 15, item 1).
HAS_GRID = "grid" in {f.name for f in dataclasses.fields(FeatureConfig)}
#: Whether the on-disk filter cache exists (issue 15, item 4).
HAS_FILTER_CACHE = importlib.util.find_spec("scatterbird.pipeline.frontend.filter_cache") is not None

#: Issue 15's targets on 2 cores: x real time, and x kymatio at its best, per thresholding mode.
TARGET_RT = {"none": 300.0, "risk": 150.0}
TARGET_VS_KYMATIO = {"none": 13.0, "risk": 6.0}
TARGET_STARTUP_S = 1.5

SR = 22050
CHUNK = 2**16  # kymatio's chunk: its usual use on long audio


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _band_bins(b) -> int:
    """Spectrum bins a band multiplies (its filters' supports, not the full output band)."""
    return b.bins


def flop_floor(sc: Scattering, n_samples: int) -> float:
    """Flops of a streamed transform of n_samples: the FFTs on the front end's subsampling grid (5 N log2 N
    per complex FFT of length N, half that for a real one) and 6 per complex product over the bins where the
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


def config_kwargs(args, threshold: str, grid: str | None) -> dict:
    kw = dict(sample_rate=SR, J=args.J, Q1=args.q1, Q2=args.q2, threshold=threshold)
    if grid is not None:
        kw["grid"] = grid
    return kw


def _vmhwm_line() -> str:
    """Source that prints this process's own peak RSS in MB (10**6 bytes) from /proc/self/status (VmHWM)."""
    return ("print(int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) "
            "* 1024 / 1e6)\n")


def _last_float(code: str, env: dict | None = None) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
    return float(out.stdout.strip().splitlines()[-1])


# Each peak in a fresh process, reporting its own address space's peak (VmHWM): ru_maxrss would carry this
# process's peak across fork and exec.
def rss_of_front(kwargs: dict, seconds: float, threads: int, device: str) -> float:
    """Peak RSS (MB) of a fresh process that imports the pipeline and streams ``seconds`` of audio."""
    code = (
        "import numpy as np, torch; torch.set_num_threads(%d)\n"
        "from scatterbird import FeatureConfig, Scattering\n"
        "x = np.random.default_rng(0).standard_normal(int(%f * 22050)).astype(np.float32) * 0.05\n"
        "sc = Scattering(FeatureConfig(**%r), device=%r)\n"
        "for _ in sc.stream(x[i : i + 22050] for i in range(0, x.size, 22050)): pass\n"
    ) % (threads, seconds, kwargs, device) + _vmhwm_line()
    return _last_float(code)


def rss_of_kymatio(args, seconds: float, batch: int) -> float:
    """Peak RSS (MB) of a fresh process that imports kymatio's 1-D torch frontend and scatters ``seconds`` of
    audio in 2**16-sample chunks, ``batch`` per call."""
    code = (
        "import numpy as np, torch; torch.set_num_threads(%d)\n"
        "from kymatio.scattering1d.frontend.torch_frontend import ScatteringTorch1D\n"
        "x = np.random.default_rng(0).standard_normal(int(%f * 22050)).astype(np.float32) * 0.05\n"
        "xt = torch.from_numpy(np.pad(x, (0, (-x.size) %% %d)).reshape(-1, %d)).to(%r)\n"
        "k = ScatteringTorch1D(J=%d, shape=%d, Q=(%d, %d)).to(%r)\n"
        "with torch.no_grad():\n"
        "    for i in range(0, xt.shape[0], %d): k(xt[i : i + %d])\n"
    ) % (args.threads, seconds, CHUNK, CHUNK, args.device, args.J, CHUNK, args.q1, args.q2, args.device,
         batch, batch) + _vmhwm_line()
    return _last_float(code)


STARTUP = """\
import json, time
t0 = time.perf_counter()
import numpy as np, torch
torch.set_num_threads({threads})
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.scattering import Scattering
t1 = time.perf_counter()
sc = Scattering(FeatureConfig())
t2 = time.perf_counter()
sc._bank(sc.fft_size)
t3 = time.perf_counter()
x = np.random.default_rng(0).standard_normal(sc.fft_size).astype(np.float32) * 0.05
sc._transform_buffer(torch.from_numpy(x)[None])
t4 = time.perf_counter()
print(json.dumps(dict(imports=t1 - t0, construct=t2 - t1, bank=t3 - t2, buffer=t4 - t3)))
"""


def worker_startup(threads: int, cache_dir: str) -> dict:
    """Seconds from launching a fresh interpreter to its exit after one transformed buffer, and the parts."""
    env = {**os.environ, "SCATTERBIRD_FILTER_CACHE": cache_dir}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", STARTUP.format(threads=threads)], capture_output=True, text=True,
                         env=env)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(out.stderr.strip()[-2000:])
    parts = json.loads(out.stdout.strip().splitlines()[-1])
    return {"total": wall, **parts}


def grid_distance(S_bw: np.ndarray, S_ky: np.ndarray, order: np.ndarray) -> dict[int, float]:
    """Per scattering order: the largest over its channels of ``max_t |E_bw - E_ky| / max_t E_ky``, with
    ``E = exp(S)`` (the coefficients before the log, plus the log offset)."""
    E_bw, E_ky = np.exp(S_bw.astype(np.float64)), np.exp(S_ky.astype(np.float64))
    per_channel = np.abs(E_bw - E_ky).max(axis=1) / E_ky.max(axis=1)
    return {int(o): float(per_channel[order == o].max()) for o in np.unique(order)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="audio timed (default %(default)s)")
    ap.add_argument("--J", type=int, default=9)
    ap.add_argument("--q1", type=int, default=8)
    ap.add_argument("--q2", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads, both transforms (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs; best of them (default %(default)s)")
    ap.add_argument("--threshold", default="risk", help="thresholding mode timed beside 'none' (default %(default)s)")
    ap.add_argument("--kymatio-batch", type=int, default=8, help="2**16-sample chunks per kymatio call "
                    "(default %(default)s)")
    ap.add_argument("--device", default="cpu", help="where both transforms run (default %(default)s)")
    ap.add_argument("--no-rss", action="store_true", help="skip the fresh-process peak RSS column")
    ap.add_argument("--no-startup", action="store_true", help="skip the worker start-up measurement")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    modes = ["none"] + ([args.threshold] if args.threshold != "none" else [])
    grids = ["kymatio", "bandwidth"] if HAS_GRID else [None]
    fronts = {(m, g): Scattering(FeatureConfig(**config_kwargs(args, m, g)), device=device)
              for m in modes for g in grids}

    x, _, _ = make_clip(args.seconds, SR, hasbird=True, snr_db=5, background_kind="pink", n_events=20, rng=0)
    block = SR  # 1 s blocks, as the audio reader delivers them
    blocks = [x[i : i + block] for i in range(0, x.size, block)]
    for sc in fronts.values():  # build filters before the timing, as a long batch would
        list(sc.stream(blocks[: max(1, int(2 * sc.fft_size / SR))]))

    from kymatio.scattering1d.frontend.torch_frontend import ScatteringTorch1D

    kym = ScatteringTorch1D(J=args.J, shape=CHUNK, Q=(args.q1, args.q2)).to(device)
    xt = torch.from_numpy(np.pad(x, (0, (-x.size) % CHUNK)).reshape(-1, CHUNK)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run_kym(batch: int):
        def run():
            with torch.no_grad():
                for i in range(0, xt.shape[0], batch):
                    kym(xt[i : i + batch] if batch > 1 else xt[i])
            sync()
        return run

    kym_runs = {f"kymatio Scattering1D, {args.kymatio_batch} x 2^16 per call": run_kym(args.kymatio_batch),
                "kymatio Scattering1D, 1 x 2^16 per call": run_kym(1)}
    for run in kym_runs.values():
        run()  # warm-up
    outputs: dict = {}

    def run_front(key):
        def run():
            outputs[key] = list(sc.stream(blocks))
        sc = fronts[key]
        return run

    best = {name: math.inf for name in [*kym_runs, *fronts]}
    for _ in range(args.repeats):
        for name, run in kym_runs.items():
            best[name] = min(best[name], best_of(run, 1))
        for key in fronts:
            best[key] = min(best[key], best_of(run_front(key), 1))
    t_kym = min(best[name] for name in kym_runs)

    rss: dict = {}
    if not args.no_rss:
        for key in fronts:
            try:
                rss[key] = rss_of_front(config_kwargs(args, *key), 60.0, args.threads, args.device)
            except RuntimeError as exc:
                print(f"peak RSS of {key}: failed ({exc})")
        for name, b in zip(kym_runs, (args.kymatio_batch, 1)):
            rss[name] = rss_of_kymatio(args, 60.0, b)

    sc0 = next(iter(fronts.values()))
    print(f"audio: {args.seconds:g} s at {SR} Hz; J={args.J} Q=({args.q1},{args.q2}); {sc0.n_channels} channels; "
          f"torch threads={args.threads}; device {device}; best of {args.repeats}; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if not HAS_GRID:
        print("note: FeatureConfig has no `grid` field in this checkout: one row per mode, on its only grid")
    print()
    print("| transform | wall s | x real time | vs kymatio at its best | GFLOP floor | GFLOP/s | peak RSS MB "
          "| target |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name in kym_runs:
        t = best[name]
        mb = f"{rss[name]:.0f}" if name in rss else ""
        print(f"| {name} | {t:.2f} | {args.seconds / t:.1f} | {t_kym / t:.2f} | | | {mb} | |")
    for key, sc in fronts.items():
        m, g = key
        t = best[key]
        flops = flop_floor(sc, x.size)
        rt, vs = args.seconds / t, t_kym / t
        target = ""
        if m in TARGET_RT:
            ok = rt >= TARGET_RT[m] and vs >= TARGET_VS_KYMATIO[m]
            target = (f">= {TARGET_RT[m]:.0f}x real time and >= {TARGET_VS_KYMATIO[m]:.0f}x kymatio: "
                      f"{'met' if ok else 'not met'}")
        mb = f"{rss[key]:.0f}" if key in rss else ""
        label = f"scatterbird streamed, threshold={m}" + (f", grid={g}" if g else "")
        print(f"| {label} | {t:.2f} | {rt:.1f} | {vs:.2f} | {flops / 1e9:.2f} | {flops / t / 1e9:.2f} | {mb} "
              f"| {target} |")
    print()
    print("GFLOP floor: the FFTs on the front end's own subsampling grid plus the products over the filters' "
          "supports (benchmarks/bench_scattering.py:flop_floor); peak RSS: a fresh process transforming 60 s, "
          "MB = 10^6 bytes")

    if HAS_GRID:
        print()
        print("Distance of the bandwidth grid to kymatio's grid, same audio: per order, the largest over its "
              "channels of max|S_bw - S_ky| / max S_ky (on exp of the log features)")
        print()
        print("| threshold | order 0 | order 1 | order 2 |")
        print("|---|---:|---:|---:|")
        for m in modes:
            S_ky = concatenate(outputs[(m, "kymatio")]).S
            S_bw = concatenate(outputs[(m, "bandwidth")]).S
            if S_ky.shape != S_bw.shape:
                print(f"| {m} | shapes differ: {S_bw.shape} vs {S_ky.shape} | | |")
                continue
            d = grid_distance(S_bw, S_ky, fronts[(m, "kymatio")].order)
            print(f"| {m} | " + " | ".join(f"{d[o]:.2e}" if o in d else "" for o in (0, 1, 2)) + " |")

    print()
    excerpt = x[: int(min(15.0, args.seconds) * SR)]
    for key, sc in fronts.items():
        # streamed == whole on an excerpt (one FFT over a long odd-sized buffer is slow)
        streamed_S = concatenate(list(sc.stream([excerpt[i : i + block] for i in range(0, excerpt.size, block)]))).S
        max_diff = float(np.abs(streamed_S - sc.whole(excerpt).S).max())
        print(f"threshold={key[0]}{', grid=' + key[1] if key[1] else ''}: streamed vs whole-signal, max |difference| "
              f"of log features {max_diff:.2e} ({streamed_S.shape[0]} channels x {streamed_S.shape[1]} frames; "
              f"{sc.fft_size}-sample chunks, margin {sc.margin})")

    if not args.no_startup:
        print()
        print("Worker start-up: a fresh interpreter imports the pipeline, builds Scattering(FeatureConfig()) and "
              "its bank for the streaming buffer, transforms one buffer (seconds, launch to exit)")
        print()
        print("| filter cache | total s | imports | Scattering() | bank | one buffer | target |")
        print("|---|---:|---:|---:|---:|---:|---|")
        with tempfile.TemporaryDirectory(prefix="bench_filter_cache_") as cache:
            states = ["cold", "warm"] if HAS_FILTER_CACHE else ["cold"]
            for state in states:
                s = worker_startup(args.threads, cache)
                ok = "met" if s["total"] <= TARGET_STARTUP_S else "not met"
                print(f"| {state} | {s['total']:.2f} | {s['imports']:.2f} | {s['construct']:.2f} | {s['bank']:.2f} "
                      f"| {s['buffer']:.2f} | <= {TARGET_STARTUP_S} s with a warm cache: "
                      f"{ok if state == 'warm' else '(cold)'} |")
            cached = len(os.listdir(cache))
        if not HAS_FILTER_CACHE:
            print()
            print("note: no filter cache in this checkout (pipeline/frontend/filter_cache.py): cold start only")
        elif not cached:
            print()
            print("note: the cache folder stayed empty: the front end does not use the filter cache yet")


if __name__ == "__main__":
    main()
