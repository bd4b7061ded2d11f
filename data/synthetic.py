"""Synthetic bird-like sounds with known truth, over realistic backgrounds, and Bird-Audio-Detection-style
datasets made of them.

Everything is deterministic given a seed. Bird sounds: FM chirps (up/down sweeps), trills (fast repeated
notes), harmonic stacks with vibrato. Backgrounds: white, pink and brown noise, rain (random decaying
impulses over a hiss), wind (low-passed noise with slow gusts). SNR is the ratio, in dB, of the bird
component's power over its events to the background's power over the clip.

From the command line (``--help`` for the options)::

    python -m scatterbird.data.synthetic dataset OUTDIR -n 200      # a Bird Audio Detection style folder
    python -m scatterbird.data.synthetic clip dawn.wav --snr 5      # one clip; its true events on stdout
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

# scipy.signal is imported in the functions that use it: it loads scipy.stats and more, and every scatterbird
# command imports this module (through the dataset manifests), `detect`'s worker processes included.

BIRD_KINDS = ("chirp", "trill", "harmonic")
BACKGROUNDS = ("white", "pink", "brown", "rain", "wind")


@dataclass(frozen=True)
class Event:
    """A bird sound in a clip: start and end in seconds, and its kind."""

    start: float
    end: float
    kind: str
    f_low: float
    f_high: float


def _envelope(n: int) -> np.ndarray:
    """Smooth attack/decay (Tukey) so that calls have no clicks."""
    from scipy import signal

    return signal.windows.tukey(n, alpha=0.3) if n > 2 else np.ones(n)


def chirp_call(sr: int, rng: np.random.Generator, duration: float | None = None) -> tuple[np.ndarray, float, float]:
    """An FM sweep between 1.5 and 9 kHz (bounded by Nyquist), up or down; returns (wave, f_low, f_high)."""
    from scipy import signal

    d = duration or float(rng.uniform(0.08, 0.4))
    top = min(9000.0, 0.45 * sr)
    f0, f1 = sorted(rng.uniform(1500.0, top, size=2))
    if rng.random() < 0.5:
        f0, f1 = f1, f0
    t = np.arange(int(d * sr)) / sr
    w = signal.chirp(t, f0=f0, f1=f1, t1=d, method="quadratic" if rng.random() < 0.5 else "linear")
    return (w * _envelope(t.size)).astype(np.float32), min(f0, f1), max(f0, f1)


def trill_call(sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """8-25 short down-sweeping notes at 10-25 notes per second."""
    from scipy import signal

    n_notes = int(rng.integers(8, 26))
    rate = float(rng.uniform(10, 25))
    note_d = 0.6 / rate
    top = min(8000.0, 0.45 * sr)
    fc = float(rng.uniform(2000.0, top - 1000.0))
    bw = float(rng.uniform(300.0, 1200.0))
    gap = int(sr / rate)
    out = np.zeros(gap * n_notes + int(note_d * sr), dtype=np.float32)
    t = np.arange(int(note_d * sr)) / sr
    note = signal.chirp(t, f0=fc + bw / 2, f1=fc - bw / 2, t1=note_d) * _envelope(t.size)
    for i in range(n_notes):
        out[i * gap : i * gap + note.size] += note.astype(np.float32)
    return out, fc - bw / 2, fc + bw / 2


def harmonic_call(sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """A harmonic stack (f0 0.8-3 kHz, 2-4 harmonics decaying) with sinusoidal vibrato, 0.2-0.8 s."""
    d = float(rng.uniform(0.2, 0.8))
    f0 = float(rng.uniform(800.0, min(3000.0, 0.1 * sr)))
    n_h = int(rng.integers(2, 5))
    t = np.arange(int(d * sr)) / sr
    vib = 1.0 + 0.04 * np.sin(2 * np.pi * rng.uniform(4, 12) * t)
    phase = 2 * np.pi * np.cumsum(f0 * vib) / sr
    w = sum((0.6**h) * np.sin((h + 1) * phase) for h in range(n_h) if (h + 1) * f0 * 1.05 < 0.45 * sr)
    return (np.asarray(w) * _envelope(t.size)).astype(np.float32), f0 * 0.96, f0 * n_h * 1.04


def bird_call(kind: str, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """One call of ``kind`` in ``BIRD_KINDS``."""
    if kind == "chirp":
        return chirp_call(sr, rng)
    if kind == "trill":
        return trill_call(sr, rng)
    if kind == "harmonic":
        return harmonic_call(sr, rng)
    raise ValueError(f"unknown bird sound kind {kind!r}; choose from {BIRD_KINDS}")


def _colored(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit variance."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    spec /= f ** (exponent / 2)
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-12)


def background(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance background noise of ``kind`` in ``BACKGROUNDS``, ``n`` samples."""
    from scipy import signal

    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _colored(n, 1.0, rng)
    elif kind == "brown":
        x = _colored(n, 2.0, rng)
    elif kind == "rain":
        x = 0.3 * _colored(n, 0.5, rng)
        n_drops = int(rng.uniform(20, 80) * n / sr)
        pos = rng.integers(0, n, size=n_drops)
        decay = np.exp(-np.arange(int(0.004 * sr)) / (0.0008 * sr))
        drops = np.zeros(n)
        drops[pos] = rng.standard_normal(n_drops) * rng.uniform(1, 5, size=n_drops)
        drops = signal.fftconvolve(drops, decay * rng.standard_normal(decay.size), mode="same")
        b, a = signal.butter(2, min(0.99, 1000 / (sr / 2)), "highpass")
        x = x + signal.lfilter(b, a, drops)
    elif kind == "wind":
        b, a = signal.butter(4, min(0.99, 400 / (sr / 2)), "lowpass")
        x = signal.lfilter(b, a, rng.standard_normal(n))
        gust = 1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * np.arange(n) / sr + rng.uniform(0, 6.3))
        x = x * gust
    else:
        raise ValueError(f"unknown background {kind!r}; choose from {BACKGROUNDS}")
    return (x / (np.std(x) + 1e-12)).astype(np.float32)


