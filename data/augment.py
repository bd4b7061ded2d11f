"""Augmentations of single sound events for the training mixes: pitch, time warp, EQ, band-limiting,
room reverberation, distance, truncation.

Every function takes a float32 mono array and, where it draws anything, an explicit
:class:`numpy.random.Generator`; none keeps state, so a seed fixes the result. They are cheap enough to run
on every event of every clip (a few milliseconds per event at 22,050 Hz). The mixer
(:mod:`data.bootstrap`) applies them to bird and non-bird events alike, so no augmentation marks a class.

Pitch and tempo move together: a pitch shift here is a change of playback speed (resampling), as a tape or
a Doppler shift would make; a pitch shift at constant tempo needs a phase vocoder, too slow for the budget.
"""

from __future__ import annotations

import functools

import numpy as np

#: Air absorption, dB per metre per kHz squared: about 0.1 dB/m at 8 kHz and 0.025 dB/m at 4 kHz, the
#: classical (f**2) part of ISO 9613-1 at 20 degrees C and 50-70 % relative humidity.
AIR_ABSORPTION_DB_PER_M_KHZ2 = 0.0015


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def active_power(x: np.ndarray, sr: int, window_db: float = 30.0) -> float:
    """Mean power over the 20 ms frames within ``window_db`` of the loudest: an event's level, not its
    silences'.

    Parameters
    ----------
    x : ndarray
        The event.
    sr : int
        Sample rate in Hz.
    window_db : float
        Frames quieter than the loudest by more than this are left out.
    """
    x = np.asarray(x, dtype=np.float64)
    n = max(1, int(0.02 * sr))
    m = x.size // n
    if m:
        rms = np.sqrt(np.mean(x[: m * n].reshape(m, n) ** 2, axis=1) + 1e-20)
    else:
        rms = np.array([np.sqrt(np.mean(x**2) + 1e-20)]) if x.size else np.array([1e-10])
    on = rms > rms.max() * 10 ** (-window_db / 20)
    return float(np.mean(rms[on] ** 2))


# -- speed, pitch and time warp ----------------------------------------------------------------------------
def semitones_to_ratio(semitones: float) -> float:
    """The frequency ratio of an interval: ``2 ** (semitones / 12)``."""
    return float(2.0 ** (semitones / 12.0))


def change_speed(x: np.ndarray, ratio: float) -> np.ndarray:
    """Play ``x`` ``ratio`` times faster: every frequency times ``ratio``, the length divided by it.

    Parameters
    ----------
    x : ndarray, float32, shape (n,)
    ratio : float
        Speed factor (> 0); above 1 raises the pitch and shortens the sound.

    Returns
    -------
    ndarray, float32, shape (about n / ratio,)
        Band-limited resampling (soxr), so nothing folds over Nyquist when the speed goes up.
    """
    import soxr

    if ratio <= 0:
        raise ValueError(f"speed ratio must be positive, got {ratio}")
    if ratio == 1.0:
        return _f32(x).copy()
    # read x as if sampled ratio times faster, then bring it back to the original rate
    return _f32(soxr.resample(_f32(x), 48000.0 * ratio, 48000.0, quality="HQ"))


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """Shift ``x`` by ``semitones`` by a change of speed (tempo moves with the pitch; see the module note).

    Returns
    -------
    ndarray, float32, shape (about n / 2**(semitones/12),)
    """
    return change_speed(x, semitones_to_ratio(semitones))


