"""Batch detection over many recordings: the per-file work, and the driver that runs it and writes the store.

The per-file work, :func:`detect_file`, is a pure function of (path, detector, window parameters): it streams
the recording, scatters it chunk by chunk, cuts windows span by span (:mod:`scatterbird.pipeline.detect.windows`), scores them
in small batches and returns a :class:`~scatterbird.pipeline.detect.store.FileResult`. It never touches the store, and it
never raises for a bad recording: the failure and its reason are in the result.

The driver, :func:`run_detect`, finds the inputs, resumes or starts a run in the store, skips the files already
done, runs the per-file work in one of three ways, and alone writes each result to the store, in one
transaction per file:

* in this process (``workers=1``);
* on ``workers`` local worker processes, each loading the model once and using one torch thread, so N
  workers use N cores; a worker that dies fails the files it had in flight, and the batch goes on;
* on an existing Dask distributed cluster (``scheduler="tcp://host:8786"``): the same function; the model
  file's bytes go to each worker once. The recordings must be readable at the same paths on the workers
  (a shared file system).

All three are the executors of :mod:`pipeline.executor`.

``shard=(i, N)`` keeps every N-th file of the sorted input list, starting at the i-th (1-based), so N
independent jobs (e.g. a SLURM array) given the same inputs split a collection evenly without talking to each
other, and a rerun puts each file in the same shard again; each writes its own store, and
:func:`scatterbird.pipeline.detect.store.merge_stores` combines them.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from scatterbird.errors import BatchError, OptionError, OutputError
from scatterbird.models.registry import default_model_path, load_detector
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.detect.exports import export_run
from scatterbird.pipeline.detect.memory import release_free_memory
from scatterbird.pipeline.detect.store import STORE_NAME, FileResult, ResultsStore, RunInfo, RunParams, shard_store_name
from scatterbird.pipeline.detect.windows import WindowSpec, events_from_windows, iter_windows
from scatterbird.pipeline.device import detector_on, resolve_device
from scatterbird.pipeline.executor import open_executor, run_each, worker_died, worker_torch_threads
from scatterbird.pipeline.frontend.audio import AudioError, audio_info, stream_audio
from scatterbird.pipeline.frontend.clips import scatter_recording
from scatterbird.pipeline.frontend.features import failure_reason, scattering_for
from scatterbird.pipeline.frontend.inputs import find_audio
from scatterbird.version import __version__

#: Windows scored together in one ``predict_proba`` call (bounds the memory of the scoring step).
SCORE_BATCH = 8

#: Seconds of audio between two hand-backs of the allocator's free memory (:mod:`scatterbird.pipeline.detect.memory`).
RELEASE_EVERY_S = 600.0



@dataclass(frozen=True)
class DetectParams:
    """Window and event parameters of a detection run.

    Parameters
    ----------
    window_s, hop_s : float
        Window length and hop in seconds (see :mod:`scatterbird.pipeline.detect.windows` for the last-window policy).
    min_conf : float
        Windows scoring at least this are merged into events.
    """

    window_s: float = 10.0
    hop_s: float = 5.0
    min_conf: float = 0.5

    def __post_init__(self) -> None:
        WindowSpec(self.window_s, self.hop_s)  # validates
        if not 0.0 <= self.min_conf <= 1.0:
            raise OptionError(f"min-conf must be between 0 and 1, got {self.min_conf}")

    @property
    def spec(self) -> WindowSpec:
        return WindowSpec(self.window_s, self.hop_s)


# -- the per-file work --------------------------------------------------------------------------------
def score_blocks(
    blocks: Iterable[np.ndarray],
    total_samples: Callable[[], int],
    detector: Any,
    params: DetectParams,
    progress: Callable[[float], None] | None = None,
    device: str = "cpu",
    expected_samples: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every window of one recording given as mono blocks at the detector's sample rate.

    Parameters
    ----------
    blocks : iterable of ndarray
        Consecutive float32 mono blocks (an audio stream, or one in-memory array).
    total_samples : callable
        Returns the recording's length in samples; asked once the blocks are exhausted.
    detector : Detector
        Fitted, with its ``feature_config``.
    params : DetectParams
    progress : callable, optional
        Called with the seconds of audio scored so far.
    device : str
        Where the scattering and, for a detector that can (:func:`scatterbird.pipeline.device.detector_on`),
        the scoring run; the results come back on the CPU.
    expected_samples : int, optional
        The recording's length in samples when known beforehand (a header's promise): up to
        ``MAX_BATCH_SAMPLES`` the blocks are read whole and scattered in one buffer of about that length.

    Returns
    -------
    windows : ndarray, float64, shape (n_windows, 3)
        ``start_s, end_s, score``.
    events : ndarray, float64, shape (n_events, 4)
        ``start_s, end_s, peak_score, peak_s``.
    """
    config: FeatureConfig = detector.feature_config
    device = str(resolve_device(device, option="device"))  # "auto" becomes the device it stands for
    # a short recording in a buffer of about its own length, not a whole streaming buffer
    chunks = scatter_recording(scattering_for(config, device), blocks, expected_samples)
    rows: list[tuple[float, float]] = []
    scores: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    released_at = 0.0

    def score() -> None:
        p = np.asarray(detector.predict_proba(pending), dtype=np.float64).reshape(-1)
        if p.shape != (len(pending),) or not np.isfinite(p).all():
            raise ValueError(f"the detector returned {p.shape} scores (finite: {np.isfinite(p).all()}) "
                             f"for {len(pending)} windows")
        scores.append(p)
        pending.clear()
        nonlocal released_at
        done_s = rows[-1][1]
        if done_s - released_at >= RELEASE_EVERY_S:  # long files: keep the process from creeping up
            release_free_memory()
            released_at = done_s
        if progress is not None:
            progress(rows[-1][1])

    with detector_on(detector, device):
        for win in iter_windows(chunks, config, params.spec, total_samples):
            rows.append((win.start_s, win.end_s))
            pending.append(win.frames)
            if len(pending) >= SCORE_BATCH:
                score()
        if pending:
            score()
    windows = np.column_stack([np.array(rows, dtype=np.float64).reshape(-1, 2), np.concatenate(scores)])
    return windows, events_from_windows(windows, params.min_conf)


