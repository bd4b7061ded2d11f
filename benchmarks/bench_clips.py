"""Whole-clip features of short clips: each clip streamed alone (before) against clips scattered in batches.

    .venv/bin/python benchmarks/bench_clips.py [--clips 20] [--threads 2] [--threshold risk]
                                               [--batch-samples 2**19 2**20 2**21] [--workdir DIR]

The clips are Bird Audio Detection style: 10 s, 44.1 kHz mono WAV (``scatterbird.data.synthetic.write_dataset``:
bird calls over noise), scattered with the default :class:`FeatureConfig` (``--threshold`` changes only the
thresholding) in this process with ``--threads`` torch threads, without a feature cache. Paths:

* **per clip** (before): :func:`clip_features.clip_sequence` on each clip, the file streamed through
  ``Scattering.stream`` (one ``fft_size`` buffer or more per clip, whatever its length);
* **batched**: :func:`clip_features.features_job` on jobs of ``CLIPS_PER_JOB`` clips, which reads each job's
  clips whole and scatters them together (:func:`pipeline.frontend.clips.scatter_clips`), once per
  ``--batch-samples`` value (the bound on clips x buffer length per transform call).

Each path first does one clip untimed (its filter banks are built then; the time is printed apart). Printed
per path: clips per second, the ratio to the per-clip path, and the peak resident memory during the timed
part above the resident memory before it (Linux; reset through ``/proc/self/clear_refs``). The batched
results are checked against the per-clip ones (largest log-domain difference).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from scatterbird.data.synthetic import write_dataset
from scatterbird.pipeline import clip_features
from scatterbird.pipeline.clip_features import CLIPS_PER_JOB, clip_sequence, features_job
from scatterbird.pipeline.config import THRESHOLD_MODES, FeatureConfig
from scatterbird.pipeline.frontend.clips import MAX_BATCH_SAMPLES, scatter_clips
from scatterbird.pipeline.frontend.features import scattering_for


def _status(key: str) -> int | None:
    """A ``/proc/self/status`` field in MB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the present resident size
        return True
    except OSError:
        return False


def measured(fn) -> tuple[float, int | None, object]:
    """(seconds, peak resident MB above the resident size before, result) of ``fn()``."""
    before = _status("VmRSS")
    peak_ok = _reset_peak()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = _status("VmHWM")
    return dt, (peak - before if peak_ok and peak is not None and before is not None else None), out


def batched(paths: list[Path], config: FeatureConfig, batch_samples: int) -> dict[str, np.ndarray]:
    """The batched path, in jobs as compute_features makes them, with this bound on a transform call."""
    clip_features.scatter_clips = partial(scatter_clips, max_batch_samples=batch_samples)
    try:
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(paths), CLIPS_PER_JOB):
            res = features_job(paths[i : i + CLIPS_PER_JOB], config, None, None)
            if res.failed:
                raise SystemExit(f"batched path failed: {res.failed}")
            found.update({p: s[0] for p, s in res.found.items()})
        return found
    finally:
        clip_features.scatter_clips = scatter_clips


def samples(text: str) -> int:
    """``1048576`` or ``2**20``."""
    base, _, exp = text.partition("**")
    return int(base) ** int(exp) if exp else int(base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--threshold", choices=THRESHOLD_MODES, default=FeatureConfig().threshold)
    ap.add_argument("--batch-samples", type=samples, nargs="+", default=[MAX_BATCH_SAMPLES],
                    help="bounds on clips x buffer length per call (e.g. 2**20); default MAX_BATCH_SAMPLES")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = FeatureConfig(threshold=args.threshold)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        write_dataset(Path(tmp), args.clips + 1, duration=10.0, sr=44100, seed=1)
        paths = sorted((Path(tmp) / "wav").glob("*.wav"))
        warm, paths = paths[0], paths[1:]
        sc = scattering_for(config)
        print(f"{len(paths)} clips of 10 s at 44.1 kHz, {args.threads} threads, threshold {args.threshold!r}, "
              f"{sc.n_channels} channels; streaming buffer {sc.fft_size} samples")
        t_old, _, _ = measured(lambda: clip_sequence(warm, config, sc))
        secs, peak, old = measured(lambda: {str(p): clip_sequence(p, config, sc) for p in paths})
        base = len(paths) / secs
        mb = "n/a" if peak is None else f"{peak} MB"
        print(f"per clip       : {base:6.2f} clips/s  (1.00x)  peak +{mb}  [first clip, banks built: {t_old:.1f} s]")
        for b in args.batch_samples:
            t_new, _, _ = measured(partial(batched, [warm], config, b))
            secs, peak, new = measured(partial(batched, paths, config, b))
            rate = len(paths) / secs
            diff = max(float(np.abs(new[k] - old[k]).max()) for k in old)
            mb = "n/a" if peak is None else f"{peak} MB"
            print(f"batched 2**{np.log2(b):<5.4g}: {rate:6.2f} clips/s  ({rate / base:.2f}x)  peak +{mb}  "
                  f"[first clip, banks built: {t_new:.1f} s; max |diff| vs per clip {diff:.1e}]")


if __name__ == "__main__":
    main()
