"""Output faults: ``-o`` naming a file, a read-only folder, a full disk.

Each must end in exit code 2 and one line naming the path and the cause, leave no partial or temporary file,
and leave the results store as it was. The conditions are made for real where the test may mount file
systems (a read-only bind mount, a tmpfs of a few kilobytes); the same tests also run against a monkeypatched
write raising EROFS / ENOSPC, so they hold on machines that allow no mounts.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
from simple_detector import write_recordings

from scatterbird import cli
from scatterbird.data.synthetic import write_dataset
from scatterbird.errors import OutputError
from scatterbird.models import base as models_base
from scatterbird.models.registry import load_detector
from scatterbird.pipeline import output_files
from scatterbird.pipeline.detect import store as store_module
from scatterbird.pipeline.detect.batch import DetectParams, run_detect
from scatterbird.pipeline.detect.store import STORE_NAME, ResultsStore
from scatterbird.pipeline.output_files import TMP_PREFIX, atomic_open, prepare_output_dir

PARAMS = DetectParams(window_s=2.0, hop_s=1.0, min_conf=0.5)
DETECT_OPTS = ["--window", "2", "--hop", "1", "--min-conf", "0.5", "-q"]


# -- conditions ------------------------------------------------------------------------------------------
def _mount(*args: str) -> bool:
    try:
        return subprocess.run(["mount", *args], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, timeout=60)


@contextmanager
def read_only(folder: Path):
    """``folder`` remounted read-only over itself (a bind mount): even root cannot write there."""
    if not _mount("--bind", str(folder), str(folder)):
        pytest.skip("cannot bind-mount here (needs root and mount permission)")
    try:
        if not _mount("-o", "remount,bind,ro", str(folder)):
            pytest.skip("cannot remount read-only here")
        probe = folder / f"probe-{uuid.uuid4().hex}"
        try:
            probe.touch()
        except OSError as exc:
            assert exc.errno == errno.EROFS
        else:
            probe.unlink()
            pytest.skip("the read-only bind mount does not stop writes here")
        yield folder
    finally:
        _umount(folder)


@contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        yield folder
    finally:
        _umount(folder)


def _fill(folder: Path) -> None:
    """Use up every free byte of the file system holding ``folder``."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


class _FullFile:
    """A real file whose writes fail with ENOSPC, as on a full disk (the file itself exists, empty)."""

    def __init__(self, f) -> None:
        self._f = f

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def _refuse_writes_under(monkeypatch, folder: Path, code: int, *modules) -> None:
    """Without mounts: files opened for writing under ``folder`` by ``modules`` (default: scatterbird's output
    helpers) fail as on a read-only file system (``EROFS``: opening fails, and so do the folder check's
    temporary file and new folders) or a full disk (``ENOSPC``: the file is created, its writes fail)."""
    real_open, real_mkstemp, real_mkdir = open, tempfile.mkstemp, Path.mkdir

    def under(path) -> bool:
        return Path(path).resolve().is_relative_to(folder.resolve())

    def fake_open(path, mode="r", *args, **kwargs):
        if not (isinstance(path, (str, os.PathLike)) and under(path) and any(c in mode for c in "wxa+")):
            return real_open(path, mode, *args, **kwargs)
        if code == errno.EROFS:
            raise OSError(code, os.strerror(code), str(path))
        return _FullFile(real_open(path, mode, *args, **kwargs))

    def fake_mkstemp(*args, dir=None, **kwargs):
        if dir is not None and under(dir):
            raise OSError(code, os.strerror(code), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    def fake_mkdir(self, *args, **kwargs):
        if under(self) and not self.is_dir():
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    for module in modules or (output_files,):
        monkeypatch.setattr(module, "open", fake_open, raising=False)
    if code == errno.EROFS:
        monkeypatch.setattr(output_files.tempfile, "mkstemp", fake_mkstemp)
        monkeypatch.setattr(Path, "mkdir", fake_mkdir)


def _full_sqlite(monkeypatch) -> None:
    """Without mounts: the store's connections refuse every change with SQLite's SQLITE_FULL, as SQLite
    does when the journal cannot grow."""
    real_connect = sqlite3.connect

    class FullConnection:
        def __init__(self, con) -> None:
            self._con = con

        def execute(self, sql, *args):
            if sql.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE"):
                exc = sqlite3.OperationalError("database or disk is full")
                exc.sqlite_errorcode = 13
                raise exc
            return self._con.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._con, name)

    monkeypatch.setattr(store_module.sqlite3, "connect", lambda *a, **k: FullConnection(real_connect(*a, **k)))


def _store_rows(db: Path) -> dict[str, list]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("runs", "files", "windows", "events")}
    finally:
        con.close()


