"""One way to run work: in this process, on local worker processes, or on a Dask cluster.

All three are a :class:`concurrent.futures.Executor`, opened with :func:`open_executor`:

* ``workers <= 1``: :class:`SerialExecutor`, which runs each job in this process as it is submitted;
* ``workers > 1``: :class:`LocalPool`, a :class:`~concurrent.futures.ProcessPoolExecutor` of ``spawn``-ed
  processes (a ``fork`` after torch has started its threads can deadlock) that replaces itself when a worker
  dies;
* ``scheduler="tcp://host:8786"``: :class:`DaskExecutor`, the executor of a ``distributed.Client``
  (``Client.get_executor``) on an existing cluster; needs ``pip install 'scatterbird[cluster]'``.

In every worker process the thread setup runs first (:mod:`scatterbird.pipeline.threads`): a local worker
gets its share of the run's thread budget (``threads // workers``, at least one) for torch and BLAS, a Dask
worker one torch thread per job thread (the cluster runs one job thread per core); then the ``initializer``
runs, once. A local pool puts ``OMP_WAIT_POLICY=PASSIVE`` in this process's environment (unless a policy is
set) before it starts its workers, so that their idle OpenMP threads sleep instead of spinning against other
work. :func:`run_each` maps a function over items with a bounded number of jobs in flight and yields each
item's :class:`Outcome` as it completes: a job that raises, or that a dying worker takes down with it, is that
item's error, and the other items go on.
"""

from __future__ import annotations

import itertools
import uuid
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

from scatterbird.errors import BatchError
from scatterbird.pipeline.threads import (
    apply_threads,
    budget,
    check_threads,
    prefer_passive_wait,
    set_torch_threads,
    share,
)

#: Seconds to wait for a Dask cluster's first worker.
WORKER_WAIT_S = 120

#: Torch threads of a job in this worker process (set by the worker setup; 1 on Dask workers).
_worker_threads = 1


def worker_torch_threads() -> None:
    """Give the calling thread this worker's share of torch threads (Dask runs each job on a thread of its own)."""
    set_torch_threads(_worker_threads, interop=False)


def _worker_setup(threads: int, initializer: Callable[..., Any] | None, initargs: Sequence[Any],
                  own_process: bool = True) -> None:
    """``threads`` per job, then the initializer; a process that is not ours (Dask's) keeps its other settings."""
    global _worker_threads
    _worker_threads = threads
    if own_process:
        apply_threads(threads)
    else:
        set_torch_threads(threads, interop=False)
    if initializer is not None:
        initializer(*initargs)


class SerialExecutor(Executor):
    """Runs each job in this process when it is submitted; the future returned is already done."""

    slots = 1

    def __init__(self) -> None:
        self._shut = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if self._shut:
            raise RuntimeError("cannot schedule new futures after shutdown")
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # the job's error travels in its future, as in a pool
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shut = True


class LocalPool(Executor):
    """``workers`` spawned local processes; after a worker dies, the next submission starts a fresh pool.

    The jobs in flight when a worker dies fail with :class:`BrokenProcessPool` (their futures say so); jobs
    submitted afterwards run on the new pool.
    """

    def __init__(self, workers: int, initializer: Callable[..., Any] | None = None, initargs: Sequence[Any] = (),
                 threads: int | None = None) -> None:
        self.slots = workers
        self.threads = share(budget() if threads is None else threads, workers)  # of each worker
        self._init = (self.threads, initializer, tuple(initargs))
        prefer_passive_wait()  # inherited by the workers, whose OpenMP runtime reads it when it loads
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.slots, mp_context=get_context("spawn"), initializer=_worker_setup, initargs=self._init
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        try:
            return self._pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def terminate(self) -> None:
        """Stop the worker processes now, without waiting for the jobs in flight (an interrupted run: its
        unfinished files are redone by the next run)."""
        # ProcessPoolExecutor has no public way to end its workers at once; its process table is the only handle.
        for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.terminate()


def _setup_plugin(worker_plugin: type, initializer: Callable[..., Any] | None, initargs: Sequence[Any]) -> Any:
    """A Dask worker plugin that runs the worker setup on every worker, also on those that join later."""

    class Setup(worker_plugin):
        def setup(self, worker: Any) -> None:
            _worker_setup(1, initializer, tuple(initargs), own_process=False)

    return Setup()


