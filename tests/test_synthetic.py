"""data/synthetic.py: known truth, SNR as asked, dataset layout."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from scatterbird.data.synthetic import BACKGROUNDS, BIRD_KINDS, background, make_clip, write_dataset


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
    mix, events, clean = make_clip(3.0, sr, hasbird=True, n_events=1, kinds=[kind], snr_db=20, rng=3)
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
    rows = list(csv.DictReader(open(labels)))
    assert [r.keys() for r in rows][0] == {"itemid", "datasetid", "hasbird"}
    assert len(rows) == 6
    for r in rows:
        info = sf.info(tmp_path / "ds" / "wav" / f"{r['itemid']}.wav")
        assert info.channels == 1 and info.samplerate == 22050 and info.frames == 22050
    # deterministic given the seed
    labels2 = write_dataset(tmp_path / "ds2", 6, datasetid="toy", positive_rate=0.5, duration=1.0, seed=4)
    assert open(labels).read() == open(labels2).read()


def _synthetic(*args, cwd):
    return subprocess.run([sys.executable, "-m", "scatterbird.data.synthetic", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_the_command_line_writes_a_dataset_and_a_clip(tmp_path):
    r = _synthetic("--help", cwd=tmp_path)
    assert r.returncode == 0 and "dataset" in r.stdout and "clip" in r.stdout, r.stderr
    r = _synthetic("dataset", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "--positive-rate" in r.stdout and "--snr LOW HIGH" in r.stdout

    r = _synthetic("dataset", tmp_path / "ds", "-n", 4, "--duration", 0.5, "--sr", 16000, "--seed", 4,
                   "--datasetid", "toy", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    rows = list(csv.DictReader(open(tmp_path / "ds" / "toy.csv")))
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
                 ["clip", tmp_path / "c.wav", "--duration", -1], ["clip", tmp_path / "c.wav", "--background", "fog"]):
        r = _synthetic(*args, cwd=tmp_path)
        assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr, args
    (tmp_path / "file").write_text("")
    r = _synthetic("dataset", tmp_path / "file" / "ds", "-n", 1, "--duration", 0.2, cwd=tmp_path)
    assert r.returncode == 2 and "error: cannot write" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "c.wav").exists()
