"""data/synthetic.py: known truth, SNR as asked, dataset layout; the song-like kinds measured against what was
drawn (trill rate from the envelope, note contours from the spectrogram ridge, harmonics, resonances, a song's
timing)."""

import csv
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from scatterbird.data.synthetic import (
    BACKGROUNDS,
    BIRD_KINDS,
    NOTE_SHAPES,
    PODOS_BW0,
    PODOS_RATE0,
    SIMPLE_KINDS,
    Bird,
    Note,
    Syllable,
    Trill,
    background,
    bird_call,
    draw_bird,
    draw_note,
    draw_trill,
    formant_filter,
    make_clip,
    podos_limit,
    render_note,
    render_trill,
    sing,
    write_dataset,
)
from scatterbird.errors import OptionError


@pytest.mark.parametrize("snr", [-10.0, 0.0, 10.0])
def test_snr_is_as_asked(snr):
    mix, events, clean = make_clip(5.0, 22050, hasbird=True, snr_db=snr, background_kind="pink", rng=1)
    noise = mix - clean
    active = np.zeros(mix.size, bool)
    for e in events:
        active[int(e.start * 22050) : int(e.end * 22050)] = True
    measured = 10 * np.log10(np.mean(clean[active] ** 2) / np.mean(noise**2))
    assert abs(measured - snr) < 0.5


def test_no_bird_clip_has_no_bird_component():
    mix, events, clean = make_clip(2.0, 22050, hasbird=False, rng=0)
    assert events == [] and not clean.any() and mix.std() > 0


@pytest.mark.parametrize("kind", BIRD_KINDS)
def test_event_energy_lies_in_its_band(kind):
    sr = 22050
    _, events, clean = make_clip(3.0, sr, hasbird=True, n_events=1, kinds=[kind], snr_db=20, rng=3)
    e = events[0]
    seg = clean[int(e.start * sr) : int(e.end * sr)]
    spec = np.abs(np.fft.rfft(seg)) ** 2
    f = np.fft.rfftfreq(seg.size, 1 / sr)
    band = (f >= e.f_low * 0.9) & (f <= e.f_high * 1.1)
    assert spec[band].sum() > 0.9 * spec.sum()


@pytest.mark.parametrize("bg", BACKGROUNDS)
def test_backgrounds_are_finite_unit_scaled(bg):
    x = background(bg, 16000, 16000, np.random.default_rng(2))
    assert np.isfinite(x).all() and abs(x.std() - 1.0) < 1e-3
    mix, _, _ = make_clip(1.0, 16000, hasbird=False, background_kind=bg, noise_level=0.5, rng=2)
    assert np.abs(mix).max() <= 0.99 + 1e-6  # peak-limited, never clipped


def test_write_dataset_layout(tmp_path):
    labels = write_dataset(tmp_path / "ds", 6, datasetid="toy", positive_rate=0.5, duration=1.0, seed=4)
    rows = list(csv.DictReader(labels.read_text().splitlines()))
    assert rows[0].keys() == {"itemid", "datasetid", "hasbird"}
    assert len(rows) == 6
    for r in rows:
        info = sf.info(tmp_path / "ds" / "wav" / f"{r['itemid']}.wav")
        assert info.channels == 1 and info.samplerate == 22050 and info.frames == 22050
    # deterministic given the seed
    labels2 = write_dataset(tmp_path / "ds2", 6, datasetid="toy", positive_rate=0.5, duration=1.0, seed=4)
    assert labels.read_text() == labels2.read_text()