def make_clip(
    duration: float = 10.0,
    sr: int = 22050,
    *,
    hasbird: bool,
    snr_db: float = 0.0,
    background_kind: str = "pink",
    n_events: int | None = None,
    kinds: Sequence[str] = BIRD_KINDS,
    noise_level: float = 0.05,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, list[Event], np.ndarray]:
    """One clip with known truth.

    Parameters
    ----------
    duration, sr : float, int
        Length in seconds and sample rate in Hz.
    hasbird : bool
        Whether to add bird calls.
    snr_db : float
        Bird power over its events relative to the background power, in dB.
    background_kind : str
        One of ``BACKGROUNDS``.
    n_events : int, optional
        Number of calls (default: 1-4 at random).
    noise_level : float
        Background RMS amplitude.
    rng : Generator or int, optional

    Returns
    -------
    mix : ndarray, float32, shape (n,)
        The clip, peak-limited to 0.99.
    events : list of Event
    clean : ndarray, float32, shape (n,)
        The bird component alone (zeros without birds), on the same scale as ``mix``.
    """
    rng = np.random.default_rng(rng)
    n = int(round(duration * sr))
    noise = background(background_kind, n, sr, rng) * noise_level
    clean = np.zeros(n, dtype=np.float32)
    events: list[Event] = []
    if hasbird:
        k = int(n_events if n_events is not None else rng.integers(1, 5))
        active = np.zeros(n, dtype=bool)
        for _ in range(k):
            kind = str(rng.choice(list(kinds)))
            call, flo, fhi = bird_call(kind, sr, rng)
            call = call[: n - 1]
            start = int(rng.integers(0, max(1, n - call.size)))
            clean[start : start + call.size] += call
            active[start : start + call.size] = True
            events.append(Event(start / sr, (start + call.size) / sr, kind, flo, fhi))
        p_bird = float(np.mean(clean[active] ** 2)) if active.any() else 0.0
        p_noise = float(np.mean(noise**2))
        if p_bird > 0:
            clean *= np.sqrt(p_noise * 10 ** (snr_db / 10) / p_bird)
        events.sort(key=lambda e: e.start)
    mix = noise + clean
    peak = float(np.max(np.abs(mix)))
    if peak > 0.99:
        mix *= 0.99 / peak
        clean *= 0.99 / peak
    return mix.astype(np.float32), events, clean.astype(np.float32)


def write_dataset(
    outdir: str | os.PathLike,
    n_clips: int,
    *,
    datasetid: str = "synthetic",
    positive_rate: float = 0.5,
    snr_db: tuple[float, float] = (-5.0, 10.0),
    backgrounds: Sequence[str] = BACKGROUNDS,
    duration: float = 10.0,
    sr: int = 22050,
    seed: int = 0,
    audio_subdir: str = "wav",
    labels_name: str | None = None,
) -> Path:
    """Lay synthetic clips out as a Bird Audio Detection dataset.

    Writes ``OUTDIR/<audio_subdir>/<itemid>.wav`` (mono 16-bit PCM) and a CSV ``itemid,datasetid,hasbird``
    (``OUTDIR/<datasetid>.csv`` unless ``labels_name`` is given), plus ``events.csv`` with the true events.

    Returns
    -------
    Path
        The label CSV.
    """
    import soundfile as sf

    out = Path(outdir)
    (out / audio_subdir).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels_path = out / (labels_name or f"{datasetid}.csv")
    with open(labels_path, "w", newline="") as lf, open(out / "events.csv", "w", newline="") as ef:
        lw, ew = csv.writer(lf), csv.writer(ef)
        lw.writerow(["itemid", "datasetid", "hasbird"])
        ew.writerow(["itemid", "start_s", "end_s", "kind", "f_low_hz", "f_high_hz"])
        for i in range(n_clips):
            itemid = f"{datasetid}_{i:05d}"
            hasbird = bool(rng.random() < positive_rate)
            mix, events, _ = make_clip(
                duration,
                sr,
                hasbird=hasbird,
                snr_db=float(rng.uniform(*snr_db)),
                background_kind=str(rng.choice(list(backgrounds))),
                noise_level=float(rng.uniform(0.01, 0.1)),
                rng=rng,
            )
            sf.write(out / audio_subdir / f"{itemid}.wav", mix, sr, subtype="PCM_16")
            lw.writerow([itemid, datasetid, int(hasbird)])
            for e in events:
                ew.writerow([itemid, f"{e.start:.4f}", f"{e.end:.4f}", e.kind, f"{e.f_low:.1f}", f"{e.f_high:.1f}"])
    return labels_path