def warp_rate(
    n: int,
    sr: int,
    rng: np.random.Generator,
    depth_semitones: float = 1.0,
    rate_hz: tuple[float, float] = (0.3, 3.0),
    n_components: int = 3,
) -> np.ndarray:
    """A smooth random playback-rate curve for :func:`apply_warp`.

    Parameters
    ----------
    n : int
        Length of the curve (output samples it covers).
    sr : int
        Sample rate in Hz.
    rng : Generator
    depth_semitones : float
        Largest excursion of the rate, in semitones either side of 1.
    rate_hz : (float, float)
        Range of the frequencies of the ``n_components`` random sinusoids that make the curve.

    Returns
    -------
    ndarray, float64, shape (n,)
        ``2 ** (depth_semitones * s / 12)`` with ``s`` a smooth curve whose largest magnitude is 1.
    """
    # the curve is slow: computed every `step` samples (1.5 ms at 22,050 Hz) and interpolated
    step = 32
    t = np.arange(0, n + step, step) / sr
    s = np.zeros(t.size)
    for _ in range(n_components):
        f = rng.uniform(*rate_hz)
        s += rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    peak = np.abs(s).max()
    if peak > 0:
        s /= peak
    return 2.0 ** (depth_semitones * np.interp(np.arange(n) / sr, t, s) / 12.0)


