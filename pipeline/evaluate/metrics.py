"""Scores of a detector on labelled clips: ROC AUC, its stratified bootstrap interval, the harmonic mean.

The AUC is scikit-learn's ``roc_auc_score``; the harmonic mean of per-dataset AUCs (the DCASE 2018 Task 3
score) is ``scipy.stats.hmean``. The bootstrap computes each replicate's AUC from resampling multiplicities
directly, without copying the data.

scikit-learn and scipy.stats are imported where they are used: every command imports this module, and the two
would add tens of megabytes to each process of `detect`, which never scores.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def _check_scores(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int64 0/1 and scores as float64, both 1-D of one length and finite (else ValueError)."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of one length, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(np.int64), s


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (scikit-learn's ``roc_auc_score``), NaN when one class is absent.

    The probability that a random positive outranks a random negative, ties counting one half.

    Parameters
    ----------
    labels : sequence of int, 0/1, shape (n,)
    scores : sequence of float, shape (n,)

    Returns
    -------
    float
        NaN when one class is absent.

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _check_scores(labels, scores)
    if not 0 < y.sum() < y.size:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def bootstrap_aucs(labels: Sequence[int], scores: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """ROC AUCs of ``n_boot`` stratified bootstrap replicates.

    Positives and negatives are resampled separately, each with replacement to its own count, so every
    replicate has both classes and the class balance of the data. A replicate is a vector of multiplicities
    (multinomial draws: positives first, then negatives, per block of replicates), and its AUC is computed
    from them directly, without copying the data.

    Returns
    -------
    ndarray, shape (n_boot,)
        Empty when one class is absent.
    """
    y, s = _check_scores(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0)
    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # tie groups
    pos_sorted = np.flatnonzero(y_sorted == 1)
    neg_sorted = np.flatnonzero(y_sorted == 0)
    # draws are made over the clips in data order, so the replicates do not depend on the scores' order
    pos_rank = np.searchsorted(np.flatnonzero(y == 1), order[pos_sorted])  # column of each in the draws
    neg_rank = np.searchsorted(np.flatnonzero(y == 0), order[neg_sorted])
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    chunk = max(1, min(n_boot, 4_000_000 // y.size))  # bounds memory at a few tens of MB
    for b0 in range(0, n_boot, chunk):
        b = min(chunk, n_boot - b0)
        cp = rng.multinomial(n_pos, np.full(n_pos, 1.0 / n_pos), size=b)  # (b, n_pos), data order
        cn = rng.multinomial(n_neg, np.full(n_neg, 1.0 / n_neg), size=b)
        wp = np.zeros((b, y.size))
        wn = np.zeros((b, y.size))
        wp[:, pos_sorted] = cp[:, pos_rank]
        wn[:, neg_sorted] = cn[:, neg_rank]
        gp = np.add.reduceat(wp, starts, axis=1)
        gn = np.add.reduceat(wn, starts, axis=1)
        below = np.cumsum(gn, axis=1) - gn  # negatives strictly below each tie group
        aucs[b0 : b0 + b] = (gp * (below + 0.5 * gn)).sum(axis=1) / (n_pos * n_neg)
    return aucs


def bootstrap_auc_ci(
    labels: Sequence[int],
    scores: Sequence[float],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the ROC AUC over stratified bootstrap replicates (:func:`bootstrap_aucs`).

    Parameters
    ----------
    labels, scores : sequence, shape (n,)
    n_boot : int
        Replicates.
    level : float
        Coverage of the interval.
    seed : int
        Seeds the resampling (the interval is reproducible).

    Returns
    -------
    (low, high) : tuple of float
        NaN, NaN when one class is absent.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    aucs = bootstrap_aucs(labels, scores, n_boot=n_boot, seed=seed)
    if aucs.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(aucs, [alpha, 1 - alpha])
    return float(lo), float(hi)


def harmonic_mean(values: Iterable[float]) -> float:
    """Harmonic mean (``scipy.stats.hmean``): the DCASE 2018 Task 3 combination of per-dataset AUCs.

    It is pulled towards the worst dataset, which rewards a detector that generalises to every dataset.

    Returns
    -------
    float
        NaN when ``values`` is empty or holds a NaN; 0 when a value is 0.
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0 or np.isnan(v).any():
        return float("nan")
    if (v < 0).any():
        raise ValueError("harmonic mean of negative values")
    from scipy.stats import hmean

    return float(hmean(v))