# -- command line -----------------------------------------------------------------------------------------
EVENT_COLUMNS = ("start_s", "end_s", "kind", "f_low_hz", "f_high_hz")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m scatterbird.data.synthetic`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m scatterbird.data.synthetic",
        description="Write synthetic bird-like sounds over noise with known truth: a Bird Audio Detection style "
                    "dataset (wav/<itemid>.wav, a label CSV itemid,datasetid,hasbird and events.csv) or one clip.",
    )
    sub = parser.add_subparsers(dest="what", required=True, metavar="{dataset,clip}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--duration", type=float, default=10.0, help="seconds per clip (default %(default)s)")
        p.add_argument("--sr", type=int, default=22050, help="sample rate in Hz (default %(default)s)")
        p.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same audio")

    p = sub.add_parser("dataset", help="a Bird Audio Detection style folder of labelled clips")
    p.add_argument("outdir", help="output folder (created)")
    p.add_argument("-n", "--clips", type=int, default=100, help="number of clips (default %(default)s)")
    p.add_argument("--datasetid", default="synthetic", help="dataset id, item-id prefix and label-file name")
    p.add_argument("--positive-rate", type=float, default=0.5, help="share of clips with birds (default %(default)s)")
    p.add_argument("--snr", type=float, nargs=2, default=(-5.0, 10.0), metavar=("LOW", "HIGH"),
                   help="bird-to-background ratio in dB, drawn per clip in [LOW, HIGH] (default -5 10)")
    p.add_argument("--backgrounds", default=",".join(BACKGROUNDS),
                   help="comma-separated backgrounds to draw from (default %(default)s)")
    common(p)

    p = sub.add_parser("clip", help="one clip; its true events are printed as CSV")
    p.add_argument("output", help="the WAV file to write")
    p.add_argument("--no-bird", action="store_true", help="background only")
    p.add_argument("--snr", type=float, default=0.0, help="bird-to-background ratio in dB (default %(default)s)")
    p.add_argument("--background", choices=BACKGROUNDS, default="pink", help="background (default %(default)s)")
    p.add_argument("--events", type=int, help="number of calls (default: 1-4 at random)")
    common(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 2 bad options or an unwritable output)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.sr < 1000:
        parser.error(f"need --duration > 0 and --sr >= 1000, got {args.duration} and {args.sr}")
    import soundfile as sf

    try:
        if args.what == "dataset":
            backgrounds = [b.strip() for b in args.backgrounds.split(",") if b.strip()]
            unknown = sorted(set(backgrounds) - set(BACKGROUNDS))
            if unknown or not backgrounds:
                parser.error(f"--backgrounds: unknown or none ({', '.join(unknown)}); "
                             f"choose from {', '.join(BACKGROUNDS)}")
            if args.clips < 1 or not 0.0 <= args.positive_rate <= 1.0:
                parser.error(f"need --clips >= 1 and 0 <= --positive-rate <= 1, "
                             f"got {args.clips} and {args.positive_rate}")
            labels = write_dataset(
                args.outdir, args.clips, datasetid=args.datasetid, positive_rate=args.positive_rate,
                snr_db=(min(args.snr), max(args.snr)), backgrounds=backgrounds, duration=args.duration, sr=args.sr,
                seed=args.seed,
            )
            print(f"{args.clips} clip(s) in {Path(args.outdir) / 'wav'}; labels {labels}; "
                  f"true events {Path(args.outdir) / 'events.csv'}")
        else:
            if args.events is not None and args.events < 1:
                parser.error(f"--events must be >= 1, got {args.events}")
            mix, events, _ = make_clip(
                args.duration, args.sr, hasbird=not args.no_bird, snr_db=args.snr, background_kind=args.background,
                n_events=args.events, rng=args.seed,
            )
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            sf.write(args.output, mix, args.sr, subtype="PCM_16")
            w = csv.writer(sys.stdout, lineterminator="\n")
            w.writerow(EVENT_COLUMNS)
            for e in events:
                w.writerow([f"{e.start:.4f}", f"{e.end:.4f}", e.kind, f"{e.f_low:.1f}", f"{e.f_high:.1f}"])
    except OSError as exc:  # an unwritable or full output folder: one line, not a traceback
        print(f"{parser.prog}: error: cannot write {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # soundfile's own errors (e.g. a path it cannot open for writing)
        print(f"{parser.prog}: error: cannot write the audio: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
