"""How many threads scatterbird computes with, and how its threads wait: one plan for every process.

A run has a thread budget on this machine (``--threads``). By default it is the cores this process may use;
the command line (``scatterbird.__main__``) also leaves out the cores that other processes kept busy while it
started (read from ``/proc/stat`` around its imports, on Linux): a parallel region of torch runs at the pace of
its slowest thread, so a thread that shares its core with a busy neighbour slows all of them, while one
thread fewer costs little. ``OMP_NUM_THREADS``, when set, is the default instead. The main process uses the
whole budget (it fits detectors after the workers have computed the features); each of ``W`` local worker
processes gets ``max(1, budget // W)``, so that the workers together fill the budget without oversubscribing
it. The number goes to torch's intra-op threads (OpenMP and MKL), to its inter-op
pool and to the BLAS library numpy loaded.

Threads that wait must sleep, not spin. By default the OpenMP runtime behind torch's intra-op threads spins
for a while after each parallel region, waiting for the next one; between torch calls that is always, so a
2-thread run behaves like 2 busy processes, and next to any other busy process the threads and the neighbour
take turns on the cores while every parallel region waits for its slowest thread. With
``OMP_WAIT_POLICY=PASSIVE`` a waiting thread sleeps at once. The runtime reads the policy once, when it is
loaded (``import torch``), so it must be in the environment before that: the command line
(``scatterbird.__main__``) sets it first thing, and a pool of local worker processes
(:mod:`scatterbird.pipeline.executor`) sets it before it starts its workers, which inherit it. Neither
overrides a value the user has set. Importing scatterbird as a library changes no environment variable
until a local worker pool is opened.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import MutableMapping
from typing import NamedTuple

from scatterbird.errors import OptionError

#: The OpenMP variable that decides whether idle threads spin or sleep, and the value scatterbird sets.
WAIT_POLICY_VAR = "OMP_WAIT_POLICY"
PASSIVE = "PASSIVE"

#: This process's thread budget once :func:`use_threads` has run (None: not chosen yet, the default applies).
_budget: int | None = None

#: Where Linux counts every CPU's busy and idle time.
PROC_STAT = "/proc/stat"
#: The shortest sample from which the cores busy elsewhere are estimated.
MIN_SAMPLE_S = 0.2


class CpuSample(NamedTuple):
    """CPU time counters at one moment, for the cores this process may use."""

    wall: float  #: time.monotonic()
    busy: float  #: seconds the kernel counted busy on these cores, summed (every process)
    own: float  #: this process's CPU seconds, all its threads


#: The sample taken when the command line started (:func:`start_load_sample`); None in library use.
_start_sample: CpuSample | None = None


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS has one, else all the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on macOS and Windows
        return max(1, os.cpu_count() or 1)


def _cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def read_cpu_sample(stat_path: str = PROC_STAT, cpus: set[int] | None = None) -> CpuSample | None:
    """The busy time of ``cpus`` (default: this process's) from ``/proc/stat``; None where it cannot be read."""
    cpus = _cpus() if cpus is None else cpus
    try:
        with open(stat_path) as f:
            lines = f.read().splitlines()
    except OSError:  # not Linux
        return None
    busy_ticks = 0
    for line in lines:
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()) or (cpus is not None and int(name[3:]) not in cpus):
            continue
        ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
        busy_ticks += sum(ticks) - ticks[3] - ticks[4]
    own = time.process_time()
    return CpuSample(time.monotonic(), busy_ticks / os.sysconf("SC_CLK_TCK"), own)


def busy_elsewhere(start: CpuSample, end: CpuSample) -> float:
    """Cores that other processes (and the hypervisor's steal) kept busy between two samples, on average."""
    wall = end.wall - start.wall
    if wall <= 0:
        return 0.0
    return max(0.0, (end.busy - start.busy - (end.own - start.own)) / wall)


def start_load_sample() -> None:
    """Remember the CPU counters now: the command line's default thread count leaves out the cores busy since."""
    global _start_sample
    _start_sample = read_cpu_sample()


def free_cores() -> int:
    """The cores this process may use, less those busy elsewhere since :func:`start_load_sample` (at least 1).

    Without a start sample (library use), or with one too recent to tell, all the cores this process may use.
    """
    cores = available_cores()
    end = read_cpu_sample() if _start_sample is not None else None
    if end is None or end.wall - _start_sample.wall < MIN_SAMPLE_S:
        return cores
    return max(1, min(cores, int(cores - busy_elsewhere(_start_sample, end) + 0.5)))


def default_threads(environ: MutableMapping[str, str] | None = None) -> int:
    """``OMP_NUM_THREADS`` when it is set to a positive whole number (the user chose), else :func:`free_cores`."""
    env = os.environ if environ is None else environ
    value = env.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return free_cores()


def check_threads(threads: int, option: str = "--threads") -> int:
    """``threads`` as an int when it is at least 1.

    Raises
    ------
    OptionError
        For a count below 1, naming ``option``.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise OptionError(f"{option} must be a whole number >= 1, got {threads!r}")
    return threads


def share(threads: int, workers: int) -> int:
    """Threads of each of ``workers`` processes that share a budget of ``threads``: at least one each."""
    return max(1, threads // max(1, workers))


def budget() -> int:
    """This process's thread budget: what :func:`use_threads` chose, else :func:`default_threads`."""
    return _budget if _budget is not None else default_threads()


def prefer_passive_wait(environ: MutableMapping[str, str] | None = None) -> bool:
    """Put ``OMP_WAIT_POLICY=PASSIVE`` in the environment unless the user set a policy; True when it is passive.

    It takes effect in this process only when the OpenMP runtime has not been loaded yet (before
    ``import torch``), and in every process started from here afterwards.
    """
    env = os.environ if environ is None else environ
    env.setdefault(WAIT_POLICY_VAR, PASSIVE)
    return env[WAIT_POLICY_VAR].strip().upper() == PASSIVE


def set_torch_threads(threads: int, *, interop: bool = True) -> None:
    """Give torch ``threads`` intra-op threads on the calling thread and, with ``interop``, the same inter-op pool.

    torch keeps the intra-op count per thread (OpenMP's rule), so a job that runs on a thread of its own (a
    Dask worker's) calls this again. The inter-op pool can be sized only before it starts: later calls keep it.
    """
    import torch  # lazily: the command line must set the wait policy before torch loads its OpenMP runtime

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if interop and torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already sized, or already used: keeps its size
            pass


def _limit_blas(threads: int) -> None:
    """The BLAS numpy loaded (OpenBLAS spins when idle, like OpenMP) gets the same count, when numpy is loaded."""
    if "numpy" not in sys.modules:
        return
    try:
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency: present with scatterbird
    except ImportError:
        return
    threadpool_limits(limits=threads, user_api="blas")


def apply_threads(threads: int) -> None:
    """Use ``threads`` threads in this process: torch's intra-op and inter-op threads, and numpy's BLAS."""
    set_torch_threads(threads)
    _limit_blas(threads)


def use_threads(threads: int | None = None) -> int:
    """Set this process's thread budget (None: :func:`default_threads`), apply it, and return it.

    Later pools of local workers share this budget (:func:`scatterbird.pipeline.executor.open_executor`).

    Raises
    ------
    OptionError
        For a count below 1.
    """
    global _budget
    n = default_threads() if threads is None else check_threads(threads)
    apply_threads(n)
    _budget = n
    return n
