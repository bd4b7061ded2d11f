"""What an evaluation or cross-validation run produced: per-dataset scores and metrics, and the run's summary.

Filled by :mod:`pipeline.evaluate.run`, written by :mod:`pipeline.evaluate.outputs` and
:mod:`pipeline.evaluate.report`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.datasets import Dataset
from scatterbird.pipeline.evaluate.calibration import ECE_BINS, expected_calibration_error
from scatterbird.pipeline.evaluate.metrics import bootstrap_auc_ci, harmonic_mean, roc_auc

#: Below this many scored clips in either class, an AUC and its bootstrap interval are flagged: with a
#: handful of clips per class the AUC takes a few coarse values and the resampled interval collapses.
MIN_CLIPS_PER_CLASS = 10

#: The probability ``predictions.csv`` gives a clip that could not be read: no evidence either way.
DEFAULT_PROB = 0.5
#: The file listing the clips given :data:`DEFAULT_PROB` (written only when there are some).
DEFAULTED_FILE = "predictions_defaulted.csv"


@dataclass
class DatasetMetrics:
    """The scores of one dataset and their summary."""

    name: str
    n: int  # clips found
    n_scored: int
    positives: int | None
    auc: float | None
    ci: tuple[float, float] | None
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (itemid, path, reason)
    ece: float | None = None  # expected calibration error over ECE_BINS equal-width bins (see calibration.py)

    @property
    def warning(self) -> str | None:
        """A small-sample warning when the AUC rests on fewer than :data:`MIN_CLIPS_PER_CLASS` clips of a class."""
        if self.auc is None or self.positives is None:
            return None
        neg = self.n_scored - self.positives
        if min(self.positives, neg) >= MIN_CLIPS_PER_CLASS:
            return None
        return (
            f"small sample: {self.positives} clip(s) with birds and {neg} without; below {MIN_CLIPS_PER_CLASS} "
            "per class the AUC and its bootstrap interval are not meaningful"
        )

    def to_json(self) -> dict[str, Any]:
        """As in ``metrics.json`` (rounded; NaN as None)."""

        def num(x: float | None) -> float | None:
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)

        return {
            "n": self.n,
            "n_scored": self.n_scored,
            "n_failed": len(self.failed),
            "positives": self.positives,
            "roc_auc": num(self.auc),
            "roc_auc_ci95": None if self.ci is None else [num(self.ci[0]), num(self.ci[1])],
            "ece": num(self.ece),
            "ece_bins": ECE_BINS,
            "small_sample": self.warning is not None,
            "warning": self.warning,
        }


@dataclass
class DatasetResult:
    """One dataset's clips, their scores and metrics in a run (scores NaN where a clip failed)."""

    dataset: Dataset
    scores: np.ndarray
    reasons: list[str | None]
    metrics: DatasetMetrics
    train_on: list[str] = field(default_factory=list)  # crossval: the datasets the model was trained on

    @property
    def ok(self) -> np.ndarray:
        """True for each clip that was scored."""
        return np.array([r is None for r in self.reasons], dtype=bool)