def apply_warp(x: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Read ``x`` at a varying speed: output sample ``j`` is ``x`` at position ``p[j] = sum(rate[:j])``
    (linear interpolation), up to the end of ``x``.

    Parameters
    ----------
    x : ndarray, shape (n,)
    rate : ndarray
        Playback rate per output sample (> 0); a constant ``r`` is :func:`change_speed` by ``r`` without
        its anti-alias filter.

    Returns
    -------
    ndarray, float32
        As many samples as the rate curve reaches inside ``x`` (at most ``rate.size``).
    """
    x = _f32(x)
    p = np.concatenate(([0.0], np.cumsum(rate[:-1], dtype=np.float64)))
    p = p[p <= x.size - 1]
    return _f32(np.interp(p, np.arange(x.size), x))


def time_warp(x: np.ndarray, sr: int, rng: np.random.Generator, depth_semitones: float = 1.0) -> np.ndarray:
    """Slow random tempo and frequency modulation: :func:`apply_warp` with a :func:`warp_rate` curve.

    Parameters
    ----------
    x : ndarray, float32, shape (n,)
    sr : int
    rng : Generator
    depth_semitones : float
        Largest excursion of the instantaneous frequency, in semitones.

    Returns
    -------
    ndarray, float32, shape (about n / mean rate,)
    """
    slowest = semitones_to_ratio(-abs(depth_semitones))
    m = int(np.ceil(max(1, x.size - 1) / slowest)) + 2  # enough output samples to reach the end of x
    return apply_warp(x, warp_rate(m, sr, rng, depth_semitones))


# -- EQ and band-limiting ----------------------------------------------------------------------------------
def peaking_sos(f0: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """A peaking biquad (RBJ cookbook): ``gain_db`` at ``f0`` Hz, bandwidth set by ``q``; shape (1, 6)."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0 / sr
    alpha = np.sin(w) / (2 * q)
    b = [1 + alpha * a, -2 * np.cos(w), 1 - alpha * a]
    den = [1 + alpha / a, -2 * np.cos(w), 1 - alpha / a]
    return np.array([[*b, *den]]) / den[0]


def shelf_sos(kind: str, f0: float, gain_db: float, sr: int) -> np.ndarray:
    """A low or high shelf biquad (RBJ cookbook, slope 1): ``gain_db`` far below (``"low"``) or above
    (``"high"``) the corner ``f0`` Hz, 0 dB on the other side; shape (1, 6)."""
    if kind not in ("low", "high"):
        raise ValueError(f"shelf kind must be 'low' or 'high', got {kind!r}")
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0 / sr
    cw, alpha = np.cos(w), np.sin(w) / 2 * np.sqrt(2.0)
    sa = 2 * np.sqrt(a) * alpha
    if kind == "low":
        b = [a * ((a + 1) - (a - 1) * cw + sa), 2 * a * ((a - 1) - (a + 1) * cw), a * ((a + 1) - (a - 1) * cw - sa)]
        den = [(a + 1) + (a - 1) * cw + sa, -2 * ((a - 1) + (a + 1) * cw), (a + 1) + (a - 1) * cw - sa]
    else:
        b = [a * ((a + 1) + (a - 1) * cw + sa), -2 * a * ((a - 1) + (a + 1) * cw), a * ((a + 1) + (a - 1) * cw - sa)]
        den = [(a + 1) - (a - 1) * cw + sa, 2 * ((a - 1) - (a + 1) * cw), (a + 1) - (a - 1) * cw - sa]
    return np.array([[*b, *den]]) / den[0]


def random_eq_sos(
    sr: int,
    rng: np.random.Generator,
    n_bands: tuple[int, int] = (1, 3),
    gain_db: tuple[float, float] = (-12.0, 12.0),
) -> np.ndarray:
    """A random EQ: ``n_bands`` biquads (inclusive range), each a peaking filter (Q 0.5-4) at 100 Hz-0.4 sr
    (log-uniform) or, one time in four, a low or high shelf; gains uniform in ``gain_db``. Shape (k, 6)."""
    k = int(rng.integers(n_bands[0], n_bands[1] + 1))
    rows = []
    for _ in range(k):
        f0 = float(np.exp(rng.uniform(np.log(100.0), np.log(0.4 * sr))))
        g = float(rng.uniform(*gain_db))
        if rng.random() < 0.25:
            rows.append(shelf_sos("low" if rng.random() < 0.5 else "high", f0, g, sr))
        else:
            rows.append(peaking_sos(f0, g, float(rng.uniform(0.5, 4.0)), sr))
    return np.concatenate(rows) if rows else np.array([[1.0, 0, 0, 1.0, 0, 0]])


def apply_sos(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Filter ``x`` with second-order sections (causal, one pass); same length, float32."""
    from scipy import signal

    return _f32(signal.sosfilt(sos, x))


def random_eq(x: np.ndarray, sr: int, rng: np.random.Generator, **kw) -> np.ndarray:
    """``x`` through :func:`random_eq_sos` (keywords go there); same length, float32."""
    return apply_sos(x, random_eq_sos(sr, rng, **kw))


@functools.lru_cache(maxsize=512)
def _butter_sos(order: int, corner: float, kind: str, sr: int) -> np.ndarray:
    from scipy import signal

    return signal.butter(order, corner, kind, fs=sr, output="sos")


def band_limit(x: np.ndarray, sr: int, low: float | None = None, high: float | None = None, order: int = 8) -> np.ndarray:
    """Butterworth high-pass above ``low``, low-pass below ``high``, or both in cascade (a band-pass), in Hz.

    Parameters
    ----------
    x : ndarray, shape (n,)
    sr : int
    low, high : float, optional
        Corner frequencies; ``None`` leaves that side open (both ``None``: ``x`` unchanged). ``high`` is
        capped at 0.45 sr. Designs are cached: callers drawing corners at random should round them.
    order : int
        Butterworth order (per side): about ``6 * order`` dB per octave beyond a corner.

    Returns
    -------
    ndarray, float32, shape (n,)
    """
    if high is not None:
        high = min(float(high), 0.45 * sr)
    if low is not None and high is not None and not low < high:
        raise ValueError(f"band-pass needs low < high, got {low} and {high}")
    sections = []
    if low is not None:
        sections.append(_butter_sos(order, float(low), "highpass", sr))
    if high is not None:
        sections.append(_butter_sos(order, high, "lowpass", sr))
    if not sections:
        return _f32(x).copy()
    return apply_sos(x, np.concatenate(sections))


# -- room and distance -------------------------------------------------------------------------------------
def reverb_ir(sr: int, rt60: float, drr_db: float, rng: np.random.Generator, gap_s: float = 0.002) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path, then exponentially decaying Gaussian noise.

    Parameters
    ----------
    sr : int
    rt60 : float
        Reverberation time in seconds: the tail's energy falls 60 dB in ``rt60``.
    drr_db : float
        Direct-to-reverberant ratio: ``10 log10(1 / tail energy)``.
    rng : Generator
    gap_s : float
        Silence between the direct path and the first reflection.

    Returns
    -------
    ndarray, float32, shape (ceil(rt60 * sr),)
        ``ir[0] = 1``; the tail starts at ``gap_s`` and is cut where it is 60 dB down.
    """
    if rt60 <= 0:
        raise ValueError(f"rt60 must be positive, got {rt60}")
    n = max(3, int(np.ceil(rt60 * sr)))
    gap = min(n - 1, max(1, round(gap_s * sr)))
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-3.0 * np.log(10.0) * t / rt60)  # amplitude -60 dB at rt60
    tail[:gap] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    tail[0] = 1.0
    return _f32(tail)


def reverberate(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``ir`` (FFT); the whole tail is kept: length ``n + len(ir) - 1``, float32."""
    from scipy import signal

    return _f32(signal.fftconvolve(x, ir, mode="full"))


def distance_gain_db(f_hz: np.ndarray | float, distance_m: float, ref_m: float = 1.0) -> np.ndarray:
    """Level change, in dB, of a sound at ``f_hz`` heard at ``distance_m`` instead of ``ref_m``: spherical
    spreading, ``-20 log10(d / ref)``, plus air absorption, ``-AIR_ABSORPTION_DB_PER_M_KHZ2 * f_kHz**2 *
    (d - ref)``."""
    f_khz = np.asarray(f_hz, dtype=np.float64) / 1000.0
    return -20 * np.log10(distance_m / ref_m) - AIR_ABSORPTION_DB_PER_M_KHZ2 * f_khz**2 * (distance_m - ref_m)


def at_distance(x: np.ndarray, sr: int, distance_m: float, ref_m: float = 1.0) -> np.ndarray:
    """``x`` (recorded at ``ref_m``) as heard at ``distance_m``, with :func:`distance_gain_db` applied in the
    frequency domain (zero phase).

    Returns
    -------
    ndarray, float32, shape (n,)
    """
    from scipy import fft

    if distance_m <= 0 or ref_m <= 0:
        raise ValueError(f"distances must be positive, got {distance_m} and {ref_m}")
    n = x.size
    # padding keeps the (short, symmetric) smoothing kernel from wrapping the end onto the start
    m = fft.next_fast_len(n + min(n, 256) + 1, real=True)
    spec = fft.rfft(np.asarray(x, dtype=np.float64), m)
    spec *= 10 ** (distance_gain_db(fft.rfftfreq(m, 1 / sr), distance_m, ref_m) / 20)
    return _f32(fft.irfft(spec, m)[:n])


# -- partial events ----------------------------------------------------------------------------------------
def fade(x: np.ndarray, n_in: int, n_out: int) -> np.ndarray:
    """Linear fade-in over the first ``n_in`` and fade-out over the last ``n_out`` samples; float32 copy."""
    y = _f32(x).copy()
    n_in, n_out = min(n_in, y.size), min(n_out, y.size)
    if n_in:
        y[:n_in] *= np.linspace(0.0, 1.0, n_in, endpoint=False, dtype=np.float32)
    if n_out:
        y[y.size - n_out :] *= np.linspace(1.0, 0.0, n_out + 1, dtype=np.float32)[1:]
    return y


def truncate(
    x: np.ndarray, sr: int, rng: np.random.Generator, keep: tuple[float, float] = (0.3, 0.7), fade_s: float = 0.002
) -> np.ndarray:
    """A call cut short: keep a random share (uniform in ``keep``) of ``x``, its start or its end (even
    odds), with a ``fade_s`` ramp at the cut only.

    Returns
    -------
    ndarray, float32, shape (max(1, round(share * n)),)
    """
    m = max(1, round(rng.uniform(*keep) * x.size))
    nf = int(fade_s * sr)
    if rng.random() < 0.5:
        return fade(x[:m], 0, nf)  # the end is missing
    return fade(x[x.size - m :], nf, 0)  # the start is missing