class DaskExecutor(Executor):
    """The executor of a ``distributed.Client`` connected to ``address`` (jobs are not pure: never merged).

    Raises
    ------
    BatchError
        When Dask distributed is not installed.
    """

    def __init__(self, address: str, initializer: Callable[..., Any] | None = None, initargs: Sequence[Any] = ()) -> None:
        try:  # optional (the cluster extra), and imported only here: it costs every process memory and time
            from distributed import Client
            from distributed.diagnostics.plugin import WorkerPlugin
        except ImportError:
            raise BatchError("--scheduler needs Dask distributed: pip install 'scatterbird[cluster]'") from None
        self.client = Client(address, set_as_default=False)
        self._plugin = f"scatterbird-setup-{uuid.uuid4().hex[:12]}"
        try:
            self.client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            self.client.register_plugin(_setup_plugin(WorkerPlugin, initializer, initargs), name=self._plugin)
            self._executor = self.client.get_executor(pure=False)
        except BaseException:
            self.client.close()
            raise

    @property
    def slots(self) -> int:
        """Threads of the cluster's workers, now."""
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        try:
            self._executor.shutdown(wait=wait and not cancel_futures)
            self.client.unregister_worker_plugin(self._plugin)  # a shared cluster keeps no trace of this run
        except (OSError, TimeoutError, ValueError):  # the cluster went away meanwhile: nothing to clean
            pass
        finally:
            self.client.close()


@contextmanager
def open_executor(
    workers: int = 1,
    scheduler: str | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: Sequence[Any] = (),
    threads: int | None = None,
) -> Iterator[Executor]:
    """The executor for ``workers`` / ``scheduler``, shut down (jobs cancelled) when the block ends.

    Parameters
    ----------
    workers : int
        0 or 1: run in this process; N > 1: N local worker processes.
    scheduler : str, optional
        Address of a Dask scheduler; its workers run the jobs (``workers`` is then ignored).
    initializer : callable, optional
        Run once in each worker process (local or Dask) with ``initargs``, e.g. to load a model; never in
        this process.
    threads : int, optional
        The run's thread budget on this machine, shared among local workers (each gets
        ``max(1, threads // workers)``); default: this process's budget
        (:func:`scatterbird.pipeline.threads.budget`). A Dask worker's job uses one torch thread.

    Raises
    ------
    BatchError
        For ``workers < 0``, or a scheduler without Dask installed.
    OptionError
        For ``threads < 1``.
    """
    if workers < 0:
        raise BatchError(f"workers must be >= 0, got {workers}")
    if threads is not None:
        check_threads(threads)
    if scheduler:
        ex: Executor = DaskExecutor(scheduler, initializer, initargs)
    elif workers > 1:
        ex = LocalPool(workers, initializer, initargs, threads)
    else:
        ex = SerialExecutor()
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


class Outcome(NamedTuple):
    """What became of one item: its result, or the error that its job raised (``result`` is then None)."""

    item: Any
    result: Any = None
    error: BaseException | None = None


def worker_died(error: BaseException | None) -> bool:
    """True when ``error`` says a local worker process died while the job was in flight."""
    return isinstance(error, BrokenProcessPool)


def run_each(
    executor: Executor,
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    in_flight: int | None = None,
) -> Iterator[Outcome]:
    """``fn(item)`` for every item on ``executor``; each :class:`Outcome` as its job completes.

    Parameters
    ----------
    executor : Executor
        From :func:`open_executor` (any :class:`concurrent.futures.Executor` works).
    fn : callable
        Takes one item; for worker processes it must pickle (a module-level function or a
        :func:`functools.partial` of one).
    items : iterable
        Consumed lazily, as jobs complete.
    in_flight : int, optional
        Jobs submitted and not yet yielded; default two per worker slot (one in this process, so that each
        result is handed back before the next job starts).

    Yields
    ------
    Outcome
        In completion order (submission order among jobs that complete together). A job that raises, or
        whose worker dies (:func:`worker_died`), gives its item's ``error``; the other items go on.
    """
    if in_flight is None:
        in_flight = 1 if isinstance(executor, SerialExecutor) else 2 * getattr(executor, "slots", 1)
    todo = iter(items)
    running: dict[Future, Any] = {}
    try:
        while True:
            for item in itertools.islice(todo, max(0, in_flight - len(running))):
                running[executor.submit(fn, item)] = item
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in [f for f in running if f in done]:
                item = running.pop(fut)
                error = fut.exception()
                yield Outcome(item, None if error is not None else fut.result(), error)
    finally:
        for fut in running:  # the consumer stopped early (an error, Ctrl-C): drop what has not started
            fut.cancel()
