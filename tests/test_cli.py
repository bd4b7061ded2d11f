"""What every command of the command line shares: where work runs, errors, exit codes."""

from __future__ import annotations

import pytest

from scatterbird import cli
from scatterbird.errors import DatasetError


@pytest.mark.parametrize("command", ["features", "detect", "train", "evaluate", "crossval"])
def test_every_compute_command_takes_workers_and_a_scheduler(command):
    positional = {"features": ["x"], "detect": ["x"], "train": ["x"], "evaluate": [], "crossval": []}[command]
    args = cli.build_parser().parse_args(
        [command, *positional, "-o", "out", "--workers", "3", "--scheduler", "tcp://127.0.0.1:8786"]
    )
    assert (args.workers, args.scheduler) == (3, "tcp://127.0.0.1:8786")


def test_workers_and_scheduler_reach_the_library(monkeypatch, tmp_path):
    seen = {}

    def fake(name):
        def run(*a, **kw):
            seen[name] = (kw["workers"], kw["scheduler"])
            raise DatasetError(f"{name} stops here")  # the one handler turns it into exit 2

        return run

    monkeypatch.setattr(cli, "run_train", fake("train"))
    monkeypatch.setattr(cli, "evaluate", fake("evaluate"))
    monkeypatch.setattr(cli, "crossval", fake("crossval"))
    monkeypatch.setattr(cli, "extract_features", fake("features"))
    monkeypatch.setattr(cli, "load_datasets", lambda *a, **k: [])
    monkeypatch.setattr(cli, "load_detector", lambda path: None)
    (tmp_path / "a.wav").write_bytes(b"")
    common = ["-o", str(tmp_path / "o"), "--workers", "2", "--scheduler", "tcp://h:1", "-q"]
    assert cli.main(["train", str(tmp_path), *common]) == cli.EXIT_USAGE
    assert cli.main(["evaluate", *common]) == cli.EXIT_USAGE
    assert cli.main(["crossval", *common]) == cli.EXIT_USAGE
    assert cli.main(["features", str(tmp_path / "a.wav"), *common]) == cli.EXIT_USAGE
    assert seen == {k: (2, "tcp://h:1") for k in ("train", "evaluate", "crossval", "features")}
