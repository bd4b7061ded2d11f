"""The files of an evaluation or cross-validation run: ``metrics.json``, ``predictions.csv``, ``scores.csv``.

``predictions.csv`` (``itemid,prob``) is the challenge's submission form, with a row for every clip: a clip
that could not be read gets :data:`~pipeline.evaluate.results.DEFAULT_PROB` and is listed in ``predictions_defaulted.csv``
(``dataset,itemid,prob,reason``), so a submission is complete and its guesses are known. ``scores.csv`` has
every clip with its dataset, label, score and failure reason. The HTML report is drawn by
:mod:`pipeline.evaluate.report`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from scatterbird.pipeline.evaluate import report
from scatterbird.pipeline.evaluate.results import DEFAULT_PROB, DEFAULTED_FILE, RunResult
from scatterbird.pipeline.output_files import atomic_open


def metrics_json(run: RunResult) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    out: dict[str, Any] = {
        "kind": run.kind,
        "model": run.model,
        "feature_config": run.config.to_dict(),
        "feature_config_hash": run.config.hash,
        "bootstrap": run.bootstrap,
        "datasets": {},
        "harmonic_mean_auc": None if run.harmonic_mean_auc is None else round(run.harmonic_mean_auc, 6),
        "harmonic_mean_over": [r.metrics.name for r in run.results if r.metrics.auc is not None and not math.isnan(r.metrics.auc)],
        "failed": [],
    }
    if run.kind == "crossval":
        out["pooled_out_of_fold"] = run.pooled()
    for r in run.results:
        d = r.metrics.to_json()
        d["labels"] = str(r.dataset.labels_path)
        d["audio"] = str(r.dataset.audio_dir)
        d["missing"] = len(r.dataset.missing)
        d["bad_rows"] = len(r.dataset.bad_rows)
        d["problems"] = r.dataset.problems()
        if run.kind == "crossval":
            d["trained_on"] = r.train_on
        out["datasets"][r.metrics.name] = d
        out["failed"] += [
            {"dataset": r.metrics.name, "itemid": i, "path": p, "reason": why, "prob_in_predictions": DEFAULT_PROB}
            for i, p, why in r.metrics.failed
        ]
    return out


def write_outputs(run: RunResult, outdir: str | os.PathLike, worst: Mapping[str, Mapping[str, list]]) -> RunResult:
    """Write ``metrics.json``, ``predictions.csv``, ``scores.csv`` and the HTML report with its images.

    Parameters
    ----------
    run : RunResult
    outdir : path
        Created if needed; ``run.outdir`` and ``run.files`` are set.
    worst : mapping
        Per dataset, ``{"fp": [...], "fn": [...]}`` lists of ``(clip, score, scattergram or None)`` for the
        report (see :func:`pipeline.evaluate.run.worst_scattergrams`).
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    run.outdir = out
    with atomic_open(out / "metrics.json") as f:
        json.dump(metrics_json(run), f, indent=2)
    # The challenge's submission form: every clip, all datasets, in label-file order; a submission with
    # rows missing is refused, so an unreadable clip gets the uninformative default and is listed apart.
    defaulted = []
    with atomic_open(out / "predictions.csv", newline="") as f:
        w = csv.writer(f)
        w.writerow(["itemid", "prob"])
        for r in run.results:
            for c, s, why in zip(r.dataset.clips, r.scores, r.reasons):
                if why is None:
                    w.writerow([c.itemid, f"{s:.6f}"])
                else:
                    w.writerow([c.itemid, f"{DEFAULT_PROB:.6f}"])
                    defaulted.append([r.metrics.name, c.itemid, f"{DEFAULT_PROB:.6f}", why])
    if defaulted:
        with atomic_open(out / DEFAULTED_FILE, newline="") as f:
            w = csv.writer(f)
            w.writerow(["dataset", "itemid", "prob", "reason"])
            w.writerows(defaulted)
        run.files["defaulted"] = DEFAULTED_FILE
        print(
            f"{run.kind}: warning: {len(defaulted)} clip(s) could not be read; predictions.csv gives them prob "
            f"{DEFAULT_PROB} (listed in {out / DEFAULTED_FILE})",
            file=sys.stderr,
        )
    elif (out / DEFAULTED_FILE).exists():
        (out / DEFAULTED_FILE).unlink()  # from an earlier run in the same folder: it would be wrong now
    with atomic_open(out / "scores.csv", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "itemid", "hasbird", "prob", "path", "error"])
        for r in run.results:
            for c, s, why in zip(r.dataset.clips, r.scores, r.reasons):
                w.writerow([r.metrics.name, c.itemid, "" if c.label is None else c.label, "" if why else f"{s:.6f}", str(c.path), why or ""])
    run.files.update({"metrics": "metrics.json", "predictions": "predictions.csv", "scores": "scores.csv"})
    report.write_report(run, out, worst)
    return run
