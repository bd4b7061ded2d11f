"""Tests of pipeline/executor.py: one function, the same items, the same outcomes in this process, on local
worker processes and on a local Dask cluster; a job's exception and a dying worker as items' errors."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from scatterbird.errors import BatchError
from scatterbird.pipeline.executor import (
    LocalPool,
    Outcome,
    SerialExecutor,
    open_executor,
    run_each,
    worker_died,
)
from scatterbird.pipeline.threads import budget, share

ITEMS = list(range(12))
#: Set by the worker initializer, in the worker's copy of this module.
STATE: dict[str, object] = {}


def square(x: int) -> int:
    if x == 5:
        raise ValueError(f"item {x} is bad")
    return x * x


def die_at_two(x: int) -> int:
    if x == 2:
        os._exit(3)  # the worker process dies with the job in flight, as when the kernel kills it
    return x * x


def remember(value: str) -> None:
    STATE["init"] = value


def probe(_: int) -> tuple[int, object, int]:
    return os.getpid(), STATE.get("init"), torch.get_num_threads()


def outcomes(ex, fn=square, items=ITEMS) -> dict[int, object]:
    """Each item's result, or its error as (type name, message); every item exactly once."""
    out: dict[int, object] = {}
    for o in run_each(ex, fn, items):
        assert isinstance(o, Outcome) and o.item not in out
        out[o.item] = (type(o.error).__name__, str(o.error)) if o.error is not None else o.result
    assert sorted(out) == sorted(items)
    return out


EXPECTED = {x: ("ValueError", "item 5 is bad") if x == 5 else x * x for x in ITEMS}


@pytest.fixture(scope="module")
def dask_address():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        yield cluster.scheduler_address


def test_serial_runs_in_this_process_in_order_and_keeps_errors():
    with open_executor(workers=1, initializer=remember, initargs=("never",)) as ex:
        assert isinstance(ex, SerialExecutor)
        seen = [o.item for o in run_each(ex, square, ITEMS)]
        assert seen == ITEMS  # one job at a time, each handed back before the next starts
        assert outcomes(ex) == EXPECTED
        pid, init, _ = next(run_each(ex, probe, [0])).result
    assert pid == os.getpid() and init is None  # the initializer is for workers only
    with pytest.raises(RuntimeError, match="shutdown"):
        ex.submit(square, 1)


def test_local_workers_give_the_serial_outcomes_and_survive_a_dying_worker():
    in_flight = 4
    with open_executor(workers=2, initializer=remember, initargs=("loaded",)) as ex:
        assert isinstance(ex, LocalPool) and ex.slots == 2
        assert outcomes(ex) == EXPECTED
        got = list(run_each(ex, die_at_two, ITEMS, in_flight=in_flight))
        probes = [o.result for o in run_each(ex, probe, range(8))]  # on the pool that replaced the broken one
    assert sorted(o.item for o in got) == ITEMS
    by_item = {o.item: o for o in got}
    assert worker_died(by_item[2].error) and by_item[2].result is None
    failed = [o for o in got if o.error is not None]
    assert all(worker_died(o.error) for o in failed)
    # only the jobs in flight when the worker died are lost; a fresh pool runs the rest
    assert len(failed) <= in_flight
    assert all(o.result == o.item**2 for o in got if o.error is None)
    assert not worker_died(None) and not worker_died(ValueError("x"))
    each = share(budget(), 2)  # the pool shares this process's thread budget (tests/test_threads.py)
    assert all(pid != os.getpid() and init == "loaded" and threads == each for pid, init, threads in probes)


def test_a_dask_cluster_gives_the_serial_outcomes_and_runs_the_initializer(dask_address):
    with open_executor(scheduler=dask_address, initializer=remember, initargs=("on dask",)) as ex:
        assert ex.slots == 1
        assert outcomes(ex) == EXPECTED
        pid, init, threads = next(run_each(ex, probe, [0])).result
        client = ex.client
        plugins = client.run(lambda dask_worker: list(dask_worker.plugins))
        assert any(name.startswith("scatterbird-setup-") for names in plugins.values() for name in names)
    assert pid != os.getpid() and init == "on dask" and threads == 1
    assert client.status == "closed"


def test_bounded_in_flight_consumes_items_lazily():
    consumed = []

    def items():
        for x in ITEMS:
            consumed.append(x)
            yield x

    with open_executor(workers=0) as ex:
        it = run_each(ex, square, items(), in_flight=3)
        first = next(it)
        assert first.item == 0 and consumed == [0, 1, 2]
        it.close()
    assert consumed == [0, 1, 2]


def test_scheduler_without_dask_and_negative_workers_are_batch_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now raises ImportError
    with pytest.raises(BatchError, match=r"pip install 'scatterbird\[cluster\]'"):
        with open_executor(scheduler="tcp://127.0.0.1:1"):
            pass
    with pytest.raises(BatchError, match="workers must be >= 0"):
        with open_executor(workers=-1):
            pass
