"""`scatterbird detect / export / failures / merge` as a user runs them: real processes killed with SIGKILL
and resumed, a real Dask scheduler with two workers on 127.0.0.1, and the commands' output and exit codes."""

from __future__ import annotations

import csv
import importlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from simple_detector import write_recordings

from scatterbird import cli
from scatterbird.models import registry
from scatterbird.pipeline.detect.batch import DetectParams, run_detect
from scatterbird.pipeline.detect.store import STORE_NAME, ResultsStore

TESTS = Path(__file__).resolve().parent
PARAMS = DetectParams(window_s=2.0, hop_s=1.0, min_conf=0.5)
DETECT_OPTS = ["--window", "2", "--hop", "1", "--min-conf", "0.5", "-q"]
#: Runs the real CLI in a fresh interpreter; the test detector's module is imported so its kind is known.
CLI = [sys.executable, "-c", "import sys, simple_detector; from scatterbird import cli; sys.exit(cli.main(sys.argv[1:]))"]
N_FILES = 10


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recs")
    specs = [(f"{'wav' if i % 2 else 'flac'}/r{i:02d}.{'wav' if i % 2 else 'flac'}", 12.0 + i, i % 3 == 0)
             for i in range(N_FILES)]
    write_recordings(folder, specs)
    return folder


