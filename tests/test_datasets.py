"""pipeline/datasets.py and data/manifest.py: label CSVs, dataset layouts, bad rows, the published sets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scatterbird.data.manifest import DATASETS, development_sets, lookup
from scatterbird.errors import DatasetError
from scatterbird.pipeline.datasets import load_dataset, load_datasets, parse_dataset_arg, parse_label, read_labels


def _write_csv(path: Path, rows, header=("itemid", "datasetid", "hasbird")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def _touch_wavs(folder: Path, ids, sr: int = 8000, seconds: float = 0.05) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        sf.write(folder / f"{i}.wav", np.zeros(int(sr * seconds), np.float32), sr)



# -- manifest -----------------------------------------------------------------------------------------------
def test_manifest_holds_the_six_datasets_with_published_counts():
    counts = {d.name: d.n_items for d in DATASETS}
    assert counts == {
        "ff1010bird": 7690, "warblrb10k": 8000, "BirdVox-DCASE-20k": 20000,
        "warblrb10k_test": 2000, "Chernobyl": 6620, "PolandNFC": 4000,
    }
    assert [d.name for d in development_sets()] == ["ff1010bird", "warblrb10k", "BirdVox-DCASE-20k"]
    assert all(d.n_positive is None for d in DATASETS if d.role == "evaluation")
    assert lookup("freefield1010").name == "ff1010bird" and lookup("BIRDVOX").name == "BirdVox-DCASE-20k"
    assert lookup("my-own-meadow") is None


# -- loaders: published layouts -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, label_file, datasetid",
    [
        ("ff1010bird", "ff1010bird_metadata_2018.csv", "ff1010bird"),
        ("warblrb10k", "warblrb10k_public_metadata_2018.csv", "warblrb10k"),
        ("BirdVox-DCASE-20k", "BirdVoxDCASE20k_csvpublic.csv", "BirdVox-DCASE-20k"),
    ],
)
@pytest.mark.parametrize("nested", [False, True])
def test_published_layout_is_recognised_and_counts_checked(tmp_path, name, label_file, datasetid, nested):
    # archive unpacked in place (ROOT/wav + ROOT/labels.csv) or one folder down (ROOT/<zip name>/wav)
    ids = ["0a1b", "1c2d", "2e3f", "3f40"]
    root = tmp_path / "unpacked"
    _touch_wavs((root / "archive" / "wav") if nested else (root / "wav"), ids)
    _write_csv(root / label_file, [(i, datasetid, k % 2) for k, i in enumerate(ids)])
    d = load_dataset(root)  # recognised without a name, by its label file
    assert d.name == name
    assert [c.itemid for c in d.clips] == ids and d.positives == 2
    expected = lookup(name).n_items
    msgs = d.problems()
    assert len(msgs) == 1 and f"published dataset has {expected:,} clips; 4 were found" in msgs[0]
    assert not d.incomplete  # a partial copy is reported, but every listed clip is there
    # an alias names it too, and the label CSV itself is an accepted path
    alias = {"ff1010bird": "freefield1010", "warblrb10k": "warblr", "BirdVox-DCASE-20k": "birdvox"}[name]
    assert load_dataset(root / label_file, alias).name == name


def test_complete_copy_has_no_problems_and_other_label_versions_are_noted(tmp_path):
    ids = [f"c{i}" for i in range(5)]
    _touch_wavs(tmp_path / "wav", ids)
    _write_csv(tmp_path / "ff1010bird_metadata_2018.csv", [(i, "ff1010bird", int(k < 2)) for k, i in enumerate(ids)])
    d = load_dataset(tmp_path)
    d.expected_items, d.expected_positive = 5, 2  # as if this were the whole published set
    assert d.problems() == []
    d.expected_positive = 3
    assert d.problems() == ["ff1010bird: 2 clips labelled hasbird=1; the published labels have 3 (another label version?)"]


def test_missing_clip_and_unlisted_audio_are_listed(tmp_path):
    _touch_wavs(tmp_path / "wav", ["a", "b", "stray"])
    _write_csv(tmp_path / "mine.csv", [("a", "mine", 1), ("b", "mine", 0), ("gone", "mine", 1)])
    d = load_dataset(tmp_path, "mine")
    assert [c.itemid for c in d.clips] == ["a", "b"]
    assert d.missing == ["gone"] and d.unlisted == ["stray"] and d.incomplete
    text = "\n".join(d.problems())
    assert "1 clip(s) listed in mine.csv have no audio" in text and "gone" in text
    assert "not in mine.csv and are not used: stray" in text


def test_bad_rows_are_skipped_with_line_numbers(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text(
        "\ufeffItemID,datasetid,hasbird\n"  # a BOM and another case: still the header
        "a,x,1\n"
        "b,x,2\n"  # not 0/1
        ",x,0\n"  # empty itemid
        "c,x\n"  # a field short
        "a,x,0\n"  # duplicate with a conflicting label
        "d.wav,x,0\n"  # extension dropped
        "e,x,\n"  # empty label in a labelled file
        "\n"
        "f,x,1.0\n"
    )
    rows = read_labels(p)
    assert rows.has_labels and rows.rows == [("a", "x", 1), ("d", "x", 0), ("f", "x", 1)]
    bad = dict(rows.bad)
    assert sorted(bad) == [3, 4, 5, 6, 8]
    assert "hasbird must be 0 or 1, got '2'" in bad[3]
    assert "empty itemid" in bad[4]
    assert "expected 3 fields" in bad[5]
    assert "duplicate itemid, first on line 2" in bad[6] and "conflicting" in bad[6]
    assert "empty hasbird" in bad[8]
    _touch_wavs(tmp_path / "wav", ["a", "d", "f"])
    d = load_dataset(tmp_path)
    assert len(d.clips) == 3 and d.incomplete
    assert "5 bad row(s) in labels.csv skipped: line 3:" in d.problems()[0]


@pytest.mark.parametrize(
    "text, label",
    [("0", 0), ("1", 1), ("1.0", 1), ("0.0", 0), (" 1 ", 1), ("1e0", 1), ("-0", 0), ("", None), ("  ", None)],
)
def test_labels_are_0_or_1_as_integers_or_floats(text, label):
    assert parse_label(text) == label


@pytest.mark.parametrize("text", ["2", "-1", "0.5", "1.01", "yes", "true", "nan", "inf", "1,0"])
def test_other_labels_are_refused(text):
    with pytest.raises(ValueError):
        parse_label(text)


@pytest.mark.parametrize(
    "content, message, require_labels",
    [
        ("", "empty label file", False),
        ("name,hasbird\na,1\n", "no 'itemid' column", False),
        ("itemid,datasetid\na,x\n", "no 'hasbird' column", True),
        ("itemid,hasbird\n", "no usable row", False),
        ("itemid,hasbird\na,yes\n,1\n", r"no usable row.*2 bad row\(s\): line 2: a: hasbird must be 0 or 1, got 'yes'; line 3: empty itemid", False),
        ("itemid,hasbird\na,\nb,\n", "hidden labels", True),
    ],
)
def test_unusable_label_file_says_why(tmp_path, content, message, require_labels):
    p = tmp_path / "labels.csv"
    p.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_labels(p, require_labels=require_labels)


def test_a_label_file_is_refused_only_without_a_usable_row(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("itemid,hasbird\na,yes\nb,1.0\nb,0\n")
    rows = read_labels(p, require_labels=True)
    assert rows.rows == [("b", "", 1)]
    assert [ln for ln, _ in rows.bad] == [2, 4]
    p.write_text("itemid,hasbird\na,\nb,\n")
    assert read_labels(p).rows == [("a", "", None), ("b", "", None)]  # hidden labels, when not required


def test_training_layout_with_an_events_file(tmp_path):
    # data.synthetic.write_dataset: ROOT/wav, ROOT/<id>.csv and ROOT/events.csv (itemid but no hasbird)
    _touch_wavs(tmp_path / "bad" / "wav", ["s0", "s1"])
    _write_csv(tmp_path / "bad" / "synthetic.csv", [("s0", "synthetic", 1), ("s1", "synthetic", 0)])
    _write_csv(tmp_path / "bad" / "events.csv", [("s0", 0.1, 0.5)], header=("itemid", "start_s", "end_s"))
    for path in (tmp_path / "bad", tmp_path / "bad" / "synthetic.csv"):
        d = load_dataset(path, require_labels=True)
        assert d.labels_path.name == "synthetic.csv" and d.audio_dir == tmp_path / "bad" / "wav"
        assert [(c.itemid, c.label) for c in d.clips] == [("s0", 1), ("s1", 0)] and not d.problems()


def test_clear_errors_for_missing_things(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no label CSV found.*ff1010bird_metadata_2018.csv"):
        load_dataset(tmp_path / "empty", "ff1010bird")
    _write_csv(tmp_path / "noaudio" / "x.csv", [("a", "x", 1)])
    with pytest.raises(DatasetError, match="no audio folder found"):
        load_dataset(tmp_path / "noaudio")
    _touch_wavs(tmp_path / "other" / "wav", ["zzz"])
    _write_csv(tmp_path / "other" / "x.csv", [("a", "x", 1), ("b", "x", 0)])
    with pytest.raises(DatasetError, match=r"none of the 2 clips listed .* e\.g\. zzz\.wav"):
        load_dataset(tmp_path / "other")
    _write_csv(tmp_path / "two" / "a.csv", [("a", "x", 1)])
    _write_csv(tmp_path / "two" / "b.csv", [("a", "x", 1)])
    _touch_wavs(tmp_path / "two" / "wav", ["a"])
    with pytest.raises(DatasetError, match="several CSV files could hold the labels"):
        load_dataset(tmp_path / "two")


def test_hidden_labels_make_an_evaluation_set(tmp_path):
    _touch_wavs(tmp_path / "wav", ["p", "q"])
    _write_csv(tmp_path / "PolandNFC_metadata.csv", [("p", "PolandNFC", ""), ("q", "PolandNFC", "")])
    d = load_dataset(tmp_path, "polandnfc")
    assert d.name == "PolandNFC" and not d.has_labels
    assert any("labels are hidden" in m for m in d.problems())


def test_audio_and_labels_in_any_layout(tmp_path):
    _touch_wavs(tmp_path / "clips", ["a", "b"])
    lab = _write_csv(tmp_path / "elsewhere" / "meadow.csv", [("a", 1), ("b", 0)], header=("itemid", "hasbird"))
    (d,) = load_datasets(audio=[str(tmp_path / "clips")], labels=[str(lab)])
    assert d.name == "meadow" and len(d.clips) == 2 and d.expected_items is None
    with pytest.raises(DatasetError, match="go in pairs"):
        load_datasets(audio=[str(tmp_path / "clips")], labels=[])
    with pytest.raises(DatasetError, match="given twice: meadow"):
        load_datasets(audio=[str(tmp_path / "clips")] * 2, labels=[str(lab)] * 2)


def test_parse_dataset_arg(tmp_path):
    assert parse_dataset_arg("ff1010bird=/data/ff") == ("ff1010bird", "/data/ff")
    assert parse_dataset_arg("/data/ff") == (None, "/data/ff")
    odd = tmp_path / "a=b"
    odd.mkdir()
    assert parse_dataset_arg(str(odd)) == (None, str(odd))
    with pytest.raises(DatasetError, match="NAME=PATH"):
        parse_dataset_arg("=/x")



def test_one_folder_with_every_label_file(tmp_path):
    # a common way to unpack the development sets: one wav/ for all, the label files side by side
    _touch_wavs(tmp_path / "wav", ["f1", "f2", "w1", "w2"])
    _write_csv(tmp_path / "ff1010bird_metadata_2018.csv", [("f1", "ff1010bird", 1), ("f2", "ff1010bird", 0)])
    _write_csv(tmp_path / "warblrb10k_public_metadata_2018.csv", [("w1", "warblrb10k", 1), ("w2", "warblrb10k", 0)])
    with pytest.raises(DatasetError, match="label files of several datasets are here"):
        load_dataset(tmp_path)
    d = load_dataset(tmp_path, "warblr")
    assert d.name == "warblrb10k" and [c.itemid for c in d.clips] == ["w1", "w2"]
    assert d.unlisted == ["f1", "f2"]  # the other set's clips are named, not used
    # the wav folder itself: its label files are beside it
    assert [c.itemid for c in load_dataset(tmp_path / "wav", "ff1010bird").clips] == ["f1", "f2"]


def test_shared_label_file_is_filtered_by_datasetid(tmp_path):
    _touch_wavs(tmp_path / "wav", ["c1", "c2"])
    _write_csv(
        tmp_path / "dcase2018_task3_bird_examplesubmission.csv",
        [("c1", "Chernobyl", ""), ("c2", "Chernobyl", ""), ("p1", "PolandNFC", ""), ("x1", "warblrb10k", "")],
    )
    d = load_dataset(tmp_path, "Chernobyl")
    assert [c.itemid for c in d.clips] == ["c1", "c2"] and d.missing == [] and not d.has_labels


