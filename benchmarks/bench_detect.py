"""`scatterbird detect` at scale: real-time factor with 1 and 2 workers, and peak memory vs file length, with
issue 15's targets printed beside the figures at the end.

    .venv/bin/python benchmarks/bench_detect.py [--hours 1 | --minutes M] [--long-hours 0.1667 1 10]
                                                [--threads 2] [--model MODEL.pt] [--workdir DIR] [--quick]
                                                [--baseline-seconds 300]

Targets (2 cores, default features): detect end to end on one hour of mixed WAV/FLAC at >= 150x real time;
the main process's peak RSS under 400 MB (10**6 bytes) and flat from a 10 min to a 10 h file (read here as:
the longest file's peak within 10% of the 10 min file's). The real-time target needs the full hour
(``--minutes`` shortens it for a smoke run, where start-up weighs more).

1. **Real-time factor.** ``--hours`` of synthetic audio (bird calls over pink noise) in 12 files, half 16-bit
   WAV at 22,050 Hz, half FLAC at 48,000 Hz (resampled to the pipeline's 22,050 Hz on the way), goes through
   the real command (``scatterbird detect DIR -o OUT --workers N``, a fresh process and a fresh store each
   time; ``--threads`` compute threads, 2 by default) with 1 and with 2 workers. The filter cache
   (``SCATTERBIRD_FILTER_CACHE``, a folder in the work folder) is filled first by an untimed run on a 10 s
   file, where the checkout has one. Real-time factor = wall seconds / audio seconds (below 1: faster than
   real time), timed around the whole command (interpreter and worker start-up included); the ratio of the
   two is the parallel speed-up.
   Beside it: the front end's **operation-count floor** for the collection (``bench_scattering.flop_floor``,
   file by file) and the GFLOP/s that each run achieves end to end; and a **baseline in the same run**: the
   first ``--baseline-seconds`` of the same files decoded and resampled by the same reader and scattered by
   kymatio's own ``Scattering1D`` (torch, float32, 2**16-sample chunks in batches of 8 per call, its
   fastest use; J and Q of the default configuration, its filters built inside the timing as ours are), with
   the ratio of the two speeds. The baseline neither scores nor stores, so it is a lower bound on a
   kymatio-based detector's time.
2. **Peak memory.** One recording of each of ``--long-hours`` (16-bit WAV at 22,050 Hz, written block by
   block) goes through the same command with 1 worker (in-process); the process reports its own peak
   resident set size (VmHWM) on exit (``wait4``'s ru_maxrss would include this benchmark's own peak: Linux
   carries it across fork and exec). A 10 s recording is the baseline of the same run: what the interpreter, torch and the model
   take before any long-file effect. Bounded memory means the long files' peaks stay at the baseline's level.

The features are the default configuration (J=9, Q1=8, Q2=1, second order, 22,050 Hz). Without ``--model``
the detector is a small logistic regression on each channel's mean and maximum (tests/simple_detector.py),
trained here on 12 synthetic 10 s clips: its scoring costs next to nothing, so the numbers measure the
pipeline (decoding, resampling, scattering, windows, store). Pass ``--model`` to time a trained network.

The default run takes a while: the 10 h file is 10 h of audio at the single-worker speed (at 20-40x real
time, 15-30 minutes). ``--quick`` shrinks everything (0.1 h, and 10 min / 1 h files) for a smoke run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the small test detector
sys.path.insert(0, str(ROOT / "benchmarks"))  # bench_scattering.flop_floor

from scatterbird.data.synthetic import background, bird_call  # noqa: E402
from scatterbird.pipeline.config import FeatureConfig  # noqa: E402

#: Issue 15's targets on 2 cores.
TARGET_X_REAL_TIME = 150.0
TARGET_RSS_MB = 400.0  # 10**6 bytes
FLAT_WITHIN = 1.10  # the longest file's peak over the 10 min file's
#: Whether the on-disk filter cache exists (issue 15, item 4).
HAS_FILTER_CACHE = importlib.util.find_spec("scatterbird.pipeline.frontend.filter_cache") is not None
#: The filter cache folder the commands use (set in main, under the work folder).
FILTER_CACHE: Path | None = None

# The command in a fresh interpreter that, on exit, writes its own peak resident set (VmHWM of its address
# space) to the file named by BENCH_HWM. Not ru_maxrss from wait4: Linux carries a process's peak across
# fork and exec, so a child of this (large) benchmark process would report at least this process's peak.
# As `python -m scatterbird` does, the OpenMP wait policy is set before torch loads (simple_detector imports it).
CLI = [
    sys.executable,
    "-c",
    "from scatterbird.pipeline.threads import prefer_passive_wait\n"
    "prefer_passive_wait()\n"
    "import atexit, os, sys, simple_detector\n"
    "from scatterbird import cli\n"
    "def _hwm():\n"
    "    kb = next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]\n"
    "    open(os.environ['BENCH_HWM'], 'w').write(kb)\n"
    "atexit.register(_hwm)\n"
    "sys.exit(cli.main(sys.argv[1:]))",
]


def synth_block(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Pink noise at a field-recording level with a bird call every ~20 s."""
    n = int(round(seconds * sr))
    x = background("pink", n, sr, rng) * 0.02
    for _ in range(max(1, int(seconds / 20))):
        call, _, _ = bird_call(str(rng.choice(["chirp", "trill", "harmonic"])), sr, rng)
        call = call[: n - 1] * 0.05
        at = int(rng.integers(0, max(1, n - call.size)))
        x[at : at + call.size] += call
    return np.clip(x, -0.99, 0.99).astype(np.float32)


