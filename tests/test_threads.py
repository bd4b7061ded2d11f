"""Tests of pipeline/threads.py and of ``--threads``: the budget reaches torch in this process and in local
workers, the default follows the CPU affinity, bad counts are usage errors, and the command line's entry point
sets the passive OpenMP wait policy before torch loads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scatterbird.cli as cli
from scatterbird.errors import OptionError
from scatterbird.pipeline import threads
from scatterbird.pipeline.executor import LocalPool, open_executor, run_each, worker_torch_threads

ROOT = Path(__file__).resolve().parents[1]

#: Each compute command with the fewest arguments it parses (the command itself is replaced by a probe).
COMMANDS = {
    "features": ["features", "in", "-o", "out"],
    "detect": ["detect", "in", "-o", "out"],
    "train": ["train", "dataset", "-o", "model.pt"],
    "evaluate": ["evaluate", "-o", "out"],
    "crossval": ["crossval", "-o", "out"],
    "analyze": ["analyze", "in", "-o", "out"],
}


@pytest.fixture
def restore_threads():
    """This process's torch threads and thread budget as they were before the test."""
    before, budget = torch.get_num_threads(), threads._budget
    yield
    torch.set_num_threads(before)
    threads._budget = budget


@pytest.fixture
def no_wait_policy():
    """OMP_WAIT_POLICY absent during the test (a local pool sets it in this process) and as it was after."""
    saved = os.environ.pop(threads.WAIT_POLICY_VAR, None)
    yield
    os.environ.pop(threads.WAIT_POLICY_VAR, None)
    if saved is not None:
        os.environ[threads.WAIT_POLICY_VAR] = saved


def _probe_command(monkeypatch, command: str) -> list[int]:
    """Replace ``cmd_<command>`` with a probe that records torch's thread count when the command runs."""
    seen: list[int] = []

    def probe(args) -> int:
        seen.append(torch.get_num_threads())
        return 0

    monkeypatch.setattr(cli, f"cmd_{command}", probe)
    return seen


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_threads_option_reaches_torch_in_this_process(monkeypatch, restore_threads, command):
    seen = _probe_command(monkeypatch, command)
    assert cli.main([*COMMANDS[command], "--threads", "3"]) == 0
    assert seen == [3]
    assert threads.budget() == 3  # what later worker pools share