def detect_file(
    path: str | os.PathLike,
    detector: Any,
    params: DetectParams,
    progress: Callable[[float], None] | None = None,
    device: str = "cpu",
) -> FileResult:
    """Score every window of one recording.

    Parameters
    ----------
    path : str or Path
        The recording.
    detector : Detector
        A fitted detector with its ``feature_config``; the features are made with that configuration.
    params : DetectParams
    progress : callable, optional
        Called with the seconds of audio scored so far, after each batch of windows (a long file's progress).
    device : str
        Where the work runs (:func:`score_blocks`), by name.

    Returns
    -------
    FileResult
        ``status="done"`` with windows and events, or ``status="failed"`` with the reason. Memory stays
        bounded whatever the recording's length: audio blocks, scattering chunks and windows stream through.
    """
    t0 = time.perf_counter()
    path = os.path.abspath(os.fspath(path))
    res = FileResult(path=path, size=None, mtime_ns=None, status="failed")
    try:
        st = os.stat(path)  # before reading: a file changed meanwhile is then redone by the next run
        res.size, res.mtime_ns = int(st.st_size), int(st.st_mtime_ns)
        config: FeatureConfig = detector.feature_config
        stream = stream_audio(path, config.sample_rate)
        res.source_rate, res.channels = stream.info.sample_rate, stream.info.channels
        res.windows, res.events = score_blocks(stream, lambda: stream.samples_out, detector, params, progress,
                                               device, stream.expected_samples)
        res.duration_s = stream.samples_out / config.sample_rate
        res.warning = stream.warning  # truncated, damaged or low-rate: used, and said so
        res.status = "done"
    except AudioError as exc:
        res.error = exc.reason
    except FileNotFoundError:
        res.error = "file not found"
    except PermissionError:
        res.error = "permission denied (file is not readable)"
    except MemoryError:
        res.error = "out of memory while processing this file"
    except Exception as exc:  # one bad file must not stop a batch of thousands; the reason is kept
        res.error = f"processing error ({type(exc).__name__}: {exc})"
    if res.status != "done":
        res.windows = np.zeros((0, 3))
        res.events = np.zeros((0, 4))
    res.elapsed_s = time.perf_counter() - t0
    return res


