"""`scatterbird evaluate` over short clips: clips per second with 1 and 2 workers, beside issue 15's target.

    .venv/bin/python benchmarks/bench_evaluate.py [--clips 100] [--duration 10] [--sr 44100] [--workers 1 2]
                                                  [--threads 2] [--model MODEL.pt] [--workdir DIR] [--cold]

``--clips`` clips of ``--duration`` seconds at ``--sr`` Hz (default: 10 s at 44.1 kHz, as the Bird Audio
Detection challenge's), written in its layout by ``python -m scatterbird.data.synthetic dataset OUTDIR -n N``
(``wav/<itemid>.wav`` and a label CSV), go through the real command (``scatterbird evaluate --dataset
synthetic=OUTDIR -o OUT --workers W --threads T``, a fresh process each time, no feature cache, so every clip
is decoded, resampled and scattered) with each of ``--workers``.

The detector is the bundled default model when its feature configuration is the pipeline's default
(``FeatureConfig()``); otherwise (e.g. a bundled model trained on an older grid) a small logistic regression on
each channel's mean and maximum (tests/simple_detector.py), trained here on ``--train-clips`` synthetic 10 s
clips with the default features: its scoring costs next to nothing, so the figure measures the pipeline.
``--model`` picks a model file instead.

Two figures per run: clips per second from launch to exit (interpreter and imports included), and clips per
second of the command itself (``cli.main``: model loading, worker start-up, features, scoring, the metrics,
the HTML report and its figures; the imports left out, as a long evaluation amortises them). The target is
judged on the second. The filter cache (``SCATTERBIRD_FILTER_CACHE``, a folder under the work folder) is
warmed by an untimed evaluation of 4 clips first, unless ``--cold``.

At the defaults the run takes under three minutes once evaluate is near its target (today's code, about one
clip per second, takes several minutes: pass ``--clips 20`` for a smoke run).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the small test detector

from scatterbird.pipeline.config import FeatureConfig  # noqa: E402

#: Issue 15's target on 2 cores.
TARGET_CLIPS_PER_S = 10.0
#: Whether the on-disk filter cache exists (issue 15, item 4).
HAS_FILTER_CACHE = importlib.util.find_spec("scatterbird.pipeline.frontend.filter_cache") is not None

# The command in a fresh interpreter, as `python -m scatterbird` runs it (the OpenMP wait policy set before
# torch loads), with the small test detector's kind registered; it writes the seconds of its imports and of
# the command itself to the file named by BENCH_TIMES.
CLI = [
    sys.executable,
    "-c",
    "import json, os, sys, time\n"
    "t0 = time.perf_counter()\n"
    "from scatterbird.pipeline.threads import prefer_passive_wait\n"
    "prefer_passive_wait()\n"
    "import simple_detector\n"
    "from scatterbird import cli\n"
    "t1 = time.perf_counter()\n"
    "rc = cli.main(sys.argv[1:])\n"
    "t2 = time.perf_counter()\n"
    "open(os.environ['BENCH_TIMES'], 'w').write(json.dumps({'imports': t1 - t0, 'command': t2 - t1}))\n"
    "sys.exit(rc)",
]


def run_cli(args: list[str], cache_dir: Path) -> tuple[float, dict, int, str]:
    """Run `scatterbird ARGS` in a fresh process: (wall s launch to exit, its own times, exit code, stderr)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        times_file = Path(tmp.name)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "BENCH_TIMES": str(times_file),
           "SCATTERBIRD_FILTER_CACHE": str(cache_dir)}
    t0 = time.perf_counter()
    proc = subprocess.run([*CLI, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - t0
    text = times_file.read_text().strip()
    times_file.unlink()
    return wall, json.loads(text) if text else {}, proc.returncode, proc.stderr


def choose_model(work: Path, train_clips: int) -> tuple[Path, str]:
    """The bundled model if it uses the default features, else a small detector trained on them."""
    from scatterbird.models.registry import default_model_path, load_detector

    bundled = default_model_path()
    cfg = getattr(load_detector(bundled), "feature_config", None)
    if cfg == FeatureConfig():
        return bundled, "the bundled default model (its features are the default configuration)"
    from simple_detector import train_simple_detector

    path = work / "simple_default_config.pt"
    t0 = time.perf_counter()
    train_simple_detector(path, config=FeatureConfig(), n_clips=train_clips, clip_s=10.0)
    if cfg is None:
        why = "the bundled model has no feature configuration"
    else:
        ours = dataclasses.asdict(FeatureConfig())
        differ = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(cfg).items() if ours.get(k) != v)
        why = f"the bundled model's features differ from the default: {differ}"
    return path, (f"a small logistic-regression detector on the default features, trained here on {train_clips} "
                  f"clips in {time.perf_counter() - t0:.0f} s ({why})")


def subset_labels(labels: Path, out: Path, n: int) -> Path:
    """The first ``n`` rows of a label CSV (the warm-up's dataset)."""
    with open(labels, newline="") as f:
        rows = list(csv.reader(f))
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows[: n + 1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=100, help="clips evaluated (default %(default)s)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per clip (default %(default)s)")
    ap.add_argument("--sr", type=int, default=44100, help="the clips' sample rate (default %(default)s)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="runs (default 1 2)")
    ap.add_argument("--threads", type=int, default=2, help="the command's --threads (default %(default)s)")
    ap.add_argument("--model", help="a trained detector (default: see above)")
    ap.add_argument("--train-clips", type=int, default=8, help="clips the small detector is trained on")
    ap.add_argument("--workdir", help="keep the clips and outputs here (default: a temporary folder)")
    ap.add_argument("--cold", action="store_true", help="no untimed warm-up: the filter cache starts empty")
    args = ap.parse_args()

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    work.mkdir(parents=True, exist_ok=True)
    cache_dir = work / "filter_cache"
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; evaluate --threads {args.threads}")
    data = work / f"bad_{args.clips}x{args.duration:g}s_{args.sr}"
    labels = data / "synthetic.csv"
    if not labels.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "scatterbird.data.synthetic", "dataset", str(data), "-n", str(args.clips),
                        "--duration", str(args.duration), "--sr", str(args.sr)], check=True, stdout=subprocess.DEVNULL)
        print(f"wrote {args.clips} clips of {args.duration:g} s at {args.sr} Hz in {time.perf_counter() - t0:.0f} s")
    model, what = (Path(args.model), f"--model {args.model}") if args.model else choose_model(work, args.train_clips)
    print(f"detector: {what}")
    common = ["--model", str(model), "--threads", str(args.threads), "-q"]

    if not args.cold:
        if HAS_FILTER_CACHE:
            few = subset_labels(labels, work / "warmup.csv", 4)
            wall, _, rc, _ = run_cli(["evaluate", "--audio", str(data / "wav"), "--labels", str(few), "-o",
                                      str(work / "out_warmup"), *common], cache_dir)
            print(f"warm-up (fills the filter cache): 4 clips, {wall:.1f} s wall (exit {rc})")
        else:
            print("note: no filter cache in this checkout (pipeline/frontend/filter_cache.py): every run builds "
                  "its filters")

    rows = []
    for n in args.workers:
        out = work / f"out_workers{n}"
        shutil.rmtree(out, ignore_errors=True)
        wall, times, rc, err = run_cli(["evaluate", "--dataset", f"synthetic={data}", "-o", str(out), "--workers",
                                        str(n), *common], cache_dir)
        if rc not in (0,) or not times:
            print(f"workers={n}: exit {rc}: {err.strip()[-1000:]}")
        auc = None
        if (out / "metrics.json").exists():
            auc = json.loads((out / "metrics.json").read_text())["datasets"]["synthetic"]["roc_auc"]
        rows.append((n, wall, times.get("imports", float("nan")), times.get("command", float("nan")), rc, auc))

    print()
    print(f"{args.clips} clips of {args.duration:g} s at {args.sr} Hz "
          f"({args.clips * args.duration / 60:.1f} min of audio)")
    print()
    print("| workers | wall s (launch to exit) | clips/s | imports s | command s | clips/s of the command "
          "| x real time | AUC | exit | target |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, wall, imports, command, rc, auc in rows:
        rate = args.clips / command
        ok = "met" if rate >= TARGET_CLIPS_PER_S else "not met"
        print(f"| {n} | {wall:.1f} | {args.clips / wall:.2f} | {imports:.1f} | {command:.1f} | {rate:.2f} | "
              f"{args.clips * args.duration / command:.0f} | {'' if auc is None else f'{auc:.3f}'} | {rc} | "
              f">= {TARGET_CLIPS_PER_S:g} clips/s: {ok} |")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
