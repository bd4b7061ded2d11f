"""pipeline/evaluate/metrics.py: ROC AUC, its stratified bootstrap interval, the harmonic mean."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scatterbird.pipeline.evaluate.metrics import bootstrap_auc_ci, bootstrap_aucs, harmonic_mean, roc_auc


def pairwise_auc(labels, scores) -> float:
    """The AUC by its definition: the share of (positive, negative) pairs ranked right, ties counting half."""
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_the_pairwise_count(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(rng.random(n), 1) if seed % 2 else rng.random(n)  # with and without ties
    assert roc_auc(y, s) == pytest.approx(pairwise_auc(y, s), abs=1e-12)


def test_auc_known_answers():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_bootstrap_replicates_are_the_aucs_of_the_resamples():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 61)
    s = np.round(rng.random(61), 1)
    reps = bootstrap_aucs(y, s, n_boot=25, seed=11)
    # the same draws, made by hand: positives then negatives, each clip's multiplicity in data order
    draw = np.random.default_rng(11)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    cp = draw.multinomial(pos.size, np.full(pos.size, 1 / pos.size), size=25)
    cn = draw.multinomial(neg.size, np.full(neg.size, 1 / neg.size), size=25)
    for b in range(25):
        idx = np.r_[np.repeat(pos, cp[b]), np.repeat(neg, cn[b])]
        assert reps[b] == pytest.approx(pairwise_auc(y[idx], s[idx]), abs=1e-12)


def test_bootstrap_interval_brackets_the_auc_and_narrows_with_n():
    rng = np.random.default_rng(0)

    def data(n):
        y = rng.integers(0, 2, n)
        return y, y * 0.8 + rng.standard_normal(n)

    y, s = data(100)
    lo, hi = bootstrap_auc_ci(y, s, n_boot=500, seed=0)
    assert lo < roc_auc(y, s) < hi
    assert bootstrap_auc_ci(y, s, n_boot=500, seed=0) == (lo, hi)  # reproducible
    y2, s2 = data(2000)
    lo2, hi2 = bootstrap_auc_ci(y2, s2, n_boot=500, seed=0)
    assert hi2 - lo2 < 0.5 * (hi - lo)  # the width falls as 1/sqrt(n)
    assert all(math.isnan(v) for v in bootstrap_auc_ci([1, 1, 1], [0.1, 0.2, 0.3]))


def test_harmonic_mean():
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.8, 0.8, 0.8]) == pytest.approx(0.8)
    assert harmonic_mean([0.9, 0.0]) == 0.0
    assert math.isnan(harmonic_mean([])) and math.isnan(harmonic_mean([0.7, float("nan")]))
    with pytest.raises(ValueError, match="negative"):
        harmonic_mean([0.9, -0.1])


@pytest.mark.parametrize(
    "labels, scores, message",
    [([0, 1], [0.1], "one length"), ([0, 2], [0.1, 0.2], "0 or 1"), ([0, 1], [0.1, float("nan")], "finite")],
)
def test_bad_inputs_say_why(labels, scores, message):
    for f in (roc_auc, bootstrap_aucs):
        with pytest.raises(ValueError, match=message):
            f(labels, scores)
