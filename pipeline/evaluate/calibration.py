"""How well a detector's probabilities of bird match how often there is a bird: reliability bins, the
expected calibration error, and temperature scaling.

A detector is calibrated when, among the clips it scores about ``p``, a fraction of about ``p`` has birds.
The reliability bins group clips by score and compare the mean score of each bin with the fraction of bird
clips in it; the expected calibration error (ECE) weighs their gaps by the bins' sizes. A temperature
``T`` (``sigmoid(logit(p) / T)``) fitted on held-out clips is the usual one-parameter fix for an over- or
under-confident model; it keeps the order of the scores, so the ROC AUC is unchanged.

The temperature functions live with the detector contract (:mod:`models.base`), which applies a model's
temperature to every score it makes and cannot import from the pipeline's later stages; they are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scatterbird.models.base import apply_temperature, fit_temperature
from scatterbird.pipeline.evaluate.metrics import _check_scores

__all__ = ["ECE_BINS", "Reliability", "apply_temperature", "expected_calibration_error", "fit_temperature",
           "reliability_bins"]

#: Bins of the reliability diagram and of the ECE in the reports (equal width over [0, 1]).
ECE_BINS = 10

STRATEGIES = ("uniform", "quantile")


@dataclass(frozen=True)
class Reliability:
    """Per bin of predicted probability: how many clips, their mean score, the fraction with birds.

    Attributes
    ----------
    edges : ndarray, shape (n_bins + 1,)
        Bin ``b`` holds the scores in ``[edges[b], edges[b + 1])``; the last bin also holds its upper edge.
    count : ndarray of int, shape (n_bins,)
    mean_predicted : ndarray, shape (n_bins,)
        Mean score of the bin's clips; NaN for an empty bin.
    observed : ndarray, shape (n_bins,)
        Fraction of the bin's clips with birds; NaN for an empty bin.
    """

    edges: np.ndarray
    count: np.ndarray
    mean_predicted: np.ndarray
    observed: np.ndarray

    @property
    def n(self) -> int:
        """Clips over all bins."""
        return int(self.count.sum())


def _check(labels: Sequence[int], probs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int64 0/1 and probabilities as float64 in [0, 1], both 1-D of one length (else ValueError)."""
    y, p = _check_scores(labels, probs)  # the metrics' checks, plus the range of a probability
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probabilities must be in [0, 1]")
    return y, p


def reliability_bins(
    labels: Sequence[int], probs: Sequence[float], n_bins: int = ECE_BINS, strategy: str = "uniform"
) -> Reliability:
    """Group clips by predicted probability of bird and compare each group's mean score with its bird fraction.

    Parameters
    ----------
    labels : sequence of int, 0/1, shape (n,)
    probs : sequence of float in [0, 1], shape (n,)
    n_bins : int
        Bins (at least 1).
    strategy : {"uniform", "quantile"}
        ``"uniform"``: equal-width bins over [0, 1]; ``"quantile"``: edges at the quantiles of ``probs``
        (bins of about equal counts; tied quantiles merge, so there may be fewer bins), with the outer edges
        at 0 and 1.

    Returns
    -------
    Reliability
        Its counts sum to ``n``.

    Raises
    ------
    ValueError
        On bad labels or probabilities, ``n_bins < 1`` or an unknown strategy.
    """
    y, p = _check(labels, probs)
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if strategy == "uniform":
        # k / n_bins exactly (np.linspace gives 0.30000000000000004 for 3/10): a score of 0.3 opens bin 3
        edges = np.arange(int(n_bins) + 1) / int(n_bins)
    elif strategy == "quantile":
        inner = np.quantile(p, np.linspace(0.0, 1.0, int(n_bins) + 1)[1:-1]) if p.size else np.zeros(0)
        edges = np.unique(np.concatenate([[0.0], inner, [1.0]]))
    else:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    k = edges.size - 1
    # bins are [lo, hi) by the edges as returned; a score of exactly 1 joins the last bin
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, k - 1)
    count = np.bincount(idx, minlength=k)
    sum_p = np.bincount(idx, weights=p, minlength=k)
    sum_y = np.bincount(idx, weights=y, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins: NaN
        mean_predicted = np.where(count > 0, sum_p / count, np.nan)
        observed = np.where(count > 0, sum_y / count, np.nan)
    return Reliability(edges, count, mean_predicted, observed)


def expected_calibration_error(labels: Sequence[int], probs: Sequence[float], n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of the probability of bird over equal-width bins.

    ``ECE = sum_b (n_b / N) * |acc_b - conf_b|``, over the ``n_bins`` equal-width bins of [0, 1] of
    :func:`reliability_bins`: ``n_b`` clips fall in bin ``b``, ``conf_b`` is their mean probability of bird
    and ``acc_b`` the fraction of them with birds. This is the binary (positive-class) ECE, not the top-label
    ECE of multi-class papers, which would bin ``max(p, 1 - p)`` instead.

    Parameters
    ----------
    labels : sequence of int, 0/1, shape (n,)
    probs : sequence of float in [0, 1], shape (n,)
    n_bins : int

    Returns
    -------
    float
        In [0, 1]; NaN when there are no clips.

    Examples
    --------
    >>> expected_calibration_error([0, 1, 1, 1], [0.25, 0.25, 0.75, 0.75], n_bins=2)
    0.25
    """
    r = reliability_bins(labels, probs, n_bins, "uniform")
    if r.n == 0:
        return float("nan")
    filled = r.count > 0
    gaps = np.abs(r.observed[filled] - r.mean_predicted[filled])
    return float(np.sum(r.count[filled] * gaps) / r.n)
