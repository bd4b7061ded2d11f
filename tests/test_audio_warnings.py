"""Accurate messages and warnings for suspect audio: corrupt and truncated MP3/Ogg, low sample rates, the MP3
decoder kept off the terminal; warnings recorded in the store (with old stores migrated) and printed by
`detect` and `failures`; a pickled Python object given as a model."""

from __future__ import annotations

import os
import pickle
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from simple_detector import train_simple_detector

from scatterbird import cli
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.detect.store import SCHEMA_VERSION, STORE_NAME, FileResult, ResultsStore, RunParams
from scatterbird.pipeline.frontend.audio import AudioError, audio_info, read_span, stream_audio

MP3 = pytest.mark.skipif("MP3" not in sf.available_formats(),
                         reason=f"libsndfile {sf.__libsndfile_version__} cannot write MP3 (needs >= 1.1)")


def noisy_tone(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 1500 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def write(path: Path, sr: int = 22050, seconds: float = 20.0) -> Path:
    fmt = {".mp3": ("MP3", "MPEG_LAYER_III"), ".ogg": ("OGG", "VORBIS"), ".wav": ("WAV", "PCM_16")}[path.suffix]
    sf.write(path, noisy_tone(sr, seconds), sr, format=fmt[0], subtype=fmt[1])
    return path


def cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def drain(path, sr: int = 22050):
    """(samples decoded, the stream's warning)."""
    stream = stream_audio(path, sr)
    return sum(b.size for b in stream), stream.warning


def reason(path, sr: int = 22050) -> str:
    with pytest.raises(AudioError) as info:
        drain(path, sr)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    return info.value.reason


# -- corrupt files: the reason, and nothing on file descriptor 2 ----------------------------------------
def test_random_bytes_named_mp3_get_an_accurate_reason_and_a_quiet_terminal(tmp_path, capfd):
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    why = reason(path)
    assert why.startswith("not a readable audio file: MP3 header invalid (corrupt or not MP3)")
    assert "does not exist" not in why and "pipe" not in why
    with pytest.raises(AudioError):
        audio_info(path)
    assert capfd.readouterr().err == ""
    os.write(2, b"still here\n")  # descriptor 2 is the terminal (capfd's) again
    assert capfd.readouterr().err == "still here\n"


def test_random_bytes_with_another_name_are_not_called_a_missing_file(tmp_path, capfd):
    path = tmp_path / "noise.flac"
    path.write_bytes(np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    why = reason(path)
    assert "does not exist" not in why and ("not recognised" in why or "unrecognised" in why or "format" in why)
    assert capfd.readouterr().err == ""


@MP3
def test_garbled_mp3_is_reported_as_corrupt_without_decoder_lines(tmp_path, capfd):
    good = write(tmp_path / "good.mp3", seconds=6.0)
    data = bytearray(good.read_bytes())
    quarter = len(data) // 4
    data[quarter:-quarter] = np.random.default_rng(0).integers(0, 256, len(data) - 2 * quarter, np.uint8).tobytes()
    bad = tmp_path / "garbled.mp3"
    bad.write_bytes(bytes(data))
    try:
        n, warning = drain(bad)
    except AudioError as exc:  # the decoder gave up: the reason says the data is corrupt and where
        assert "MP3 data corrupt" in exc.reason and "decoding failed at" in exc.reason
    else:  # the decoder resynchronised past the damage: used, with a warning
        assert warning is not None and ("damaged MP3 data" in warning or "truncated" in warning), warning
    assert capfd.readouterr().err == ""


@MP3
def test_a_good_mp3_read_in_blocks_prints_nothing_and_warns_nothing(tmp_path, capfd):
    # libmpg123 complains about some frames of a sound file read in blocks; that is not news for the user
    path = write(tmp_path / "good.mp3", seconds=20.0)
    n, warning = drain(path)
    assert warning is None and abs(n - 20.0 * 22050) < 0.05 * 22050
    assert capfd.readouterr().err == ""


@MP3
def test_decoding_in_threads_keeps_descriptor_2(tmp_path, capfd):
    good = write(tmp_path / "good.mp3", seconds=8.0)
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    before = os.fstat(2)
    outcomes: list[str] = []

    def work(path: Path) -> None:
        for _ in range(3):
            try:
                drain(path)
                outcomes.append("done")
            except AudioError as exc:
                outcomes.append(exc.reason)

    threads = [threading.Thread(target=work, args=(p,)) for p in (good, bad, good, bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert outcomes.count("done") == 6 and sum("MP3 header invalid" in o for o in outcomes) == 6
    assert capfd.readouterr().err == ""


@MP3
def test_read_span_cuts_a_clip_quietly(tmp_path, capfd):
    full = write(tmp_path / "full.mp3", sr=16000, seconds=4.0)
    x, sr = read_span(cut(full, tmp_path / "cut.mp3", 0.5), 0.5, 1.25)  # opening it makes libmpg123 talk
    assert sr == 16000 and x.shape == (12000, 1)
    assert read_span(tmp_path / "cut.mp3", 30.0, 31.0)[0].shape == (0, 1)
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(np.random.default_rng(4).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="MP3 header invalid"):
        read_span(bad, 0.0, 1.0)
    assert capfd.readouterr().err == ""


# -- truncated files: used, with a warning ------------------------------------------------------------------
@MP3
def test_truncated_mp3_is_used_with_a_warning(tmp_path, capfd):
    full = write(tmp_path / "full.mp3")
    assert drain(full)[1] is None
    n, warning = drain(cut(full, tmp_path / "cut.mp3", 0.5))
    assert 5 * 22050 < n < 15 * 22050
    assert warning is not None and "truncated file?" in warning and "of the 20.00 s its header declares" in warning
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("fraction", [0.3, 0.97])
def test_truncated_ogg_is_used_with_a_warning(tmp_path, fraction):
    full = write(tmp_path / "full.ogg")
    assert drain(full)[1] is None and audio_info(full).warnings == ()
    part = cut(full, tmp_path / "cut.ogg", fraction)
    n, warning = drain(part)
    assert 0 < n < 20 * 22050
    assert warning is not None and "truncated file: the file ends part-way through an Ogg page" in warning
    assert audio_info(part).warnings == (warning,)


def test_ogg_cut_at_a_page_boundary_lacks_its_end_of_stream_page(tmp_path):
    full = write(tmp_path / "full.ogg")
    data = full.read_bytes()
    part = tmp_path / "cut.ogg"
    part.write_bytes(data[: data.rfind(b"OggS")])  # the last page, with the end-of-stream flag, is gone
    n, warning = drain(part)
    assert n > 0 and "the Ogg stream stops without its end-of-stream page" in warning


def test_ogg_cut_before_its_first_audio_page_fails_with_the_reason(tmp_path):
    full = write(tmp_path / "full.ogg", seconds=1.0)
    part = cut(full, tmp_path / "cut.ogg", 0.3)
    assert "truncated file" in reason(part)


# -- low sample rates ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate,pipeline,warned", [(8000, 22050, True), (11025, 22050, True),
                                                  (16000, 22050, False), (8000, 8000, False)])
def test_low_sample_rate_warning(tmp_path, rate, pipeline, warned):
    path = write(tmp_path / "low.wav", sr=rate, seconds=1.0)
    warning = drain(path, pipeline)[1]
    if warned:
        assert warning == (f"sample rate {rate} Hz: nothing above {rate / 2000:g} kHz is recorded; "
                           "much birdsong lies above it")
    else:  # high enough, or the pipeline itself works at that rate: the recording loses nothing it would use
        assert warning is None


# -- the store: the warning column, and stores made before it -----------------------------------------------
def run_params() -> RunParams:
    return RunParams(model_hash="m", model_kind="k", model_path="/m.pt", config_json="{}", config_hash="c",
                     window_s=2.0, hop_s=1.0, min_conf=0.5)


def test_store_keeps_the_warning(tmp_path):
    with ResultsStore(tmp_path / "s.sqlite", writer=True) as st:
        run, _ = st.open_run(run_params(), package_version="0")
        st.write_file(run.id, FileResult("/a.mp3", 1, 2, "done", warning="truncated file? 1.00 s decoded"))
        st.write_file(run.id, FileResult("/b.wav", 1, 2, "done"))
        st.write_file(run.id, FileResult("/c.wav", 1, 2, "failed", error="bad"))
    with ResultsStore(tmp_path / "s.sqlite") as st:
        assert st.warnings(run.id) == [("/a.mp3", "truncated file? 1.00 s decoded")]
        rows = {f["path"]: f for f in st.files(run.id)}
        assert rows["/a.mp3"]["warning"].startswith("truncated") and rows["/b.wav"]["warning"] is None
        assert st.file_result(rows["/a.mp3"]).warning == "truncated file? 1.00 s decoded"


def make_schema_1(store: Path) -> None:
    """Turn a store into one as schema 1 wrote it: no ``files.warning`` column."""
    db = sqlite3.connect(store)
    db.execute("ALTER TABLE files DROP COLUMN warning")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    db.commit()
    db.close()


def test_a_schema_1_store_is_read_as_it_is_and_migrated_by_a_writer(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultsStore(path, writer=True) as st:
        run, _ = st.open_run(run_params(), package_version="0")
        st.write_file(run.id, FileResult("/a.wav", 10, 20, "done", windows=np.array([[0.0, 2.0, 0.25]])))
    make_schema_1(path)
    with ResultsStore(path) as st:  # a reader changes nothing
        assert st.files(run.id)[0]["warning"] is None and st.warnings(run.id) == []
        assert st.windows(run.id) == [("/a.wav", 0.0, 2.0, 0.25)]
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("1",)
    db.close()
    with ResultsStore(path, writer=True) as st:
        again, resumed = st.open_run(run_params(), package_version="0")
        assert resumed and again.id == run.id and st.done_files(run.id) == {"/a.wav": (10, 20)}
        st.write_file(run.id, FileResult("/b.ogg", 1, 2, "done", warning="truncated"))
        assert st.warnings(run.id) == [("/b.ogg", "truncated")]
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (str(SCHEMA_VERSION),)
    db.close()


# -- detect and failures, as a user runs them ---------------------------------------------------------------
@pytest.fixture(scope="module")
def model_16k(tmp_path_factory) -> Path:
    """A small test detector working at 16 kHz, so that an 8 kHz recording loses what it would use."""
    path = tmp_path_factory.mktemp("model16k") / "simple16k.pt"
    config = FeatureConfig(J=6, Q1=4, max_order=1, sample_rate=16000, threshold="none")
    train_simple_detector(path, config=config, n_clips=12, clip_s=1.0)
    return path


@MP3
def test_detect_records_and_prints_warnings_and_resumes_an_old_store(model_16k, tmp_path, capfd):
    d = tmp_path / "in"
    d.mkdir()
    cut(write(tmp_path / "full.mp3", sr=16000, seconds=4.0), d / "cut.mp3", 0.5)
    cut(write(tmp_path / "full.ogg", sr=16000, seconds=4.0), d / "cut.ogg", 0.5)
    write(d / "phone.wav", sr=8000, seconds=2.0)
    write(d / "fine.wav", sr=16000, seconds=2.0)
    out = tmp_path / "out"
    opts = ["--model", str(model_16k), "--window", "2", "--hop", "1", "-q", "--format", "csv", "--no-report"]
    assert cli.main(["detect", str(d), "-o", str(out), *opts]) == cli.EXIT_OK  # warnings are not failures
    text = capfd.readouterr()
    assert "4 processed, 0 skipped (already done), 0 failed, 3 with warnings" in text.out
    assert f"  {d / 'cut.mp3'}: warning: truncated file?" in text.out
    assert f"  {d / 'cut.ogg'}: warning: truncated file: the file ends part-way through an Ogg page" in text.out
    assert f"  {d / 'phone.wav'}: warning: sample rate 8000 Hz: nothing above 4 kHz is recorded" in text.out
    assert "libmpg123" not in text.err and "Xing" not in text.err

    with ResultsStore(out / STORE_NAME) as st:
        run = st.run()
        warned = dict(st.warnings(run.id))
        assert {Path(p).name for p in warned} == {"cut.mp3", "cut.ogg", "phone.wav"}
        assert all(f["status"] == "done" and f["n_windows"] > 0 for f in st.files(run.id))

    assert cli.main(["failures", str(out)]) == cli.EXIT_OK
    text = capfd.readouterr()
    assert "# processed with warnings (3)" in text.out
    assert f"{d / 'cut.ogg'}\ttruncated file: the file ends part-way through an Ogg page" in text.out
    assert "3 file(s) processed with warnings" in text.err

    # a store written before the warning column: read, migrated, resumed (nothing redone)
    make_schema_1(out / STORE_NAME)
    assert cli.main(["failures", str(out)]) == cli.EXIT_OK
    assert "processed with warnings" not in capfd.readouterr().out
    assert cli.main(["detect", str(d), "-o", str(out), *opts]) == cli.EXIT_OK
    assert "0 processed, 4 skipped (already done), 0 failed" in capfd.readouterr().out
    (d / "fine.wav").unlink()
    cut(write(tmp_path / "again.mp3", sr=16000, seconds=4.0), d / "again.mp3", 0.5)
    assert cli.main(["detect", str(d), "-o", str(out), *opts]) == cli.EXIT_OK
    assert "1 processed, 3 skipped (already done), 0 failed, 1 with warnings" in capfd.readouterr().out
    with ResultsStore(out / STORE_NAME) as st:
        assert [Path(p).name for p, _ in st.warnings(st.run().id)] == ["again.mp3"]


# -- a foreign pickle given as a model ----------------------------------------------------------------------
class _NotAModel:
    pass


def test_a_pickled_python_object_as_model_gets_one_safe_line(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    write(d / "a.wav", sr=8000, seconds=2.0)
    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps({"weights": _NotAModel()}))
    rc = cli.main(["detect", str(d), "-o", str(tmp_path / "out"), "--model", str(bad), "-q"])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_USAGE
    assert (f"scatterbird detect: error: {bad}: not a scatterbird model file (it holds Python objects, "
            "which scatterbird never unpickles: only files written by scatterbird train can be loaded)"
            ) in err.splitlines()
    assert "\x1b" not in err and "weights_only=False" not in err
