"""pipeline/evaluate/report.py: every file the report names exists, the report names nothing else, and the
names a user chose are shown as text."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import soundfile as sf
from simple_detector import SimpleDetector
from test_datasets import _touch_wavs, _write_csv
from test_evaluate import FAST

from scatterbird.data.manifest import write_challenge_like
from scatterbird.pipeline.clip_features import compute_sequences
from scatterbird.pipeline.datasets import load_dataset
from scatterbird.pipeline.evaluate.run import evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Refs(HTMLParser):
    """Collects every src/href, the sources of <audio> elements and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.audio: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v is not None:
                self.refs.append(v)
                if tag == "audio" and k == "src":
                    self.audio.append(v)

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, dict[str, Path], SimpleDetector]:
    """Synthetic development sets under a fresh root, and a detector fitted on ff1010bird."""
    root = tmp_path_factory.mktemp("report")
    sets = write_challenge_like(root / "data", 6, duration=2.0, sr=8000, seed=3)
    train = load_dataset(sets["ff1010bird"])
    seqs, _ = compute_sequences(train.clips, FAST, progress=False)
    det = SimpleDetector().fit(seqs, [c.label for c in train.clips])
    det.feature_config = FAST
    return root, sets, det


@pytest.fixture(scope="module")
def report_dir(fitted) -> Path:
    """An evaluation over two labelled sets (one clip unreadable) and one with hidden labels."""
    root, sets, det = fitted
    bad = sorted((sets["warblrb10k"] / "wav").glob("*.wav"))[0]
    bad.write_bytes(b"")  # an empty file: unreadable
    hidden = root / "data" / "Chernobyl"
    ids = ["ch1", "ch2", "ch3"]
    _touch_wavs(hidden / "wav", [])
    for k, i in enumerate(ids):
        sf.write(hidden / "wav" / f"{i}.wav", np.random.default_rng(k).standard_normal(8000).astype(np.float32) * 0.05, 8000)
    _write_csv(hidden / "Chernobyl_metadata.csv", [(i, "Chernobyl", "") for i in ids])
    datasets = [load_dataset(sets["warblrb10k"]), load_dataset(sets["BirdVox-DCASE-20k"]), load_dataset(hidden)]
    out = root / "out"
    evaluate(det, datasets, out, n_boot=100, n_worst=2, progress=False)
    return out


def test_report_files_exist_and_html_references_only_them(report_dir):
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    parser = _Refs()
    parser.feed(html)
    assert parser.refs, "the report references its figures"
    for ref in parser.refs:
        u = urlparse(ref)
        assert not u.scheme and not u.netloc, f"external reference {ref}"
        assert not ref.startswith("/") and ".." not in Path(ref).parts, f"reference outside the folder: {ref}"
        assert (report_dir / ref).is_file(), f"missing {ref}"
    pngs = [r for r in parser.refs if r.endswith(".png")]
    assert "roc.png" in pngs
    assert {"hist_warblrb10k.png", "hist_BirdVox-DCASE-20k.png", "hist_Chernobyl.png"} <= set(pngs)
    clip_imgs = [r for r in pngs if r.startswith("clips/")]
    assert clip_imgs and len(clip_imgs) <= 2 * 2 * 2  # at most n_worst FP and FN per labelled dataset
    for r in pngs:
        assert (report_dir / r).read_bytes()[:8] == PNG_MAGIC
    # every image written is shown (nothing stale or orphaned)
    written = {str(p.relative_to(report_dir)) for p in report_dir.rglob("*.png")}
    assert written == set(pngs)
    assert {"metrics.json", "predictions.csv", "scores.csv"} <= set(parser.refs)


def test_report_content(report_dir):
    parser = _Refs()
    parser.feed((report_dir / "report.html").read_text(encoding="utf-8"))
    text = " ".join(parser.text)
    metrics = json.loads((report_dir / "metrics.json").read_text())
    for name in ("warblrb10k", "BirdVox-DCASE-20k"):
        assert f"{metrics['datasets'][name]['roc_auc']:.3f}" in text
    assert f"{metrics['harmonic_mean_auc']:.3f}" in text and "harmonic mean" in text
    assert metrics["datasets"]["Chernobyl"]["roc_auc"] is None and "hidden" in text
    assert "Clips that could not be read (1)" in text and "empty file" in text
    assert "worst false positives" in text and "worst false negatives" in text
    assert ".wav" in text  # each shown clip is named by its file
    assert "the published dataset has 8,000 clips" in text  # data checks are shown
    # six clips a set: each AUC is flagged as resting on a small sample
    for name in ("warblrb10k", "BirdVox-DCASE-20k"):
        warning = metrics["datasets"][name]["warning"]
        assert metrics["datasets"][name]["small_sample"] and warning in text
    # the lists are defined by rank, and the heading says so
    assert "by rank" in text and "highest-scoring clips without birds" in text
    # the unreadable clip's default in predictions.csv is said, with the list of defaulted clips
    assert "prob 0.5" in text and "predictions_defaulted.csv" in parser.refs


