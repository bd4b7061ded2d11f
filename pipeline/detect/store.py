"""The results store: one SQLite file in the output directory, written by one process (the driver).

Schema (``SCHEMA_VERSION`` 2)
-----------------------------
``runs``
    One row per (model, feature configuration, window, hop, min-conf): ``run_key`` hashes those, so a rerun
    with the same ones resumes the same run, and changing any of them starts a new run (results are never
    mixed). Also the model's kind and path, the configuration's JSON, the package version, the shard, the
    invocation's parameters, ``started_at`` / ``updated_at`` / ``finished_at`` (UTC, ISO 8601; ``finished_at``
    is empty while a pass over the inputs has not completed) and the number of invocations.
``files``
    One row per (run, path): size, mtime (ns), duration at the pipeline rate, source rate and channels,
    ``status`` (``done`` or ``failed``), ``error`` (the reason, for failures), ``warning`` (what is suspect
    about a file that was processed: truncated, damaged, a low sample rate; NULL when nothing), window count,
    processing time. Schema 2 added ``warning``: a schema-1 store gains the column when opened for writing,
    and is read as it is (no warnings) when opened for reading.
``windows``
    ``(file_id, start_s, end_s, score)``: every scored window.
``events``
    ``(file_id, start_s, end_s, peak_score, peak_s)``: runs of consecutive windows with score >= min-conf.
``input_problems``
    ``(run_id, path, reason)``: what the latest scan of the inputs could not use (missing paths, unreadable
    directories, symlink loops).

Guarantees
----------
* A file's row, windows and events are written in **one transaction** (:meth:`ResultsStore.write_file`),
  replacing any earlier result for that path in the run. A process killed at any point leaves either the
  whole previous state or the whole new one: SQLite's rollback journal undoes a half-written transaction the
  next time the store is opened.
* A file is *done* for a run when its row has ``status = 'done'`` and the same size and mtime as on disk;
  together with the run key that is the (path, size, mtime, feature-config hash, model hash) of the
  architecture's contract.
* One writer: opening a store for writing takes an exclusive lock (``<store>.lock``), so two runs cannot
  write to one store at once. Readers (exports, ``failures``) need no lock.

The rollback journal (SQLite's default) is used rather than WAL because WAL needs shared memory, which
network file systems (where cluster jobs write their output) do not provide.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from scatterbird.errors import OutputError, StoreError
from scatterbird.pipeline.output_files import prepare_output_dir

SCHEMA_VERSION = 2

#: SQLite's primary result codes of a write that the disk refused (sqlite3.Error.sqlite_errorcode & 0xff).
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 8, 10, 13, 14

#: The store's file name inside the output directory.
STORE_NAME = "scatterbird.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    run_key TEXT NOT NULL,
    model_hash TEXT NOT NULL,
    model_kind TEXT NOT NULL,
    model_path TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    config_json TEXT NOT NULL,
    window_s REAL NOT NULL,
    hop_s REAL NOT NULL,
    min_conf REAL NOT NULL,
    package_version TEXT NOT NULL,
    shard TEXT,
    params_json TEXT NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT,
    invocations INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS runs_key ON runs(run_key);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    duration_s REAL,
    source_rate INTEGER,
    channels INTEGER,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    error TEXT,
    warning TEXT,
    n_windows INTEGER NOT NULL DEFAULT 0,
    elapsed_s REAL,
    processed_at TEXT NOT NULL,
    UNIQUE (run_id, path)
);
CREATE TABLE IF NOT EXISTS windows (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    score REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS windows_file ON windows(file_id);
CREATE TABLE IF NOT EXISTS events (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    peak_score REAL NOT NULL,
    peak_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_file ON events(file_id);
CREATE TABLE IF NOT EXISTS input_problems (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunParams:
    """What determines a run's rows; equal parameters resume the same run.

    Parameters
    ----------
    model_hash, model_kind, model_path : str
        The detector's hash (:attr:`models.base.Detector.model_hash`), kind and file.
    config_json : str
        The feature configuration's canonical JSON (``FeatureConfig.to_json()``).
    config_hash : str
    window_s, hop_s, min_conf : float
    """

    model_hash: str
    model_kind: str
    model_path: str
    config_json: str
    config_hash: str
    window_s: float
    hop_s: float
    min_conf: float

    @property
    def key(self) -> str:
        """Hash of what changes the rows (the model path is not part of it: a copied model is the same)."""
        text = json.dumps(
            [self.model_hash, self.config_hash, float(self.window_s), float(self.hop_s), float(self.min_conf)]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class RunInfo:
    """A row of ``runs``."""

    id: int
    run_key: str
    model_hash: str
    model_kind: str
    model_path: str
    config_hash: str
    config_json: str
    window_s: float
    hop_s: float
    min_conf: float
    package_version: str
    shard: str | None
    params_json: str
    started_at: str
    updated_at: str
    finished_at: str | None
    invocations: int

    @property
    def params(self) -> RunParams:
        return RunParams(
            self.model_hash, self.model_kind, self.model_path, self.config_json, self.config_hash,
            self.window_s, self.hop_s, self.min_conf,
        )


@dataclass
class FileResult:
    """Everything the per-file work returns, and what :meth:`ResultsStore.write_file` commits at once.

    Attributes
    ----------
    path : str
        The recording (absolute).
    size, mtime_ns : int or None
        From ``os.stat`` before the file was read (None if it could not be stat'ed).
    status : str
        ``"done"`` or ``"failed"``.
    error : str or None
        The reason for a failure.
    warning : str or None
        What is suspect about a file that was processed (truncated, damaged data skipped, low sample rate).
    duration_s : float or None
        Length at the pipeline rate, in seconds.
    source_rate, channels : int or None
        From the file's header.
    windows : ndarray, float64, shape (n_windows, 3)
        ``start_s, end_s, score`` per window, in time order.
    events : ndarray, float64, shape (n_events, 4)
        ``start_s, end_s, peak_score, peak_s`` per event.
    elapsed_s : float
        Processing time.
    """

    path: str
    size: int | None
    mtime_ns: int | None
    status: str
    error: str | None = None
    duration_s: float | None = None
    source_rate: int | None = None
    channels: int | None = None
    windows: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    events: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    elapsed_s: float = 0.0
    warning: str | None = None


class _Lock:
    """An exclusive advisory lock on ``path`` (fcntl.flock); a no-op where fcntl does not exist."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # e.g. a store on a folder remounted read-only since the last run
            raise OutputError.from_os_error(exc, self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(
                f"{self.path.parent}: another scatterbird run is writing to this store; "
                "wait for it to finish (a store has one writer)"
            ) from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


class ResultsStore:
    """An open results store.

    Parameters
    ----------
    path : str or Path
        The SQLite file (created with its directory when ``writer`` is true).
    writer : bool
        Open for writing: create the schema and take the one-writer lock. Otherwise open read-only, and
        raise :class:`StoreError` if the file does not exist.
    """

    def __init__(self, path: str | os.PathLike, *, writer: bool = False) -> None:
        self.path = Path(path)
        self.writer = writer
        self._lock: _Lock | None = None
        created: list[Path] = []  # what this open created, removed again when it fails
        if writer:
            prepare_output_dir(self.path.parent)  # a file, read-only, not writable: OutputError
            lock = self.path.with_name(self.path.name + ".lock")
            created = [lock] if not lock.exists() else []
            if not self.path.exists():  # a journal is removed only with the new store it belongs to
                created += [self.path, self.path.with_name(self.path.name + "-journal")]
            self._lock = _Lock(lock)
            self._lock.acquire()
            uri = f"file:{self.path}?mode=rwc"
        else:
            if not self.path.is_file():
                raise StoreError(f"{self.path}: no results store here (run `scatterbird detect` first)")
            # mode=rw, not ro: a reader may have to roll back the hot journal a killed writer left behind.
            uri = f"file:{self.path}?mode=rw"
        try:
            try:
                self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60.0)
            except sqlite3.OperationalError:
                if writer:
                    raise
                # a store on read-only media: read it as it is
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            self.db.execute("PRAGMA foreign_keys = ON")
            if writer:
                self.db.executescript(_SCHEMA)
                self.db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            self.close()
            for p in reversed(created):  # a store this open began (e.g. on a full disk) is not left behind
                p.unlink(missing_ok=True)
            if writer and (err := self._write_error(exc)) is not None:
                raise err from None
            raise StoreError(f"{self.path}: not a scatterbird results store ({exc})") from None
        if row is None or int(row[0]) > SCHEMA_VERSION:
            self.close()
            raise StoreError(
                f"{self.path}: store schema {row[0] if row else '(none)'} is not supported by this version "
                f"(which reads schema {SCHEMA_VERSION}); upgrade scatterbird"
            )
        if writer and int(row[0]) < SCHEMA_VERSION:
            try:
                self._migrate()
            except BaseException:
                self.close()
                raise
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(files)")}
        self._warning_col = "warning" if "warning" in cols else "NULL AS warning"  # a schema-1 store, read

    # -- lifetime ------------------------------------------------------------------------------------
    def close(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            db.close()
            self.db = None  # type: ignore[assignment]
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------------------
    _RUN_COLS = (
        "id, run_key, model_hash, model_kind, model_path, config_hash, config_json, window_s, hop_s, min_conf, "
        "package_version, shard, params_json, started_at, updated_at, finished_at, invocations"
    )

    def runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        return [RunInfo(*r) for r in self.db.execute(f"SELECT {self._RUN_COLS} FROM runs ORDER BY id")]

    def run(self, run_id: int | None = None) -> RunInfo:
        """A run by id, or the latest one (the most recently started or resumed)."""
        if run_id is None:
            row = self.db.execute(
                f"SELECT {self._RUN_COLS} FROM runs ORDER BY updated_at DESC, id DESC LIMIT 1"
            ).fetchone()
            if row is None:
                raise StoreError(f"{self.path}: the store holds no run yet")
        else:
            row = self.db.execute(f"SELECT {self._RUN_COLS} FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"{self.path}: no run {run_id}; runs: {[r.id for r in self.runs()]}")
        return RunInfo(*row)

    def find_run(self, params: RunParams) -> RunInfo | None:
        """The latest run with the same key as ``params``, if any."""
        row = self.db.execute(
            f"SELECT {self._RUN_COLS} FROM runs WHERE run_key = ? ORDER BY id DESC LIMIT 1", (params.key,)
        ).fetchone()
        return RunInfo(*row) if row else None

    def open_run(
        self, params: RunParams, *, package_version: str, invocation: dict[str, Any] | None = None,
        shard: str | None = None,
    ) -> tuple[RunInfo, bool]:
        """Resume the run with these parameters, or start a new one.

        Returns
        -------
        run : RunInfo
        resumed : bool
            True when an existing run was resumed.
        """
        now = _now()
        params_json = json.dumps(invocation or {}, sort_keys=True)
        found = self.find_run(params)
        with self._transaction():
            if found is not None:
                self.db.execute(
                    "UPDATE runs SET updated_at = ?, finished_at = NULL, invocations = invocations + 1, "
                    "params_json = ?, package_version = ?, model_path = ? WHERE id = ?",
                    (now, params_json, package_version, params.model_path, found.id),
                )
                run_id = found.id
            else:
                cur = self.db.execute(
                    "INSERT INTO runs (run_key, model_hash, model_kind, model_path, config_hash, config_json, "
                    "window_s, hop_s, min_conf, package_version, shard, params_json, started_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        params.key, params.model_hash, params.model_kind, params.model_path,
                        params.config_hash, params.config_json, float(params.window_s), float(params.hop_s),
                        float(params.min_conf), package_version, shard, params_json, now, now,
                    ),
                )
                run_id = int(cur.lastrowid)
        return self.run(run_id), found is not None

    def finish_run(self, run_id: int) -> None:
        """Mark a complete pass over the inputs."""
        now = _now()
        with self._transaction():
            self.db.execute("UPDATE runs SET finished_at = ?, updated_at = ? WHERE id = ?", (now, now, run_id))

    # -- files ---------------------------------------------------------------------------------------
    def done_files(self, run_id: int) -> dict[str, tuple[int, int]]:
        """``path -> (size, mtime_ns)`` of the run's files with status ``done``."""
        rows = self.db.execute(
            "SELECT path, size, mtime_ns FROM files WHERE run_id = ? AND status = 'done'", (run_id,)
        )
        return {p: (s, m) for p, s, m in rows}

    def write_file(self, run_id: int, result: FileResult) -> None:
        """Commit one file's row, windows and events in one transaction, replacing an earlier result."""
        windows = np.asarray(result.windows, dtype=np.float64).reshape(-1, 3)
        events = np.asarray(result.events, dtype=np.float64).reshape(-1, 4)
        with self._transaction():
            # ON DELETE CASCADE removes the old windows and events with the old row.
            self.db.execute("DELETE FROM files WHERE run_id = ? AND path = ?", (run_id, result.path))
            cur = self.db.execute(
                "INSERT INTO files (run_id, path, size, mtime_ns, duration_s, source_rate, channels, status, "
                "error, warning, n_windows, elapsed_s, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id, result.path, result.size, result.mtime_ns, result.duration_s, result.source_rate,
                    result.channels, result.status, result.error, result.warning, len(windows),
                    float(result.elapsed_s), _now(),
                ),
            )
            fid = int(cur.lastrowid)
            self.db.executemany(
                "INSERT INTO windows (file_id, start_s, end_s, score) VALUES (?, ?, ?, ?)",
                ((fid, float(a), float(b), float(s)) for a, b, s in windows),
            )
            self.db.executemany(
                "INSERT INTO events (file_id, start_s, end_s, peak_score, peak_s) VALUES (?, ?, ?, ?, ?)",
                ((fid, float(a), float(b), float(s), float(t)) for a, b, s, t in events),
            )
            self.db.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (_now(), run_id))

    def forget_files(self, run_id: int, paths: Iterable[str]) -> int:
        """Delete the results of ``paths`` from a run (one transaction); returns how many were there."""
        paths = list(paths)
        with self._transaction():
            n = 0
            for p in paths:
                n += self.db.execute("DELETE FROM files WHERE run_id = ? AND path = ?", (run_id, p)).rowcount
        return n

    def set_problems(self, run_id: int, problems: Sequence[tuple[str, str]]) -> None:
        """Replace the run's input problems with those of the latest scan."""
        with self._transaction():
            self.db.execute("DELETE FROM input_problems WHERE run_id = ?", (run_id,))
            self.db.executemany(
                "INSERT INTO input_problems (run_id, path, reason) VALUES (?, ?, ?)",
                ((run_id, str(p), str(r)) for p, r in problems),
            )

    # -- reading -------------------------------------------------------------------------------------
    def files(self, run_id: int) -> list[dict[str, Any]]:
        """The run's files, by path, as dictionaries of the ``files`` columns (without ``run_id``)."""
        cur = self.db.execute(
            "SELECT id, path, size, mtime_ns, duration_s, source_rate, channels, status, error, "
            f"{self._warning_col}, n_windows, elapsed_s, processed_at FROM files WHERE run_id = ? ORDER BY path",
            (run_id,),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    def windows(self, run_id: int) -> list[tuple[str, float, float, float]]:
        """``(path, start_s, end_s, score)`` of the run's windows, by path and start."""
        return list(
            self.db.execute(
                "SELECT f.path, w.start_s, w.end_s, w.score FROM windows w JOIN files f ON f.id = w.file_id "
                "WHERE f.run_id = ? ORDER BY f.path, w.start_s, w.end_s",
                (run_id,),
            )
        )

    def events(self, run_id: int) -> list[tuple[str, float, float, float, float]]:
        """``(path, start_s, end_s, peak_score, peak_s)`` of the run's events, by path and start."""
        return list(
            self.db.execute(
                "SELECT f.path, e.start_s, e.end_s, e.peak_score, e.peak_s FROM events e "
                "JOIN files f ON f.id = e.file_id WHERE f.run_id = ? ORDER BY f.path, e.start_s",
                (run_id,),
            )
        )

    def failures(self, run_id: int) -> list[tuple[str, str]]:
        """``(path, reason)`` of the run's failed files, then of its input problems."""
        failed = self.db.execute(
            "SELECT path, error FROM files WHERE run_id = ? AND status = 'failed' ORDER BY path", (run_id,)
        ).fetchall()
        problems = self.db.execute(
            "SELECT path, reason FROM input_problems WHERE run_id = ? ORDER BY rowid", (run_id,)
        ).fetchall()
        return [(p, e or "unknown error") for p, e in failed] + [(p, r) for p, r in problems]

    def warnings(self, run_id: int) -> list[tuple[str, str]]:
        """``(path, warning)`` of the run's processed files that carry a warning, by path."""
        if self._warning_col != "warning":
            return []
        return self.db.execute(
            "SELECT path, warning FROM files WHERE run_id = ? AND status = 'done' AND warning IS NOT NULL "
            "ORDER BY path", (run_id,)
        ).fetchall()

    def file_result(self, file_row: dict[str, Any]) -> FileResult:
        """Rebuild the FileResult of a ``files`` row (for merging stores)."""
        fid = file_row["id"]
        w = self.db.execute(
            "SELECT start_s, end_s, score FROM windows WHERE file_id = ? ORDER BY start_s, end_s", (fid,)
        ).fetchall()
        e = self.db.execute(
            "SELECT start_s, end_s, peak_score, peak_s FROM events WHERE file_id = ? ORDER BY start_s", (fid,)
        ).fetchall()
        return FileResult(
            path=file_row["path"], size=file_row["size"], mtime_ns=file_row["mtime_ns"],
            status=file_row["status"], error=file_row["error"], duration_s=file_row["duration_s"],
            source_rate=file_row["source_rate"], channels=file_row["channels"],
            windows=np.array(w, dtype=np.float64).reshape(-1, 3),
            events=np.array(e, dtype=np.float64).reshape(-1, 4),
            elapsed_s=file_row["elapsed_s"] or 0.0, warning=file_row.get("warning"),
        )

    def incomplete(self, run_id: int) -> str | None:
        """None when the run's last pass over its inputs completed; else what is missing, in words."""
        run = self.run(run_id)
        if run.finished_at:
            return None
        n = self.db.execute("SELECT COUNT(*) FROM files WHERE run_id = ?", (run_id,)).fetchone()[0]
        expected = json.loads(run.params_json or "{}").get("files")  # as run_detect records it
        of = f" of {expected}" if isinstance(expected, int) else ""
        return (f"run {run_id} is incomplete: {n}{of} file(s) processed (detect was interrupted, or is still "
                f"running); rerun the same detect command to finish it")

    def problems(self, run_id: int) -> list[tuple[str, str]]:
        return self.db.execute(
            "SELECT path, reason FROM input_problems WHERE run_id = ? ORDER BY rowid", (run_id,)
        ).fetchall()

    # -- internals -----------------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Bring an older store to ``SCHEMA_VERSION`` (one transaction; the rows are kept as they are)."""
        with self._transaction():
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(files)")}
            if "warning" not in cols:  # schema 1 -> 2
                self.db.execute("ALTER TABLE files ADD COLUMN warning TEXT")
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))

    def _write_error(self, exc: sqlite3.Error) -> OutputError | None:
        """The OutputError of a write the disk refused (full, read-only, I/O error), else None."""
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code == _SQLITE_FULL:
            return OutputError.disk_full(self.path)
        if code == _SQLITE_READONLY:
            return OutputError(self.path, f"cannot write the results store ({exc}); is the folder read-only?")
        if code in (_SQLITE_IOERR, _SQLITE_CANTOPEN):
            return OutputError(self.path, f"cannot write the results store ({exc})")
        return None

    class _Tx:
        def __init__(self, store: "ResultsStore") -> None:
            self.store = store
            self.db = store.db

        def __enter__(self) -> None:
            # IMMEDIATE: take the write lock now, so that the transaction never fails half-way on a busy store.
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.store._write_error(exc) or exc from None

        def __exit__(self, exc_type, exc, tb) -> None:
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                    return
                except sqlite3.Error as err:
                    exc = err
            # SQLite has already rolled back after some errors (a full disk): roll back only what is open.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):  # the store keeps its last committed state
                err = self.store._write_error(exc)
                if err is not None:
                    raise err from None
                if exc_type is None:
                    raise exc

    def _transaction(self) -> "ResultsStore._Tx":
        if not self.writer:
            raise StoreError(f"{self.path}: opened read-only")
        return ResultsStore._Tx(self)


