"""The training corpus recipe (data/corpus.py) on a tiny stand-in: three fake Debian packages built here."""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scatterbird.data import corpus
from scatterbird.data.bootstrap import MixOptions, SourceRow
from scatterbird.errors import BootstrapError

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

SR = 16000
# package -> (version, {member: (kind, hasbird, category)}); kinds: chirp, noise, broken, silent
PACKAGES = {
    "abirds": ("1:1.0-1", {  # an epoch: apt names the file abirds_1%3a1.0-1_all.deb
        "usr/share/abirds/chirp1.wav": ("chirp", 1, "bird_call"),
        "usr/share/abirds/chirp2.ogg": ("chirp", 1, "bird_call"),
        "usr/share/abirds/hum1.wav": ("noise", 0, "machine"),
    }),
    "bbirds": ("2.0-1", {
        "usr/share/bbirds/chirp3.wav": ("chirp", 1, "bird_call"),
        "usr/share/bbirds/chirp4.flac": ("chirp", 1, "bird_soundscape"),
        "usr/share/bbirds/hum2.wav": ("noise", 0, "machine"),
        "usr/share/bbirds/broken.wav": ("broken", 0, "other"),
        "usr/share/bbirds/silent.wav": ("silent", 0, "other"),
    }),
    "noises": ("0.1-1", {
        "usr/share/noises/rain.ogg": ("noise", 0, "weather"),
        "usr/share/noises/hum3.wav": ("noise", 0, "machine"),
        "usr/share/noises/click.wav": ("noise", 0, "ui"),
        "usr/share/noises/tampered.wav": ("noise", 0, "ui"),
    }),
}
GHOST = "usr/share/noises/ghost.wav"  # listed (with a hash) but not in the package
TAMPERED = "noises:usr/share/noises/tampered.wav"