# -- models in worker processes -----------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """How a worker gets the model: a path on a shared disk, or the file's bytes; and the module that
    defines its class (imported first, so that any registered Detector can be loaded)."""

    model_hash: str
    module: str
    path: str | None = None
    data: bytes | None = None


_MODELS: dict[str, Any] = {}


def _load_ref(ref: ModelRef) -> Any:
    """The model of ``ref``, loaded once per process (the worker initializer loads it first)."""
    det = _MODELS.get(ref.model_hash)
    if det is not None:
        return det
    if ref.data is None and ref.path is None:
        raise BatchError(f"model {ref.model_hash} was not loaded on this worker")
    if ref.module and ref.module not in sys.modules:
        importlib.import_module(ref.module)
    if ref.data is not None:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "model.pt"
            p.write_bytes(ref.data)
            det = load_detector(p)
    else:
        det = load_detector(ref.path)
    _MODELS[ref.model_hash] = det
    return det


def _local_worker_init(ref: ModelRef) -> None:
    """Start a local worker: Ctrl-C (SIGINT, sent to the terminal's whole process group) is the driver's to
    handle (it stops the workers), not a KeyboardInterrupt inside a job; then load the model."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _load_ref(ref)


@contextmanager
def _stop_workers_on_interrupt(executor: Any, local: bool, bar: Any, log: Callable[[str], None]) -> Iterator[None]:
    """On Ctrl-C or SIGTERM (:class:`~scatterbird.errors.Interrupted`) inside the block, terminate local workers
    at once (before the executor's shutdown would wait for their jobs), saying so."""
    try:
        yield
    except KeyboardInterrupt:
        bar.close()
        if local:
            log("stopping workers...")
            executor.terminate()
        raise


def worker_detect(path: str, ref: ModelRef, params: DetectParams, device: str = "cpu") -> FileResult:
    """The per-file work as a worker runs it: the model from ``ref`` (cached), the worker's torch threads,
    ``device`` by name (the model stays on the CPU between files; see :func:`score_blocks`)."""
    worker_torch_threads()  # also on the thread a Dask worker runs the job on
    return detect_file(path, _load_ref(ref), params, device=device)


# -- shards -------------------------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` (1 <= i <= N) -> (i, N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise BatchError(f"--shard must look like i/N (e.g. 2/8), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise BatchError(f"--shard {text}: need 1 <= i <= N (shards are numbered from 1)")
    return i, n


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard of a SLURM array task: ``(TASK_ID - TASK_MIN + 1, TASK_COUNT)``, or None outside one."""
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    task = int(env["SLURM_ARRAY_TASK_ID"])
    first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    count = int(env["SLURM_ARRAY_TASK_COUNT"])
    return parse_shard(f"{task - first + 1}/{count}")


def shard_files(files: Iterable[str], index: int, count: int) -> list[str]:
    """The files of shard ``index`` of ``count`` (1-based): round-robin over the sorted absolute paths.

    Every job of an array scans the same inputs, so all agree on the sorted list without sharing it; the
    shards differ in size by at most one file, also for a batch of a few files (a hash of the path splits
    thousands evenly but can leave a shard of a small batch empty). The same inputs give the same shards on a
    rerun, so a resumed job finds its own files done. Files added between two jobs' scans can shift the
    split: give every job of an array the same inputs.
    """
    ordered = sorted({os.path.abspath(f) for f in files})
    return ordered[index - 1::count]


# -- progress -----------------------------------------------------------------------------------------
class AudioProgress:
    """The batch's progress bar, in hours of audio; each file advances it up to its header's duration.

    It counts whole milliseconds (shown as hours): the per-file steps then add up to the total exactly, so a
    finished batch is drawn full at 100 %, never one float rounding short of it.

    Parameters
    ----------
    durations : mapping of str to float
        Seconds of audio of each file to do (from its header; 0 when unknown).
    enabled : bool
        False: draw nothing.
    file : text stream, optional
        Where to draw; stderr when None.
    """

    def __init__(self, durations: Mapping[str, float], *, enabled: bool = True, file: Any = None) -> None:
        self._cap_ms = {str(p): max(0, round(d * 1000)) for p, d in durations.items()}
        self._shown_ms: dict[str, int] = {}
        self._bar = tqdm(total=sum(self._cap_ms.values()), unit="h", unit_scale=1 / 3_600_000, desc="detect",
                         disable=not enabled, file=file,
                         bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} h [{elapsed}<{remaining}{postfix}]")

    @property
    def n_ms(self) -> int:
        """Milliseconds of audio drawn so far."""
        return int(self._bar.n)

    @property
    def total_ms(self) -> int:
        """Milliseconds of audio to do."""
        return int(self._bar.total or 0)

    def advance(self, path: str, seconds: float) -> None:
        """``path`` is done up to ``seconds`` of audio (calls with smaller values than before change nothing)."""
        # A decoded length can exceed the header's by a block: never run past the file's share of the total.
        ms = min(round(seconds * 1000), self._cap_ms.get(str(path), 0))
        step = ms - self._shown_ms.get(str(path), 0)
        if step > 0:
            self._shown_ms[str(path)] = ms
            self._bar.update(step)

    def set_postfix_str(self, text: str) -> None:
        self._bar.set_postfix_str(text)

    def close(self) -> None:
        self._bar.close()


# -- the driver ---------------------------------------------------------------------------------------
@dataclass
class DetectSummary:
    """What a call of :func:`run_detect` did."""

    store: Path
    run: RunInfo
    resumed: bool
    notes: list[str] = field(default_factory=list)  # resume / new-run messages
    files: int = 0  # files in this invocation's inputs (after sharding)
    done: int = 0  # processed now
    skipped: int = 0  # already done in the run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), this invocation
    warned: list[tuple[str, str]] = field(default_factory=list)  # (path, warning) of files processed now
    problems: list[tuple[str, str]] = field(default_factory=list)  # input scan problems
    audio_s: float = 0.0  # audio processed now, seconds
    wall_s: float = 0.0
    exported: list[Path] = field(default_factory=list)

    @property
    def speed(self) -> float:
        """Audio seconds processed per wall-clock second (x real time); 0 when nothing was processed."""
        return self.audio_s / self.wall_s if self.wall_s > 0 and self.audio_s > 0 else 0.0

    @property
    def real_time_factor(self) -> float:
        """Wall-clock seconds per audio second (below 1: faster than real time)."""
        return self.wall_s / self.audio_s if self.audio_s > 0 else float("nan")

    def lines(self) -> list[str]:
        """The end-of-run summary, for printing."""
        out = [
            f"run {self.run.id} ({'resumed' if self.resumed else 'new'}): {self.files} file(s): "
            f"{self.done} processed, {self.skipped} skipped (already done), {len(self.failed)} failed"
            + (f", {len(self.warned)} with warnings" if self.warned else ""),
            f"audio processed: {self.audio_s / 3600:.3f} h in {self.wall_s:.1f} s wall: "
            + (f"{self.speed:.1f}x real time (real-time factor {self.real_time_factor:.5f})"
               if self.audio_s > 0 else "no audio processed"),
            f"store: {self.store}",
        ]
        if self.failed:
            out.append(f"failed files ({len(self.failed)}); `scatterbird failures {self.store.parent}` lists them:")
            out += [f"  {p}: {r}" for p, r in self.failed[:20]]
            if len(self.failed) > 20:
                out.append(f"  ... and {len(self.failed) - 20} more")
        if self.warned:
            out.append(f"processed with warnings ({len(self.warned)}); `scatterbird failures {self.store.parent}` "
                       "lists them too:")
            out += [f"  {p}: warning: {w}" for p, w in self.warned[:20]]
            if len(self.warned) > 20:
                out.append(f"  ... and {len(self.warned) - 20} more")
        if self.problems:
            out.append(f"input problems ({len(self.problems)}):")
            out += [f"  {p}: {r}" for p, r in self.problems[:20]]
        return out


def _describe_change(old: RunInfo, new: RunParams) -> str:
    diffs = []
    if old.model_hash != new.model_hash:
        diffs.append(f"model {old.model_hash} -> {new.model_hash}")
    if old.config_hash != new.config_hash:
        diffs.append(f"feature config {old.config_hash} -> {new.config_hash}")
    for name in ("window_s", "hop_s", "min_conf"):
        a, b = getattr(old, name), getattr(new, name)
        if float(a) != float(b):
            diffs.append(f"{name.replace('_s', '')} {a:g} -> {b:g}")
    return ", ".join(diffs) or "parameters changed"


def load_model_for_run(model_path: str | os.PathLike | None) -> tuple[Any, Path]:
    """Load the detector (the bundled one when ``model_path`` is None) and check it carries its config."""
    path = Path(model_path) if model_path is not None else default_model_path()
    det = load_detector(model_path)
    if det.feature_config is None:
        raise BatchError(f"{path}: the model carries no feature configuration; retrain it with scatterbird train")
    return det, path


def _failed(path: str, error: BaseException, scheduler: str | None) -> FileResult:
    """The result of a file whose job raised (worker_detect itself never raises for a bad recording)."""
    if scheduler and not worker_died(error):  # e.g. KilledWorker: the file took workers down with it
        reason = f"the cluster could not process it ({type(error).__name__}: {error})"
    else:
        reason = failure_reason(error)
    return FileResult(path=path, size=None, mtime_ns=None, status="failed", error=reason)


def run_detect(
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    model_path: str | os.PathLike | None = None,
    params: DetectParams = DetectParams(),
    extensions: Sequence[str] | None = None,
    force: bool = False,
    workers: int = 1,
    scheduler: str | None = None,
    shard: tuple[int, int] | None = None,
    formats: Sequence[str] = (),
    progress: bool = False,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    device: str = "cpu",
) -> DetectSummary:
    """Detect bird activity in every recording of ``inputs``; results go to ``OUTDIR/scatterbird.sqlite``.

    Parameters
    ----------
    inputs : sequence of path
        Files, directories (recursive) and ``.txt``/``.lst`` path lists (see :func:`scatterbird.pipeline.frontend.inputs.find_audio`).
    outdir : path
        Output directory: the store, and the exports.
    model_path : path, optional
        A saved Detector; the bundled model when None.
    params : DetectParams
    extensions : sequence of str, optional
        Extensions to look for in directories.
    force : bool
        Redo every file, even those already done in this run.
    workers : int
        Local worker processes; 1 runs in this process.
    scheduler : str, optional
        Address of a Dask scheduler; the work goes to its workers (``workers`` is then ignored).
    shard : (int, int), optional
        Process only shard ``i`` of ``N`` into ``OUTDIR/scatterbird.shard-i-of-N.sqlite``.
    formats : sequence of str
        Exports written at the end (see :mod:`scatterbird.pipeline.detect.exports`); none for a shard.
    progress : bool
        Show a progress bar (stderr).
    log : callable
        Receives the resume / new-run notes as they happen.
    device : str
        Where the scattering and the detector's scoring run: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``
        (:func:`scatterbird.pipeline.device.resolve_device`, checked before any work). Not part of the run's
        parameters: the scores are the same up to float rounding, so a rerun on another device resumes.

    Returns
    -------
    DetectSummary
    """
    t0 = time.perf_counter()
    if workers < 1:
        raise BatchError(f"--workers must be >= 1, got {workers}")
    device_name = str(resolve_device(device))  # no such device: OptionError before the model is read
    det, mpath = load_model_for_run(model_path)
    config: FeatureConfig = det.feature_config
    run_params = RunParams(
        model_hash=det.model_hash, model_kind=det.kind, model_path=str(mpath.resolve()),
        config_json=config.to_json(), config_hash=config.hash,
        window_s=float(params.window_s), hop_s=float(params.hop_s), min_conf=float(params.min_conf),
    )

    scan = find_audio([os.fspath(i) for i in inputs], extensions)
    if not scan.files:
        detail = "; ".join(f"{p}: {r}" for p, r in scan.problems[:5])
        raise BatchError("no audio files found in the given inputs" + (f" ({detail})" if detail else ""))
    files = [os.path.abspath(f) for f in scan.files]
    if shard is not None:
        files = shard_files(files, *shard)
    out = Path(outdir)
    store_path = out / (shard_store_name(*shard) if shard else STORE_NAME)
    invocation = {
        "inputs": [os.fspath(i) for i in inputs], "extensions": list(extensions or []), "force": force,
        "workers": workers, "scheduler": scheduler, "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "argv": sys.argv, "files": len(files),  # files: what `export` compares a run's progress with
        "device": device_name,
    }
    with ResultsStore(store_path, writer=True) as store:
        previous = store.run() if store.runs() else None
        run, resumed = store.open_run(
            run_params, package_version=__version__, invocation=invocation,
            shard=f"{shard[0]}/{shard[1]}" if shard else None,
        )
        summary = DetectSummary(store=store_path, run=run, resumed=resumed, files=len(files),
                                problems=list(scan.problems))
        done = {} if force else store.done_files(run.id)
        todo: list[str] = []
        for f in files:
            try:
                st = os.stat(f)
                key = (int(st.st_size), int(st.st_mtime_ns))
            except OSError:
                key = None
            if key is not None and done.get(f) == key:
                summary.skipped += 1
            else:
                todo.append(f)
        if resumed:
            note = f"resuming run {run.id}: {summary.skipped} of {len(files)} file(s) already done"
            if force:
                note = f"run {run.id}: --force, redoing all {len(files)} file(s)"
        elif previous is not None:
            note = (f"model or configuration changed since run {previous.id} "
                    f"({_describe_change(previous, run_params)}): "
                    f"starting new run {run.id}; the earlier run's results stay in the store, separate")
        else:
            note = f"new run {run.id} in {store_path}"
        summary.notes.append(note)
        log(note)
        # Failures of files that are gone (removed or moved by the user since) are no longer news.
        wanted = set(files)
        gone = [f["path"] for f in store.files(run.id)
                if f["status"] == "failed" and f["path"] not in wanted and not os.path.exists(f["path"])]
        if gone and store.forget_files(run.id, gone):
            note = f"run {run.id}: forgot {len(gone)} failure(s) of files that no longer exist"
            summary.notes.append(note)
            log(note)
        store.set_problems(run.id, scan.problems)

        durations = {}
        for f in todo:  # headers only: the progress bar's total in hours of audio
            try:
                durations[f] = audio_info(f).duration
            except Exception:
                durations[f] = 0.0
        bar = AudioProgress(durations, enabled=progress)
        bar.set_postfix_str(f"files 0/{len(todo)}")

        # Workers load the model once (from the shared file, or from its bytes sent to each Dask worker);
        # in this process the detector already loaded scores the files, advancing the bar within each.
        ref = ModelRef(det.model_hash, type(det).__module__, path=None if scheduler else str(mpath.resolve()),
                       data=mpath.read_bytes() if scheduler else None)
        if scheduler or workers > 1:
            job: Callable[[str], FileResult] = partial(worker_detect, ref=replace(ref, data=None), params=params,
                                                       device=device_name)
        else:
            def job(p: str) -> FileResult:
                return detect_file(p, det, params, progress=lambda s: bar.advance(p, s), device=device_name)

        n_seen = 0
        init = _load_ref if scheduler else _local_worker_init  # local workers leave Ctrl-C to this process
        try:
            with open_executor(workers if todo else 1, scheduler if todo else None, init, (ref,)) as ex, \
                    _stop_workers_on_interrupt(ex, workers > 1 and not scheduler, bar, log):
                for path, res, error in run_each(ex, job, todo):
                    if error is not None:
                        res = _failed(path, error, scheduler)
                    store.write_file(run.id, res)  # the driver alone writes; one transaction per file
                    n_seen += 1
                    if res.status == "done":
                        summary.done += 1
                        summary.audio_s += res.duration_s or 0.0
                        if res.warning:
                            summary.warned.append((res.path, res.warning))
                    else:
                        summary.failed.append((res.path, res.error or "unknown error"))
                    bar.advance(res.path, durations.get(res.path, 0.0))
                    bar.set_postfix_str(f"files {n_seen}/{len(todo)}, failed {len(summary.failed)}")
        except KeyboardInterrupt:
            log(f"interrupted: {summary.skipped + n_seen} of {len(files)} file(s) done and saved in {store_path} "
                f"(run {run.id}); run the same command again to resume: the files done are skipped")
            raise
        finally:
            bar.close()  # the executor is shut down (jobs cancelled) first, also on Ctrl-C
        store.finish_run(run.id)
        summary.run = store.run(run.id)
        if formats and shard is None:
            try:
                summary.exported = export_run(store, run.id, out, formats)
            except OutputError as exc:  # the results are committed: only the exports need redoing
                raise OutputError(exc.path, f"{exc.reason}; the results are safe in {store_path}: make room (or "
                                  f"fix the folder) and run `scatterbird export {out}`", exc.errno) from None
    summary.wall_s = time.perf_counter() - t0
    return summary
