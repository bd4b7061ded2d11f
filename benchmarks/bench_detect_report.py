"""`scatterbird report` on a large run: wall time, peak memory and size of the page, for runs of different sizes.

    .venv/bin/python benchmarks/bench_detect_report.py [--files 1000 10000] [--file-minutes 10] [--workdir DIR]

For each size, a results store is written directly (no detection): ``--files`` recordings of
``--file-minutes`` each, scored every 5 s with 10 s windows (default feature configuration), with a few
events per file at random. The 25 highest-scoring events sit in 25 real 60 s WAV files (22,050 Hz), so the
report cuts real clips and scatters them with the default configuration (filter banks built in the timed
process, as a fresh `scatterbird report` does); the other recordings do not exist on disk, which the
report never needs for them. Then ``scatterbird report OUTDIR`` runs in a fresh process (default options:
50 strips, 20 top events, 500 table rows), which reports its own wall time, CPU time (user + system, imports
included: the figure to read on a busy machine) and peak resident set (VmHWM).
The page's cost should not grow with the run beyond reading the store's file and event rows: compare the
sizes' times and memory. Printed: files, windows, events, store size, wall s, CPU s, peak MB,
report.html size, report_files/ size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.detect.store import STORE_NAME, FileResult, ResultsStore, RunParams

N_REAL = 25
REAL_S = 60.0
SR = 22050

#: Runs the report command and prints its wall time, CPU time (imports included) and peak resident set
#: (from /proc, Linux).
CHILD = """
import resource, sys, time
t = time.perf_counter()
from scatterbird import cli
rc = cli.main(["report", sys.argv[1]])
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(f"BENCH {rc} {wall:.3f} {ru.ru_utime + ru.ru_stime:.3f} {hwm / 1024:.1f}")
"""


def build_store(out: Path, n_files: int, minutes: float, rng: np.random.Generator) -> tuple[int, int]:
    """A store of ``n_files`` scored recordings; returns (windows, events) written."""
    out.mkdir(parents=True, exist_ok=True)
    real = out / "audio"
    real.mkdir(exist_ok=True)
    for i in range(N_REAL):
        x = (0.05 * rng.standard_normal(int(REAL_S * SR))).astype(np.float32)
        sf.write(real / f"real{i:02d}.wav", x, SR, subtype="PCM_16")
    config = FeatureConfig()
    params = RunParams("benchmodel000000", "inversion", "/nowhere/model.pt", config.to_json(), config.hash,
                       10.0, 5.0, 0.5)
    n_windows = n_events = 0
    with ResultsStore(out / STORE_NAME, writer=True) as store:
        run, _ = store.open_run(params, package_version="bench")
        for i in range(n_files):
            is_real = i < N_REAL
            path = str(real / f"real{i:02d}.wav") if is_real else f"/site/recorder{i % 40:02d}/rec{i:05d}.flac"
            dur = REAL_S if is_real else minutes * 60
            starts = np.arange(0.0, dur - 10.0 + 1e-9, 5.0)
            scores = rng.beta(1, 6, starts.size)
            k = rng.integers(0, 6)
            events = []
            for s in np.sort(rng.choice(starts.size - 2, size=min(k, starts.size - 2), replace=False)):
                peak = rng.uniform(0.96, 0.999) if is_real else rng.uniform(0.5, 0.95)
                scores[s:s + 2] = peak
                events.append((starts[s], starts[s + 1] + 10.0, peak, starts[s] + 5.0))
            windows = np.column_stack([starts, starts + 10.0, scores])
            store.write_file(run.id, FileResult(
                path=path, size=None, mtime_ns=None, status="done", duration_s=dur, source_rate=SR, channels=1,
                windows=windows, events=np.array(events).reshape(-1, 4), elapsed_s=1.0))
            n_windows += len(windows)
            n_events += len(events)
        store.finish_run(run.id)
    return n_windows, n_events


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--file-minutes", type=float, default=10.0)
    ap.add_argument("--workdir", help="keep the stores here (default: a temporary folder)")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.workdir or tmp)
        print(f"{'files':>7} {'windows':>9} {'events':>7} {'store MB':>8} {'wall s':>7} {'CPU s':>7} {'peak MB':>8} "
              f"{'html KB':>8} {'files MB':>8}")
        for n in args.files:
            out = base / f"run{n}"
            t = time.perf_counter()
            nw, ne = build_store(out, n, args.file_minutes, np.random.default_rng(n))
            built = time.perf_counter() - t
            res = subprocess.run([sys.executable, "-c", CHILD, str(out)], env=env, capture_output=True, text=True,
                                 check=False)
            line = next((s for s in res.stdout.splitlines() if s.startswith("BENCH")), None)
            if line is None:
                sys.exit(f"report failed:\n{res.stdout}\n{res.stderr}")
            _, rc, wall, cpu, peak = line.split()
            print(f"{n:>7} {nw:>9} {ne:>7} {(out / STORE_NAME).stat().st_size / 1e6:>8.1f} {float(wall):>7.1f} {float(cpu):>7.1f} "
                  f"{float(peak):>8.0f} {(out / 'report.html').stat().st_size / 1e3:>8.0f} "
                  f"{du(out / 'report_files') / 1e6:>8.2f}   (store built in {built:.0f} s; rc {rc})")


if __name__ == "__main__":
    main()