def _leftovers(folder: Path) -> list[str]:
    """Temporary or partial files anywhere under ``folder``."""
    return sorted(str(p) for p in folder.rglob("*") if p.name.startswith(TMP_PREFIX) or p.name.endswith(".tmp")
                  or p.name.endswith(".tmp.npz") or p.name.endswith("-journal"))


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message"
    assert err[-1].startswith(f"scatterbird {command}: error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


# -- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recs")
    write_recordings(folder, [(f"r{i}.wav", 4.0 + i, i % 2 == 0) for i in range(3)])
    return folder


@pytest.fixture(scope="module")
def finished(model, recordings, tmp_path_factory) -> Path:
    """A detect output folder holding a finished run and its exports."""
    out = tmp_path_factory.mktemp("finished")
    s = run_detect([recordings], out, model_path=model, params=PARAMS, formats=["csv"])
    assert s.done == 3
    return out


@pytest.fixture(params=["mounted", "patched"])
def how(request) -> str:
    """How the condition is made: for real with a mount (skipped where mounts are refused), or patched."""
    return request.param


# -- -o names a file ---------------------------------------------------------------------------------------
def test_output_that_is_a_file_exits_2_naming_it_for_every_command(model, recordings, finished, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    ds = tmp_path / "ds"
    commands = [
        ["detect", str(recordings), "-o", str(afile), "--model", str(model), *DETECT_OPTS],
        ["features", str(recordings), "-o", str(afile), "-q"],
        ["export", str(finished), "--to", str(afile)],
        ["merge", str(afile), str(finished / STORE_NAME)],
        ["evaluate", "--dataset", f"x={ds}", "-o", str(afile), "--model", str(model), "-q"],
        ["crossval", "--dataset", f"x={ds}", "--dataset", f"y={ds}", "-o", str(afile), "-q"],
    ]
    before = _store_rows(finished / STORE_NAME)
    for argv in commands:
        assert cli.main(argv) == cli.EXIT_USAGE, argv
        line = _error_line(capsys, argv[0])
        assert f"{afile}: exists and is not a folder" in line, line
    assert afile.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert _store_rows(finished / STORE_NAME) == before


def test_the_output_helpers_name_the_path_and_the_cause(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder") as info:
        prepare_output_dir(afile)
    assert info.value.path == str(afile) and isinstance(info.value, OSError)
    with pytest.raises(OutputError, match=f"^{afile}: exists and is not a folder") as info:
        with atomic_open(afile / "x.csv") as f:
            f.write("never")
    assert info.value.errno == errno.EEXIST
    # a failure inside the block removes the temporary file and keeps the old one
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("stop")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


# -- read-only ------------------------------------------------------------------------------------------------
def test_detect_into_a_read_only_place_exits_2_and_creates_nothing(how, model, recordings, tmp_path, capsys,
                                                                   monkeypatch):
    place = tmp_path / "place"
    place.mkdir()
    out = place / "out"
    if how == "patched":
        _refuse_writes_under(monkeypatch, place, errno.EROFS)
        ctx = nullcontext()
    else:
        ctx = read_only(place)
    with ctx:
        rc = cli.main(["detect", str(recordings), "-o", str(out), "--model", str(model), *DETECT_OPTS])
        line = _error_line(capsys, "detect")
    assert rc == cli.EXIT_USAGE
    assert f"{out}: read-only file system" in line
    assert list(place.iterdir()) == []


def test_resuming_on_a_read_only_store_exits_2_and_leaves_it_intact(how, model, recordings, finished, tmp_path,
                                                                    capsys, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = _store_rows(out / STORE_NAME)
    listing = sorted(p.name for p in out.rglob("*"))
    if how == "patched":
        _refuse_writes_under(monkeypatch, out, errno.EROFS)
        ctx = nullcontext()
    else:
        ctx = read_only(out)
    with ctx:
        rc = cli.main(["detect", str(recordings), "-o", str(out), "--model", str(model), *DETECT_OPTS, "--force"])
        line = _error_line(capsys, "detect")
        assert rc == cli.EXIT_USAGE
        assert f"{out}: read-only file system" in line
        rc = cli.main(["export", str(out), "--format", "all"])
        assert rc == cli.EXIT_USAGE and f"{out}: read-only file system" in _error_line(capsys, "export")
    assert _store_rows(out / STORE_NAME) == before
    assert sorted(p.name for p in out.rglob("*")) == listing


def test_the_store_lock_on_a_read_only_folder_is_an_output_error(tmp_path, monkeypatch):
    """The lock is the first write of a resumed run; its failure names the lock file."""
    monkeypatch.setattr(store_module, "prepare_output_dir", lambda p: Path(p))  # get past the folder check

    def refuse(path, flags, mode=0o777):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(store_module.os, "open", refuse)
    with pytest.raises(OutputError, match=r"scatterbird\.sqlite\.lock: read-only file system"):
        ResultsStore(tmp_path / STORE_NAME, writer=True)
    assert list(tmp_path.iterdir()) == []


# -- full disk -------------------------------------------------------------------------------------------------
def test_export_onto_a_full_disk_exits_2_without_partial_files(how, finished, tmp_path, capsys, monkeypatch):
    to = tmp_path / "small"
    before = _store_rows(finished / STORE_NAME)
    if how == "patched":
        to.mkdir()
        _refuse_writes_under(monkeypatch, to, errno.ENOSPC)
        ctx = nullcontext()
    else:
        ctx = small_disk(to, "4k")  # a page: room for the folder check, not for windows.csv
    with ctx:
        rc = cli.main(["export", str(finished), "--format", "all", "--to", str(to)])
        line = _error_line(capsys, "export")
        assert rc == cli.EXIT_USAGE
        assert "disk full (no space left on the device)" in line and str(to) in line
        assert _leftovers(to) == []
        for p in to.rglob("*"):  # what was written is whole: the same bytes as a full export
            if p.is_file():
                assert p.read_bytes() == (finished / p.relative_to(to)).read_bytes(), p
    assert _store_rows(finished / STORE_NAME) == before


def test_a_store_that_cannot_be_created_on_a_full_disk_says_disk_full(how, model, recordings, tmp_path, capsys,
                                                                     monkeypatch):
    disk = tmp_path / "disk"
    if how == "patched":
        disk.mkdir()
        _full_sqlite(monkeypatch)
        ctx = nullcontext()
    else:
        ctx = small_disk(disk, "8k")  # room for the folder, not for the store's first pages
    with ctx:
        out = disk / "out"
        rc = cli.main(["detect", str(recordings), "-o", str(out), "--model", str(model), *DETECT_OPTS])
        line = _error_line(capsys, "detect")
        assert rc == cli.EXIT_USAGE
        assert line.endswith(f"{out / STORE_NAME}: disk full (no space left on the device)"), line
        assert "not a scatterbird results store" not in line
        assert list(out.iterdir()) == []  # the store it began is removed again


def test_a_full_disk_while_resuming_exits_2_and_keeps_the_store_as_it_was(how, model, recordings, finished,
                                                                         tmp_path, capsys, monkeypatch):
    disk = tmp_path / "disk"
    if how == "patched":
        disk.mkdir()
        ctx = nullcontext()
    else:
        ctx = small_disk(disk, "1m")
    with ctx:
        out = disk / "out"
        shutil.copytree(finished, out)
        with ResultsStore(out / STORE_NAME, writer=True) as st:  # one file to redo
            st.forget_files(1, [st.files(1)[0]["path"]])
        before = _store_rows(out / STORE_NAME)
        if how == "patched":
            _full_sqlite(monkeypatch)
        else:
            _fill(disk)
        rc = cli.main(["detect", str(recordings), "-o", str(out), "--model", str(model), *DETECT_OPTS])
        line = _error_line(capsys, "detect")
        assert rc == cli.EXIT_USAGE
        assert line.endswith(f"{out / STORE_NAME}: disk full (no space left on the device)"), line
        (disk / "filler").unlink(missing_ok=True)
        monkeypatch.undo()
        assert _store_rows(out / STORE_NAME) == before
        assert _leftovers(out) == []


def test_features_onto_a_full_disk_exits_2_without_partial_files(how, recordings, tmp_path, capsys, monkeypatch):
    out = tmp_path / "feat"
    if how == "patched":
        out.mkdir()
        _refuse_writes_under(monkeypatch, out, errno.ENOSPC)
        ctx = nullcontext()
    else:
        ctx = small_disk(out, "4k")
    with ctx:
        rc = cli.main(["features", str(recordings), "-o", str(out), "-q", "--order", "1", "--threshold", "none"])
        line = _error_line(capsys, "features")
        assert rc == cli.EXIT_USAGE
        assert "disk full (no space left on the device)" in line and f"{out}/" in line and ".npz" in line
        assert [p for p in out.rglob("*") if p.is_file()] == []


def test_a_model_that_cannot_be_saved_leaves_no_file(how, model, tmp_path, monkeypatch):
    det = load_detector(model)
    disk = tmp_path / "disk"
    if how == "patched":
        disk.mkdir()
        _refuse_writes_under(monkeypatch, disk, errno.ENOSPC, models_base)
        ctx = nullcontext()
    else:
        ctx = small_disk(disk, "64k")
    with ctx:
        if how == "mounted":
            _fill(disk)
        with pytest.raises(OutputError, match="disk full") as info:
            det.save(disk / "model.pt")
        assert info.value.path == str(disk / "model.pt")
        assert sorted(p.name for p in disk.iterdir()) == (["filler"] if how == "mounted" else [])


def test_evaluate_onto_a_full_disk_exits_2_without_partial_files(model, tmp_path, capsys, monkeypatch):
    ds = write_dataset(tmp_path / "ds", 6, duration=2.0, sr=8000, seed=3)
    out = tmp_path / "eval"
    out.mkdir()
    _refuse_writes_under(monkeypatch, out, errno.ENOSPC)  # metrics, predictions, scores and the page
    rc = cli.main(["evaluate", "--dataset", f"mine={ds}", "-o", str(out), "--model", str(model),
                   "--bootstrap", "20", "-q"])
    line = _error_line(capsys, "evaluate")
    assert rc == cli.EXIT_USAGE and "disk full" in line
    assert _leftovers(out) == []
    assert not any(p.suffix in (".csv", ".json", ".html") for p in out.rglob("*"))