def _sound(kind: str, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.6 * SR)) / SR
    if kind == "chirp":  # a rising sweep, the stand-in of a bird call
        f = rng.uniform(2000, 3000) + 3000 * t
        return (0.5 * np.sin(2 * np.pi * np.cumsum(f) / SR) * np.hanning(t.size)).astype(np.float32)
    if kind == "silent":
        return np.zeros(t.size, np.float32)
    return (0.3 * rng.standard_normal(t.size)).astype(np.float32)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """Fake .deb files in a 'mirror', lists pointing at them, and two builds (the second a rerun)."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(1)
    mirror = root / "mirror"
    mirror.mkdir()
    sources, hashes, sizes = [], [], {}
    for pkg, (version, members) in PACKAGES.items():
        tree = root / "trees" / pkg
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN" / "control").write_text(
            f"Package: {pkg}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\n"
            f"Description: test sounds\n")
        for member, (kind, hasbird, category) in members.items():
            path = tree / member
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "broken":
                path.write_bytes(b"RIFF\x00\x00not a wave at all")
            else:
                fmt = {".ogg": "OGG", ".flac": "FLAC", ".wav": "WAV"}[path.suffix]
                sf.write(path, _sound(kind, rng), SR, format=fmt, subtype="VORBIS" if fmt == "OGG" else None)
            sha = _sha(path)
            if f"{pkg}:{member}" == TAMPERED:
                sha = "0" * 64
            sources.append([hasbird, pkg, version, member, "0.0", "", category, ""])
            hashes.append([pkg, version, member, sha])
        deb = mirror / f"{pkg}_{version.replace(':', '%3a')}_all.deb"
        subprocess.run(["dpkg-deb", "-Zgzip", "--build", str(tree), str(deb)], check=True, capture_output=True)
        sizes[pkg] = deb.stat().st_size
    sources.append([0, "noises", "0.1-1", GHOST, "0.0", "", "ui", ""])
    hashes.append(["noises", "0.1-1", GHOST, "1" * 64])
    lists = root / "lists"
    lists.mkdir()
    _write(lists / "sources.csv", ["hasbird", "source_package", "version", "member", "start", "dur", "category", "note"],
           sources)
    _write(lists / "sha256.csv", ["source_package", "version", "member", "sha256"], hashes)
    _write(lists / "packages.csv", ["package", "version", "deb_size_bytes", "n_bird", "n_nobird", "n_dropped_neardup"],
           [[p, v, sizes[p] + (1 if p == "noises" else 0), 0, 0, 0] for p, (v, _) in PACKAGES.items()])
    calls = []

    def download(package: str, version: str, folder: Path) -> None:  # stands in for apt-get download
        calls.append(package)
        name = f"{package}_{version.replace(':', '%3a')}_all.deb"
        shutil.copy(mirror / name, folder / name)

    spec = corpus.CorpusLists(sources=(lists / "sources.csv",), sha256=lists / "sha256.csv",
                              packages=lists / "packages.csv", base_packages=())
    work = root / "work"
    kw = {"folds": 2, "clips_per_fold": 4, "unlabeled_per_fold": 2, "source_clips_per_fold": 2, "sr": 8000,
          "seed": 3, "opts": MixOptions(), "download": download, "lists": spec, "deb_folders": ()}
    first = corpus.build_corpus(work, **kw)
    calls_first = list(calls)
    wavs = sorted(work.glob("**/fold*/wav/*.wav"))
    before = {p: p.stat().st_mtime_ns for p in wavs}
    second = corpus.build_corpus(work, **kw)
    after = {p: p.stat().st_mtime_ns for p in sorted(work.glob("**/fold*/wav/*.wav"))}
    return {"work": work, "first": first, "second": second, "calls_first": calls_first, "calls": calls,
            "before": before, "after": after, "sizes": sizes, "spec": spec}


def _write(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _refused(info: dict) -> dict[str, dict]:
    return {f"{r['package']}:{r['member']}": r for r in info["refused"]}


def test_fetch_uses_the_injected_download_once_and_records_the_debs(standin):
    assert sorted(standin["calls_first"]) == ["abirds", "bbirds", "noises"]
    assert standin["calls"] == standin["calls_first"]  # the rerun downloads nothing
    pk = standin["first"]["packages"]
    assert Path(pk["abirds"]["deb"]).name == "abirds_1%3a1.0-1_all.deb"
    for p, rec in pk.items():
        assert rec["size"] == standin["sizes"][p] == Path(rec["deb"]).stat().st_size
        assert rec["sha256"] == _sha(Path(rec["deb"]))
    assert pk["noises"].get("size_mismatch") is True and pk["noises"]["expected_size"] == standin["sizes"]["noises"] + 1
    assert "size_mismatch" not in pk["abirds"]


def test_a_changed_file_is_refused_with_both_hashes_and_left_out(standin):
    info, work = standin["first"], standin["work"]
    r = _refused(info)[TAMPERED]
    assert r["expected"] == "0" * 64
    assert r["actual"] == _sha(work / "extract" / "usr/share/noises/tampered.wav")
    assert TAMPERED not in info["files"]
    with open(work / "segments" / "segments.csv", newline="") as f:
        members = [row["member"] for row in csv.DictReader(f)]
    assert "usr/share/noises/tampered.wav" not in members
    assert "usr/share/noises/click.wav" in members  # its neighbour in the same package is kept


def test_missing_unreadable_and_silent_members_are_reported_and_left_out(standin):
    refused = _refused(standin["first"])
    assert "not in noises_0.1-1_all.deb" in refused[f"noises:{GHOST}"]["reason"]
    assert "cannot be cut" in refused["bbirds:usr/share/bbirds/broken.wav"]["reason"]
    assert "silent" in refused["bbirds:usr/share/bbirds/silent.wav"]["reason"]
    assert len(refused) == 4
    # 13 files listed, 4 refused: 9 cuts
    assert standin["first"]["segments"] == 9


def test_package_folds_share_no_package_and_each_bird_package_is_alone(standin):
    folds = standin["first"]["schemes"]["package"]["folds"]
    assert len(folds) == 2
    seen: set[str] = set()
    for f in folds:
        assert not seen & set(f["packages"])
        seen |= set(f["packages"])
        assert len(f["bird_packages"]) == 1
        assert f["birds"] > 0 and f["others"] > 0
        assert sum(f["counts"].values()) == f["birds"] + f["others"]
    assert seen == {"abirds", "bbirds", "noises"}


def test_each_fold_is_mixed_only_from_its_own_cuts(standin):
    info = standin["first"]
    n_named = 0
    for scheme in corpus.SCHEMES:
        for rec in info["schemes"][scheme]["folds"]:
            own = {f"{Path(key.split(':', 1)[1]).stem}" for key in rec["source_files"]}
            for d in (rec["dir"], rec["unlabeled_dir"]):
                with open(Path(d) / "recipe.csv", newline="") as f:
                    parts = [p for row in csv.DictReader(f) for p in row["parts"].split()]
                named = [p for p in parts if p.startswith(("bird:", "other:", "bed:"))]
                # a part names a cut as <package prefix>_<file stem>_<cut number>
                used = [re.match(r"(?:bird|other|bed):[a-z]+_(\w+?)_\d+\b", p) for p in named]
                assert all(used), named
                assert {m.group(1) for m in used} <= own, (scheme, rec["name"])
                n_named += len(named)
    assert n_named > 10  # the check above saw real cuts


def test_source_folds_keep_a_files_cuts_together(standin):
    info = standin["first"]
    files = [f for rec in info["schemes"]["source"]["folds"] for f in rec["source_files"]]
    cut = set(info["files"]) - {"bbirds:usr/share/bbirds/broken.wav", "bbirds:usr/share/bbirds/silent.wav"}
    assert sorted(files) == sorted(cut)  # every cut file in exactly one fold
    rows = [SourceRow(1, "p", "1", "a.wav", s, 1.0, "bird_call", "") for s in (0.0, 1.0, 2.0)]
    rows += [SourceRow(h, "p", "1", f"f{i}.wav", 0.0, None, "x", "") for i, h in enumerate([1, 1, 0, 0, 0, 0])]
    for seed in range(5):
        of = corpus.source_folds(rows, 3, seed)
        assert set(of) == {r.file_key for r in rows}
        assert set(of.values()) == {0, 1, 2}
        birds = [of[k] for k in ("p:a.wav", "p:f0.wav", "p:f1.wav")]
        assert sorted(birds) == [0, 1, 2]  # three bird files: one per fold


def test_a_rerun_rewrites_no_clip_and_labels_have_both_classes(standin):
    assert standin["before"] and standin["before"] == standin["after"]
    assert standin["first"]["folds_mixed_now"] == 8  # 2 schemes x 2 folds x (labelled, unlabelled)
    assert standin["second"]["folds_mixed_now"] == 0
    info = corpus.load_build(standin["work"])
    assert info["schemes"] == standin["second"]["schemes"]
    for scheme, n in (("package", 4), ("source", 2)):
        dirs = corpus.fold_dirs(info, scheme)
        assert [d.name for d in dirs] == ["fold0", "fold1"]
        for d in dirs:
            with open(d / f"{d.name}.csv", newline="") as f:
                labels = [int(r["hasbird"]) for r in csv.DictReader(f)]
            assert len(labels) == n and set(labels) == {0, 1}
            assert len(list((d / "wav").glob("*.wav"))) == n
        assert all(d.is_dir() for d in corpus.unlabeled_dirs(info, scheme))


def test_changed_parameters_remix_only_what_changed(standin, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(standin["work"], work)
    info = corpus.build_corpus(work, folds=2, clips_per_fold=3, unlabeled_per_fold=2, source_clips_per_fold=0, sr=8000,
                               seed=3, lists=standin["spec"], deb_folders=(), download=_no_download)
    assert info["folds_mixed_now"] == 2  # the labelled package folds; their unlabelled ones are kept
    with pytest.raises(BootstrapError, match="source folds"):
        corpus.fold_dirs(info, "source")


def _no_download(package: str, version: str, folder: Path) -> None:
    raise AssertionError(f"would download {package}")


def test_package_folds_deal_birds_round_robin_and_balance_categories():
    rows = []

    def add(pkg: str, n: int, hasbird: int, category: str) -> None:
        rows.extend(SourceRow(hasbird, pkg, "1", f"{pkg}{len(rows)}.wav", 0.0, None, category, "") for _ in range(n))

    for i, n in enumerate([9, 7, 5, 3, 1]):
        add(f"bird{i}", n, 1, "bird_call")
    for p in ("m1", "m2", "m3", "m4", "m5"):
        add(p, 4, 0, "music")
    for p in ("u1", "u2", "u3", "u4", "u5"):
        add(p, 3, 0, "ui")
    five = corpus.package_folds(rows, 5, seed=0)
    assert [five[f"bird{i}"] for i in range(5)] == [0, 1, 2, 3, 4]
    for k in range(5):  # one music and one ui package each: the categories are balanced
        mine = sorted(p for p, f in five.items() if f == k and not p.startswith("bird"))
        assert [p[0] for p in mine] == ["m", "u"], mine
    three = corpus.package_folds(rows, 3, seed=0)
    assert [three[f"bird{i}"] for i in range(5)] == [0, 1, 2, 0, 1]  # round-robin, most birds first
    assert corpus.package_folds(rows, 3, seed=0) == three  # deterministic given the seed
    with pytest.raises(BootstrapError, match="only 5 packages hold birds"):
        corpus.package_folds(rows, 6)


def test_debs_are_found_under_apts_escaped_names(tmp_path):
    (tmp_path / "oxygen-sounds_4%3a5.27.5-2_all.deb").write_bytes(b"")
    (tmp_path / "kapman_4%3a22.12.3-1_amd64.deb").write_bytes(b"")
    assert corpus.find_deb("oxygen-sounds", "4:5.27.5-2", [tmp_path]).name == "oxygen-sounds_4%3a5.27.5-2_all.deb"
    assert corpus.find_deb("kapman", "4:22.12.3-1", [tmp_path]).name == "kapman_4%3a22.12.3-1_amd64.deb"
    assert corpus.find_deb("kapman", "4:22.12.4-1", [tmp_path]) is None


def test_a_package_off_the_allowlist_is_refused_naming_file_and_line(tmp_path):
    src = tmp_path / "s.csv"
    _write(src, ["hasbird", "source_package", "version", "member", "start", "dur", "category", "note"],
           [[1, "ok", "1", "a.wav", 0, "", "bird_call", ""], [0, "reserved-sounds", "1", "b.wav", 0, "", "x", ""]])
    pk = tmp_path / "p.csv"
    _write(pk, ["package", "version", "deb_size_bytes"], [["ok", "1", 10]])
    with pytest.raises(BootstrapError, match=r"s\.csv, line 3: package 'reserved-sounds'"):
        corpus.read_lists(corpus.CorpusLists(sources=(src,), sha256=None, packages=pk, base_packages=()))
    _write(pk, ["package", "version", "deb_size_bytes"], [["ok", "2", 10]])
    with pytest.raises(BootstrapError, match="version 1"):
        corpus.read_lists(corpus.CorpusLists(sources=(src,), sha256=None, packages=pk, base_packages=("reserved-sounds",)))


def test_the_shipped_lists_agree():
    lists = corpus.read_lists()
    assert len(lists.versions) == 52 and len(lists.rows) == 1828
    assert {r.package for r in lists.rows if r.hasbird} == {
        "qabcs-data", "scorched3d-data", "berusky2-data", "lincity-ng-data", "supertuxkart-data"}
    training = [r for r in lists.rows if r.package in lists.hashed]
    assert len(training) == 1737 and all(r.file_key in lists.expected for r in training)
    assert lists.versions["oxygen-sounds"] == "4:5.27.5-2"