def _synthetic(*args, cwd):
    return subprocess.run([sys.executable, "-m", "scatterbird.data.synthetic", *map(str, args)],
                          check=False, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_the_command_line_writes_a_dataset_and_a_clip(tmp_path):
    r = _synthetic("--help", cwd=tmp_path)
    assert r.returncode == 0 and "dataset" in r.stdout and "clip" in r.stdout, r.stderr
    r = _synthetic("dataset", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "--positive-rate" in r.stdout and "--snr LOW HIGH" in r.stdout

    r = _synthetic("dataset", tmp_path / "ds", "-n", 4, "--duration", 0.5, "--sr", 16000, "--seed", 4,
                   "--datasetid", "toy", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    rows = list(csv.DictReader((tmp_path / "ds" / "toy.csv").read_text().splitlines()))
    assert [row["itemid"] for row in rows] == [f"toy_{i:05d}" for i in range(4)]
    for row in rows:
        info = sf.info(tmp_path / "ds" / "wav" / f"{row['itemid']}.wav")
        assert (info.samplerate, info.frames, info.channels) == (16000, 8000, 1)
    # the same clips as the library call with the same options
    write_dataset(tmp_path / "lib", 4, datasetid="toy", duration=0.5, sr=16000, seed=4)
    assert (tmp_path / "lib" / "toy.csv").read_text() == (tmp_path / "ds" / "toy.csv").read_text()
    assert (tmp_path / "lib" / "events.csv").read_text() == (tmp_path / "ds" / "events.csv").read_text()

    r = _synthetic("clip", tmp_path / "one.wav", "--duration", 2, "--events", 2, "--snr", 10, "--seed", 1,
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "start_s,end_s,kind,f_low_hz,f_high_hz" and len(lines) == 3
    _, events, _ = make_clip(2.0, 22050, hasbird=True, snr_db=10.0, background_kind="pink", n_events=2, rng=1)
    assert [float(line.split(",")[0]) for line in lines[1:]] == [round(e.start, 4) for e in events]
    assert sf.info(tmp_path / "one.wav").frames == 2 * 22050


def test_the_command_line_refuses_bad_options_with_exit_2(tmp_path):
    for args in (["dataset", tmp_path / "d", "--backgrounds", "fog"], ["dataset", tmp_path / "d", "-n", 0],
                 ["clip", tmp_path / "c.wav", "--duration", -1], ["clip", tmp_path / "c.wav", "--background", "fog"],
                 ["clip", tmp_path / "c.wav", "--kinds", "song,fog"]):
        r = _synthetic(*args, cwd=tmp_path)
        assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr, args
    (tmp_path / "file").write_text("")
    r = _synthetic("dataset", tmp_path / "file" / "ds", "-n", 1, "--duration", 0.2, cwd=tmp_path)
    assert r.returncode == 2 and "error: cannot write" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "c.wav").exists()


# -- song-like kinds -------------------------------------------------------------------------------------------
def _envelope_period(x, sr, block=11):
    """The period (s) of x's amplitude envelope: the highest autocorrelation peak after its first zero."""
    n = x.size // block * block
    env = np.abs(x[:n]).reshape(-1, block).mean(axis=1)
    env -= env.mean()
    ac = np.correlate(env, env, "full")[env.size - 1 :]
    first_neg = int(np.argmax(ac < 0))
    hi = min(ac.size - 1, int(0.3 * sr / block))
    k = first_neg + int(np.argmax(ac[first_neg:hi]))
    a, b, c = ac[k - 1], ac[k], ac[k + 1]
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * block / sr  # parabolic peak


@pytest.mark.parametrize("seed", range(6))
def test_a_trills_note_rate_measured_from_its_envelope_is_the_drawn_rate(seed):
    sr = 22050
    rng = np.random.default_rng(seed)
    trill = draw_trill(sr, rng)
    x, _, _ = render_trill(trill, sr, rng)
    assert abs(1 / _envelope_period(x, sr) / trill.rate - 1) < 0.03, trill.rate
    assert 5 <= trill.rate <= 40 and trill.note.f_high - trill.note.f_low <= podos_limit(trill.rate) + 1e-6
    # a trill at a rate set by hand: 20 notes/s is 20 notes/s
    x, _, _ = render_trill(Trill(replace(trill.note, duration=0.03), 20.0, 30), sr, rng)
    assert abs(_envelope_period(x, sr) - 0.05) < 0.001
    with pytest.raises(OptionError, match="overlap"):  # notes longer than the period
        render_trill(Trill(replace(trill.note, duration=0.06), 20.0, 30), sr, rng)


def test_the_performance_limit_falls_with_rate_and_draws_respect_it():
    assert podos_limit(0.0) == PODOS_BW0 and podos_limit(PODOS_RATE0) == 0.0
    assert podos_limit(10.0) > podos_limit(20.0) > podos_limit(40.0) > 0
    rng = np.random.default_rng(0)
    for sr in (8000, 22050):
        for _ in range(200):
            t = draw_trill(sr, rng)
            assert t.note.f_high - t.note.f_low <= podos_limit(t.rate) + 1e-6
            assert 0 < t.note.f_low < t.note.f_high < 0.45 * sr + 1e-6
            assert t.note.duration < 1 / t.rate  # a silent gap between notes


def _ridge(x, sr, nperseg=512, hop=64):
    """(frame times, the peak frequency of every frame holding at least 10 % of the loudest frame's energy)."""
    from scipy import signal

    f, t, z = signal.stft(x, sr, nperseg=nperseg, noverlap=nperseg - hop, boundary=None, padded=False)
    p = np.abs(z) ** 2
    e = p.sum(axis=0)
    keep = e > 0.1 * e.max()
    return t[keep], f[np.argmax(p[:, keep], axis=0)]


@pytest.mark.parametrize("shape", NOTE_SHAPES)
def test_an_fm_notes_ridge_follows_its_contour_within_its_band(shape):
    sr, lo, hi = 22050, 2000.0, 5000.0
    x, f_lo, f_hi = render_note(Note(0.3, lo, hi, shape=shape), sr, np.random.default_rng(1))
    assert x.dtype == np.float32 and x.size == round(0.3 * sr)
    t, ridge = _ridge(x, sr)
    tol = 2 * sr / 512  # two bins
    assert ridge.min() >= lo - tol and ridge.max() <= hi + tol
    mid = np.abs(t - t.mean()) < 0.2 * np.ptp(t)
    ends = np.abs(t - t.mean()) > 0.4 * np.ptp(t)
    if shape == "flat":
        assert np.all(np.abs(ridge - (lo + hi) / 2) <= tol) and (f_lo, f_hi) == ((lo + hi) / 2, (lo + hi) / 2)
        return
    assert ridge.min() < lo + 400 or shape == "arch"
    assert ridge.max() > hi - 400 or shape == "U"
    rho = np.corrcoef(t, ridge)[0, 1]
    {"up": lambda: rho > 0.95, "down": lambda: rho < -0.95, "arch": lambda: ridge[mid].min() > ridge[ends].max(),
     "U": lambda: ridge[mid].max() < ridge[ends].min()}[shape]() or pytest.fail(f"{shape}: ridge {ridge}")


@pytest.mark.parametrize("seed", range(5))
def test_a_drawn_notes_ridge_lies_in_its_drawn_band(seed):
    sr = 22050
    rng = np.random.default_rng(seed)
    note = draw_note(sr, rng, duration=(0.1, 0.3))
    x, f_lo, f_hi = render_note(note, sr, rng)
    _, ridge = _ridge(x, sr, nperseg=256, hop=32)
    tol = 2 * sr / 256 + 0.03 * note.f_high  # bins, and the jitter
    assert 1000 <= note.f_low <= note.f_high <= 8000
    assert ridge.min() >= note.f_low - tol and ridge.max() <= note.f_high + tol
    assert f_lo <= ridge.min() + tol and ridge.max() <= f_hi + tol


def _amplitudes_at(x, sr, freqs, half_width=15.0):
    spec = np.abs(np.fft.rfft(x))
    f = np.fft.rfftfreq(x.size, 1 / sr)
    return np.array([spec[np.abs(f - fr) <= half_width].max() for fr in freqs]), spec, f


def test_a_harmonic_stack_has_its_energy_at_integer_multiples_of_f0():
    sr, f0 = 22050, 440.0
    for note in (Note(0.5, f0, f0, pulse=30.0, ramp=0.02), Note(0.5, f0, f0, harmonics=(1.0, 0.5, 0.25), ramp=0.02)):
        x, lo, hi = render_note(note, sr, np.random.default_rng(0))
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(x.size, 1 / sr)
        near = np.abs(f / f0 - np.round(f / f0)) * f0 <= 20.0
        assert spec[near].sum() > 0.99 * spec.sum()
        amps, _, _ = _amplitudes_at(x, sr, f0 * np.arange(1, 4))
        assert np.all(amps > 0.05 * amps.max())  # the first three harmonics are there
        assert lo <= f0 and hi >= 3 * f0 * 0.99
    # the three-harmonic stack: amplitudes 1, 1/2, 1/4 as asked, and nothing at the 4th
    amps, spec, _ = _amplitudes_at(x, sr, f0 * np.arange(1, 5))
    assert np.allclose(amps[:3] / amps[0], [1, 0.5, 0.25], atol=0.02) and amps[3] < 1e-3 * amps[0]


def test_a_formant_filter_raises_the_harmonics_near_its_centre_by_its_closed_form_gain():
    sr, f0, fc, bw = 22050, 400.0, 2000.0, 200.0
    t = np.arange(sr) / sr  # 1 s: every harmonic sits on an FFT bin
    h = np.arange(1, 21)
    src = np.sin(2 * np.pi * f0 * h[:, None] * t).sum(axis=0)
    y = formant_filter(src, sr, [(fc, bw)])
    skip = sr // 10  # the resonance's onset transient
    a_in, _, _ = _amplitudes_at(src[skip:], sr, f0 * h, 5.0)
    a_out, _, _ = _amplitudes_at(y[skip:], sr, f0 * h, 5.0)
    gain = a_out / a_in
    assert h[np.argmax(gain)] == 5  # 2000 Hz
    assert gain[4] > 4 * gain[0] and gain[4] > 4 * gain[14]
    # against |H| of the two-pole resonance of unit gain at 0 Hz, computed here from its definition
    r = np.exp(-np.pi * bw / sr)
    a1, a2 = -2 * r * np.cos(2 * np.pi * fc / sr), r * r
    z = np.exp(-2j * np.pi * f0 * h / sr)
    expected = abs(1 + a1 + a2) / np.abs(1 + a1 * z + a2 * z**2)
    assert np.allclose(gain, expected, rtol=0.03)
    # a resonance above Nyquist is skipped, not aliased
    assert np.array_equal(formant_filter(src, sr, [(0.6 * sr, 100.0)]), src)


def test_a_song_is_sung_as_written_without_variation_and_varies_with_it():
    sr = 22050
    a = Syllable(((0.0, Note(0.05, 3000.0, 3000.0)),))
    b = Syllable(((0.0, Note(0.04, 2000.0, 4000.0, shape="up")), (0.05, Note(0.03, 5000.0, 4000.0, shape="down"))))
    bird = Bird((a, b), phrases=((0, 3, 0.05), (1, 2, 0.08)), phrase_gap=0.1, variation=0.0)
    x, lo, hi = sing(bird, sr, np.random.default_rng(0))
    # a at 0, 0.1, 0.2 (ends 0.25); b at 0.35 and 0.35 + 0.08 + 0.08 = 0.51 (its second note 0.05 s later)
    on = np.concatenate([np.zeros(64, bool), x != 0])
    before = np.cumsum(on)[63:-1] - np.concatenate([[0], np.cumsum(on)[:-65]])  # active samples in the 64 before
    onsets = np.flatnonzero(on[64:] & (before == 0))
    expected = np.round(np.array([0.0, 0.1, 0.2, 0.35, 0.40, 0.51, 0.56]) * sr)
    assert np.all(np.abs(onsets - expected) <= 3), onsets / sr
    assert x.size == round(0.56 * sr) + round(0.03 * sr)
    assert 2000.0 <= lo < 2005.0 and 4995.0 < hi <= 5000.0  # the contours' ends, sampled mid-sample
    # with variation two renditions differ, but not by much
    rng = np.random.default_rng(1)
    bird = Bird((a, b), phrases=((0, 3, 0.05), (1, 2, 0.08)), phrase_gap=0.1, variation=0.02)
    sizes = [sing(bird, sr, rng)[0].size for _ in range(6)]
    assert len(set(sizes)) > 1 and max(sizes) < 1.5 * x.size


@pytest.mark.parametrize("seed", range(4))
def test_a_drawn_bird_has_a_small_repertoire_of_realistic_syllables(seed):
    sr = 22050
    rng = np.random.default_rng(seed)
    bird = draw_bird(sr, rng)
    assert 2 <= len(bird.repertoire) <= 6 and len(bird.phrases) >= 1
    for syl in bird.repertoire:
        assert 0.015 <= syl.duration <= 0.33
    for idx, reps, gap in bird.phrases:
        syl = bird.repertoire[idx]
        if reps > 1:  # a repeated syllable stays under the performance limit
            assert syl.bandwidth <= podos_limit(1 / (syl.duration + gap)) + 1e-6
    x, lo, hi = sing(bird, sr, rng)
    assert 0 < x.size <= 3.0 * sr + 1 and np.isfinite(x).all() and 0 < lo < hi < 0.5 * sr


@pytest.mark.parametrize("sr", [8000, 44100])
@pytest.mark.parametrize("kind", BIRD_KINDS)
def test_every_kind_runs_at_low_and_high_rates_below_nyquist(kind, sr):
    for seed in range(3):
        w, lo, hi = bird_call(kind, sr, np.random.default_rng(seed))
        assert w.dtype == np.float32 and w.ndim == 1 and 0.01 * sr < w.size <= 3.0 * sr + 1
        assert np.isfinite(w).all() and np.abs(w).max() == pytest.approx(1.0)
        assert 0 <= lo < hi < 0.5 * sr, (lo, hi)
        spec = np.abs(np.fft.rfft(w)) ** 2
        f = np.fft.rfftfreq(w.size, 1 / sr)
        assert spec[(f >= 0.9 * lo) & (f <= 1.1 * hi)].sum() > 0.9 * spec.sum(), (kind, seed)
        w2, lo2, hi2 = bird_call(kind, sr, np.random.default_rng(seed))  # deterministic for a seed
        assert np.array_equal(w, w2) and (lo, hi) == (lo2, hi2)


def test_kinds_are_listed_and_an_unknown_one_is_refused():
    assert set(SIMPLE_KINDS) < set(BIRD_KINDS) and len(set(BIRD_KINDS)) == len(BIRD_KINDS) >= 8
    with pytest.raises(OptionError, match="unknown bird sound kind 'fog'"):
        bird_call("fog", 22050, np.random.default_rng(0))
    with pytest.raises(ValueError):  # what callers caught before
        bird_call("fog", 22050, np.random.default_rng(0))


def test_make_clip_draws_song_kinds_when_asked_and_the_simple_ones_by_default():
    _, events, _ = make_clip(6.0, 16000, hasbird=True, n_events=6, rng=5)
    assert {e.kind for e in events} <= set(SIMPLE_KINDS)
    _, events, clean = make_clip(6.0, 16000, hasbird=True, n_events=6, kinds=["song", "buzz"], rng=5)
    assert {e.kind for e in events} <= {"song", "buzz"} and np.isfinite(clean).all() and clean.any()
