"""The results store: runs and resume keys, one transaction per file, one writer, merging."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from scatterbird.pipeline.detect.store import FileResult, ResultsStore, RunParams, StoreError, merge_stores


def params(**changes) -> RunParams:
    base = dict(model_hash="m1", model_kind="k", model_path="/m.pt", config_json="{}", config_hash="c1",
                window_s=10.0, hop_s=5.0, min_conf=0.5)
    base.update(changes)
    return RunParams(**base)


def result(path: str, n: int, *, offset: float = 0.0, status: str = "done", size: int = 100) -> FileResult:
    w = np.array([[5.0 * k, 5.0 * k + 10, offset + k / 10] for k in range(n)]).reshape(-1, 3)
    return FileResult(path=path, size=size, mtime_ns=123, status=status, error=None if status == "done" else "bad",
                      duration_s=5.0 * n + 5, source_rate=8000, channels=1, windows=w,
                      events=np.array([[0.0, 10.0, 0.9, 5.0]]) if n else np.zeros((0, 4)))


def test_round_trip_and_replacement(tmp_path):
    with ResultsStore(tmp_path / "s.sqlite", writer=True) as st:
        run, resumed = st.open_run(params(), package_version="0.1.0", invocation={"inputs": ["x"]})
        assert not resumed and run.id == 1 and run.finished_at is None
        st.write_file(run.id, result("/a.wav", 3))
        st.write_file(run.id, result("/b.wav", 2))
        st.write_file(run.id, result("/a.wav", 4, offset=0.5))  # redone: replaces, never doubles
        assert st.windows(run.id) == [
            ("/a.wav", 0.0, 10.0, 0.5), ("/a.wav", 5.0, 15.0, 0.6), ("/a.wav", 10.0, 20.0, 0.7),
            ("/a.wav", 15.0, 25.0, 0.8), ("/b.wav", 0.0, 10.0, 0.0), ("/b.wav", 5.0, 15.0, 0.1),
        ]
        assert st.events(run.id) == [("/a.wav", 0.0, 10.0, 0.9, 5.0), ("/b.wav", 0.0, 10.0, 0.9, 5.0)]
        assert st.done_files(run.id) == {"/a.wav": (100, 123), "/b.wav": (100, 123)}
        st.write_file(run.id, result("/b.wav", 0, status="failed"))
        assert st.done_files(run.id) == {"/a.wav": (100, 123)}
        assert st.failures(run.id) == [("/b.wav", "bad")]
        assert [r[0] for r in st.windows(run.id)] == ["/a.wav"] * 4  # the failed file's windows are gone
        st.set_problems(run.id, [("/loop", "symlink loop")])
        assert st.failures(run.id) == [("/b.wav", "bad"), ("/loop", "symlink loop")]
        st.finish_run(run.id)
        assert st.run(run.id).finished_at is not None
    # readers need no lock and see the same rows
    with ResultsStore(tmp_path / "s.sqlite") as st:
        assert len(st.windows(1)) == 4
        assert st.files(1)[0]["n_windows"] == 4


def test_same_parameters_resume_other_parameters_start_a_new_run(tmp_path):
    with ResultsStore(tmp_path / "s.sqlite", writer=True) as st:
        r1, _ = st.open_run(params(), package_version="0.1.0")
        st.write_file(r1.id, result("/a.wav", 2))
        again, resumed = st.open_run(params(model_path="/elsewhere/m.pt"), package_version="0.1.0")
        assert resumed and again.id == r1.id and again.invocations == 2
        for change in (dict(model_hash="m2"), dict(config_hash="c2"), dict(window_s=3.0), dict(hop_s=1.0),
                       dict(min_conf=0.7)):
            other, resumed = st.open_run(params(**change), package_version="0.1.0")
            assert not resumed and other.id != r1.id
            assert st.windows(other.id) == []  # never mixed with run 1
        assert len(st.windows(r1.id)) == 2
        assert st.run().id == other.id  # the latest run is the last one opened


def test_one_writer(tmp_path):
    with ResultsStore(tmp_path / "s.sqlite", writer=True):
        with pytest.raises(StoreError, match="another scatterbird run is writing"):
            ResultsStore(tmp_path / "s.sqlite", writer=True)
        with ResultsStore(tmp_path / "s.sqlite"):  # reading is fine
            pass
    ResultsStore(tmp_path / "s.sqlite", writer=True).close()  # released


def test_reading_a_missing_or_foreign_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no results store"):
        ResultsStore(tmp_path / "none.sqlite")
    (tmp_path / "junk.sqlite").write_text("not a database " * 100)
    with pytest.raises(StoreError, match="not a scatterbird results store"):
        ResultsStore(tmp_path / "junk.sqlite")
    with ResultsStore(tmp_path / "empty.sqlite", writer=True):
        pass
    with pytest.raises(StoreError, match="no run yet"):
        with ResultsStore(tmp_path / "empty.sqlite") as st:
            st.run()


def test_killed_in_the_middle_of_a_file_transaction_leaves_the_previous_state(tmp_path):
    store = tmp_path / "s.sqlite"
    with ResultsStore(store, writer=True) as st:
        run, _ = st.open_run(params(), package_version="0.1.0")
        st.write_file(run.id, result("/a.wav", 3))
    # A real process writes a new result for /a.wav and is SIGKILLed after 500 of its 1000 windows went in.
    code = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np
        from scatterbird.pipeline.detect.store import ResultsStore, FileResult
        st = ResultsStore({str(store)!r}, writer=True)
        rows = np.array([[k, k + 10.0, 0.25] for k in range(1000)])
        real = st.db.executemany
        def executemany(sql, seq):
            def gen():
                for i, r in enumerate(seq):
                    if i == 500:
                        os.kill(os.getpid(), signal.SIGKILL)
                    yield r
            return real(sql, gen())
        # the store's connection, with executemany dying half-way through the windows
        st.db = type("Db", (), {{"execute": st.db.execute, "executemany": staticmethod(executemany)}})()
        st.write_file(1, FileResult(path="/a.wav", size=1, mtime_ns=1, status="done", windows=rows))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    with ResultsStore(store, writer=True) as st:  # reopening rolls the hot journal back
        assert st.windows(1) == [("/a.wav", 0.0, 10.0, 0.0), ("/a.wav", 5.0, 15.0, 0.1), ("/a.wav", 10.0, 20.0, 0.2)]
        assert st.done_files(1) == {"/a.wav": (100, 123)}


def test_merge_combines_runs_and_is_idempotent(tmp_path):
    a, b, target = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "t.sqlite"
    for path, names in ((a, ["/1.wav", "/3.wav"]), (b, ["/2.wav"])):
        with ResultsStore(path, writer=True) as st:
            run, _ = st.open_run(params(), package_version="0.1.0", shard="1/2")
            for i, n in enumerate(names):
                st.write_file(run.id, result(n, i + 2))
            st.finish_run(run.id)
    with ResultsStore(b, writer=True) as st:  # b also holds a run of another model: it stays separate
        other, _ = st.open_run(params(model_hash="m2"), package_version="0.1.0")
        st.write_file(other.id, result("/9.wav", 1))
    report = merge_stores(target, [a, b])
    assert report.copied == 4 and report.kept == 0 and len(report.runs) == 2
    with ResultsStore(target) as st:
        runs = st.runs()
        assert [r.model_hash for r in runs] == ["m1", "m2"]
        assert sorted({w[0] for w in st.windows(runs[0].id)}) == ["/1.wav", "/2.wav", "/3.wav"]
        assert len(st.windows(runs[0].id)) == 2 + 3 + 2
        assert [w[0] for w in st.windows(runs[1].id)] == ["/9.wav"]
        assert runs[0].finished_at is not None and runs[1].finished_at is None
        first = st.windows(runs[0].id)
    again = merge_stores(target, [a, b])
    assert again.copied == 0 and again.kept == 4
    with ResultsStore(target) as st:
        assert st.windows(st.runs()[0].id) == first