def shard_store_name(index: int, count: int) -> str:
    """The store file of shard ``index`` (1-based) of ``count``."""
    return f"scatterbird.shard-{index}-of-{count}.sqlite"


@dataclass
class MergeReport:
    """What :func:`merge_stores` did."""

    sources: list[str] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)  # target run ids touched
    copied: int = 0
    kept: int = 0  # files the target already had done (same size and mtime)


def merge_stores(target: str | os.PathLike, sources: Iterable[str | os.PathLike]) -> MergeReport:
    """Combine stores (e.g. shards) into ``target``, run by run.

    Each source run goes into the target run with the same key (created when missing). A file the target
    already has done with the same size and mtime is kept; otherwise the source's result is copied, a done
    result taking precedence over a failure. Each file is copied in one transaction, so merging is
    resumable and idempotent.
    """
    report = MergeReport()
    complete: dict[int, bool] = {}  # target run -> every source pass merged into it was complete
    with ResultsStore(target, writer=True) as out:
        for src_path in sources:
            src_path = Path(src_path)
            if src_path.resolve() == Path(target).resolve():
                continue
            report.sources.append(str(src_path))
            with ResultsStore(src_path) as src:
                for run in src.runs():
                    invocation = {"merged_from": [str(src_path)]}
                    found = out.find_run(run.params)
                    if found is not None:
                        invocation = json.loads(found.params_json or "{}")
                        invocation.setdefault("merged_from", []).append(str(src_path))
                    dst, _ = out.open_run(run.params, package_version=run.package_version, invocation=invocation)
                    if dst.id not in report.runs:
                        report.runs.append(dst.id)
                    have = {f["path"]: f for f in out.files(dst.id)}
                    for row in src.files(run.id):
                        old = have.get(row["path"])
                        if old is not None and old["status"] == "done" and (
                            row["status"] != "done" or (old["size"], old["mtime_ns"]) == (row["size"], row["mtime_ns"])
                        ):
                            report.kept += 1
                            continue
                        out.write_file(dst.id, src.file_result(row))
                        report.copied += 1
                    problems = out.problems(dst.id) + [p for p in src.problems(run.id)]
                    out.set_problems(dst.id, list(dict.fromkeys(problems)))
                    complete[dst.id] = complete.get(dst.id, True) and bool(run.finished_at)
        for run_id, done in complete.items():
            if done:
                out.finish_run(run_id)
    return report


def iter_store_paths(outdir: str | os.PathLike) -> Iterator[Path]:
    """Shard stores in ``outdir``, by name."""
    yield from sorted(Path(outdir).glob("scatterbird.shard-*-of-*.sqlite"))
