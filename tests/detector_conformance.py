"""The one conformance check every Detector must pass (see models/base.py).

Use it from a detector's test module:

    from detector_conformance import check_detector
    def test_conformance(tmp_path):
        check_detector(lambda seed: MyDetector(random_state=seed, ...), tmp_path)
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from scatterbird.models.base import Detector, DetectorError
from scatterbird.models.registry import load_detector
from scatterbird.pipeline.config import FeatureConfig


def easy_sequences(n: int, n_channels: int = 12, seed: int = 0, min_len: int = 20, max_len: int = 60):
    """Sequences of varying length; class 1 has a raised band in channels 3-5 over a stretch of frames."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for i in range(n):
        y = i % 2
        t = int(rng.integers(min_len, max_len + 1))
        x = rng.standard_normal((t, n_channels)).astype(np.float32)
        if y:
            a = int(rng.integers(0, t // 2))
            x[a : a + t // 3, 3:6] += 3.0
        seqs.append(x)
        labels.append(y)
    return seqs, np.array(labels)


def check_detector(make: Callable[[int], Detector], tmp_path, n_train: int = 40, n_channels: int = 12) -> None:
    """Fit/predict shapes, [0, 1] probabilities, save/load identity, variable lengths, channel errors, seeds,
    scikit-learn's parameter conventions (get_params/set_params/repr, clone, check_is_fitted)."""
    seqs, y = easy_sequences(n_train, n_channels, seed=1)
    test, yt = easy_sequences(16, n_channels, seed=2, min_len=5, max_len=90)
    det = make(0)
    det.feature_config = FeatureConfig()
    assert det.fit(seqs, y) is det
    p = det.predict_proba(test)
    assert isinstance(p, np.ndarray) and p.shape == (len(test),)
    assert np.all((p >= 0) & (p <= 1)) and np.isfinite(p).all()
    # variable lengths, including a single frame
    p1 = det.predict_proba([test[0][:1], test[1]])
    assert p1.shape == (2,)
    # save / load round trip gives identical scores
    path = tmp_path / f"{det.kind}.model"
    det.save(path)
    again = load_detector(path, expected_config=FeatureConfig())
    assert type(again) is type(det)
    np.testing.assert_array_equal(again.predict_proba(test), p)
    assert again.model_hash == det.model_hash
    assert again.get_params() == json.loads(json.dumps(det.get_params()))  # tuples come back as lists
    # scikit-learn's conventions: clone gives an unfitted detector with equal hyperparameters
    check_is_fitted(det)
    fresh = clone(det)
    assert type(fresh) is type(det) and fresh is not det
    assert fresh.get_params() == det.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(fresh)
    assert fresh.set_params(**det.get_params()) is fresh and fresh.get_params() == det.get_params()
    with pytest.raises(DetectorError, match="no hyperparameter 'no_such_hyperparameter'"):
        fresh.set_params(no_such_hyperparameter=1)
    assert repr(det).startswith(f"{type(det).__name__}(")
    # clear error on the wrong channel count
    with pytest.raises(DetectorError, match="channels"):
        det.predict_proba([np.zeros((10, n_channels + 1), np.float32)])
    # reproducible with a seed
    twin = make(0)
    twin.fit(seqs, y)
    np.testing.assert_allclose(twin.predict_proba(test), p, rtol=1e-5, atol=1e-6)
