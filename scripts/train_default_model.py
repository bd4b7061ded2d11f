#!/usr/bin/env python
"""Train the bundled default detector on the bootstrap set (``scripts/build_bootstrap_set.py`` first).

1. The bootstrap set's source-file folds are loaded as Bird Audio Detection datasets.
2. Each candidate (a detector kind and its options, semi-supervised or not) is validated leave-source-out:
   for each fold, a fresh detector is trained on the other folds' clips (and, when semi-supervised, on the
   unlabeled clips mixed from those folds' sources) and scores the held-out fold, whose source files it has
   never heard. Reported: each fold's AUC, their harmonic mean, and the pooled out-of-fold AUC with a
   bootstrap 95 % interval; the full cross-validation report goes to ``WORKDIR/validation/<grid>/<candidate>/``.
3. The candidate with the best pooled out-of-fold AUC is trained on every fold and written to
   ``data/default_model.pt``, with ``data/default_model.json`` saying what it was trained on and how it
   validated. The features are the pipeline's default configuration (checked), so the model loads wherever
   the defaults are used.

To compare sampling grids on the same clips and folds, validate on the other grid without training
(``--grid kymatio --validate-only --output FILE.json``), then record that file in the bundled model's
description (``--add-comparison FILE.json``: nothing is computed, the weights are untouched).

Example::

    python scripts/build_bootstrap_set.py --clips-per-fold 120 --unlabeled-per-fold 40
    OMP_NUM_THREADS=1 python scripts/train_default_model.py --workers 2
    OMP_NUM_THREADS=1 python scripts/train_default_model.py --workers 2 --grid kymatio --validate-only --output /tmp/kymatio.json
    python scripts/train_default_model.py --add-comparison /tmp/kymatio.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from scatterbird.data.bootstrap import DEFAULT_WORKDIR
from scatterbird.data.default_model import DEFAULT_MODEL_INFO, DEFAULT_MODEL_PATH
from scatterbird.pipeline.config import GRIDS, FeatureConfig
from scatterbird.pipeline.evaluate.metrics import bootstrap_aucs, roc_auc

#: Candidates: name -> (kind, params, semi-supervised). Modest sizes: they train on two shared CPU cores.
CANDIDATES: dict[str, tuple[str, dict, bool]] = {
    # plain cross-entropy: no reconstruction, no entropy term, no unlabeled clips
    "inversion-supervised": ("inversion", {"recon_scale": 0.0, "entropy_weight": 0.0, "max_epochs": 20, "patience": 5}, False),
    # the full semi-supervised inversion loss (spec weights), with unlabeled clips of the training folds
    "inversion-semi": ("inversion", {"max_epochs": 20, "patience": 5}, True),
    # reconstruction as a regulariser only, labelled clips only
    "inversion-recon": ("inversion", {"entropy_weight": 0.0, "max_epochs": 20, "patience": 5}, False),
}


#: Validated when no --candidate is given (each costs four trainings).
DEFAULT_CANDIDATES = ("inversion-supervised", "inversion-semi")


def _load(workdir: Path):
    from scatterbird.pipeline.datasets import load_dataset

    info = json.loads((workdir / "build.json").read_text())
    folds = [load_dataset(d) for d in info["fold_dirs"]]
    unl = [load_dataset(audio=Path(d) / "wav", labels=Path(d) / f"{Path(d).name}.csv") for d in info.get("unlabeled_dirs", [])]
    for d in unl:
        d.name = "unlabeled-" + d.name
    return info, folds, unl


def _paired_difference(mine: dict, theirs: dict, n_boot: int = 1000, seed: int = 0) -> dict:
    """Pooled out-of-fold AUC of ``mine`` minus ``theirs`` on the same clips, with a paired bootstrap interval.

    Both runs' ``scores.csv`` (next to their reports) are matched clip by clip; the same seed over the same
    labels in the same order draws the same replicates (``bootstrap_aucs``), so each replicate's difference
    is paired.
    """
    import csv

    def scores(run: dict) -> dict[tuple[str, str], tuple[int, float]]:
        with open(Path(run["report"]).parent / "scores.csv", newline="") as f:
            return {(r["dataset"], r["itemid"]): (int(r["hasbird"]), float(r["prob"])) for r in csv.DictReader(f) if not r["error"]}

    a, b = scores(mine), scores(theirs)
    keys = sorted(set(a) & set(b))
    y = [a[k][0] for k in keys]
    sa, sb = [a[k][1] for k in keys], [b[k][1] for k in keys]
    diff = bootstrap_aucs(y, sa, n_boot=n_boot, seed=seed) - bootstrap_aucs(y, sb, n_boot=n_boot, seed=seed)
    lo, hi = (float(v) for v in np.quantile(diff, [0.025, 0.975]))
    return {"n": len(keys), "delta_roc_auc": round(roc_auc(y, sa) - roc_auc(y, sb), 6), "delta_ci95": [round(lo, 6), round(hi, 6)]}


def _add_comparison(description_path: Path, comparison_path: Path) -> None:
    """Record a ``--validate-only`` run (another grid, same clips and folds) in a model's description, with
    each common candidate's pooled AUC difference (this model's grid minus the other)."""
    description = json.loads(description_path.read_text())
    other = json.loads(comparison_path.read_text())
    mine, theirs = description["trained_on"], other["trained_on"]
    if (mine["packages"], mine["folds"], mine["clips_per_fold"], mine["mix"]) != (
        theirs["packages"], theirs["folds"], theirs["clips_per_fold"], theirs["mix"]
    ):
        raise SystemExit(f"{comparison_path} was validated on another bootstrap set than {description_path}")
    record = {k: other[k] for k in ("feature_config", "feature_config_hash", "candidates", "written")}
    mine_runs = description["validation"]["candidates"]
    record["paired_difference"] = {
        name: _paired_difference(mine_runs[name], run) for name, run in other["candidates"].items() if name in mine_runs
    }
    description["validation"].setdefault("other_grids", {})[other["feature_config"]["grid"]] = record
    description_path.write_text(json.dumps(description, indent=2) + "\n")
    print(f"{description_path}: validation on grid {other['feature_config']['grid']!r} recorded", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="the bootstrap set's folder (default %(default)s)")
    p.add_argument("--candidate", action="append", choices=sorted(CANDIDATES),
                   help=f"candidates to validate (repeatable; default: {', '.join(DEFAULT_CANDIDATES)})")
    p.add_argument("--final", choices=sorted(CANDIDATES), help="skip the choice: train this candidate (validation still runs unless --no-validate)")
    p.add_argument("--no-validate", action="store_true", help="train --final without validating (its JSON then has no AUC)")
    p.add_argument("--workers", type=int, default=1, help="processes for the features (default %(default)s)")
    p.add_argument("--output", default=str(DEFAULT_MODEL_PATH),
                   help="model file, or the results' JSON with --validate-only (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", choices=GRIDS, default=FeatureConfig().grid,
                   help="sampling grid of the features (default %(default)s, the pipeline's)")
    p.add_argument("--validate-only", action="store_true", help="validate the candidates, write their results to --output, train no model")
    p.add_argument("--add-comparison", metavar="JSON",
                   help="record a --validate-only result in the description of --output's model, and stop")
    args = p.parse_args(argv)
    if args.add_comparison:
        out = Path(args.output)
        _add_comparison(DEFAULT_MODEL_INFO if out == DEFAULT_MODEL_PATH else out.with_suffix(".json"), Path(args.add_comparison))
        return 0
    if args.validate_only and (args.no_validate or Path(args.output).suffix != ".json"):
        p.error("--validate-only writes the validation to a .json --output and cannot be combined with --no-validate")
    if not args.validate_only and args.grid != FeatureConfig().grid and Path(args.output).resolve() == DEFAULT_MODEL_PATH.resolve():
        p.error("the bundled model must use the pipeline's default features: give --output for another grid")

    import torch

    from scatterbird.models.registry import build_detector
    from scatterbird.pipeline.clip_features import compute_sequences
    from scatterbird.pipeline.evaluate.run import crossval

    torch.set_num_threads(1)
    work = Path(args.workdir).expanduser()
    # the pipeline's defaults (the bundled model must load wherever they are used), on the chosen grid
    config = FeatureConfig(grid=args.grid)
    info, folds, unl = _load(work)
    cache = work / "features"
    print(f"feature config {config.hash}: {config.to_json()}", file=sys.stderr)
    # features once, into the cache the cross-validation and the final fit read back
    unl_seqs: dict[str, list] = {}
    for fold, u in zip(folds, unl):
        seqs, _ = compute_sequences(u.clips, config, cache_dir=cache, workers=args.workers, desc=u.name)
        unl_seqs[fold.name] = [s for s in seqs if s is not None]
    for fold in folds:
        compute_sequences(fold.clips, config, cache_dir=cache, workers=args.workers, desc=fold.name)

    results: dict[str, dict] = {}
    names = args.candidate or ([args.final] if args.final else list(DEFAULT_CANDIDATES))
    if not args.no_validate:
        for name in names:
            kind, params, semi = CANDIDATES[name]
            t0 = time.perf_counter()
            run = crossval(
                folds, lambda kind=kind, params=params: build_detector(kind, params, args.seed),
                work / "validation" / config.grid / name, config=config,
                semi_supervised=False, unlabeled_by_dataset=unl_seqs if semi else None, cache_dir=cache,
                n_boot=1000, seed=args.seed, n_worst=4,
            )
            pooled = run.pooled()
            results[name] = {
                "kind": kind, "params": params, "semi_supervised": semi,
                "folds": {r.metrics.name: round(float(r.metrics.auc), 4) for r in run.results},
                "harmonic_mean_auc": round(float(run.harmonic_mean_auc), 4),
                "pooled_out_of_fold": pooled,
                "report": str(work / "validation" / config.grid / name / "report.html"),
                "seconds": round(time.perf_counter() - t0),
            }
            print(f"\n{name}:\n{run.table()}\npooled out-of-fold AUC {pooled['roc_auc']:.3f} "
                  f"[{pooled['roc_auc_ci95'][0]:.3f}, {pooled['roc_auc_ci95'][1]:.3f}]\n", flush=True)
    if args.validate_only:
        out = Path(args.output)
        out.write_text(json.dumps({
            "trained_on": {k: info[k] for k in ("packages", "folds", "clips_per_fold", "mix")},
            "feature_config": config.to_dict(), "feature_config_hash": config.hash, "candidates": results,
            "written": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }, indent=2) + "\n")
        print(f"validation on grid {config.grid!r} (config {config.hash}) -> {out}")
        return 0
    best = args.final or max(results, key=lambda n: results[n]["pooled_out_of_fold"]["roc_auc"])
    kind, params, semi = CANDIDATES[best]

    # the final model: every fold's clips (and unlabeled clips when semi-supervised)
    xs, ys = [], []
    for fold in folds:
        seqs, _ = compute_sequences(fold.clips, config, cache_dir=cache, progress=False)
        for c, s in zip(fold.clips, seqs):
            if s is not None:
                xs.append(s)
                ys.append(c.label)
    unlabeled = [s for v in unl_seqs.values() for s in v] if semi else None
    det = build_detector(kind, params, args.seed)
    t0 = time.perf_counter()
    det.fit(xs, np.array(ys), unlabeled=unlabeled)
    det.feature_config = config
    fit_s = time.perf_counter() - t0
    out = Path(args.output)
    det.save(out)
    size = out.stat().st_size
    from scatterbird.models.registry import load_detector

    loaded = load_detector(out, config)  # the hash users will see is the loaded model's (dtypes may differ in memory)
    debs = ", ".join(f"{name} ({v['deb']})" for name, v in info["packages"].items())
    description = {
        "what": "scatterbird's bundled default bird detector",
        "trained_on": {
            "summary": (
                f"{len(xs)} synthetic 10 s clips ({int(np.sum(ys))} with birds) mixed from real recordings in the Debian "
                f"packages {debs}: "
                f"{sum(len(v) for v in info['fold_files'].values())} source files listed in data/bootstrap_sources.csv "
                "(bird calls and bird soundscapes; other animals, music, vehicles, weather, machines), placed at random "
                "SNRs over synthetic and recorded backgrounds, plus a share of synthetic bird calls (data/synthetic.py)"
                + (f"; {len(unlabeled)} unlabeled clips of the same sources" if unlabeled else "")
            ),
            "packages": info["packages"],
            "folds": info["folds"],
            "clips_per_fold": info["clips_per_fold"],
            "unlabeled_per_fold": info.get("unlabeled_per_fold", 0),
            "mix": info["mix"],
            "recipe": "scripts/build_bootstrap_set.py (data/bootstrap.py), then scripts/train_default_model.py",
        },
        "kind": kind,
        "candidate": best,
        "params": det.get_params(),
        "semi_supervised": semi,
        "feature_config": config.to_dict(),
        "feature_config_hash": config.hash,
        "model_hash": loaded.model_hash,  # of the detector code at training time (new hyperparameters change it)
        "file_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),  # ties this description to the weights
        "file_bytes": size,
        "fit_seconds": round(fit_s),
        "validation": {
            "protocol": (
                f"leave-source-out: {info['folds']} folds of source files (all cuts of a file in one fold); each fold's "
                "clips mixed only from its own sources; train on the other folds, score the held-out one"
            ),
            "candidates": results,
            "chosen": best,
            "roc_auc_pooled_out_of_fold": results.get(best, {}).get("pooled_out_of_fold"),
            "roc_auc_harmonic_mean_of_folds": results.get(best, {}).get("harmonic_mean_auc"),
        },
        "caveat": (
            "Trained on sound effects mixed into synthetic backgrounds, not on field recordings: a starting point "
            "and a demonstration. For a real survey, label a few hundred clips of your own recordings and train "
            "with `scatterbird train`."
        ),
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    info_path = DEFAULT_MODEL_INFO if out == DEFAULT_MODEL_PATH else out.with_suffix(".json")
    info_path.write_text(json.dumps(description, indent=2) + "\n")
    print(f"default model: {best} ({kind}) on {len(xs)} clips in {fit_s:.0f} s -> {out} ({size / 1e6:.2f} MB), "
          f"config {config.hash}, model {loaded.model_hash}; description {info_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