def write_long(path: Path, seconds: float, sr: int, seed: int, block_s: float = 60.0) -> None:
    """Write a recording block by block (a 10 h file is never in memory here either)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "FLAC" if path.suffix == ".flac" else "WAV"
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16", format=fmt) as f:
        left = seconds
        while left > 0:
            step = min(block_s, left)
            f.write(synth_block(step, sr, rng))
            left -= step


def make_collection(folder: Path, hours: float, n_files: int = 12) -> float:
    """``n_files`` recordings totalling ``hours``: even ones WAV at 22,050 Hz, odd ones FLAC at 48,000 Hz."""
    folder.mkdir(parents=True, exist_ok=True)
    each = hours * 3600 / n_files
    for i in range(n_files):
        if i % 2:
            write_long(folder / f"site{i % 3}" / f"rec{i:02d}.flac", each, 48000, seed=i)
        else:
            write_long(folder / f"site{i % 3}" / f"rec{i:02d}.wav", each, 22050, seed=i)
    return hours * 3600


def train_model(path: Path) -> None:
    from simple_detector import SimpleDetector

    from scatterbird.data.synthetic import make_clip
    from scatterbird.pipeline.frontend.scattering import Scattering, concatenate

    config = FeatureConfig()
    sc = Scattering(config)
    rng = np.random.default_rng(0)
    seqs, labels = [], []
    for i in range(12):
        x, _, _ = make_clip(10.0, config.sample_rate, hasbird=bool(i % 2), snr_db=5.0, rng=rng)
        seqs.append(concatenate(list(sc.stream([x]))).S.T)  # the streamed path detection uses
        labels.append(i % 2)
    det = SimpleDetector().fit(seqs, labels)
    det.feature_config = config
    det.save(path)


def run_cli(args: list[str]) -> tuple[float, float, int, str]:
    """Run `scatterbird ARGS` in a fresh process: (wall s, its peak RSS MB (10**6 bytes), exit code, stdout).

    The peak is the main process's (local worker processes, with ``--workers N > 1``, are not included).
    """
    with tempfile.NamedTemporaryFile(suffix=".hwm", delete=False) as tmp:
        hwm = Path(tmp.name)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "BENCH_HWM": str(hwm)}
    if FILTER_CACHE is not None:
        env["SCATTERBIRD_FILTER_CACHE"] = str(FILTER_CACHE)
    t0 = time.perf_counter()
    proc = subprocess.run([*CLI, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True)
    wall = time.perf_counter() - t0
    text = hwm.read_text().strip()
    hwm.unlink()
    return wall, float(text) * 1024 / 1e6 if text else float("nan"), proc.returncode, proc.stdout


def span(hours: float) -> str:
    """A length as people say it: '10 min', '1 h'."""
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:g} h"


def kymatio_baseline(folder: Path, seconds: float, batch: int = 8) -> tuple[float, float]:
    """(audio seconds, wall seconds) of decode + resample + kymatio's Scattering1D over the first ``seconds``
    of ``folder``'s files (sorted), in 2**16-sample chunks, ``batch`` chunks per call (one per call pays
    kymatio's per-call overhead ``batch`` times as often), with the default configuration's J and Q."""
    import torch
    from kymatio.scattering1d.frontend.torch_frontend import ScatteringTorch1D

    from scatterbird.pipeline.frontend.audio import stream_audio

    c = FeatureConfig()
    chunk = 2**16
    t0 = time.perf_counter()
    kym = ScatteringTorch1D(J=c.J, shape=chunk, Q=(c.Q1, c.Q2))
    done = 0
    with torch.no_grad():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            pending = np.zeros(0, dtype=np.float32)
            for block in stream_audio(path, c.sample_rate):
                pending = np.concatenate([pending, block])
                while pending.size >= batch * chunk:
                    kym(torch.from_numpy(pending[: batch * chunk].reshape(batch, chunk)))
                    pending = pending[batch * chunk :]
                    done += batch * chunk
                    if done >= seconds * c.sample_rate:
                        return done / c.sample_rate, time.perf_counter() - t0
            if pending.size:  # the file's last chunks, the last one zero-padded, in one call
                rows = -(-pending.size // chunk)
                kym(torch.from_numpy(np.pad(pending, (0, rows * chunk - pending.size)).reshape(rows, chunk)))
                done += pending.size
                if done >= seconds * c.sample_rate:
                    break
    return done / c.sample_rate, time.perf_counter() - t0


def scattering_floor(folder: Path) -> float:
    """The front end's operation-count floor (bench_scattering.flop_floor) summed over ``folder``'s files at
    the pipeline's sample rate."""
    from bench_scattering import flop_floor
    from scatterbird.pipeline.frontend.scattering import Scattering

    c = FeatureConfig()
    sc = Scattering(c)
    total = 0.0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        info = sf.info(str(path))
        total += flop_floor(sc, int(round(info.frames * c.sample_rate / info.samplerate)))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1.0, help="audio for the real-time factor (default 1)")
    ap.add_argument("--minutes", type=float, help="the same in minutes (overrides --hours; for a short run)")
    ap.add_argument("--long-hours", type=float, nargs="*", default=[10 / 60, 1.0, 10.0],
                    help="single-file lengths for the memory part (default 10 min, 1 h, 10 h; none: skip it)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=2, help="detect's --threads (default %(default)s)")
    ap.add_argument("--model", help="a trained detector (default: train the small test detector)")
    ap.add_argument("--workdir", help="keep the audio and stores here (default: a temporary folder)")
    ap.add_argument("--quick", action="store_true", help="0.1 h collection, 10 min and 1 h files")
    ap.add_argument("--baseline-seconds", type=float, default=300.0,
                    help="audio run through decode + kymatio's Scattering1D as the same-run baseline (0: skip)")
    args = ap.parse_args()
    if args.quick:
        args.hours, args.long_hours = 0.1, [10 / 60, 1.0]
    if args.minutes is not None:
        args.hours = args.minutes / 60

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_detect_"))
    work.mkdir(parents=True, exist_ok=True)
    global FILTER_CACHE
    FILTER_CACHE = work / "filter_cache"
    import torch

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; torch threads "
          f"{torch.get_num_threads()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    model = Path(args.model) if args.model else work / "simple_default_config.pt"
    if not model.exists():
        t0 = time.perf_counter()
        train_model(model)
        print(f"trained the small test detector on the default feature config in {time.perf_counter() - t0:.1f} s")
    common = ["--model", str(model), "--window", "10", "--hop", "5", "-q", "--format", "csv",
              "--threads", str(args.threads)]
    if HAS_FILTER_CACHE:
        warm = work / "warmup_10s.wav"
        write_long(warm, 10.0, 22050, seed=98)
        wall, _, rc, _ = run_cli(["detect", str(warm), "-o", str(work / "out_warmup"), *common])
        print(f"warm-up (fills the filter cache {FILTER_CACHE}): a 10 s file in {wall:.1f} s (exit {rc})")
    else:
        print("note: no filter cache in this checkout (pipeline/frontend/filter_cache.py): every run builds its "
              "filters")

    # 1. real-time factor
    coll = work / f"collection_{args.hours * 60:g}min"
    if not coll.exists():
        t0 = time.perf_counter()
        audio_s = make_collection(coll, args.hours)
        print(f"wrote {args.hours:g} h of audio in 12 files (WAV 22.05 kHz + FLAC 48 kHz) in "
              f"{time.perf_counter() - t0:.0f} s")
    audio_s = sum(sf.info(str(p)).duration for p in sorted(coll.rglob("*")) if p.is_file())
    rtf = {}
    for n in args.workers:
        out = work / f"out_workers{n}"
        shutil.rmtree(out, ignore_errors=True)
        wall, rss, rc, text = run_cli(["detect", str(coll), "-o", str(out), "--workers", str(n), *common])
        rtf[n] = wall / audio_s
        print(f"workers={n}: {audio_s / 3600:.3f} h of audio in {wall:.1f} s wall (exit {rc}): "
              f"real-time factor {rtf[n]:.5f} = {1 / rtf[n]:.1f}x real time; main process peak RSS {rss:.0f} MB")
        for line in text.splitlines()[:2]:
            print(f"    {line}")
    if 1 in rtf and len(rtf) > 1:
        for n in rtf:
            if n != 1:
                print(f"speed-up of {n} workers over 1: {rtf[1] / rtf[n]:.2f}x")
    if rtf:
        # the operation-count floor of the scattering alone, file by file (each file's own margins)
        floor = scattering_floor(coll)
        for n, r in rtf.items():
            print(f"workers={n}: scattering floor {floor / 1e9:.1f} GFLOP for the collection "
                  f"({floor / audio_s / FeatureConfig().sample_rate:,.0f} flops per audio sample), "
                  f"{floor / (r * audio_s) / 1e9:.2f} GFLOP/s achieved end to end")
    if args.baseline_seconds > 0 and rtf:
        # kymatio's front end on the same files, decoded and resampled by the same reader, in this run
        kym_s, kym_wall = kymatio_baseline(coll, args.baseline_seconds)
        kym_rtf = kym_wall / kym_s
        print(f"baseline: decode + resample + kymatio Scattering1D (torch, 8 x 2^16-sample chunks per call, its "
              f"filters built in the timing) on the first {kym_s:.0f} s of the collection: {kym_wall:.1f} s wall = "
              f"{1 / kym_rtf:.1f}x real time (no scoring, no store: a lower bound for a kymatio-based detector)")
        for n, r in rtf.items():
            print(f"workers={n}: scatterbird detect is {kym_rtf / r:.2f}x the kymatio baseline's speed")

    # 2. peak memory against file length
    peaks: dict[float, float] = {}
    base_rss = float("nan")
    if not args.long_hours:
        print_targets(rtf, audio_s, peaks, base_rss)
        return
    base = work / "baseline_10s.wav"
    write_long(base, 10.0, 22050, seed=99)
    wall, base_rss, rc, _ = run_cli(["detect", str(base), "-o", str(work / "out_base"), *common])
    print(f"baseline (10 s file): peak RSS {base_rss:.0f} MB")
    for hours in args.long_hours:
        f = work / f"long_{hours:g}h.wav"
        if not f.exists():
            t0 = time.perf_counter()
            write_long(f, hours * 3600, 22050, seed=int(hours * 10))
            print(f"wrote a {span(hours)} WAV ({f.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s")
        out = work / f"out_long_{hours:g}h"
        shutil.rmtree(out, ignore_errors=True)
        wall, rss, rc, _ = run_cli(["detect", str(f), "-o", str(out), *common])
        peaks[hours] = rss
        print(f"{span(hours)} file: peak RSS {rss:.0f} MB ({rss / base_rss:.2f}x the 10 s baseline), "
              f"{wall:.0f} s wall, real-time factor {wall / (hours * 3600):.5f} = {hours * 3600 / wall:.1f}x real "
              f"time (exit {rc})")
        if not args.workdir:
            f.unlink()
    print_targets(rtf, audio_s, peaks, base_rss)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def print_targets(rtf: dict[int, float], audio_s: float, peaks: dict[float, float], base_rss: float) -> None:
    """Issue 15's targets beside the figures of this run, as a markdown table."""
    print()
    print("| target (issue 15, 2 cores) | measured | met |")
    print("|---|---|---|")
    for n, r in rtf.items():
        x = 1 / r
        print(f"| detect on {audio_s / 3600:.3g} h of mixed WAV/FLAC, {n} worker(s): >= {TARGET_X_REAL_TIME:.0f}x "
              f"real time | {x:.1f}x | {'yes' if x >= TARGET_X_REAL_TIME else 'no'} |")
    if peaks:
        worst = max(peaks.values())
        print(f"| peak RSS < {TARGET_RSS_MB:.0f} MB (1 worker, largest over the files) | {worst:.0f} MB "
              f"(10 s file: {base_rss:.0f} MB) | {'yes' if worst < TARGET_RSS_MB else 'no'} |")
        shortest, longest = min(peaks), max(peaks)
        if longest > shortest:
            ratio = peaks[longest] / peaks[shortest]
            print(f"| flat: {span(longest)} peak within {FLAT_WITHIN - 1:.0%} of {span(shortest)} | "
                  f"{peaks[longest]:.0f} / {peaks[shortest]:.0f} MB = {ratio:.3f} | "
                  f"{'yes' if ratio <= FLAT_WITHIN else 'no'} |")


if __name__ == "__main__":
    main()
