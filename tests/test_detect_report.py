"""`detect`'s report.html and `scatterbird report`: the events it lists against the true events of synthetic
recordings, its clips against the source audio, its totals against the store, escaping, and its bounds."""

from __future__ import annotations

import csv
import errno
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from simple_detector import write_recordings

from scatterbird import cli
from scatterbird.errors import OptionError
from scatterbird.pipeline.detect import report
from scatterbird.pipeline.detect.report import ReportOptions, clip_span, clock, write_report
from scatterbird.pipeline.detect.store import STORE_NAME, ResultsStore

OPTS = ["--window", "2", "--hop", "1", "--min-conf", "0.5", "-q"]
WINDOW_S = 2.0
SR = 8000  # write_recordings' rate, also the test detector's pipeline rate: clips are the source's samples
ODD_NAME = "odd <b>name</b>.wav"


class Page(HTMLParser):
    """What the tests read from report.html: the top-events rows, their audio, the totals cells, the strips."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.events: list[dict] = []
        self.totals: dict[str, str] = {}
        self.strips: list[str] = []
        self.file_rows = 0
        self._cell: str | None = None
        self._in_files = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and a.get("class") == "event":
            self.events.append({"file": a["data-file"], "start": float(a["data-start"]),
                                "end": float(a["data-end"]), "audio": None, "id": a["id"]})
        elif tag == "audio" and self.events:
            self.events[-1]["audio"] = a["src"]
        elif tag == "td" and a.get("id", "").startswith("total-"):
            self._cell = a["id"][len("total-"):]
        elif tag == "div" and a.get("class") == "strip":
            self.strips.append(a["id"])
        elif tag == "table" and a.get("class") == "files":
            self._in_files = True
        elif tag == "tr" and self._in_files:
            self.file_rows += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_files = False

    def handle_data(self, data):
        if self._cell is not None:
            self.totals[self._cell] = data.strip()
            self._cell = None


def read_page(out: Path) -> tuple[str, Page]:
    text = (out / "report.html").read_text(encoding="utf-8")
    return text, Page(text)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recs")
    specs = [(f"r{i}.wav", 12.0, i % 2 == 0) for i in range(4)] + [(ODD_NAME, 10.0, True), ("r5.flac", 9.0, True)]
    truth = write_recordings(folder, specs)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    return folder, truth


@pytest.fixture(scope="module")
def run_out(model, recordings, tmp_path_factory) -> Path:
    folder, _ = recordings
    out = tmp_path_factory.mktemp("out")
    rc = cli.main(["detect", str(folder), str(folder / "not-there.wav"), "-o", str(out), "--model", str(model), *OPTS])
    assert rc == cli.EXIT_SOME_FAILED  # broken.wav, and an input problem
    return out


def store_rows(out: Path):
    with ResultsStore(out / STORE_NAME) as st:
        run = st.run()
        return st.files(run.id), st.events(run.id)


def test_report_lists_the_true_events_with_their_audio(run_out, recordings):
    _, truth = recordings
    _, page = read_page(run_out)
    files, _ = store_rows(run_out)
    duration = {f["path"]: f["duration_s"] for f in files}
    found = 0
    for path, true_events in truth.items():
        for ev in true_events:
            listed = [e for e in page.events if e["file"] == path and e["start"] < ev.end and e["end"] > ev.start]
            assert listed, f"true event {ev.start:.2f}-{ev.end:.2f} s of {path} is not in the report"
            e = listed[0]
            # the event is the span of the windows that cover the call: within a window of the call's edges
            assert ev.start - WINDOW_S <= e["start"] <= ev.start and ev.end <= e["end"] <= ev.end + WINDOW_S
            wav = run_out / e["audio"]
            assert wav.is_file()
            clip, sr = sf.read(wav, dtype="float64")
            a, b = max(0.0, e["start"] - 1.0), min(duration[path], e["end"] + 1.0)  # the default 1 s margins
            assert sr == SR and abs(len(clip) / sr - (b - a)) <= 1 / sr
            src, _ = sf.read(path, dtype="float64")
            np.testing.assert_allclose(clip, src[round(a * sr): round(a * sr) + len(clip)], atol=2 / 32768)
            found += 1
    assert found == sum(len(v) for v in truth.values()) > 0
    # every listed event has its clip and scattergram on disk
    assert all((run_out / e["audio"]).is_file() for e in page.events)
    assert len(list((run_out / "report_files").glob("event_*.png"))) == len(page.events)


def test_totals_equal_the_store(run_out):
    _, page = read_page(run_out)
    files, events = store_rows(run_out)
    done = [f for f in files if f["status"] == "done"]
    assert page.totals["files"] == str(len(files)) == "7"
    assert page.totals["done"] == str(len(done))
    assert page.totals["failed"] == "1"  # broken.wav; the missing input is an input problem, not a file
    assert page.totals["problems"] == "1"
    assert page.totals["events"] == str(len(events))
    assert page.totals["windows"] == str(sum(f["n_windows"] for f in done))
    assert page.totals["hours"] == f"{sum(f['duration_s'] for f in done) / 3600:.3f}"
    assert page.totals["with-events"] == str(len({e[0] for e in events}))
    assert page.file_rows == 1 + len(files)  # header + every file
    with open(run_out / "report_files" / "files.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["path"] for r in rows) == sorted(f["path"] for f in files)
    per_file = {r["path"]: int(r["events"]) for r in rows}
    assert sum(per_file.values()) == len(events)
    text, _ = read_page(run_out)
    assert "broken.wav" in text and "Files that could not be processed (1)" in text
    assert "Input problems (1)" in text and "not-there.wav" in text


def test_report_command_rebuilds_the_same_page(run_out, tmp_path, capsys):
    _, before = read_page(run_out)
    copy = tmp_path / "copy"
    shutil.copytree(run_out, copy, ignore=shutil.ignore_patterns("report*"))
    assert not (copy / "report.html").exists()
    assert cli.main(["report", str(copy)]) == cli.EXIT_OK
    assert "report.html" in capsys.readouterr().out
    _, after = read_page(copy)
    def listed(p: Page) -> list[tuple]:
        return [(e["file"], e["start"], e["end"], e["audio"]) for e in p.events]

    assert listed(after) == listed(before) and after.totals == before.totals and after.strips == before.strips
    for e in after.events:
        assert (copy / e["audio"]).read_bytes() == (run_out / e["audio"]).read_bytes()
    # a rebuild in place replaces the folder: no stale files, no staging folders left behind
    assert cli.main(["report", str(copy), "--report-events", "1"]) == cli.EXIT_OK
    assert sorted(p.name for p in (copy / "report_files").glob("event_*")) == ["event_001.png", "event_001.wav"]
    assert not [p for p in copy.iterdir() if p.name.startswith(".report")]
    assert cli.main(["report", str(copy), "--run", "99"]) == cli.EXIT_USAGE
    assert "no run 99" in capsys.readouterr().err


def test_file_names_are_escaped(run_out, recordings):
    folder, _ = recordings
    text, page = read_page(run_out)
    assert "<b>name</b>" not in text
    assert "odd &lt;b&gt;name&lt;/b&gt;.wav" in text
    assert str(folder / ODD_NAME) in [e["file"] for e in page.events]  # the parser unescapes it again


def test_only_the_requested_strips_for_many_files(model, tmp_path):
    folder = tmp_path / "many"
    write_recordings(folder, [(f"f{i:02d}.wav", 3.0, True) for i in range(60)], seed=3)
    out = tmp_path / "out"
    assert cli.main(["detect", str(folder), "-o", str(out), "--model", str(model), *OPTS,
                     "--report-files", "5", "--report-events", "3", "--format", "csv"]) == cli.EXIT_OK
    files, events = store_rows(out)
    assert len({e[0] for e in events}) > 5  # enough files with events for the cap to matter
    _, page = read_page(out)
    assert len(page.strips) == 5 and len(list((out / "report_files").glob("strip_*.png"))) == 5
    assert len(page.events) == 3
    # the strips are the files with the most events
    counts = sorted((sum(1 for e in events if e[0] == f["path"]) for f in files), reverse=True)
    text, _ = read_page(out)
    assert f"{counts[4]} event(s) in" in text
    # the files table is cut, files.csv keeps every file
    write_report(out, options=ReportOptions(n_files=0, n_events=0, max_rows=10))
    text, page = read_page(out)
    assert page.file_rows == 1 + 10 and not page.strips and not page.events
    assert "The 10 of 60 files with the most events" in text
    with open(out / "report_files" / "files.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 60


def test_a_recording_missing_since_the_run_is_noted(model, tmp_path, capsys):
    folder = tmp_path / "recs"
    truth = write_recordings(folder, [("a.wav", 8.0, True), ("b.wav", 8.0, True)], seed=5)
    out = tmp_path / "out"
    assert cli.main(["detect", str(folder), "-o", str(out), "--model", str(model), *OPTS, "--no-report"]) == 0
    assert not (out / "report.html").exists() and not (out / "report_files").exists()
    gone = min(truth)
    Path(gone).unlink()
    capsys.readouterr()
    assert cli.main(["report", str(out)]) == cli.EXIT_OK
    assert f"{gone}: the recording is missing since the run" in capsys.readouterr().err
    text, page = read_page(out)
    assert "the recording is missing since the run" in text
    assert [e["audio"] for e in page.events if e["file"] == gone] == [None]
    assert all(e["audio"] for e in page.events if e["file"] != gone) and page.events


def test_a_failed_write_leaves_the_previous_report(run_out, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_out, copy)
    before = (copy / "report.html").read_bytes()
    listing = sorted(p.name for p in (copy / "report_files").iterdir())

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(copy / "report.html"))

    monkeypatch.setattr(report, "render", full)
    assert cli.main(["report", str(copy)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("scatterbird report: error: ") and "No space left on device" in err
    assert len(err.strip().splitlines()) == 1
    assert (copy / "report.html").read_bytes() == before
    assert sorted(p.name for p in (copy / "report_files").iterdir()) == listing
    assert not [p for p in copy.iterdir() if p.name.startswith(".report")]


def test_a_shard_writes_no_report(model, recordings, tmp_path):
    folder, _ = recordings
    out = tmp_path / "out"
    cli.main(["detect", str(folder), "-o", str(out), "--model", str(model), *OPTS, "--shard", "1/2"])
    assert list(out.glob("scatterbird.shard-1-of-2.sqlite")) and not (out / "report.html").exists()


def test_clip_span_and_clock():
    o = ReportOptions(margin_s=1.0, max_clip_s=30.0)
    assert clip_span(5.0, 8.0, 6.0, 60.0, o) == (4.0, 9.0)
    assert clip_span(0.5, 3.0, 1.0, 3.5, o) == (0.0, 3.5)  # inside the recording
    assert clip_span(100.0, 400.0, 250.0, 1000.0, o) == (235.0, 265.0)  # a long event: around its peak
    assert clock(12.34) == "0:12.3" and clock(59.97) == "1:00.0" and clock(3725.3) == "1:02:05.3"
    with pytest.raises(OptionError, match="n-files"):
        ReportOptions(n_files=-1)
