"""Synthetic bird-like sounds with known truth, over realistic backgrounds, and Bird-Audio-Detection-style
datasets made of them.

Everything is deterministic given a seed. Bird sounds (``BIRD_KINDS``): three simple shapes (``SIMPLE_KINDS``:
FM chirps, trills, harmonic stacks with vibrato) and song-like kinds (``SONG_KINDS``): FM notes of several
contours, trills under the rate-bandwidth performance limit, buzzes, harsh harmonic calls through resonances,
and songs sung from a bird's repertoire of syllable types (the model and its sources: docs/synthetic-song.md).
Backgrounds: white, pink and brown noise, rain (random decaying
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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from scatterbird.errors import OptionError

# scipy.signal is imported in the functions that use it: it loads scipy.stats and more, and every scatterbird
# command imports this module (through the dataset manifests), `detect`'s worker processes included.

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


# -- song-like sounds ---------------------------------------------------------------------------------------
# The model and where each range comes from (a paper, or marked as our own choice): docs/synthetic-song.md.

#: Fundamentals are drawn in this band (Hz), typical of passerine song, clamped below Nyquist by `song_band`.
SONG_BAND = (1000.0, 8000.0)
#: No drawn frequency exceeds this share of the sample rate; harmonics above ``HARMONIC_CAP * sr`` are dropped.
F_TOP_SHARE = 0.45
HARMONIC_CAP = 0.46
#: Trill note rates drawn (notes per second).
TRILL_RATES = (5.0, 40.0)
#: The trill performance limit, a bandwidth ceiling falling linearly with rate (after Podos 1997; the two
#: constants are our own choice): bandwidth <= PODOS_BW0 * (1 - rate / PODOS_RATE0).
PODOS_BW0 = 7000.0
PODOS_RATE0 = 50.0
#: Frequency contours of a note: rising, falling, U (down then up), arch (inverted U), flat (whistle).
NOTE_SHAPES = ("up", "down", "U", "arch", "flat")
#: Within-note frequency jitter varies on this many knots per second (own choice: a ~15 ms time scale).
_JITTER_KNOTS_PER_S = 70.0


@dataclass(frozen=True)
class Note:
    """One sound element: a frequency contour and how it is voiced.

    ``f_low``/``f_high`` bound the fundamental's contour (Hz); ``shape`` is one of ``NOTE_SHAPES`` and ``curve``
    its exponent. The source is a sum of harmonics (``harmonics``: amplitudes of f0, 2 f0, ...), or a
    harmonic-rich pulse train of concentration ``pulse`` (> 0), or a band of noise ``noise_bw`` Hz wide that
    follows the contour (> 0). ``formants`` are (centre Hz, bandwidth Hz) resonances; ``am_*`` an amplitude
    modulation (rate Hz, depth 0-1, integer sharpness: sidebands up to sharpness * rate); ``jitter`` the
    relative standard deviation of a slow random frequency perturbation; ``ramp`` the onset/offset in s.
    """

    duration: float
    f_low: float
    f_high: float
    shape: str = "flat"
    curve: float = 1.0
    harmonics: tuple[float, ...] = (1.0,)
    pulse: float = 0.0
    noise_bw: float = 0.0
    formants: tuple[tuple[float, float], ...] = ()
    am_rate: float = 0.0
    am_depth: float = 0.0
    am_sharpness: int = 1
    jitter: float = 0.0
    ramp: float = 0.004


@dataclass(frozen=True)
class Trill:
    """``n_notes`` copies of ``note`` at ``rate`` notes per second, each shifted in frequency by a factor with
    relative spread ``f_spread`` and in level by ``level_spread_db`` (standard deviations)."""

    note: Note
    rate: float
    n_notes: int
    f_spread: float = 0.01
    level_spread_db: float = 1.0


@dataclass(frozen=True)
class Syllable:
    """A syllable type: its notes as (onset in s, note) pairs, and its level in dB relative to the song."""

    parts: tuple[tuple[float, Note], ...]
    level_db: float = 0.0

    @property
    def duration(self) -> float:
        return max(onset + note.duration for onset, note in self.parts)

    @property
    def bandwidth(self) -> float:
        return max(note.f_high - note.f_low for _, note in self.parts)


@dataclass(frozen=True)
class Bird:
    """A synthetic singer: a repertoire of syllable types and a song, the phrases (syllable index, repetitions,
    gap in s between repetitions) sung in order with ``phrase_gap`` s between phrases. ``variation`` is the
    relative spread of frequency, duration and gaps from one rendition to the next."""

    repertoire: tuple[Syllable, ...]
    phrases: tuple[tuple[int, int, float], ...]
    phrase_gap: float
    variation: float = 0.02


def song_band(sr: int) -> tuple[float, float]:
    """The band (Hz) fundamentals are drawn from at sample rate ``sr``: ``SONG_BAND`` below ``F_TOP_SHARE * sr``."""
    hi = min(SONG_BAND[1], F_TOP_SHARE * sr)
    return min(SONG_BAND[0], hi / 3.0), hi


def podos_limit(rate: float) -> float:
    """The widest frequency band (Hz) a trill at ``rate`` notes per second may sweep (the performance limit)."""
    return PODOS_BW0 * max(0.0, 1.0 - rate / PODOS_RATE0)


def _contour(shape: str, u: np.ndarray, curve: float) -> np.ndarray:
    """A frequency contour in [0, 1] over normalised time ``u`` in (0, 1), float32."""
    u = u.astype(np.float32)
    p = np.float32(curve)
    if shape == "up":
        return u**p
    if shape == "down":
        return (1 - u) ** p
    if shape == "arch":
        return np.sin(np.float32(np.pi) * u) ** p
    if shape == "U":
        return 1 - np.sin(np.float32(np.pi) * u) ** p
    if shape == "flat":
        return np.full_like(u, 0.5)
    raise OptionError(f"unknown note shape {shape!r}; choose from {NOTE_SHAPES}")


def _edges(length: int, ramp: int) -> np.ndarray:
    """A note's envelope: 1 with raised-cosine onset and offset of ``ramp`` samples, float32."""
    ramp = max(1, min(ramp, length // 2))
    env = np.ones(length, dtype=np.float32)
    r = (0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)).astype(np.float32)
    env[:ramp] = r
    env[length - ramp :] = r[::-1]
    return env


def _phase(f: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """The phase (radians, wrapped to [-pi, pi], float32) of instantaneous frequency ``f`` (Hz), from a random start.

    Accumulated in cycles in float64 and wrapped before the cast, so float32 sines (several times faster)
    lose no precision however long the sound.
    """
    cyc = np.cumsum(f) / sr + rng.random()
    return (2 * np.pi * (cyc - np.rint(cyc))).astype(np.float32)


def _jitter(n: int, sr: int, amount: float, rng: np.random.Generator) -> np.ndarray:
    """1 + a slow random perturbation of relative standard deviation ``amount`` (knots ~15 ms apart, linear
    between them, held over 32-sample steps: cheaper than interpolating every sample, and inaudibly different)."""
    k = int(n / sr * _JITTER_KNOTS_PER_S) + 2
    coarse = np.interp(np.arange(0, n, 32), np.linspace(0, n, k), rng.standard_normal(k))
    return 1.0 + amount * np.repeat(coarse, 32)[:n]


def _am(t: np.ndarray, note: Note, rng: np.random.Generator) -> np.ndarray:
    """1 - depth + depth * cos(pi rate t + phi)**(2 sharpness): sidebands up to sharpness * rate."""
    c = np.cos((np.pi * note.am_rate * t + rng.uniform(0, np.pi)) % (2 * np.pi)).astype(np.float32)
    return 1 - np.float32(note.am_depth) + np.float32(note.am_depth) * c ** (2 * note.am_sharpness)


def _harmonics(ph: np.ndarray, f_max: float, amps: Sequence[float], side: float, sr: int) -> tuple[np.ndarray, float]:
    """Sum of ``amps[h-1] * sin(h ph)`` over the harmonics h whose top (h * f_max + side) stays below
    ``HARMONIC_CAP * sr``; returns (wave, the top frequency of the highest one kept)."""
    x = np.zeros(ph.size, dtype=np.float32)
    top = f_max
    for h, a in enumerate(amps, start=1):
        if h * f_max + side >= HARMONIC_CAP * sr:
            break
        if a:
            x += np.float32(a) * np.sin(np.float32(h) * ph)
            top = h * f_max
    return x, top


def _fast_len(n: int) -> int:
    from scipy import fft

    return fft.next_fast_len(n)


def _noise_band(phase: np.ndarray, bw: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A band of noise ``bw`` Hz wide centred on the instantaneous frequency d(phase)/dt: complex noise low-passed
    to +-bw/2 in the frequency domain, shifted up by the phase."""
    n = phase.size
    m = _fast_len(n)
    spec = np.fft.fft(rng.standard_normal(m) + 1j * rng.standard_normal(m))
    spec[np.abs(np.fft.fftfreq(m, 1.0 / sr)) > bw / 2] = 0.0
    base = np.fft.ifft(spec)[:n]
    return np.real(base * np.exp(1j * phase))


def _energy_top(x: np.ndarray, sr: int, share: float = 0.995) -> float:
    """The frequency (Hz) below which ``share`` of ``x``'s energy lies."""
    p = np.abs(np.fft.rfft(x, _fast_len(x.size))) ** 2
    c = np.cumsum(p)
    return float(np.searchsorted(c, share * c[-1]) * sr / (2 * (p.size - 1)))


def formant_filter(x: np.ndarray, sr: int, formants: Sequence[tuple[float, float]]) -> np.ndarray:
    """Cascade of two-pole resonances (centre Hz, bandwidth Hz), each of unit gain at 0 Hz (Klatt 1980).

    Resonances at or above Nyquist are skipped. Returns float64 of ``x``'s shape.
    """
    from scipy import signal

    sos = []
    for fc, bw in formants:
        if not 0.0 < fc < 0.5 * sr or bw <= 0:
            continue
        r = np.exp(-np.pi * bw / sr)
        a1, a2 = -2.0 * r * np.cos(2.0 * np.pi * fc / sr), r * r
        sos.append([1.0 + a1 + a2, 0.0, 0.0, 1.0, a1, a2])
    x = np.asarray(x, dtype=np.float64)
    return signal.sosfilt(np.array(sos), x) if sos else x.copy()


def render_note(note: Note, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """One note, float32 of ``round(duration * sr)`` samples (at least 16); returns (wave, f_low, f_high), the
    band its energy lies in (sidebands of the modulation included)."""
    n = max(16, round(note.duration * sr))
    u = (np.arange(n) + 0.5) / n
    f = note.f_low + (note.f_high - note.f_low) * _contour(note.shape, u, note.curve).astype(np.float64)
    if note.jitter > 0:
        f *= _jitter(n, sr, note.jitter, rng)
    f = np.clip(f, 20.0, F_TOP_SHARE * sr)
    ph = _phase(f, sr, rng)
    f_min, f_max = float(f.min()), float(f.max())
    side = note.am_rate * note.am_sharpness if note.am_depth > 0 else 0.0
    broadband = False
    if note.noise_bw > 0:
        half = max(10.0, min(note.noise_bw / 2, f_min - 10.0, HARMONIC_CAP * sr - f_max - side))
        x = _noise_band(ph, 2 * half, sr, rng).astype(np.float32)
        f_min, f_max = f_min - half, f_max + half
    elif note.pulse > 0:
        # -sin(p) exp(k (cos p - 1)): harmonic h weighs ~ h I_h(k), falling like exp(-h^2 / 2k); k is capped so
        # that the harmonic at Nyquist is ~ 9 nepers down (no audible aliasing)
        k = np.float32(min(note.pulse, ((0.5 * sr - side) / f_max) ** 2 / 18.0))
        x = -np.sin(ph) * np.exp(k * (np.cos(ph) - 1))
        broadband = True
    else:
        x, f_max = _harmonics(ph, f_max, note.harmonics, side, sr)
    if note.formants:
        x = formant_filter(x, sr, note.formants).astype(np.float32)
    env = _edges(n, int(note.ramp * sr))
    if note.am_depth > 0:
        env *= _am(np.arange(n) / sr, note, rng)
    x = x * env
    if broadband:
        f_max = max(f_max, _energy_top(x, sr))
    return x, max(0.0, f_min - side), f_max + side


def render_trill(trill: Trill, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """A trill, float32; returns (wave, f_low, f_high). Vectorised over notes (a trill can have 100): the
    contour and envelope are tabulated once over a note and gathered."""
    note = trill.note
    if note.duration >= 1.0 / trill.rate:
        raise OptionError(f"a trill's notes would overlap: {note.duration * 1e3:.1f} ms notes at {trill.rate:g} "
                          f"notes/s (period {1e3 / trill.rate:.1f} ms)")
    length = max(16, round(note.duration * sr))
    starts = np.round(np.arange(trill.n_notes) * sr / trill.rate).astype(np.int64)
    size = int(starts[-1]) + length
    i = np.repeat(np.arange(trill.n_notes), np.diff(np.append(starts, size)))
    tau = np.arange(size) - starts[i]
    on = tau < length
    tau = np.minimum(tau, length - 1)
    contour = _contour(note.shape, (np.arange(length) + 0.5) / length, note.curve).astype(np.float64)
    scale = 1.0 + trill.f_spread * np.clip(rng.standard_normal(trill.n_notes), -2.5, 2.5)
    f = scale[i] * (note.f_low + (note.f_high - note.f_low) * contour[tau])
    if note.jitter > 0:
        f *= _jitter(size, sr, note.jitter, rng)
    f = np.clip(f, 20.0, F_TOP_SHARE * sr)
    f_min, f_max = float(f[on].min()), float(f[on].max())
    x, top = _harmonics(_phase(f, sr, rng), f_max, note.harmonics, 0.0, sr)
    level = (10.0 ** (trill.level_spread_db * rng.standard_normal(trill.n_notes) / 20.0)).astype(np.float32)
    x *= np.where(on, _edges(length, int(note.ramp * sr))[tau], np.float32(0)) * level[i]
    return x, f_min, top


def draw_trill(sr: int, rng: np.random.Generator, duration: tuple[float, float] = (0.4, 2.5)) -> Trill:
    """A trill: rate in ``TRILL_RATES``, note bandwidth under the performance limit, note shape, frequency."""
    lo, hi = song_band(sr)
    rate = float(rng.uniform(*TRILL_RATES))
    bw_max = min(podos_limit(rate), 0.9 * (hi - lo))
    bw = float(bw_max * rng.uniform(0.15, 1.0))  # birds sing at or below the limit
    f_low = float(rng.uniform(lo, hi - bw))
    note = Note(
        duration=float(rng.uniform(0.4, 0.8)) / rate,  # duty cycle: a silent gap between notes
        f_low=f_low, f_high=f_low + bw, shape=str(rng.choice(("up", "down", "U", "arch"))),
        curve=float(rng.uniform(0.6, 1.6)), harmonics=(1.0, float(rng.uniform(0.0, 0.1))),
        jitter=float(rng.uniform(0.0, 0.005)), ramp=float(rng.uniform(0.001, 0.004)),
    )
    n_notes = max(3, round(rng.uniform(*duration) * rate))
    return Trill(note, rate, n_notes, f_spread=float(rng.uniform(0.0, 0.02)),
                 level_spread_db=float(rng.uniform(0.0, 1.5)))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw_note(sr: int, rng: np.random.Generator, duration: tuple[float, float] = (0.02, 0.3)) -> Note:
    """A tonal FM note of any ``NOTE_SHAPES``: near-pure tone (weak second and third harmonics), small jitter,
    sometimes a slow vibrato."""
    lo, hi = song_band(sr)
    shape = str(rng.choice(NOTE_SHAPES))
    bw = float(rng.uniform(0.0, 200.0)) if shape == "flat" else float(rng.uniform(0.1, 0.9) * min(4000.0, hi - lo))
    f_low = float(rng.uniform(lo, hi - bw))
    vibrato = rng.random() < 0.2
    return Note(
        duration=_log_uniform(rng, *duration), f_low=f_low, f_high=f_low + bw, shape=shape,
        curve=float(rng.uniform(0.6, 1.6)),
        harmonics=(1.0, float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.0, 0.05))),
        am_rate=float(rng.uniform(20.0, 60.0)) if vibrato else 0.0,
        am_depth=float(rng.uniform(0.2, 0.6)) if vibrato else 0.0,
        jitter=float(rng.uniform(0.0, 0.01)), ramp=float(rng.uniform(0.002, 0.008)),
    )


def draw_buzz(sr: int, rng: np.random.Generator, duration: tuple[float, float] = (0.1, 0.8)) -> Note:
    """A buzz: a tone under fast, sharp amplitude modulation, or a band of noise following a contour."""
    lo, hi = song_band(sr)
    d = _log_uniform(rng, *duration)
    if rng.random() < 0.5:
        rate = float(rng.uniform(50.0, 200.0))
        sharp = int(rng.integers(1, 4))
        lo2, hi2 = lo + rate * sharp, hi - rate * sharp
        bw = float(rng.uniform(0.0, 0.3) * (hi2 - lo2))
        f_low = float(rng.uniform(lo2, hi2 - bw))
        return Note(d, f_low, f_low + bw, shape=str(rng.choice(NOTE_SHAPES)), am_rate=rate,
                    am_depth=float(rng.uniform(0.7, 1.0)), am_sharpness=sharp, jitter=float(rng.uniform(0, 0.02)))
    nb = float(rng.uniform(0.1, 0.4) * (hi - lo))
    f_low = float(rng.uniform(lo + nb / 2, hi - nb / 2))
    return Note(d, f_low, f_low, noise_bw=nb, am_rate=float(rng.uniform(20.0, 80.0)),
                am_depth=float(rng.uniform(0.0, 0.6)))


def draw_stack(sr: int, rng: np.random.Generator, duration: tuple[float, float] = (0.05, 0.3)) -> Note:
    """A harmonic-stack syllable: f0 0.5-2.5 kHz, 3-6 harmonics of random weights, one resonance."""
    hi = song_band(sr)[1]
    f0 = float(rng.uniform(min(500.0, hi / 4), max(min(2500.0, hi / 3), min(500.0, hi / 4) + 1)))
    n_h = int(rng.integers(3, 7))
    weights = tuple(float(w) for w in rng.uniform(0.2, 1.0, size=n_h))
    centre = float(rng.uniform(f0, min(hi, n_h * f0)))
    return Note(_log_uniform(rng, *duration), f0, f0 * float(rng.uniform(1.0, 1.15)),
                shape=str(rng.choice(("flat", "arch", "down"))), harmonics=weights,
                formants=((centre, float(rng.uniform(200.0, 600.0))),), jitter=float(rng.uniform(0.0, 0.01)))


def draw_syllable(sr: int, rng: np.random.Generator) -> Syllable:
    """A syllable type: one note (45 %), two notes (20 %), a buzz (15 %) or a harmonic stack (20 %)."""
    r = rng.random()
    if r < 0.45:
        parts: tuple[tuple[float, Note], ...] = ((0.0, draw_note(sr, rng)),)
    elif r < 0.65:
        a = draw_note(sr, rng, (0.02, 0.15))
        b = draw_note(sr, rng, (0.02, 0.15))
        parts = ((0.0, a), (a.duration + float(rng.uniform(0.0, 0.02)), b))
    elif r < 0.8:
        parts = ((0.0, draw_buzz(sr, rng, (0.06, 0.3))),)
    else:
        parts = ((0.0, draw_stack(sr, rng)),)
    return Syllable(parts, level_db=float(rng.uniform(-6.0, 0.0)))


def draw_bird(sr: int, rng: np.random.Generator, n_types: int | None = None, max_duration: float = 3.0) -> Bird:
    """A bird: 2-6 syllable types (``n_types``) and a song of 0.8 s to ``max_duration``, phrases of one type
    each, repeated; a repeated syllable's rate respects the performance limit (``podos_limit``)."""
    k = int(n_types if n_types is not None else rng.integers(2, 7))
    repertoire = tuple(draw_syllable(sr, rng) for _ in range(k))
    phrase_gap = float(rng.uniform(0.03, 0.2))
    target = float(rng.uniform(min(0.8, max_duration), max_duration))
    phrases: list[tuple[int, int, float]] = []
    prev, total = -1, 0.0
    while total < target and len(phrases) < 8:
        idx = int(rng.integers(k))
        if idx == prev and k > 1:
            idx = (idx + 1) % k
        syl = repertoire[idx]
        reps = int(rng.integers(2, 11)) if syl.duration < 0.08 else int(rng.integers(1, 5))
        gap = float(rng.uniform(0.015, 0.12))
        if reps > 1:  # slow down a wide syllable's repetition to the limit's rate
            rate_max = PODOS_RATE0 * (1.0 - min(syl.bandwidth, 0.95 * PODOS_BW0) / PODOS_BW0)
            gap = max(gap, 1.0 / rate_max - syl.duration)
        phrases.append((idx, reps, gap))
        prev = idx
        total += reps * (syl.duration + gap) + phrase_gap
    return Bird(repertoire, tuple(phrases), phrase_gap=phrase_gap, variation=float(rng.uniform(0.005, 0.03)))


def _vary(note: Note, f_scale: float, d_scale: float, sr: int) -> Note:
    """A rendition of ``note``: frequencies times ``f_scale`` (kept below the top), duration times ``d_scale``."""
    top = F_TOP_SHARE * sr
    return replace(note, duration=note.duration * d_scale, f_low=min(note.f_low * f_scale, top),
                   f_high=min(note.f_high * f_scale, top))


def sing(bird: Bird, sr: int, rng: np.random.Generator, max_duration: float = 3.0) -> tuple[np.ndarray, float, float]:
    """One rendition of ``bird``'s song, at most ``max_duration`` s, float32; returns (wave, f_low, f_high).

    A phrase's syllables are ``gap`` apart, phrases ``bird.phrase_gap`` apart. With ``bird.variation`` > 0 each
    rendition varies: every syllable's frequency, duration and level and the gaps, a phrase's repetitions by
    one now and then, and the last phrase is sometimes left out; with 0 it is sung exactly as written.
    """
    v = bird.variation
    phrases = list(bird.phrases)
    if v > 0 and len(phrases) > 1 and rng.random() < 0.15:
        phrases = phrases[:-1]
    placed: list[tuple[int, np.ndarray]] = []
    start, f_lo, f_hi = 0.0, np.inf, 0.0
    for p, (idx, reps, gap) in enumerate(phrases):
        syl = bird.repertoire[idx]
        if v > 0 and reps > 1 and rng.random() < 0.3:
            reps += int(rng.choice((-1, 1)))
        for r in range(max(1, reps)):
            if p or r:  # the pause before this syllable
                pause = gap if r else bird.phrase_gap
                start += pause * max(0.5, 1.0 + v * float(rng.standard_normal()))
            f_scale = 1.0 + v * float(np.clip(rng.standard_normal(), -2.5, 2.5))
            d_scale = 1.0 + v * float(np.clip(rng.standard_normal(), -2.5, 2.5))
            if start + syl.duration * d_scale > max_duration:
                break
            gain = np.float32(10.0 ** ((syl.level_db + 50.0 * v * rng.standard_normal()) / 20.0))  # 1.5 dB at v=0.03
            for onset, note in syl.parts:
                x, lo, hi = render_note(_vary(note, f_scale, d_scale, sr), sr, rng)
                placed.append((round((start + onset * d_scale) * sr), gain * x))
                f_lo, f_hi = min(f_lo, lo), max(f_hi, hi)
            start += syl.duration * d_scale
        else:
            continue
        break  # the song reached max_duration
    if not placed:  # a first syllable longer than max_duration: sing it cut
        x, f_lo, f_hi = render_note(bird.repertoire[phrases[0][0]].parts[0][1], sr, rng)
        placed = [(0, x[: round(max_duration * sr)])]
    out = np.zeros(max(s + x.size for s, x in placed), dtype=np.float32)
    for s, x in placed:
        out[s : s + x.size] += x
    return out, float(f_lo), float(f_hi)


def _series(notes: Sequence[Note], gaps: Sequence[float], sr: int,
            rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Notes one after the other with ``gaps`` (s) between them."""
    parts = [render_note(n, sr, rng) for n in notes]
    starts = np.concatenate([[0], np.cumsum([p[0].size + int(g * sr) for p, g in zip(parts, gaps)])])
    out = np.zeros(int(starts[len(parts) - 1]) + parts[-1][0].size, dtype=np.float32)
    for s, (x, _, _) in zip(starts, parts):
        out[int(s) : int(s) + x.size] += x
    return out, min(p[1] for p in parts), max(p[2] for p in parts)


def sweep_call(sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """A call of 1-3 renditions of one FM note (any shape, 20-300 ms), 30-200 ms apart."""
    note = draw_note(sr, rng)
    k = int(rng.integers(1, 4))
    notes = [_vary(note, 1.0 + 0.02 * rng.standard_normal(), 1.0 + 0.03 * rng.standard_normal(), sr) for _ in range(k)]
    return _series(notes, rng.uniform(0.03, 0.2, size=k), sr, rng)


def fm_trill_call(sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """A trill drawn by ``draw_trill``."""
    return render_trill(draw_trill(sr, rng), sr, rng)


def buzz_call(sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """A buzz drawn by ``draw_buzz``."""
    return render_note(draw_buzz(sr, rng), sr, rng)


def formant_call(sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """A harsh, corvid- or gull-like series of 1-4 calls: a low harmonic-rich pulse source (f0 350-1400 Hz) with
    jitter, through 1-3 resonances."""
    f0 = float(rng.uniform(350.0, min(1400.0, 0.15 * sr)))
    centres = sorted(rng.uniform(lo_, hi_) for lo_, hi_ in ((900.0, 2000.0), (2000.0, 3500.0), (3500.0, 5000.0)))
    formants = tuple((float(c), float(rng.uniform(150.0, 500.0))) for c in centres[: int(rng.integers(1, 4))]
                     if c < 0.4 * sr)
    base = Note(0.0, f0, f0 * float(rng.uniform(1.05, 1.3)), shape=str(rng.choice(("arch", "flat", "down"))),
                pulse=float(rng.uniform(10.0, 60.0)), formants=formants, jitter=float(rng.uniform(0.01, 0.03)),
                ramp=0.015)
    k = int(rng.integers(1, 5))
    notes = [replace(base, duration=float(rng.uniform(0.12, 0.5))) for _ in range(k)]
    return _series(notes, rng.uniform(0.08, 0.3, size=k), sr, rng)


def song_call(sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """One song (at most 3 s) of a newly drawn bird (``draw_bird``, ``sing``)."""
    return sing(draw_bird(sr, rng), sr, rng)


SIMPLE_KINDS = ("chirp", "trill", "harmonic")
_SONG_MAKERS = {"sweep": sweep_call, "fm_trill": fm_trill_call, "buzz": buzz_call, "formant": formant_call,
                "song": song_call}
SONG_KINDS = tuple(_SONG_MAKERS)
#: Every call kind ``bird_call`` makes: the three simple shapes and the song-like kinds.
BIRD_KINDS = SIMPLE_KINDS + SONG_KINDS


def _raw_call(kind: str, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """A call of ``kind`` at the level its maker left it (the simple shapes' peaks differ: 1 to about 2)."""
    if kind == "chirp":
        return chirp_call(sr, rng)
    if kind == "trill":
        return trill_call(sr, rng)
    if kind == "harmonic":
        return harmonic_call(sr, rng)
    if kind in _SONG_MAKERS:
        return _SONG_MAKERS[kind](sr, rng)
    raise OptionError(f"unknown bird sound kind {kind!r}; choose from {', '.join(BIRD_KINDS)}")


def bird_call(kind: str, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """One call of ``kind`` in ``BIRD_KINDS``: (float32 wave peak-normalised to 1, f_low Hz, f_high Hz), the band
    its energy lies in. Frequencies stay below ``HARMONIC_CAP * sr``."""
    w, lo, hi = _raw_call(kind, sr, rng)
    peak = float(np.max(np.abs(w))) if w.size else 0.0
    return (w / peak if peak > 0 else w).astype(np.float32), float(lo), float(hi)


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
    kinds: Sequence[str] = SIMPLE_KINDS,
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
    kinds : sequence of str
        Call kinds to draw from (``BIRD_KINDS``); the default, the simple shapes, keeps earlier clips as they were.
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
    n = round(duration * sr)
    noise = background(background_kind, n, sr, rng) * noise_level
    clean = np.zeros(n, dtype=np.float32)
    events: list[Event] = []
    if hasbird:
        k = int(n_events if n_events is not None else rng.integers(1, 5))
        active = np.zeros(n, dtype=bool)
        for _ in range(k):
            kind = str(rng.choice(list(kinds)))
            # unnormalised, so that overlapping simple calls keep the levels (and clips the bytes) they always had
            call, flo, fhi = _raw_call(kind, sr, rng)
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
    kinds: Sequence[str] = SIMPLE_KINDS,
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
                kinds=kinds,
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
        p.add_argument("--kinds", default=",".join(SIMPLE_KINDS),
                       help=f"comma-separated call kinds to draw from, of {', '.join(BIRD_KINDS)} (default %(default)s)")
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
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown_kinds = sorted(set(kinds) - set(BIRD_KINDS))
    if unknown_kinds or not kinds:
        parser.error(f"--kinds: unknown or none ({', '.join(unknown_kinds)}); choose from {', '.join(BIRD_KINDS)}")
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
                seed=args.seed, kinds=kinds,
            )
            print(f"{args.clips} clip(s) in {Path(args.outdir) / 'wav'}; labels {labels}; "
                  f"true events {Path(args.outdir) / 'events.csv'}")
        else:
            if args.events is not None and args.events < 1:
                parser.error(f"--events must be >= 1, got {args.events}")
            mix, events, _ = make_clip(
                args.duration, args.sr, hasbird=not args.no_bird, snr_db=args.snr, background_kind=args.background,
                n_events=args.events, kinds=kinds, rng=args.seed,
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
