"""The hyperparameter conventions of models/base.py's Detector (get_params, set_params, repr) without
scikit-learn's BaseEstimator, and scikit-learn's own tools (clone, check_is_fitted) still working on it."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from detector_conformance import check_detector, easy_sequences
from simple_detector import SimpleDetector

from scatterbird.errors import DetectorError
from scatterbird.models.base import Detector


class _Inner:
    """A hyperparameter that has hyperparameters of its own (scikit-learn's nested estimators)."""

    def __init__(self, c: int = 1) -> None:
        self.c = c

    def get_params(self, deep: bool = True) -> dict:
        return {"c": self.c}

    def set_params(self, **params) -> "_Inner":
        for k, v in params.items():
            setattr(self, k, v)
        return self


class _Toy(Detector):  # kind stays "base": not registered
    def __init__(self, widths=(8, 8), alpha: float = 1.0, name: str = "x", inner=None) -> None:
        self.widths = widths
        self.alpha = alpha
        self.name = name
        self.inner = inner


def test_get_params_lists_the_init_arguments_sorted():
    toy = _Toy(alpha=2.5)
    assert toy.get_params() == {"alpha": 2.5, "inner": None, "name": "x", "widths": (8, 8)}
    assert list(toy.get_params()) == sorted(toy.get_params())
    assert _Toy._get_param_names() == ["alpha", "inner", "name", "widths"]
    assert SimpleDetector(C=3.0).get_params() == {"C": 3.0}


def test_deep_params_reach_into_a_hyperparameter_with_params():
    toy = _Toy(inner=_Inner(c=4))
    assert toy.get_params(deep=True)["inner__c"] == 4
    assert "inner__c" not in toy.get_params(deep=False)
    assert toy.set_params(inner__c=7) is toy and toy.inner.c == 7


def test_set_params_sets_and_returns_self():
    toy = _Toy()
    assert toy.set_params(alpha=0.5, name="y") is toy
    assert (toy.alpha, toy.name) == (0.5, "y")
    assert toy.set_params() is toy


def test_set_params_refuses_an_unknown_name_and_changes_nothing():
    toy = _Toy()
    with pytest.raises(DetectorError, match=r"_Toy has no hyperparameter 'alhpa'; its hyperparameters: alpha, inner"):
        toy.set_params(name="changed", alhpa=3.0)
    assert toy.name == "x" and toy.alpha == 1.0
    with pytest.raises(ValueError):  # DetectorError is a ValueError, as scikit-learn's tools expect
        SimpleDetector().set_params(c=1.0)
    with pytest.raises(DetectorError, match="'alpha' has no hyperparameters of its own"):
        toy.set_params(alpha__x=1)


def test_init_with_varargs_is_refused():
    class _Star(Detector):
        def __init__(self, *sizes) -> None:
            self.sizes = sizes

    with pytest.raises(DetectorError, match=r"takes \*sizes"):
        _Star(1, 2).get_params()


def test_repr_names_the_hyperparameters_that_differ_from_their_defaults():
    assert repr(_Toy()) == "_Toy()"
    assert repr(_Toy(alpha=2.0, name="y")) == "_Toy(alpha=2.0, name='y')"
    assert repr(_Toy(widths=[8, 8])) == "_Toy()"  # a model file gives tuples back as lists
    assert repr(_Toy(widths=(16, 8))) == "_Toy(widths=(16, 8))"
    assert repr(_Toy(widths=[[1, 2], [3]])) == "_Toy(widths=[[1, 2], [3]])"  # ragged: compared, not crashed
    assert repr(SimpleDetector(C=0.1)) == "SimpleDetector(C=0.1)"


def _fitted_simple() -> SimpleDetector:
    seqs, y = easy_sequences(30, seed=1)
    return SimpleDetector(C=0.5).fit(seqs, y)


def test_sklearn_clone_and_check_is_fitted_work_on_a_detector():
    base = pytest.importorskip("sklearn.base")
    validation = pytest.importorskip("sklearn.utils.validation")
    exceptions = pytest.importorskip("sklearn.exceptions")
    det = _fitted_simple()
    validation.check_is_fitted(det)
    fresh = base.clone(det)
    assert type(fresh) is SimpleDetector and fresh.get_params() == {"C": 0.5}
    with pytest.raises(exceptions.NotFittedError):
        validation.check_is_fitted(fresh)
    toy = _Toy(widths=[4, 4], inner=_Inner(c=2))
    twin = base.clone(toy)
    assert twin.widths == [4, 4] and twin.widths is not toy.widths  # parameters are copied, not shared
    assert twin.inner.c == 2 and twin.inner is not toy.inner


def test_a_detector_pickles_for_worker_processes():
    det = _fitted_simple()
    again = pickle.loads(pickle.dumps(det))
    test, _ = easy_sequences(6, seed=2)
    np.testing.assert_array_equal(again.predict_proba(test), det.predict_proba(test))
    assert again.get_params() == det.get_params()


def test_the_small_test_detector_passes_the_conformance_check(tmp_path):
    check_detector(lambda seed: SimpleDetector(C=1.0), tmp_path)


def test_the_command_line_loads_without_sklearn_or_scipy_stats():
    """Every `detect` process imports scatterbird.cli; these would add tens of MB to each (issue 15)."""
    code = (
        "import sys, scatterbird.cli\n"
        "print(sorted(m for m in ('sklearn', 'scipy.stats', 'scipy.signal', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
