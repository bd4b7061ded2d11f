"""The small sample recordings the README's main command runs on, generated on first use.

They are synthetic (made by :mod:`scatterbird.data.synthetic` with fixed seeds), so the repository stays light and every
machine gets the same bytes. Each sample has a known truth, written next to it in ``truth.csv``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from . import user_cache_dir
from .synthetic import make_clip

#: (file name, has bird, SNR dB, background, seed, duration s, sample rate, channels, format)
SAMPLES = (
    ("dawn_chorus_pink.flac", True, 6.0, "pink", 11, 30.0, 44100, 2, "FLAC"),
    ("rain_no_bird.wav", False, 0.0, "rain", 12, 20.0, 48000, 1, "WAV"),
    ("wind_trills.ogg", True, 3.0, "wind", 13, 20.0, 32000, 1, "OGG"),
    ("brown_noise_no_bird.flac", False, 0.0, "brown", 14, 15.0, 22050, 1, "FLAC"),
)


def ensure_samples(directory: Path | None = None) -> Path:
    """Write the sample recordings into ``directory`` if they are missing, and return the folder.

    The default folder is ``samples/`` in the user cache directory (:func:`scatterbird.data.user_cache_dir`),
    never inside the installed package.
    """
    d = Path(directory or user_cache_dir() / "samples")
    d.mkdir(parents=True, exist_ok=True)
    truth = d / "truth.csv"
    if truth.exists() and all((d / s[0]).exists() for s in SAMPLES):
        return d
    rows = []
    for name, hasbird, snr, bg, seed, dur, sr, ch, fmt in SAMPLES:
        mix, events, _ = make_clip(dur, sr, hasbird=hasbird, snr_db=snr, background_kind=bg, n_events=6 if hasbird else 0, rng=seed)
        data = np.stack([mix, mix * 0.8], axis=1) if ch == 2 else mix
        sf.write(d / name, data, sr, format=fmt)
        rows += [(name, f"{e.start:.3f}", f"{e.end:.3f}", e.kind) for e in events]
    with open(truth, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "start_s", "end_s", "kind"])
        w.writerows(rows)
    return d


if __name__ == "__main__":
    print(ensure_samples())
