"""Batch detection end to end (in this process, and on local worker processes), against known answers:
synthetic recordings with known bird events, scored by an easy detector trained here."""

from __future__ import annotations

import csv
import io
import json
import os
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from simple_detector import FAST_CONFIG, SimpleDetector, train_simple_detector, write_recordings

from scatterbird.errors import DetectorError
from scatterbird.models import registry
from scatterbird.pipeline.detect import batch
from scatterbird.pipeline.detect.batch import (
    BatchError,
    DetectParams,
    detect_file,
    parse_shard,
    run_detect,
    shard_files,
    shard_from_env,
)
from scatterbird.pipeline.detect.exports import RAVEN_COLUMNS, export_names, export_run, score_text, score_value
from scatterbird.pipeline.detect.store import STORE_NAME, ResultsStore, merge_stores, shard_store_name
from scatterbird.pipeline.detect.windows import frame_range, plan_windows
from scatterbird.pipeline.frontend import clips
from scatterbird.pipeline.frontend.scattering import Scattering

PARAMS = DetectParams(window_s=2.0, hop_s=1.0, min_conf=0.5)
SR = FAST_CONFIG.sample_rate

#: (relative path, duration s, has a bird call): WAV and FLAC, nested folders, a file shorter than a window,
#: lengths that are and are not on the hop grid.
SPECS = [
    ("site1/bird_a.wav", 12.0, True),
    ("site1/quiet_a.wav", 9.5, False),
    ("site2/bird_b.flac", 20.3, True),
    ("site2/deep/quiet_b.flac", 1.3, False),
    ("bird_c.wav", 7.0, True),
    ("quiet_c.flac", 6.0, False),
]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("recordings")
    return folder, write_recordings(folder, SPECS)


@pytest.fixture(scope="module")
def reference(model, recordings, tmp_path_factory):
    """One uninterrupted serial run over the recordings."""
    out = tmp_path_factory.mktemp("reference")
    summary = run_detect([recordings[0]], out, model_path=model, params=PARAMS, formats=["all"])
    return out, summary


def rows(outdir: Path, store_name: str = STORE_NAME):
    """(files, windows, events) of the latest run, without ids and timings."""
    with ResultsStore(outdir / store_name) as st:
        run = st.run()
        files = [(f["path"], f["status"], f["size"], f["mtime_ns"], f["duration_s"], f["n_windows"])
                 for f in st.files(run.id)]
        return files, st.windows(run.id), st.events(run.id)


def assert_same_rows(a, b, atol=0.0):
    fa, wa, ea = a
    fb, wb, eb = b
    assert fa == fb
    assert [w[:3] for w in wa] == [w[:3] for w in wb]
    np.testing.assert_allclose([w[3] for w in wa], [w[3] for w in wb], rtol=0, atol=atol)
    assert [e[:3] + e[4:] for e in ea] == [e[:3] + e[4:] for e in eb]  # events: same bounds and peaks
    np.testing.assert_allclose([e[3] for e in ea], [e[3] for e in eb], rtol=0, atol=atol)


# -- known answers ------------------------------------------------------------------------------------
def test_events_are_found_where_the_birds_are(reference, recordings):
    out, summary = reference
    _, truth = recordings
    assert summary.done == len(SPECS) and not summary.failed and summary.skipped == 0
    _, _, events = rows(out)
    found: dict[str, list] = {}
    for p, a, b, peak, t in events:
        found.setdefault(p, []).append((a, b, peak, t))
        assert peak >= PARAMS.min_conf and a <= t <= b
    for path, true_events in truth.items():
        got = found.get(path, [])
        if not true_events:
            assert got == [], f"false detection in {path}: {got}"
            continue
        for ev in true_events:  # every call is inside a detected event ...
            assert any(a <= ev.start and ev.end <= b for a, b, _, _ in got), (path, ev, got)
        for a, b, _, _ in got:  # ... and every detected event holds a call
            assert any(a < ev.end and ev.start < b for ev in true_events), (path, a, b, true_events)


