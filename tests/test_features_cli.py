"""The `features` command end to end: good files processed, bad ones reported, exit code, outputs."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scatterbird import cli
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend import features
from scatterbird.pipeline.frontend.features import extract_features, load_scattergram
from scatterbird.pipeline.frontend.inputs import find_audio
from scatterbird.pipeline.frontend.scattering import Scattering
from scatterbird.version import __version__

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--sr", "8000", "-J", "6", "--q1", "4", "--threshold", "none"]


def _mixed_folder(tmp_path: Path) -> Path:
    d = tmp_path / "season"
    (d / "site_a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(d / "site_a" / "good1.wav", 0.1 * rng.standard_normal(8000 * 2), 16000)
    sf.write(d / "good2.flac", 0.1 * rng.standard_normal((12000, 2)), 12000)
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("not audio at all\n" * 30)
    x = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    x[4000] = np.nan
    sf.write(d / "nan.wav", x, 8000, subtype="FLOAT")
    sf.write(d / "one.wav", np.array([0.2], np.float32), 8000)
    return d


def test_features_processes_good_and_reports_bad(tmp_path, capsys):
    d = _mixed_folder(tmp_path)
    out = tmp_path / "out"
    code = cli.main(["features", str(d), "-o", str(out), "-q", *FAST])
    err = capsys.readouterr().err
    assert code == 1  # some inputs failed
    written = sorted(p.name for p in out.glob("*.npz"))
    assert written == ["good2_flac.npz", "site_a__good1_wav.npz"]
    for name in ("empty.wav", "text.wav", "nan.wav", "one.wav"):
        assert name in err
    assert "NaN" in err and "empty" in err and "too short" in err
    g = load_scattergram(out / "site_a__good1_wav.npz")
    config = FeatureConfig(sample_rate=8000, J=6, Q1=4, threshold="none")
    assert g.config_hash == config.hash
    assert g.S.dtype == np.float32 and g.S.shape == (Scattering(config).n_channels, Scattering(config).n_frames(8000))
    with np.load(out / "site_a__good1_wav.npz") as z:
        for key in ("S", "frame_rate", "start_time", "order", "frequency", "config_hash"):
            assert key in z.files


def test_features_all_good_exits_zero(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(8000, np.float32) + 0.01, 8000)
    assert cli.main(["features", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o"), "-q", *FAST]) == 0


def test_no_inputs_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["features", str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "-q"]) == 2
    assert capsys.readouterr().err.endswith("scatterbird features: error: no audio files found in the given inputs\n")


def test_a_scatterbird_error_is_one_line_and_exit_2(tmp_path, capsys):
    """A ConfigError (a ScatterbirdError) raised inside a command reaches main's one handler."""
    sf.write(tmp_path / "a.wav", np.zeros(8000, np.float32) + 0.01, 8000)
    assert cli.main(["features", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o"), "-q", "-J", "40"]) == 2
    assert capsys.readouterr().err == "scatterbird features: error: J must be between 1 and 16, got 40\n"
    assert not (tmp_path / "o").exists()


def test_version_is_the_installed_metadata(capsys):
    assert __version__ == importlib.metadata.version("scatterbird")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"scatterbird {importlib.metadata.version('scatterbird')}\n"


def test_cli_help_from_a_checkout_and_bad_option():
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "features" in r.stdout
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "features", "x", "-o", "y", "--threshold", "magic"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--threshold" in r.stderr and "magic" in r.stderr


def test_features_on_two_workers_write_what_one_process_writes(tmp_path):
    d = _mixed_folder(tmp_path)
    config = FeatureConfig(sample_rate=8000, J=6, Q1=4, threshold="none")
    files = find_audio([d]).with_roots()
    one = extract_features(files, tmp_path / "one", config, progress=False)
    two = extract_features(files, tmp_path / "two", config, progress=False, workers=2)
    assert [Path(o).name for _, o in two.done] == [Path(o).name for _, o in one.done] and len(one.done) == 2
    assert two.failed == one.failed and len(one.failed) == 4
    for _, out in one.done:
        a, b = load_scattergram(out), load_scattergram(tmp_path / "two" / Path(out).name)
        np.testing.assert_allclose(a.S, b.S, rtol=1e-5, atol=1e-5)  # one torch thread per worker: float32 rounding


def test_a_rerun_skips_what_is_done_and_redoes_what_changed(tmp_path, capsys, monkeypatch):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.wav", "b.wav"):
        sf.write(d / name, (0.1 * rng.standard_normal(8000)).astype(np.float32), 8000)
    computed = []
    real = features.write_features

    def counting(file, *a, **kw):
        computed.append(Path(file[0]).name)
        return real(file, *a, **kw)

    monkeypatch.setattr(features, "write_features", counting)
    out = tmp_path / "out"
    run = ["features", str(d), "-o", str(out), "-q", *FAST]
    assert cli.main(run) == 0 and sorted(computed) == ["a.wav", "b.wav"]
    st = (d / "a.wav").stat()
    with np.load(out / "a_wav.npz") as z:
        assert (int(z["source_size"]), int(z["source_mtime_ns"])) == (st.st_size, st.st_mtime_ns)
    before_a, before_b = load_scattergram(out / "a_wav.npz").S, (out / "b_wav.npz").read_bytes()
    capsys.readouterr()

    computed.clear()
    assert cli.main(run) == 0 and computed == []  # nothing recomputed
    assert "0 file(s) written to" in (said := capsys.readouterr().out) and "2 skipped (already done)" in said
    assert (out / "b_wav.npz").read_bytes() == before_b

    # a changed source (same size: new samples, new time) and a damaged .npz are redone, the rest skipped
    sf.write(d / "a.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 8000)
    os.utime(d / "a.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert (d / "a.wav").stat().st_size == st.st_size
    (out / "b_wav.npz").write_bytes(before_b[: len(before_b) // 2])
    computed.clear()
    assert cli.main(run) == 0 and sorted(computed) == ["a.wav", "b.wav"]
    assert not np.array_equal(load_scattergram(out / "a_wav.npz").S, before_a)
    assert load_scattergram(out / "b_wav.npz").S.shape == before_a.shape
    computed.clear()
    assert cli.main(run) == 0 and computed == []

    # --force, or another configuration: every file again
    assert cli.main([*run, "--force"]) == 0 and sorted(computed) == ["a.wav", "b.wav"]
    computed.clear()
    assert cli.main([*run, "-J", "5"]) == 0 and sorted(computed) == ["a.wav", "b.wav"]


def test_short_and_long_files_give_their_streamed_features(tmp_path, monkeypatch):
    """A short file is scattered in a buffer of about its own length, a long one streamed: both give the
    frames the streaming front end gives the same audio (float rounding)."""
    from scatterbird.pipeline.frontend import clips
    from scatterbird.pipeline.frontend.scattering import scatter_file

    config = FeatureConfig(sample_rate=8000, J=6, Q1=4, threshold="none")
    rng = np.random.default_rng(2)
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "short.wav", 0.1 * rng.standard_normal(3 * 8000), 8000)
    sf.write(folder / "long.wav", 0.1 * rng.standard_normal(5 * 8000), 8000)
    monkeypatch.setattr(clips, "MAX_BATCH_SAMPLES", 4 * 8000)  # "long" = over 4 s here
    seen = []
    real = clips.scatter_clips
    monkeypatch.setattr(clips, "scatter_clips", lambda sc, xs: seen.append(len(xs[0])) or real(sc, xs))
    run = extract_features(find_audio([folder]).with_roots(), tmp_path / "out", config, progress=False)
    assert len(run.done) == 2 and seen == [3 * 8000]  # only the short file took the clip path
    for name in ("short", "long"):
        got = load_scattergram(tmp_path / "out" / f"{name}_wav.npz").S
        ref = scatter_file(folder / f"{name}.wav", config).S
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=2e-4)