def test_the_default_is_the_cores_this_process_may_use(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_start_sample", None)  # in-process use: no load sample, no load adjustment
    assert threads.available_cores() == len(os.sched_getaffinity(0))
    # the affinity, not the machine's core count, decides
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert threads.available_cores() == 3 and threads.default_threads() == 3
    seen = _probe_command(monkeypatch, "features")
    assert cli.main(COMMANDS["features"]) == 0
    assert seen == [3]
    # without affinity (macOS, Windows): every core of the machine
    monkeypatch.delattr(os, "sched_getaffinity")
    assert threads.available_cores() == 64


def test_omp_num_threads_chosen_by_the_user_is_the_default(monkeypatch):
    assert threads.default_threads({"OMP_NUM_THREADS": "1"}) == 1
    assert threads.default_threads({"OMP_NUM_THREADS": " 5 "}) == 5
    for unusable in ("0", "-2", "4,2", "many", ""):
        assert threads.default_threads({"OMP_NUM_THREADS": unusable}) == threads.available_cores()


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_a_bad_count_is_a_usage_error_naming_the_option(monkeypatch, restore_threads, capsys, bad):
    seen = _probe_command(monkeypatch, "detect")
    assert cli.main([*COMMANDS["detect"], "--threads", bad]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err == f"scatterbird detect: error: --threads must be a whole number >= 1, got {bad}"
    assert seen == []  # the command never ran
    with pytest.raises(OptionError, match="--threads"):
        threads.use_threads(int(bad))
    with pytest.raises(OptionError, match="--threads"):
        with open_executor(workers=2, threads=int(bad)):
            pass


def test_commands_without_compute_have_no_threads_option():
    args = cli.build_parser().parse_args(["export", "out"])
    assert "threads" not in args


def test_share_among_workers():
    assert [threads.share(8, w) for w in (0, 1, 2, 3, 8, 16)] == [8, 8, 4, 2, 1, 1]


def worker_probe(_: int) -> tuple[int, int, int, str | None]:
    worker_torch_threads()  # what a detect job calls first: must keep the worker's share
    return os.getpid(), torch.get_num_threads(), torch.get_num_interop_threads(), os.environ.get("OMP_WAIT_POLICY")


def _worker_reports(**kwargs) -> dict[int, tuple[int, int, str | None]]:
    with open_executor(workers=2, **kwargs) as ex:
        assert isinstance(ex, LocalPool)
        results = [o.result for o in run_each(ex, worker_probe, range(8))]
    return {pid: tuple(rest) for pid, *rest in results}


def test_local_workers_get_their_share_and_the_passive_wait_policy(no_wait_policy, restore_threads):
    by_worker = _worker_reports(threads=4)
    assert by_worker and all(pid != os.getpid() for pid in by_worker)
    assert set(by_worker.values()) == {(2, 2, "PASSIVE")}
    assert os.environ[threads.WAIT_POLICY_VAR] == "PASSIVE"  # inherited by the workers from here
    # without threads=, a pool shares this process's budget (what --threads set)
    threads.use_threads(6)
    for workers, each in ((2, 3), (4, 1), (7, 1)):
        pool = LocalPool(workers)  # its processes start with the first job: none here
        assert pool.threads == each and pool._init[0] == each
        pool.shutdown()


def test_a_wait_policy_the_user_set_is_kept():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.prefer_passive_wait(env) is False and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    env = {}
    assert threads.prefer_passive_wait(env) is True and env == {"OMP_WAIT_POLICY": "PASSIVE"}


def _openmp_spin(code: str) -> str:
    """What the OpenMP runtime loaded by torch read (its verbose display) when ``code`` runs in a fresh python."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    if "OPENMP DISPLAY ENVIRONMENT" not in r.stderr:
        pytest.skip("torch's OpenMP runtime does not display its settings (not GNU OpenMP)")
    spins = {line.split("=")[1].strip().strip("'") for line in r.stderr.splitlines() if "GOMP_SPINCOUNT" in line}
    assert len(spins) == 1, r.stderr
    return spins.pop()


def test_the_entry_point_makes_openmp_threads_sleep_before_torch_loads():
    # `python -m scatterbird` and the installed command (which calls scatterbird.__main__:main)
    assert _openmp_spin("import runpy, sys; sys.argv = ['scatterbird', '--version']; "
                        "runpy.run_module('scatterbird', run_name='__main__')") == "0"
    assert _openmp_spin("import sys; from scatterbird.__main__ import main; from scatterbird.pipeline import threads; "
                        "assert threads._start_sample is not None, 'no load sample'; "
                        "sys.exit(main(['--version']))") == "0"
    # importing the command-line module itself (or the library) sets nothing: the runtime's default spinning
    assert _openmp_spin("import sys; from scatterbird.cli import main; sys.exit(main(['--version']))") != "0"
    scripts = re.findall(r'^scatterbird\s*=\s*"([^"]*)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert scripts == ["scatterbird.__main__:main"]


def test_importing_the_library_changes_no_environment_variable():
    code = ("import os; before = dict(os.environ); import scatterbird, scatterbird.api, scatterbird.pipeline.executor; "
            "print(dict(os.environ) == before)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr


STAT = """cpu  900 0 300 5000 100 0 0 0 0 0
cpu0 100 0 50 1000 20 0 0 0 0 0
cpu1 200 5 45 1000 30 1 2 7 0 0
cpu2 300 0 100 1500 25 0 0 0 0 0
cpu3 300 0 105 1500 25 0 0 0 0 0
intr 12345
"""


def test_busy_time_is_read_for_this_process_cores(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    monkeypatch.setattr(os, "sysconf", lambda name: 100)
    # busy = user + nice + system + irq + softirq + steal (idle and iowait are not)
    assert threads.read_cpu_sample(str(stat), cpus={0, 1}).busy == pytest.approx((150 + 260) / 100)
    assert threads.read_cpu_sample(str(stat), cpus={2}).busy == pytest.approx(4.0)
    assert threads.read_cpu_sample(str(tmp_path / "missing")) is None  # no /proc/stat: not Linux


def test_busy_elsewhere_leaves_out_this_process():
    start = threads.CpuSample(wall=10.0, busy=100.0, own=1.0)
    # 2 s: 3.5 core-seconds busy, 1.5 of them ours -> one core busy elsewhere
    assert threads.busy_elsewhere(start, threads.CpuSample(12.0, 103.5, 2.5)) == pytest.approx(1.0)
    assert threads.busy_elsewhere(start, threads.CpuSample(12.0, 101.0, 2.0)) == 0.0  # only us
    assert threads.busy_elsewhere(start, start) == 0.0


@pytest.mark.parametrize("elsewhere, expected", [(0.0, 4), (0.4, 4), (0.6, 3), (1.0, 3), (2.7, 1), (9.0, 1)])
def test_the_command_line_default_leaves_out_cores_busy_elsewhere(monkeypatch, elsewhere, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    start = threads.CpuSample(wall=0.0, busy=0.0, own=0.0)
    end = threads.CpuSample(wall=2.0, busy=2 * elsewhere + 1.0, own=1.0)  # 1 s of it ours
    monkeypatch.setattr(threads, "read_cpu_sample", lambda *a, **k: end)
    monkeypatch.setattr(threads, "_start_sample", start)
    assert threads.free_cores() == expected and threads.default_threads() == expected
    # a sample too short to tell, or none (library use): every core
    monkeypatch.setattr(threads, "_start_sample", start._replace(wall=1.95))
    assert threads.free_cores() == 4
    monkeypatch.setattr(threads, "_start_sample", None)
    assert threads.free_cores() == 4
