"""The on-disk filter cache: encode/decode round trips of real filter banks, hits, misses, damaged files and
folders that cannot be written (pipeline/frontend/filter_cache.py)."""

from __future__ import annotations

import errno
import io
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend import filter_cache as fc
from scatterbird.pipeline.frontend.bands import Band, FilterGroup
from scatterbird.pipeline.frontend.scattering import Scattering, _Bank, _Plan2
from scatterbird.pipeline.frontend.thresholding import _RuleBank

# scattering.py registers its own classes once it uses the cache; registering twice is harmless
fc.register(_Bank, _Plan2)


def assert_same(a, b, where="obj"):
    """``a`` and ``b`` equal, of the same types all the way down (tuples stay tuples, dtypes stay dtypes)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif hasattr(a, "__dict__"):
        assert_same(vars(a), vars(b), f"{where}.__dict__")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


def through_file(obj):
    """``obj`` encoded, written with torch.save, read with weights_only=True and decoded."""
    buf = io.BytesIO()
    torch.save(fc.encode(obj), buf)
    buf.seek(0)
    return fc.decode(torch.load(buf, weights_only=True))


@pytest.fixture(scope="module")
def front():
    """A small thresholded front end (second order, risk rule bank) that has run once, and its output."""
    sc = Scattering(FeatureConfig(sample_rate=4000, J=5, Q1=4, threshold="risk"), fft_size=2**15)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, sc.fft_size)).astype(np.float32))
    return sc, x, sc._transform_buffer(x)


@pytest.fixture
def counter():
    """A build function that counts its calls and returns a fresh object each time."""

    class Build:
        calls = 0

        def __call__(self):
            self.calls += 1
            return {"filters": torch.arange(5.0), "k": (1, [2, 3]), "calls": self.calls}

    return Build()


@pytest.fixture(autouse=True)
def fresh_warning_state(monkeypatch):
    monkeypatch.setattr(fc, "_warned", False)


# -- encode / decode ---------------------------------------------------------------------------------
def test_a_real_bank_round_trips_exactly(front):
    sc, _, _ = front
    bank = sc._bank(sc.fft_size)
    assert bank.plan2 and any(b.segments for b in bank.psi1)  # second order and segmented bands are covered
    back = through_file(bank)
    assert_same(bank, back)
    assert type(back.groups[0]) is FilterGroup and type(back.groups[0].index) is tuple
    assert type(back.psi1[0]) is Band and type(back.plan2[0][0]) is _Plan2
    # an object met twice comes back as one object, as built (the low-pass shared by groups of one level)
    shared = [(i, j) for i in range(len(bank.phi1)) for j in range(i) if bank.phi1[i] is bank.phi1[j]]
    assert shared
    for i, j in shared:
        assert back.phi1[i] is back.phi1[j]


def test_a_rule_bank_with_its_bands_round_trips_exactly(front):
    sc, _, _ = front
    rule = sc._thresholder.rule1
    assert rule._bands and all(type(k) is tuple for k in rule._bands)  # filled by the transform
    back = through_file(rule)
    assert type(back) is _RuleBank
    assert_same(rule, back)


def test_decoded_filters_give_the_same_transform(front, tmp_path):
    sc, x, y = front
    n = sc.fft_size
    key = {"what": "bank", "n": n}
    fc.cached(key, lambda: sc._bank(n), root=tmp_path)  # written
    rule_key = {"what": "rule1"}
    fc.cached(rule_key, lambda: sc._thresholder.rule1, root=tmp_path)
    bank = fc.cached(key, lambda: pytest.fail("bank rebuilt"), root=tmp_path)  # read back
    rule = fc.cached(rule_key, lambda: pytest.fail("rule bank rebuilt"), root=tmp_path)
    assert bank is not sc._bank(n) and rule is not sc._thresholder.rule1
    orig_bank, orig_rule = sc._banks[n], sc._thresholder.rule1
    try:
        sc._banks[n], sc._thresholder.rule1 = bank, rule
        assert torch.equal(sc._transform_buffer(x), y)
    finally:
        sc._banks[n], sc._thresholder.rule1 = orig_bank, orig_rule


def test_plain_values_keep_their_types():
    obj = {
        (1, "a"): [1, (2, 3), [4.5, None, True]],
        "dict": {"list": "a user dict whose keys look like the cache's own tags"},
        "arrays": [
            np.arange(6, dtype=np.int64).reshape(2, 3),
            np.linspace(0, 1, 5, dtype=np.float32),
            np.array([1 + 2j, 3 - 4j]),
            np.array([True, False]),
            np.arange(4, dtype=">f8"),  # big-endian: stored native, comes back big-endian
            np.arange(10.0)[::3],  # not contiguous
        ],
        "scalars": (np.float64(0.25), np.int64(7), 1 + 2j, float("inf")),
        "sets": ({1, 2}, frozenset({"x"})),
        "ordered": OrderedDict([("b", 1), ("a", 2)]),
        "torch": (torch.float64, torch.device("cpu"), torch.tensor([[1, 2]], dtype=torch.int32)),
        "empty": ([], (), {}),
    }
    back = through_file(obj)
    assert type(back[(1, "a")][1]) is tuple and type(back[(1, "a")][2]) is list
    assert back["dict"] == {"list": "a user dict whose keys look like the cache's own tags"}
    assert back["arrays"][4].dtype == np.dtype(">f8")
    assert type(back["scalars"][0]) is np.float64 and type(back["scalars"][1]) is np.int64
    assert type(back["ordered"]) is OrderedDict and list(back["ordered"]) == ["b", "a"]
    assert_same(obj, back)


@dataclass
class _Unlisted:
    value: int


def test_only_registered_classes_are_stored_or_built(monkeypatch):
    with pytest.raises(TypeError, match="not registered"):
        fc.encode([_Unlisted(1)])
    with pytest.raises(TypeError, match="not a plain type"):
        fc.encode({"f": lambda: 0})
    monkeypatch.setitem(fc._REGISTRY, fc._name(_Unlisted), _Unlisted)
    data = fc.encode([_Unlisted(1)])
    assert fc.decode(data) == [_Unlisted(1)]
    monkeypatch.delitem(fc._REGISTRY, fc._name(_Unlisted))
    with pytest.raises(fc.FilterCacheError, match="_Unlisted is not registered"):
        fc.decode(data)


@pytest.mark.parametrize("data", [{"bogus": 1}, {"ref": 3}, {"obj": "os.system", "id": 0, "state": {}}, {1, 2}])
def test_decode_refuses_what_encode_never_makes(data):
    with pytest.raises(fc.FilterCacheError):
        fc.decode(data)


# -- the cache -----------------------------------------------------------------------------------------
def test_built_once_then_read(tmp_path, counter):
    key = {"config": {"J": 9}, "n": 1024, "what": "test"}
    first = fc.cached(key, counter, root=tmp_path)
    assert counter.calls == 1 and first["calls"] == 1
    path = fc.cache_file(key, tmp_path)
    assert list(tmp_path.iterdir()) == [path]  # the file, and no temporary left
    second = fc.cached(dict(reversed(key.items())), counter, root=tmp_path)  # the same key in another order
    assert counter.calls == 1 and second is not first
    assert_same(first, second)
    fc.cached({**key, "n": 2048}, counter, root=tmp_path)  # another key: another file
    assert counter.calls == 2 and len(list(tmp_path.iterdir())) == 2


def test_no_root_means_no_cache(tmp_path, counter, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fc.cached({"a": 1}, counter, root=None)
    fc.cached({"a": 1}, counter, root=None)
    assert counter.calls == 2 and list(tmp_path.iterdir()) == []


def test_the_default_root_follows_the_environment(tmp_path, monkeypatch, counter):
    monkeypatch.setenv("SCATTERBIRD_CACHE", str(tmp_path / "user"))
    monkeypatch.delenv(fc.ENV_VAR, raising=False)
    assert fc.cache_root() == tmp_path / "user" / "filters"
    for off in ("", "off", "OFF"):
        monkeypatch.setenv(fc.ENV_VAR, off)
        assert fc.cache_root() is None
    monkeypatch.setenv(fc.ENV_VAR, str(tmp_path / "mine"))
    assert fc.cache_root() == tmp_path / "mine"
    fc.cached({"a": 1}, counter)
    fc.cached({"a": 1}, counter)
    assert counter.calls == 1 and fc.cache_file({"a": 1}, tmp_path / "mine").is_file()


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(1).bytes(len(data)))
    else:  # a valid file, but written for another key, or holding a class that may not be built
        stored = torch.load(path, weights_only=True)
        if how == "other key":
            stored["key"] = stored["key"].replace('"n":1024', '"n":2048')
        elif how == "other version":
            stored["version"] += 1
        else:
            stored["data"] = {"obj": "subprocess.Popen", "id": 0, "state": {"dict": []}}
        torch.save(stored, path)


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "other key", "other version", "unlisted class"])
def test_a_damaged_or_foreign_file_is_rebuilt_and_replaced(tmp_path, counter, how):
    key = {"n": 1024}
    fc.cached(key, counter, root=tmp_path)
    path = fc.cache_file(key, tmp_path)
    _damage(path, how)
    got = fc.cached(key, counter, root=tmp_path)
    assert counter.calls == 2 and got["calls"] == 2  # rebuilt, not read
    again = fc.cached(key, counter, root=tmp_path)
    assert counter.calls == 2 and again["calls"] == 2  # the rebuilt object replaced the damaged file
    assert list(tmp_path.iterdir()) == [path]


def _read_only(folder: Path) -> None:
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root writes anywhere
        folder.chmod(0o700)
        pytest.skip("a read-only folder is writable for this user (root)")


@pytest.mark.parametrize("below", [False, True])
def test_a_read_only_folder_builds_with_one_warning(tmp_path, counter, below):
    folder = tmp_path / "ro"
    _read_only(folder)
    root = folder / "filters" if below else folder  # the cache folder itself cannot be made, or written
    try:
        _builds_with_one_warning(root, counter)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_a_file_in_place_of_the_folder_builds_with_one_warning(tmp_path, counter):
    (tmp_path / "taken").write_text("not a folder")
    _builds_with_one_warning(tmp_path / "taken" / "filters", counter)  # unwritable for root too
    assert (tmp_path / "taken").read_text() == "not a folder"


def _builds_with_one_warning(root: Path, counter) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = fc.cached({"n": 1}, counter, root=root)
        second = fc.cached({"n": 2}, counter, root=root)
    assert (first["calls"], second["calls"]) == (1, 2)
    assert [w.category for w in caught] == [fc.FilterCacheWarning]
    assert str(root) in str(caught[0].message)


def test_a_full_disk_leaves_no_temporary_file(tmp_path, counter, monkeypatch):
    def half_write_then_full(obj, f, *args, **kwargs):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_write_then_full)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fc.cached({"n": 1}, counter, root=tmp_path)
    assert got["calls"] == 1 and len(caught) == 1 and "No space left" in str(caught[0].message)
    assert list(tmp_path.iterdir()) == []


def test_an_object_that_cannot_be_stored_is_an_error(tmp_path):
    with pytest.raises(TypeError, match="not registered"):
        fc.cached({"n": 1}, lambda: _Unlisted(1), root=tmp_path)
    with pytest.raises(TypeError):
        fc.cached({"n": object()}, lambda: 1, root=tmp_path)