def test_windows_cover_each_file_exactly(reference):
    out, _ = reference
    files, windows, _ = rows(out)
    by_file: dict[str, list] = {}
    for p, a, b, s in windows:
        by_file.setdefault(p, []).append((a, b))
        assert 0.0 <= s <= 1.0
    durations = {Path(rel).name: d for rel, d, _ in SPECS}
    for path, status, _, _, duration, n_windows in files:
        assert status == "done"
        assert duration == durations[Path(path).name]  # 8 kHz files: no resampling, exact
        expected = [(a / SR, b / SR) for a, b in plan_windows(round(duration * SR), SR, PARAMS.spec)]
        assert by_file[path] == expected and n_windows == len(expected)
        assert expected[0][0] == 0.0 and expected[-1][1] == duration


@pytest.mark.parametrize("short_limit", [1000, None], ids=["streamed", "one-clip-buffer"])
def test_a_long_file_streams_span_by_span_with_the_scores_of_the_whole(model, tmp_path, monkeypatch, short_limit):
    """Streamed (40 s at 8 kHz is 3 FFT chunks of 16 s: windows straddle chunk borders), or, for a recording
    up to MAX_BATCH_SAMPLES, scattered in one buffer of about its own length: the scores of the whole."""
    rng = np.random.default_rng(5)
    x = (0.05 * rng.standard_normal(SR * 40)).astype(np.float32)
    sf.write(tmp_path / "long.wav", x, SR, subtype="FLOAT")
    det = batch.load_model_for_run(model)[0]
    if short_limit is not None:
        monkeypatch.setattr(clips, "MAX_BATCH_SAMPLES", short_limit)
    clip_calls = []
    real = clips.scatter_clips
    monkeypatch.setattr(clips, "scatter_clips", lambda sc, xs: clip_calls.append(len(xs)) or real(sc, xs))
    res = detect_file(tmp_path / "long.wav", det, PARAMS)
    assert res.status == "done" and res.duration_s == 40.0
    assert clip_calls == ([] if short_limit is not None else [1])
    whole = Scattering(FAST_CONFIG).whole(x).S
    bounds = plan_windows(x.size, SR, PARAMS.spec)
    seqs = [whole[:, slice(*frame_range(a, b, FAST_CONFIG.hop_samples))].T for a, b in bounds]
    np.testing.assert_allclose(res.windows[:, :2], np.array(bounds) / SR)
    np.testing.assert_allclose(res.windows[:, 2], det.predict_proba(seqs), atol=1e-5)