def test_report_plays_every_listed_clip(report_dir):
    """One <audio> per listed clip, its source a WAV next to the report: mono, at most 10 s, the clip's sound."""
    parser = _Refs()
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    parser.feed(html)
    clip_imgs = [r for r in parser.refs if r.startswith("clips/") and r.endswith(".png")]
    assert parser.audio and len(parser.audio) == len(clip_imgs)
    assert html.count("<audio controls") == len(parser.audio)
    for src in parser.audio:
        path = report_dir / src
        assert path.is_file() and src.endswith(".wav")
        info = sf.info(str(path))
        assert info.channels == 1 and info.samplerate == FAST.sample_rate and 0 < info.duration <= 10.0
        assert np.abs(sf.read(str(path))[0]).max() > 0  # sound, not silence
    # every excerpt written is played (nothing stale)
    assert {str(p.relative_to(report_dir)) for p in report_dir.rglob("*.wav")} == set(parser.audio)


def test_clip_audio_links_a_clip_inside_the_folder_and_cuts_one_outside(tmp_path):
    from scatterbird.pipeline.datasets import Clip
    from scatterbird.pipeline.evaluate.report import MAX_AUDIO_S, clip_audio

    out = tmp_path / "out"
    (out / "clips").mkdir(parents=True)
    x = np.random.default_rng(0).standard_normal(16000 * 12).astype(np.float32) * 0.1  # 12 s
    inside = out / "audio" / "a b.wav"
    inside.parent.mkdir()
    sf.write(inside, x, 16000)
    assert clip_audio(Clip("a", inside, 1, "d"), out, "clips/a.wav", 8000) == "audio/a%20b.wav"
    assert not (out / "clips" / "a.wav").exists()
    outside = tmp_path / "b.wav"
    sf.write(outside, x, 16000)
    assert clip_audio(Clip("b", outside, 1, "d"), out, "clips/b.wav", 8000) == "clips/b.wav"
    info = sf.info(str(out / "clips" / "b.wav"))
    assert info.samplerate == 8000 and info.frames == int(MAX_AUDIO_S * 8000)  # cut to the longest excerpt
    outside.write_bytes(b"")
    assert clip_audio(Clip("c", outside, 1, "d"), out, "clips/c.wav", 8000) is None  # unreadable: no player


def test_user_strings_are_escaped(fitted, tmp_path):
    """A dataset name, a clip name and a model path that hold markup are shown as text, never as markup."""
    root, sets, det = fitted
    evil_dataset = "<script>alert(1)</script>"
    evil_item = "<img src=x onerror=alert(1)>"
    folder = tmp_path / "evil"
    ids = ["a1", "a2", "b1", "b2"]
    _touch_wavs(folder / "wav", [])
    for k, i in enumerate(ids):
        sf.write(folder / "wav" / f"{i}.wav", np.random.default_rng(k).standard_normal(8000).astype(np.float32) * 0.05, 8000)
    (folder / "wav" / f"{evil_item}.wav").write_bytes(b"")  # unreadable: listed with its name and path
    _write_csv(folder / "evil.csv", [(i, "evil", int(i[0] == "b")) for i in [*ids, evil_item]])
    out = tmp_path / "out"
    evaluate(det, [load_dataset(folder, name=evil_dataset)], out, model_path="<b>model</b>.pt", n_boot=20, n_worst=2, progress=False)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html and "<img src=x" not in html and "<b>model" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;b&gt;model&lt;/b&gt;.pt" in html
    parser = _Refs()
    parser.feed(html)
    text = " ".join(parser.text)
    assert evil_dataset in text and evil_item in text  # shown, as text
    assert parser.refs and all((out / ref).is_file() for ref in parser.refs)