@pytest.fixture(scope="module")
def reference(model, recordings, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    s = run_detect([recordings], out, model_path=model, params=PARAMS, formats=["csv"])
    assert s.done == N_FILES and not s.failed
    return out


def rows(outdir: Path):
    with ResultsStore(outdir / STORE_NAME) as st:
        run = st.run()
        files = [(f["path"], f["status"], f["size"], f["mtime_ns"], f["duration_s"], f["n_windows"])
                 for f in st.files(run.id)]
        return files, st.windows(run.id), st.events(run.id)


def assert_same_rows(a, b, atol=1e-6):
    (fa, wa, ea), (fb, wb, eb) = a, b
    assert fa == fb
    assert [w[:3] for w in wa] == [w[:3] for w in wb]
    np.testing.assert_allclose([w[3] for w in wa], [w[3] for w in wb], rtol=0, atol=atol)
    assert [(e[0], e[1], e[2], e[4]) for e in ea] == [(e[0], e[1], e[2], e[4]) for e in eb]
    np.testing.assert_allclose([e[3] for e in ea], [e[3] for e in eb], rtol=0, atol=atol)


def _done_count(db: Path) -> int:
    """Files committed as done, read the way any other reader would (-1 while there is no run yet)."""
    if not db.exists():
        return -1
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        try:
            if con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0:
                return -1
            return int(con.execute("SELECT COUNT(*) FROM files WHERE status = 'done'").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:  # schema not created yet, or the writer holds the lock this instant
        return -1


def _wait_for(proc: subprocess.Popen, condition, what: str, limit_s: float = 300.0) -> None:
    """Poll ``condition`` while ``proc`` runs; the child's own exit wait is the polling interval."""
    for _ in range(int(limit_s / 0.005)):
        if condition():
            return
        try:
            proc.wait(timeout=0.005)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}")
    raise AssertionError(f"timed out waiting for {what}")


# -- kill and resume ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kill_after", [0, 1, 4, 8])
def test_a_run_killed_with_sigkill_resumes_to_exactly_the_uninterrupted_rows(
    kill_after, model, recordings, reference, tmp_path
):
    out = tmp_path / "out"
    db = out / STORE_NAME
    proc = subprocess.Popen(
        [*CLI, "detect", str(recordings), "-o", str(out), "--model", str(model), *DETECT_OPTS, "--format", "csv"],
        cwd=TESTS, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        _wait_for(proc, lambda: _done_count(db) >= kill_after, f"{kill_after} file(s) were committed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    committed = _done_count(db)
    assert kill_after <= committed < N_FILES, "killed part-way, not after the end"
    with ResultsStore(db) as st:
        assert st.run().finished_at is None  # the pass did not complete

    # the rerun picks up where the killed one stopped
    resumed = run_detect([recordings], out, model_path=model, params=PARAMS, formats=["csv"])
    assert resumed.resumed and resumed.run.id == 1
    assert resumed.skipped == committed and resumed.done == N_FILES - committed and not resumed.failed
    assert_same_rows(rows(out), rows(reference))  # nothing lost, nothing doubled
    with ResultsStore(db) as st:
        dup = st.db.execute(
            "SELECT COUNT(*) FROM (SELECT file_id, start_s, COUNT(*) c FROM windows GROUP BY file_id, start_s "
            "HAVING c > 1)"
        ).fetchone()[0]
        assert dup == 0 and st.run().finished_at is not None and st.run().invocations == 2
    with open(out / "windows.csv", newline="") as a, open(reference / "windows.csv", newline="") as b:
        ra, rb = list(csv.reader(a)), list(csv.reader(b))
        assert [r[:3] for r in ra] == [r[:3] for r in rb] and len(ra) == len(rb)


# -- Dask -----------------------------------------------------------------------------------------------
@pytest.fixture
def dask_cluster(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1."""
    pytest.importorskip("distributed")
    from distributed import Client

    dask = [sys.executable, "-m", "dask"]
    sched_file = tmp_path / "scheduler.json"
    logs = []
    procs: list[subprocess.Popen] = []

    def start(args, name):
        log = open(tmp_path / f"{name}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([*dask, *args], cwd=tmp_path, env=_env(), stdout=log, stderr=log))
        return procs[-1]

    try:
        sched = start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                       "--scheduler-file", str(sched_file)], "scheduler")
        _wait_for(sched, lambda: sched_file.exists() and sched_file.stat().st_size > 0, "the scheduler started",
                  120)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            start(["worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                   "--no-dashboard", "--name", f"w{i}", "--local-directory", str(tmp_path / f"w{i}")], f"worker{i}")
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=180)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


@pytest.mark.slow  # starts a local Dask cluster; tests/test_executor.py covers Dask quickly
def test_a_dask_cluster_gives_the_rows_of_the_serial_run(dask_cluster, model, tmp_path):
    from distributed import Client

    folder = tmp_path / "recs"
    write_recordings(folder, [(f"r{i}.{'wav' if i % 2 else 'flac'}", 5.0 + i, i % 2 == 0) for i in range(6)])
    serial = run_detect([folder], tmp_path / "serial", model_path=model, params=PARAMS)
    summary = run_detect([folder], tmp_path / "out", model_path=model, params=PARAMS, scheduler=dask_cluster)
    assert summary.done == serial.done == 6 and not summary.failed
    assert_same_rows(rows(tmp_path / "out"), rows(tmp_path / "serial"))
    with Client(dask_cluster) as client:  # the work ran on the workers: they hold the model now
        loaded = client.run(lambda: len(importlib.import_module("scatterbird.pipeline.detect.batch")._MODELS))
    assert len(loaded) == 2 and sum(loaded.values()) >= 1


# -- the commands -----------------------------------------------------------------------------------------
def test_detect_failures_export_and_exit_codes(model, tmp_path, capsys):
    d = tmp_path / "in"
    write_recordings(d, [("good.wav", 3.0, True), ("also_good.flac", 2.5, False)])
    (d / "broken.wav").write_text("not audio at all\n" * 20)
    sf.write(d / "silent_header.wav", np.zeros(0, np.float32), 8000)
    out = tmp_path / "out"
    rc = cli.main(["detect", str(d), "-o", str(out), "--model", str(model), *DETECT_OPTS, "--format", "csv,json"])
    text = capsys.readouterr()
    assert rc == cli.EXIT_SOME_FAILED
    assert "2 processed, 0 skipped (already done), 2 failed" in text.out
    assert "real-time factor" in text.out and "broken.wav" in text.out
    assert (out / "windows.csv").is_file() and (out / "detections.json").is_file()

    assert cli.main(["failures", str(out)]) == cli.EXIT_SOME_FAILED
    text = capsys.readouterr()
    lines = text.out.splitlines()
    assert lines[0] == "# failed files (2)" and "run 1: 2 failed file(s), 0 input problem(s)" in text.err
    listed = dict(line.split("\t") for line in lines[1:])
    assert {Path(p).name for p in listed} == {"broken.wav", "silent_header.wav"}
    assert "unrecognised audio format" in listed[str(d / "broken.wav")]

    assert cli.main(["export", str(out), "--format", "raven,audacity", "--to", str(tmp_path / "ex")]) == cli.EXIT_OK
    assert "run 1" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "ex" / "raven").iterdir()) == [
        "also_good_flac.selections.txt", "good_wav.selections.txt"]
    assert len(list((tmp_path / "ex" / "audacity").iterdir())) == 2

    # all good: exit 0; resumed: nothing redone
    (d / "broken.wav").unlink()
    (d / "silent_header.wav").unlink()
    assert cli.main(["detect", str(d), "-o", str(out), "--model", str(model), *DETECT_OPTS]) == cli.EXIT_OK
    assert "0 processed, 2 skipped" in capsys.readouterr().out
    assert cli.main(["failures", str(out)]) == cli.EXIT_OK


def test_failures_lists_a_symlink_loop_as_an_input_problem_as_detect_does(model, tmp_path, capsys):
    d = tmp_path / "in"
    write_recordings(d, [("good.wav", 3.0, True)])
    (d / "loop").symlink_to(d, target_is_directory=True)
    out = tmp_path / "out"
    assert cli.main(["detect", str(d), "-o", str(out), "--model", str(model), *DETECT_OPTS]) == cli.EXIT_SOME_FAILED
    said = capsys.readouterr().out
    assert "1 processed, 0 skipped (already done), 0 failed" in said and "input problems (1):" in said
    assert cli.main(["failures", str(out)]) == cli.EXIT_SOME_FAILED
    text = capsys.readouterr()
    loop = f"{d / 'loop'}\tsymlink loop: directory already visited, skipped"
    assert text.out.splitlines() == ["# input problems (1)", loop]  # no failed-files section
    assert "run 1: 0 failed file(s), 1 input problem(s)" in text.err


def test_detect_usage_errors_exit_2(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(registry, "DEFAULT_MODEL_PATH", tmp_path / "no_model.pt")
    d = tmp_path / "in"
    write_recordings(d, [("a.wav", 2.0, False)])
    assert cli.main(["detect", str(d), "-o", str(tmp_path / "o")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "no model given" in err and "scatterbird train" in err
    bad = [["--hop", "3", "--window", "2"], ["--shard", "4/3"], ["--format", "xls"], ["--min-conf", "2"],
           ["--format", ""], ["--format", " , "]]
    for opts in bad:
        assert cli.main(["detect", str(d), "-o", str(tmp_path / "o"), "--model", str(model), *opts]) == 2, opts
        if opts[0] == "--format":  # an empty list would write nothing without a word
            assert "error: --format" in capsys.readouterr().err
    for command in (["export", str(tmp_path / "o")], ["merge", str(tmp_path / "o")]):
        assert cli.main([*command, "--format", ""]) == cli.EXIT_USAGE
        assert "error: --format is empty; choose from csv, raven, audacity, json or all" in capsys.readouterr().err
    assert cli.main(["failures", str(tmp_path / "nowhere")]) == cli.EXIT_USAGE
    assert "no results store" in capsys.readouterr().err


def test_shards_from_slurm_and_the_merge_command(model, recordings, reference, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    for task in (1, 2, 3):  # an --array=1-3 job: each task finds its shard in the environment
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
        assert cli.main(["detect", str(recordings), "-o", str(out), "--model", str(model), *DETECT_OPTS]) == 0
    assert sorted(p.name for p in out.glob("*.sqlite")) == [f"scatterbird.shard-{i}-of-3.sqlite" for i in (1, 2, 3)]
    assert cli.main(["merge", str(out), "--format", "csv"]) == 0
    assert f"{N_FILES} file result(s) copied" in capsys.readouterr().out
    assert_same_rows(rows(out), rows(reference))
    with open(out / "windows.csv", newline="") as a, open(reference / "windows.csv", newline="") as b:
        assert [r[:3] for r in csv.reader(a)] == [r[:3] for r in csv.reader(b)]


# -- SIGTERM and Ctrl-C ------------------------------------------------------------------------------------
def test_sigterm_mid_batch_stops_with_143_says_how_far_and_resumes_to_the_uninterrupted_rows(
    model, recordings, reference, tmp_path
):
    out = tmp_path / "out"
    db = out / STORE_NAME
    proc = subprocess.Popen(
        [*CLI, "detect", str(recordings), "-o", str(out), "--model", str(model), *DETECT_OPTS, "--format", "csv"],
        cwd=TESTS, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(proc, lambda: _done_count(db) >= 1, "one file was committed")
        proc.send_signal(signal.SIGTERM)  # what a batch scheduler sends at the end of a job's time
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    committed = _done_count(db)
    assert 1 <= committed < N_FILES
    assert f"interrupted: {committed} of {N_FILES} file(s) done" in err
    assert "run the same command again to resume" in err
    assert err.rstrip().endswith("scatterbird detect: interrupted (SIGTERM)") and "Traceback" not in err
    with ResultsStore(db) as st:
        assert st.run().finished_at is None

    # an export of the unfinished run says so, with how far it got
    ex = subprocess.run([*CLI, "export", str(out), "--format", "csv", "--to", str(tmp_path / "ex")],
                        cwd=TESTS, env=_env(), capture_output=True, text=True, timeout=120)
    assert ex.returncode == 0
    assert f"run 1 is incomplete: {committed} of {N_FILES} file(s) processed" in ex.stderr

    resumed = run_detect([recordings], out, model_path=model, params=PARAMS, formats=["csv"])
    assert resumed.resumed and resumed.skipped == committed and resumed.done == N_FILES - committed
    assert_same_rows(rows(out), rows(reference))
    with ResultsStore(db) as st:
        assert st.run().finished_at is not None and st.incomplete(1) is None


def test_ctrl_c_with_workers_stops_the_jobs_in_flight_instead_of_waiting_for_them(tmp_path):
    """The gate lets one file be scored (one scoring call per 4 s file); every other job hangs for good.
    Ctrl-C must still end the run (the workers are terminated, not waited for), and a rerun completes it."""
    from gated_detector import GATE_ENV, train_gated_detector

    folder = tmp_path / "recs"
    write_recordings(folder, [(f"g{i}.wav", 4.0, i % 2 == 0) for i in range(4)])
    model = tmp_path / "gated.pt"
    train_gated_detector(model)
    reference = tmp_path / "reference"  # no gate in this process: the same detector scoring normally
    run_detect([folder], reference, model_path=model, params=PARAMS)
    gate = tmp_path / "gate"
    gate.mkdir()
    out = tmp_path / "out"
    db = out / STORE_NAME
    cli_gated = [sys.executable, "-c",
                 "import sys, gated_detector; from scatterbird import cli; sys.exit(cli.main(sys.argv[1:]))"]
    proc = subprocess.Popen(
        [*cli_gated, "detect", str(folder), "-o", str(out), "--model", str(model), *DETECT_OPTS, "--workers", "2"],
        cwd=TESTS, env={**_env(), GATE_ENV: str(gate)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(proc, lambda: _done_count(db) >= 1, "one file was committed")
        proc.send_signal(signal.SIGINT)  # the other jobs are in flight or queued, and hang when they score
        _, err = proc.communicate(timeout=180)  # a shutdown that waits for the jobs would never return
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "stopping workers..." in err and "run the same command again to resume" in err
    assert "Traceback" not in err  # the workers left Ctrl-C to the driver
    committed = _done_count(db)
    assert committed == 1 and "interrupted: 1 of 4 file(s) done" in err

    resumed = run_detect([folder], out, model_path=model, params=PARAMS)
    assert resumed.resumed and resumed.skipped == committed and resumed.done == 4 - committed
    assert_same_rows(rows(out), rows(reference))