@dataclass
class RunResult:
    """Everything an evaluation or cross-validation run produced, as written to its output folder."""

    kind: str  # "evaluate" or "crossval"
    results: list[DatasetResult]
    config: FeatureConfig
    model: dict[str, Any]
    harmonic_mean_auc: float | None
    outdir: Path | None = None
    files: dict[str, str] = field(default_factory=dict)  # role -> file name inside outdir
    bootstrap: dict[str, Any] = field(default_factory=dict)
    # pooled() by (replicates, seed): metrics.json and the report both show it, and its bootstrap is not free
    _pooled: dict[tuple[int, int], dict[str, Any] | None] = field(default_factory=dict, init=False, repr=False,
                                                                   compare=False)

    def pooled_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Labels and scores of every labelled, scored clip of the run, datasets in order."""
        ys, ss = [], []
        for r in self.results:
            if r.dataset.has_labels:
                ys.append(r.dataset.labels[r.ok])
                ss.append(r.scores[r.ok])
        if not ys:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(ys).astype(np.int64), np.concatenate(ss)

    def pooled(self, n_boot: int | None = None) -> dict[str, Any] | None:
        """ROC AUC (and interval) and ECE of every labelled, scored clip of the run together.

        For a cross-validation over folds of one population (e.g. source-file folds) this is the usual
        out-of-fold AUC; for challenge datasets the official score is the harmonic mean instead.
        None when the pooled clips lack a class.
        """
        key = (int(self.bootstrap.get("replicates", 1000) if n_boot is None else n_boot), self.bootstrap.get("seed", 0))
        if key not in self._pooled:
            self._pooled[key] = self._compute_pooled(*key)
        found = self._pooled[key]
        return None if found is None else dict(found)  # a caller's changes must not reach the cache

    def _compute_pooled(self, nb: int, seed: int) -> dict[str, Any] | None:
        y, s = self.pooled_scores()
        if not 0 < y.sum() < y.size:
            return None
        lo, hi = bootstrap_auc_ci(y, s, n_boot=nb, seed=seed) if nb else (float("nan"),) * 2
        ece = _ece(y, s)
        return {"n": int(y.size), "positives": int(y.sum()), "roc_auc": round(roc_auc(y, s), 6),
                "roc_auc_ci95": None if math.isnan(lo) else [round(lo, 6), round(hi, 6)],
                "ece": None if ece is None else round(ece, 6), "ece_bins": ECE_BINS}

    @property
    def n_failed(self) -> int:
        """Clips that could not be scored, over all datasets."""
        return sum(len(r.metrics.failed) for r in self.results)

    def table(self) -> str:
        """The metrics as a plain-text table (what the CLI prints)."""
        head = f"{'dataset':<22} {'n':>7} {'pos':>7} {'AUC':>7}  {'95% interval':<16} {'ECE':>6}"
        if self.kind == "crossval":
            head += "      trained on"
        lines = [head, "-" * len(head)]
        for r in self.results:
            m = r.metrics
            auc = "—" if m.auc is None or math.isnan(m.auc) else f"{m.auc:.3f}"
            ci = "" if m.ci is None or math.isnan(m.ci[0]) else f"[{m.ci[0]:.3f}, {m.ci[1]:.3f}]"
            pos = "hidden" if m.positives is None else str(m.positives)
            if m.warning:
                auc += "*"
            ece = "—" if m.ece is None else f"{m.ece:.3f}"
            line = f"{m.name:<22} {m.n_scored:>7} {pos:>7} {auc:>7}  {ci:<16} {ece:>6}"
            if self.kind == "crossval":
                line += " " + " + ".join(r.train_on)
            lines.append(line.rstrip())
        hm = "—" if self.harmonic_mean_auc is None else f"{self.harmonic_mean_auc:.3f}"
        lines.append(f"{'harmonic mean AUC':<22} {'':>7} {'':>7} {hm:>7}")
        lines += [f"* {r.metrics.name}: {r.metrics.warning}" for r in self.results if r.metrics.warning]
        return "\n".join(lines)


def metrics_for(data: Dataset, scores: np.ndarray, reasons: list[str | None], n_boot: int, seed: int) -> DatasetMetrics:
    """A dataset's metrics from its clips' scores (``reasons[i]`` not None: clip ``i`` failed)."""
    ok = np.array([r is None for r in reasons], dtype=bool)
    failed = [(c.itemid, str(c.path), r) for c, r in zip(data.clips, reasons) if r is not None]
    auc = ci = ece = None
    positives = None
    if data.has_labels:
        y = data.labels[ok]
        positives = int(y.sum())
        if y.size and 0 < positives < y.size:
            auc = roc_auc(y, scores[ok])
            ci = bootstrap_auc_ci(y, scores[ok], n_boot=n_boot, seed=seed) if n_boot > 0 else None
        ece = _ece(y, scores[ok])
    return DatasetMetrics(data.name, len(data.clips), int(ok.sum()), positives, auc, ci, failed, ece)


def _ece(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """The ECE of probabilities of bird; None without clips, or for scores that are not probabilities."""
    if labels.size == 0 or not np.all((scores >= 0) & (scores <= 1)):
        return None
    return expected_calibration_error(labels, scores, ECE_BINS)


def harmonic_mean_auc(results: Sequence[DatasetResult]) -> float | None:
    """Harmonic mean of the datasets' AUCs (those that have one); None when none has."""
    aucs = [r.metrics.auc for r in results if r.metrics.auc is not None and not math.isnan(r.metrics.auc)]
    return harmonic_mean(aucs) if aucs else None


def worst_clips(result: DatasetResult, n: int) -> tuple[list[int], list[int]]:
    """The clips the report shows as the worst of each class, by rank.

    Worst false positives: the ``n`` highest-scored clips without birds; worst false negatives: the ``n``
    lowest-scored clips with birds. Both lists are defined by rank within their class, never by a decision
    threshold (the AUC has none): a listed clip need not be misclassified at 0.5, and a clip not listed may
    be. Ties keep the label file's order; unscored clips are left out.

    Returns
    -------
    (fp, fn) : two lists of indices into ``result.dataset.clips``
    """
    if not result.dataset.has_labels or n <= 0:
        return [], []
    y = result.dataset.labels
    ok = result.ok
    neg = np.flatnonzero(ok & (y == 0))
    pos = np.flatnonzero(ok & (y == 1))
    s = result.scores
    fp = neg[np.argsort(-s[neg], kind="mergesort")][:n]
    fn = pos[np.argsort(s[pos], kind="mergesort")][:n]
    return fp.tolist(), fn.tolist()