def test_a_long_file_hands_free_memory_back_every_so_often(model, tmp_path, monkeypatch):
    """Every RELEASE_EVERY_S seconds of scored audio the allocator's free pages go back to the system, and
    the scores do not change."""
    rng = np.random.default_rng(6)
    x = (0.05 * rng.standard_normal(SR * 40)).astype(np.float32)
    sf.write(tmp_path / "long.wav", x, SR, subtype="FLOAT")
    det = batch.load_model_for_run(model)[0]
    calls = []
    monkeypatch.setattr(batch, "release_free_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(batch, "RELEASE_EVERY_S", 10.0)
    res = detect_file(tmp_path / "long.wav", det, PARAMS)
    monkeypatch.setattr(batch, "RELEASE_EVERY_S", 1e9)
    again = detect_file(tmp_path / "long.wav", det, PARAMS)
    assert len(calls) >= 2  # 40 s of audio, scored in batches, at least every 10 s
    np.testing.assert_array_equal(res.windows, again.windows)


def test_release_free_memory_runs_here():
    import platform

    from scatterbird.pipeline.detect.memory import release_free_memory

    # glibc on Linux: the call exists and is made; elsewhere it is a no-op that says so
    assert release_free_memory() is (platform.libc_ver()[0] == "glibc")


# -- exports ------------------------------------------------------------------------------------------
def significant_digits(text: str) -> int:
    """Significant digits of a number as written (``0.000123`` -> 3, ``1e-05`` -> 1)."""
    mantissa = text.lower().split("e")[0].replace("-", "").replace(".", "").lstrip("0")
    return len(mantissa.rstrip("0")) or 1


def rounded(rows):
    """Store rows with the score (4th value) rounded to 6 significant digits, times untouched."""
    return [(r[0], r[1], r[2], float(f"{r[3]:.6g}"), *r[4:]) for r in rows]


def test_scores_are_written_with_six_significant_digits():
    assert [score_text(x) for x in (0.5, 1.0, 0.0, 0.12345678901234, 0.9999996, 1.234567e-05)] == [
        "0.5", "1.0", "0.0", "0.123457", "1.0", "1.23457e-05"]
    assert score_value(0.33333333333333331) == 0.333333


def test_exports_parse_back_to_the_store_rows(reference):
    out, summary = reference
    with ResultsStore(out / STORE_NAME) as st:
        run = st.run()
        windows, events, files = st.windows(run.id), st.events(run.id), st.files(run.id)
    prov = [str(run.id), run.model_hash, run.config_hash]
    with open(out / "windows.csv", newline="") as f:
        r = list(csv.reader(f))
    assert r[0] == ["file", "start_s", "end_s", "score", "run_id", "model_hash", "config_hash"]
    # times exactly as stored; scores to 6 significant digits
    assert [(x[0], float(x[1]), float(x[2]), float(x[3])) for x in r[1:]] == rounded(windows)
    assert all(x[4:] == prov for x in r[1:])
    assert all(significant_digits(x[3]) <= 6 for x in r[1:]) and max(len(x[3]) for x in r[1:]) > 3
    with open(out / "detections.csv", newline="") as f:
        r = list(csv.reader(f))
    assert r[0][:5] == ["file", "start_s", "end_s", "score", "peak_s"]
    assert [(x[0], *map(float, x[1:5])) for x in r[1:]] == rounded(events)
    assert all(significant_digits(x[3]) <= 6 for x in r[1:])
    assert events, "the recordings hold birds: there must be detections"

    names = export_names(f["path"] for f in files)
    raven_rows, label_rows = [], []
    for f in files:
        with open(out / "raven" / f"{names[f['path']]}.selections.txt", newline="") as fh:
            table = list(csv.DictReader(fh, delimiter="\t"))
        with open(fh.name, newline="") as fh:
            assert next(csv.reader(fh, delimiter="\t")) == list(RAVEN_COLUMNS)
        for i, row in enumerate(table, start=1):
            assert int(row["Selection"]) == i and row["View"] == "Spectrogram 1" and row["Channel"] == "1"
            assert row["Begin Path"] == f["path"] and float(row["Low Freq (Hz)"]) == 0.0
            assert float(row["High Freq (Hz)"]) == SR / 2
            assert significant_digits(row["Score"]) <= 6
            raven_rows.append((row["Begin Path"], float(row["Begin Time (s)"]), float(row["End Time (s)"]),
                               float(row["Score"]), float(row["Peak Time (s)"])))
        for line in (out / "audacity" / f"{names[f['path']]}.labels.txt").read_text().splitlines():
            a, b, label = line.split("\t")
            assert label.startswith("bird p=") and significant_digits(label[len("bird p="):]) <= 6
            label_rows.append((f["path"], float(a), float(b), float(label[len("bird p="):])))
    assert sorted(raven_rows) == sorted(rounded(events))
    assert sorted(label_rows) == sorted(e[:4] for e in rounded(events))

    doc = json.loads((out / "detections.json").read_text())
    assert doc["run"]["model_hash"] == run.model_hash and doc["run"]["config_hash"] == run.config_hash
    assert doc["run"]["feature_config"] == FAST_CONFIG.to_dict()
    assert doc["run"]["package_version"] and doc["run"]["finished_at"]
    assert [(f["path"], *w) for f in doc["files"] for w in f["windows"]] == rounded(windows)
    assert [(f["path"], e["start_s"], e["end_s"], e["score"], e["peak_s"]) for f in doc["files"]
            for e in f["events"]] == rounded(events)
    assert summary.exported and all(p.is_file() for p in summary.exported)


def test_export_names_are_flat_and_distinct():
    names = export_names(["/d/a/x.wav", "/d/b/x.wav", "/d/b/x.flac", "/d/y.wav"])
    assert names == {"/d/a/x.wav": "a__x_wav", "/d/b/x.wav": "b__x_wav", "/d/b/x.flac": "b__x_flac",
                     "/d/y.wav": "y_wav"}
    assert export_names(["/only/one.wav"]) == {"/only/one.wav": "one_wav"}


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_files_are_recorded_with_their_reason_and_the_run_goes_on(model, tmp_path):
    d = tmp_path / "mixed"
    truth = write_recordings(d, [("good1.wav", 4.0, True), ("sub/good2.flac", 3.0, False)])
    x = np.random.default_rng(0).standard_normal(SR * 2).astype(np.float32) * 0.1
    (d / "empty.wav").write_bytes(b"")
    sf.write(d / "zero_length.wav", np.zeros(0, np.float32), SR)
    full = d / "full.wav"
    sf.write(full, x, SR, subtype="PCM_16")
    data = full.read_bytes()
    (d / "truncated.wav").write_bytes(data[: len(data) // 2])
    full.unlink()
    (d / "wrong_extension.wav").write_text("these are field notes, not audio\n" * 40)
    y = x.copy()
    y[4000] = np.nan
    sf.write(d / "nan.wav", y, SR, subtype="FLOAT")
    sf.write(d / "flac_named.wav", x, SR, format="FLAC")  # content decides: decoded fine
    (d / "notes.txt").write_text("not picked up: not an audio extension")
    summary = run_detect([d], tmp_path / "out", model_path=model, params=PARAMS)
    failed = dict(summary.failed)
    assert summary.done == 3 and summary.files == 8
    reasons = {Path(p).name: r for p, r in failed.items()}
    assert set(reasons) == {"empty.wav", "zero_length.wav", "truncated.wav", "wrong_extension.wav", "nan.wav"}
    assert "empty file" in reasons["empty.wav"]
    assert "zero samples" in reasons["zero_length.wav"]
    assert "truncated" in reasons["truncated.wav"]
    assert "unrecognised audio format" in reasons["wrong_extension.wav"]
    assert "NaN sample at 0.5" in reasons["nan.wav"]
    files, windows, _ = rows(tmp_path / "out")
    done = {p for p, status, *_ in files if status == "done"}
    assert done == set(truth) | {str(d / "flac_named.wav")}
    with ResultsStore(tmp_path / "out" / STORE_NAME) as st:
        assert dict(st.failures(st.run().id)) == failed
    # a rerun retries the failures (they may have been fixed) and skips the good files
    again = run_detect([d], tmp_path / "out", model_path=model, params=PARAMS)
    assert again.skipped == 3 and again.done == 0 and len(again.failed) == 5


def test_input_problems_are_reported_not_fatal(model, tmp_path):
    d = tmp_path / "tree"
    write_recordings(d, [("a.wav", 3.0, False)])
    (d / "loop").symlink_to(d)
    summary = run_detect([d, tmp_path / "missing_dir"], tmp_path / "out", model_path=model, params=PARAMS)
    assert summary.done == 1
    reasons = " | ".join(r for _, r in summary.problems)
    assert "symlink loop" in reasons and "not found" in reasons
    with ResultsStore(tmp_path / "out" / STORE_NAME) as st:
        assert len(st.failures(st.run().id)) == len(summary.problems)


# -- resume, force, new runs --------------------------------------------------------------------------
def test_resume_skips_done_files_and_redoes_changed_ones(model, recordings, reference, tmp_path):
    folder, _ = recordings
    out = tmp_path / "out"
    first = run_detect([folder], out, model_path=model, params=PARAMS)
    assert first.done == len(SPECS) and not first.resumed
    again = run_detect([folder], out, model_path=model, params=PARAMS)
    assert again.resumed and again.skipped == len(SPECS) and again.done == 0 and again.run.id == first.run.id
    assert "resuming run 1" in again.notes[0]
    # a file edited since (new mtime) is redone; the others are not
    target = folder / "site1" / "quiet_a.wav"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        third = run_detect([folder], out, model_path=model, params=PARAMS)
        assert third.done == 1 and third.skipped == len(SPECS) - 1
        forced = run_detect([folder], out, model_path=model, params=PARAMS, force=True)
        assert forced.done == len(SPECS) and forced.skipped == 0 and forced.run.id == first.run.id
        files, windows, events = rows(out)
        ref_files, ref_windows, ref_events = rows(reference[0])
        assert windows == ref_windows and events == ref_events  # nothing doubled
        assert [f[0] for f in files] == [f[0] for f in ref_files]
    finally:
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_another_model_starts_a_new_run_and_says_so(model, recordings, tmp_path):
    folder, _ = recordings
    out = tmp_path / "out"
    first = run_detect([folder], out, model_path=model, params=PARAMS, formats=["csv"])
    other_model = tmp_path / "other.pt"
    other = train_simple_detector(other_model, seed=7, C=0.1)
    notes: list[str] = []
    second = run_detect([folder], out, model_path=other_model, params=PARAMS, formats=["csv"], log=notes.append)
    assert not second.resumed and second.run.id == first.run.id + 1 and second.done == len(SPECS)
    assert notes and f"model {first.run.model_hash} -> {other.model_hash}" in notes[0]
    assert "starting new run 2" in notes[0]
    with ResultsStore(out / STORE_NAME) as st:
        assert len(st.windows(1)) == len(st.windows(2))  # run 1 intact, run 2 separate
        assert {w[3] for w in st.windows(1)}.isdisjoint({w[3] for w in st.windows(2)})
    with open(out / "windows.csv", newline="") as f:
        assert {r["model_hash"] for r in csv.DictReader(f)} == {other.model_hash}
    # another window is another configuration: a new run too
    notes.clear()
    third = run_detect([folder], out, model_path=other_model, params=DetectParams(3.0, 1.5, 0.5), log=notes.append)
    assert third.run.id == 3 and "window 2 -> 3" in notes[0] and "hop 1 -> 1.5" in notes[0]


# -- parallel modes -----------------------------------------------------------------------------------
def test_three_shards_merged_give_the_rows_of_one_run(model, recordings, reference, tmp_path):
    folder, _ = recordings
    out = tmp_path / "sharded"
    counts = []
    for i in (1, 2, 3):
        s = run_detect([folder], out, model_path=model, params=PARAMS, shard=(i, 3), formats=["csv"])
        counts.append(s.files)
        assert (out / shard_store_name(i, 3)).is_file() and s.run.shard == f"{i}/3"
        assert not s.exported  # shards export nothing; the merge does
    assert counts == [2, 2, 2]  # six files, three shards: two each
    again = run_detect([folder], out, model_path=model, params=PARAMS, shard=(2, 3))
    assert (again.files, again.done, again.skipped) == (2, 0, 2)  # a rerun finds its own files done
    report = merge_stores(out / STORE_NAME, sorted(out.glob("scatterbird.shard-*.sqlite")))
    assert report.copied == len(SPECS) and len(report.runs) == 1
    assert_same_rows(rows(out), rows(reference[0]))
    with ResultsStore(out / STORE_NAME) as st:
        assert st.run().finished_at is not None


def test_local_worker_processes_give_the_rows_of_the_serial_run(model, recordings, reference, tmp_path):
    folder, _ = recordings
    summary = run_detect([folder], tmp_path / "out", model_path=model, params=PARAMS, workers=2)
    assert summary.done == len(SPECS) and not summary.failed
    assert_same_rows(rows(tmp_path / "out"), rows(reference[0]), atol=1e-6)


def test_a_job_that_raises_is_recorded_as_the_files_failure():
    died = batch._failed("/r/a.wav", BrokenProcessPool("gone"), None)
    assert died.status == "failed" and died.error.startswith("a worker process died while this file was in flight")
    lost = batch._failed("/r/a.wav", RuntimeError("worker lost"), "tcp://127.0.0.1:8786")
    assert lost.error == "the cluster could not process it (RuntimeError: worker lost)"
    assert batch._failed("/r/a.wav", KeyError("k"), None).error == "processing error (KeyError: 'k')"


def test_shards_are_deterministic_and_from_slurm():
    assert parse_shard("2/8") == (2, 8)
    for bad in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(BatchError):
            parse_shard(bad)
    assert shard_from_env({}) is None
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert shard_from_env(env) == (3, 4)
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}) == (1, 2)


@pytest.mark.parametrize("n_files", [2, 3, 7])
@pytest.mark.parametrize("count", [2, 3])
def test_a_small_batch_splits_evenly_over_the_shards(n_files, count):
    paths = [f"/data/site{i % 2}/rec{i:03d}.wav" for i in range(n_files)]
    shards = [shard_files(paths, i, count) for i in range(1, count + 1)]
    # as even as possible: sizes differ by at most one, the larger shards first
    assert [len(s) for s in shards] == [n_files // count + (i < n_files % count) for i in range(count)]
    assert sorted(p for s in shards for p in s) == sorted(paths)  # every file exactly once
    # deterministic: the same shards whatever order the scan found the files in
    assert [shard_files(list(reversed(paths)), i, count) for i in range(1, count + 1)] == shards


def test_the_progress_bar_ends_full_at_100_percent():
    # durations whose hours do not add up exactly in floating point
    durations = {f"/r/{i}.wav": d for i, d in enumerate([0.1, 0.2, 10.7, 3.3, 7.123456, 1e-4, 0.0])}
    buf = io.StringIO()
    bar = batch.AudioProgress(durations, enabled=True, file=buf)
    for path, d in durations.items():
        for part in np.linspace(0, d * 1.01, 7):  # partial progress, and a decoded length past the header's
            bar.advance(path, float(part))
        bar.advance(path, d)
    assert bar.n_ms == bar.total_ms == 21423
    bar.close()
    last = buf.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("detect: 100%|") and "0.006/0.006 h" in last, last
    assert set(last.split("|")[1]) <= {"#", "\u2588"}, last  # every cell full (ASCII or block), no partial one


def test_a_finished_detect_run_draws_a_full_bar(model, recordings, tmp_path, capsys):
    run_detect([recordings[0]], tmp_path / "out", model_path=model, params=PARAMS, progress=True)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("detect: 100%|") and f"files {len(SPECS)}/{len(SPECS)}" in last, last
    assert set(last.split("|")[1]) <= {"#", "\u2588"}, last


# -- starting -----------------------------------------------------------------------------------------
def test_without_a_model_the_message_says_how_to_train_one(monkeypatch, tmp_path, recordings):
    monkeypatch.setattr(registry, "DEFAULT_MODEL_PATH", tmp_path / "none.pt")
    with pytest.raises(DetectorError, match="scatterbird train"):
        run_detect([recordings[0]], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_model_without_feature_config_is_refused(tmp_path, recordings):
    det = SimpleDetector()
    det.fit([np.zeros((3, 2)), np.ones((3, 2))], [0, 1])
    det.save(tmp_path / "bare.pt")
    with pytest.raises(BatchError, match="no feature configuration"):
        run_detect([recordings[0]], tmp_path / "out", model_path=tmp_path / "bare.pt")


def test_no_inputs_found_is_an_error(model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="no audio files found"):
        run_detect([tmp_path / "empty"], tmp_path / "out", model_path=model)


def test_export_run_rejects_unknown_formats(reference):
    with ResultsStore(reference[0] / STORE_NAME) as st:
        with pytest.raises(ValueError, match="unknown export format"):
            export_run(st, 1, reference[0], ["csv", "xls"])
