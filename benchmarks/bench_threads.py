"""`scatterbird features` on twelve 10 s clips, on a quiet machine and beside one busy process, before and after.

    .venv/bin/python benchmarks/bench_threads.py [--clips 12] [--reps 2] [--workdir DIR]

The clips are synthetic (``scatterbird.data.synthetic.write_dataset``: bird calls over noise, 22,050 Hz WAV),
and the command is the real one in a fresh interpreter with the default features (``risk`` thresholding),
timed around the whole process (start-up included). Each configuration runs on a quiet machine and beside a
**busy neighbour**: one single-threaded Python busy loop, started just before the command and stopped just
after it, pinned to no core (the OS places it, as it would any other user's job). Configurations:

* **before**: the behaviour before ``--threads``: ``scatterbird.cli`` imported directly (the old entry point:
  no wait policy is set, so torch's OpenMP threads spin between parallel regions) with as many torch threads
  as cores, which was torch's own default;
* **after**: ``python -m scatterbird features ...`` with no option and no variable: the defaults
  (``OMP_WAIT_POLICY=PASSIVE`` set by the entry point, ``--threads`` = the cores this process may use);
* **after, --threads 1**: the same with one thread, for reference.

``OMP_WAIT_POLICY`` and ``OMP_NUM_THREADS`` are removed from the commands' environment, so that the
configurations differ only as described. The configurations are interleaved, ``--reps`` times, and each
cell is the median. Printed: wall seconds, CPU seconds of the command (its threads' spinning shows here),
and the busy/quiet ratio of each configuration (the goal: at most 1.5 by default).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scatterbird.data.synthetic import write_dataset
from scatterbird.pipeline.threads import available_cores

#: The old entry point: scatterbird.cli imported first, so nothing sets the wait policy before torch loads.
OLD_ENTRY = "import sys; from scatterbird.cli import main; sys.exit(main())"
#: One single-threaded busy process.
BUSY = "while True: pass"


def configurations(cores: int) -> dict[str, list[str]]:
    """Name -> the command line before the ``features`` arguments."""
    py = sys.executable
    return {
        "before": [py, "-c", OLD_ENTRY, "features", "--threads", str(cores)],
        "after": [py, "-m", "scatterbird", "features"],
        "after, --threads 1": [py, "-m", "scatterbird", "features", "--threads", "1"],
    }


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}


def timed(cmd: list[str], env: dict[str, str], busy: bool) -> tuple[float, float]:
    """(wall s, CPU s) of one run of ``cmd``, with a busy neighbour running throughout when ``busy``."""
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        if neighbour is not None:
            time.sleep(0.5)  # the neighbour is running before the command starts
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=12, help="10 s clips (default %(default)s)")
    ap.add_argument("--reps", type=int, default=2, help="runs of each cell; the median is shown (default %(default)s)")
    ap.add_argument("--workdir", help="folder for the clips and outputs (default: a temporary one)")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-threads-"))
    write_dataset(work / "data", args.clips, seed=0)
    clips = work / "data" / "wav"
    cores = available_cores()
    env = clean_env()
    load = os.getloadavg()[0]
    print(f"{args.clips} x 10 s clips, {cores} cores, load average {load:.2f} at the start (a quiet machine is ~0); "
          f"{args.reps} rep(s), medians")

    runs: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    n = 0
    for _ in range(args.reps):
        for name, cmd in configurations(cores).items():
            for busy in (False, True):
                out = work / f"out{n}"
                n += 1
                wall, cpu = timed([*cmd, str(clips), "-o", str(out), "-q"], env, busy)
                shutil.rmtree(out, ignore_errors=True)
                runs.setdefault((name, busy), []).append((wall, cpu))
                print(f"  {name:<20} {'busy' if busy else 'quiet'}: {wall:6.1f} s wall, {cpu:6.1f} s CPU", flush=True)

    def med(name: str, busy: bool, i: int) -> float:
        return statistics.median(r[i] for r in runs[(name, busy)])

    print()
    print("| configuration | quiet s | busy neighbour s | busy / quiet | CPU s quiet / busy |")
    print("|---|---:|---:|---:|---:|")
    for name in configurations(cores):
        q, b = med(name, False, 0), med(name, True, 0)
        print(f"| {name} | {q:.1f} | {b:.1f} | {b / q:.2f} | {med(name, False, 1):.1f} / {med(name, True, 1):.1f} |")
    ref = med("after", False, 0)
    print(f"\nafter, busy vs after, quiet: {med('after', True, 0) / ref:.2f}x; "
          f"before, busy vs after, busy: {med('before', True, 0) / med('after', True, 0):.2f}x")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
