#!/usr/bin/env python
"""Validate detection recipes on the real-sound corpus (``scripts/build_corpus.py`` first), leave-package-out.

For each recipe (features, detector, training data) and each fold of a scheme, a fresh detector is trained on
the other folds' labelled clips (and, when semi-supervised, on the unlabelled clips mixed from those folds'
sources) and scores the held-out fold. In the ``package`` scheme a fold's sources never share a Debian package
with the training folds; in the ``source`` scheme they never share a source file. Reported per recipe: each
fold's ROC AUC (with its bird package, so a fold without real birds is visible), the pooled out-of-fold AUC with
a bootstrap 95 % interval, the expected calibration error, and the rate of clips scored >= ``--min-conf`` in each
clip category (false positives for the no-bird categories, detections for the bird ones).

Features are computed once and cached (scattering: the pipeline's feature cache under the corpus folder, by
feature configuration; log-mel: its own cache). Time pooling to a recipe's ``pool_s`` is applied to the cached
native-rate sequences with :func:`pipeline.detect.windows.pool_sequence`, exactly as the pipeline pools them.
Each recipe's result is saved to ``WORKDIR/validation/<scheme>/<recipe>.json`` and reused on a rerun unless
``--force``; the table of every saved result is printed (markdown) and written to ``--table``.

Examples::

    OMP_NUM_THREADS=1 python scripts/validate_detection.py --recipe semi-none --recipe logmel-semi --workers 2
    python scripts/validate_detection.py --table-only --table validation.md
    python scripts/validate_detection.py --recipe semi-none --adapt   # adapt rows: held-out audio given unlabelled
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scatterbird.data.corpus import DEFAULT_WORKDIR, load_build
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.evaluate.calibration import expected_calibration_error
from scatterbird.pipeline.evaluate.metrics import bootstrap_auc_ci, roc_auc
from scatterbird.pipeline.evaluate.run import score_sequences

#: A copy of the model bundled before this corpus (data/default_model.pt of issue 15), for the "previous-model" row.
PREVIOUS_MODEL = Path.home() / ".cache" / "scatterbird" / "previous_default_model.pt"

#: Bird categories of recipe.csv (the rest are no-bird categories).
BIRD_CATEGORIES = ("bird_call", "bird_soundscape", "synthetic_bird")


@dataclass(frozen=True)
class Recipe:
    """One row of the validation table."""

    features: str = "scatter"  # "scatter" or "logmel"
    threshold: str = "none"  # scattering threshold mode
    pool_s: float = 0.1  # time pooling of the sequences (0: native frames)
    kind: str = "inversion"
    params: dict = field(default_factory=dict)
    semi: bool = True  # unlabelled clips of the training folds
    train_fraction: float = 1.0  # share of each training fold's labelled clips (data-size ablation)
    train_build: str = ""  # another corpus build (folder) whose same-numbered folds are trained on (ablations)
    previous_model: bool = False  # score the previously bundled model instead of training
    seed_offset: int = 0  # another initialisation and batch order of the same recipe
    members: tuple[str, ...] = ()  # an ensemble: the mean of these saved rows' scores (nothing trained)
    note: str = ""

    def key(self) -> str:
        """Identifies a saved result: what was computed (not the note). Fields added later count only when set,
        so older results stay valid."""
        fields = {k: v for k, v in self.__dict__.items()
                  if k != "note" and not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]


#: Recipe fields added after the first results were saved, with their defaults.
_LATER_FIELDS: dict[str, Any] = {"seed_offset": 0, "members": ()}


_NET = {"max_epochs": 12, "patience": 3, "warmup_epochs": 2}
RECIPES: dict[str, Recipe] = {
    "semi-none": Recipe(params=dict(_NET), note="inversion loss, semi-supervised, scattering without thresholding"),
    "semi-risk": Recipe(threshold="risk", params=dict(_NET), note="the same on risk-thresholded scattering"),
    "supervised-none": Recipe(params={**_NET, "recon_scale": 0.0, "entropy_weight": 0.0}, semi=False,
                              note="cross-entropy only, labelled clips only"),
    "semi-none-wide": Recipe(params={**_NET, "widths": [64, 64, 64]}, note="wider network (64-64-64)"),
    "semi-none-native": Recipe(pool_s=0.0, params=dict(_NET), note="native 23 ms frames, no pooling"),
    "logmel-semi": Recipe(features="logmel", params=dict(_NET), note="log-mel spectrogram (librosa), same detector"),
    "supervised-none-quarter-data": Recipe(params={**_NET, "recon_scale": 0.0, "entropy_weight": 0.0}, semi=False,
                                           train_fraction=300 / 1100,
                                           note="cross-entropy, 300 labelled clips per fold (the ablations' size)"),
    "supervised-none-no-augment": Recipe(params={**_NET, "recon_scale": 0.0, "entropy_weight": 0.0}, semi=False,
                                         train_build="corpus-noaug",
                                         note="as supervised-none-quarter-data, mixed without the new augmentations (same sources and folds)"),
    "supervised-none-no-hard-negatives": Recipe(params={**_NET, "recon_scale": 0.0, "entropy_weight": 0.0}, semi=False,
                                                train_build="corpus-nohard",
                                                note="as supervised-none-quarter-data, distractors drawn uniformly (no hard-negative weights)"),
    "supervised-none-no-synthetic-birds": Recipe(params={**_NET, "recon_scale": 0.0, "entropy_weight": 0.0},
                                                 semi=False, train_build="corpus-nosynth",
                                                 note="as supervised-none-quarter-data, no synthetic bird song in the positives"),
    "semi-none-b": Recipe(params=dict(_NET), seed_offset=1, note="semi-none, another seed (the seed-to-seed spread)"),
    "ensemble-semi-none-x2": Recipe(members=("semi-none", "semi-none-b"),
                                    note="mean score of semi-none and semi-none-b (two seeds)"),
    "ensemble-scatter-logmel": Recipe(members=("semi-none", "logmel-semi"),
                                      note="mean score of semi-none and logmel-semi (two front ends)"),
    "previous-model": Recipe(threshold="risk", pool_s=0.0, previous_model=True,
                             note="the previously bundled model (trained on qabcs-data and scorched3d-data), scored only"),
}


# -- data ------------------------------------------------------------------------------------------------------
@dataclass
class Fold:
    name: str
    bird_packages: list[str]
    clips: list  # pipeline.datasets.Clip
    categories: list[str]
    unlabelled: list  # Clip


def _categories(fold_dir: Path, itemids: list[str]) -> list[str]:
    path = fold_dir / "recipe.csv"
    cat: dict[str, str] = {}
    if path.is_file():
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                cat[r["itemid"]] = r.get("category") or ("bird" if r.get("bird") == "1" else "unknown")
    return [cat.get(i, "unknown") for i in itemids]


def load_folds(info: dict, scheme: str) -> list[Fold]:
    from scatterbird.pipeline.datasets import load_dataset

    folds = []
    for f in info["schemes"][scheme]["folds"]:
        ds = load_dataset(f["dir"])
        unl: list = []
        if f.get("unlabeled_dir") and Path(f["unlabeled_dir"]).is_dir():
            d = Path(f["unlabeled_dir"])
            unl = load_dataset(audio=d / "wav", labels=d / f"{d.name}.csv").clips
        folds.append(Fold(f["name"], list(f.get("bird_packages", [])), ds.clips,
                          _categories(Path(f["dir"]), [c.itemid for c in ds.clips]), unl))
    return folds


class Features:
    """Sequences of clips for a recipe's front end, from the caches (computed once)."""

    def __init__(self, work: Path, workers: int) -> None:
        self.work, self.workers = work, workers

    def native(self, recipe: Recipe, clips: list, desc: str) -> list[np.ndarray | None]:
        if recipe.features == "logmel":
            from scatterbird.pipeline.frontend.logmel import LogMelConfig, logmel_clips

            seqs, _ = logmel_clips([c.path for c in clips], LogMelConfig(), cache_dir=self.work / "features-logmel",
                                   workers=self.workers)
            return seqs
        from scatterbird.pipeline.clip_features import compute_sequences

        seqs, _ = compute_sequences(clips, FeatureConfig(threshold=recipe.threshold), cache_dir=self.work / "features",
                                    workers=self.workers, desc=desc)
        return seqs

    def get(self, recipe: Recipe, clips: list, desc: str) -> list[np.ndarray | None]:
        from scatterbird.pipeline.detect.windows import pool_sequence

        seqs = self.native(recipe, clips, desc)
        if recipe.pool_s <= 0:
            return seqs
        rate = self.frame_rate(recipe)
        return [None if s is None else pool_sequence(s, rate, recipe.pool_s) for s in seqs]

    @staticmethod
    def frame_rate(recipe: Recipe) -> float:
        if recipe.features == "logmel":
            from scatterbird.pipeline.frontend.logmel import LogMelConfig

            c = LogMelConfig()
            return c.sample_rate / c.hop
        c = FeatureConfig(threshold=recipe.threshold)
        return c.sample_rate / 2**c.J


# -- metrics -------------------------------------------------------------------------------------------------
def category_rates(categories: list[str], labels: np.ndarray, scores: np.ndarray, min_conf: float) -> dict:
    """Share of clips scored >= ``min_conf`` per clip category, with counts."""
    out: dict[str, dict] = {}
    for c in sorted(set(categories)):
        m = np.array([x == c for x in categories])
        out[c] = {"n": int(m.sum()), "rate": round(float(np.mean(scores[m] >= min_conf)), 4),
                  "bird": bool(labels[m].max() == 1)}
    return out


def summarise(per_fold: list[dict], min_conf: float, seed: int) -> dict:
    y = np.concatenate([np.asarray(f["labels"]) for f in per_fold])
    s = np.concatenate([np.asarray(f["scores"]) for f in per_fold])
    cats = [c for f in per_fold for c in f["categories"]]
    auc = roc_auc(y, s)
    lo, hi = bootstrap_auc_ci(y, s, n_boot=1000, seed=seed)
    return {
        "pooled_roc_auc": round(float(auc), 4), "pooled_ci95": [round(float(lo), 4), round(float(hi), 4)],
        "folds": [{"name": f["name"], "bird_packages": f["bird_packages"], "n": len(f["labels"]),
                   "n_bird": int(np.sum(f["labels"])), "roc_auc": round(roc_auc(f["labels"], f["scores"]), 4),
                   "fit_s": f.get("fit_s")} for f in per_fold],
        "ece": round(float(expected_calibration_error(y, s)), 4),
        "categories": category_rates(cats, y, s, min_conf),
        "n": len(y),
        "out_of_fold": {"labels": y.astype(int).tolist(), "scores": [round(float(v), 6) for v in s]},
    }


# -- one recipe ------------------------------------------------------------------------------------------------
def _usable(seqs: list, clips: list) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    keep = [i for i, s in enumerate(seqs) if s is not None]
    return [seqs[i] for i in keep], np.array([clips[i].label for i in keep]), keep


def run_recipe(name: str, recipe: Recipe, folds: list[Fold], train_folds: list[Fold], feats: Features, *,
               seed: int, min_conf: float, adapt: bool) -> dict:
    """Leave-one-fold-out over ``folds``; training clips come from ``train_folds`` (the same list unless the
    recipe trains on an ablation build whose folds hold the same sources)."""
    import torch

    from scatterbird.models.registry import build_detector, load_detector

    seed += recipe.seed_offset
    torch.manual_seed(seed)
    test = [feats.get(recipe, f.clips, f"{f.name} test") for f in folds]
    if recipe.previous_model:
        if not PREVIOUS_MODEL.is_file():  # never the bundled model: after --final it has heard every fold
            raise SystemExit(f"{PREVIOUS_MODEL} is missing: copy the previously bundled model there first")
        det = load_detector(PREVIOUS_MODEL)
        per_fold = []
        for f, seqs in zip(folds, test):
            xs, ys, keep = _usable(seqs, f.clips)
            per_fold.append({"name": f.name, "bird_packages": f.bird_packages, "labels": ys,
                             "scores": score_sequences(det, xs), "categories": [f.categories[i] for i in keep]})
        return summarise(per_fold, min_conf, seed) | {"model_hash": det.model_hash}
    train = test if train_folds is folds else [feats.get(recipe, f.clips, f"{f.name} train") for f in train_folds]
    unl = [feats.get(recipe, f.unlabelled, f"{f.name} unlabelled") if recipe.semi else [] for f in train_folds]
    rng = np.random.default_rng(seed)
    per_fold, adapted = [], []
    for k, f in enumerate(folds):
        xs: list[np.ndarray] = []
        ys: list[int] = []
        for j, g in enumerate(train_folds):
            if j == k:
                continue
            x, y, _ = _usable(train[j], g.clips)
            if recipe.train_fraction < 1:
                pick = np.sort(rng.permutation(len(x))[: round(recipe.train_fraction * len(x))])
                x, y = [x[i] for i in pick], y[pick]
            xs += x
            ys += y.tolist()
        u = [s for j, v in enumerate(unl) if j != k for s in v if s is not None] if recipe.semi else None
        det = build_detector(recipe.kind, {**recipe.params, "random_state": seed}, seed)
        t0 = time.perf_counter()
        det.fit(xs, np.array(ys), unlabeled=u)
        fit_s = round(time.perf_counter() - t0, 1)
        tx, ty, keep = _usable(test[k], f.clips)
        scores = score_sequences(det, tx)
        per_fold.append({"name": f.name, "bird_packages": f.bird_packages, "labels": ty, "scores": scores,
                         "categories": [f.categories[i] for i in keep], "fit_s": fit_s})
        print(f"  {name} fold {f.name} ({', '.join(f.bird_packages) or 'no real birds'}): "
              f"AUC {roc_auc(ty, scores):.3f}, fit {fit_s:.0f} s", file=sys.stderr, flush=True)
        if adapt:  # the held-out fold's own unlabelled audio given to `adapt`, scored again
            from scatterbird.pipeline.train.adapt import adapt_detector

            site = [s for s in feats.get(recipe, f.unlabelled, f"{f.name} site") if s is not None]
            tuned = adapt_detector(det, site, xs, np.array(ys), seed=seed)  # a copy: det is left as it was
            adapted.append({"name": f.name, "bird_packages": f.bird_packages, "labels": ty,
                            "scores": score_sequences(tuned, tx), "categories": per_fold[-1]["categories"]})
            print(f"  {name} fold {f.name} adapted: AUC {roc_auc(ty, adapted[-1]['scores']):.3f}", file=sys.stderr)
    out = summarise(per_fold, min_conf, seed)
    if adapt:
        out["adapted"] = summarise(adapted, min_conf, seed)
    return out


def ensemble_result(recipe: Recipe, folds: list[Fold], saved_dir: Path, *, min_conf: float, seed: int) -> dict:
    """The mean of saved rows' out-of-fold scores, clip by clip (the rows must cover the same clips)."""
    rows = []
    for m in recipe.members:
        path = saved_dir / f"{m}.json"
        if not path.is_file():
            raise SystemExit(f"ensemble member {m} has no saved result in {saved_dir}: run it first")
        rows.append(json.loads(path.read_text())["result"])
    labels = rows[0]["out_of_fold"]["labels"]
    if any(r["out_of_fold"]["labels"] != labels or [f["n"] for f in r["folds"]] != [f["n"] for f in rows[0]["folds"]]
           for r in rows):
        raise SystemExit(f"{recipe.members}: the rows were not scored on the same clips")
    mean = np.mean([np.asarray(r["out_of_fold"]["scores"]) for r in rows], axis=0)
    per_fold, at = [], 0
    for f, rec in zip(folds, rows[0]["folds"]):
        if rec["n"] != len(f.clips):
            raise SystemExit(f"{f.name}: {rec['n']} scored clips saved, {len(f.clips)} in the fold")
        per_fold.append({"name": f.name, "bird_packages": f.bird_packages, "labels": np.array(labels[at:at + rec["n"]]),
                         "scores": mean[at:at + rec["n"]], "categories": f.categories})
        at += rec["n"]
    return summarise(per_fold, min_conf, seed)


# -- the bundled model -------------------------------------------------------------------------------------------
def _train_on_all(recipe: Recipe, folds: list[Fold], feats: Features, seed: int) -> tuple[Any, tuple[int, int, int]]:
    """One recipe's detector trained on every fold (labelled, and unlabelled when semi-supervised), with the
    counts of labelled, bird and unlabelled clips it saw."""
    import torch

    from scatterbird.models.registry import build_detector

    seed += recipe.seed_offset
    torch.manual_seed(seed)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    unl: list[np.ndarray] = []
    for f in folds:
        x, y, _ = _usable(feats.get(recipe, f.clips, f"{f.name}"), f.clips)
        xs += x
        ys += y.tolist()
        if recipe.semi:
            unl += [s for s in feats.get(recipe, f.unlabelled, f"{f.name} unlabelled") if s is not None]
    det = build_detector(recipe.kind, {**recipe.params, "random_state": seed}, seed)
    det.fit(xs, np.array(ys), unlabeled=unl or None)
    det.feature_config = FeatureConfig(threshold=recipe.threshold, pool_s=recipe.pool_s)
    return det, (len(xs), int(np.sum(ys)), len(unl))


def train_final(name: str, work: Path, info: dict, results: dict, *, seed: int, workers: int, output: str | None,
                table_text: str, retrain: bool = True) -> Path:
    """Train ``name`` on every package fold (labelled, and unlabelled when semi-supervised), calibrate its
    temperature on the recipe's pooled out-of-fold scores, and write the model and its description.
    ``retrain=False`` keeps the model file and rewrites its description (e.g. after more rows were validated)."""
    from scatterbird.data.default_model import DEFAULT_MODEL_INFO, DEFAULT_MODEL_PATH
    from scatterbird.models.base import apply_temperature, fit_temperature
    from scatterbird.models.ensemble import EnsembleDetector
    from scatterbird.models.registry import load_detector

    recipe = RECIPES[name]
    saved = results.get("package", {}).get(name)
    if saved is None or saved.get("key") != recipe.key() or saved.get("seed", 0) != seed:
        raise SystemExit(f"validate {name} leave-package-out with --seed {seed} first (--recipe {name})")
    members = [RECIPES[m] for m in recipe.members] or [recipe]
    if any(r.features != "scatter" or r.previous_model or r.train_build or r.members for r in members) or \
            len({(r.threshold, r.pool_s) for r in members}) != 1:
        raise SystemExit(f"{name} cannot be bundled: the pipeline runs one scattering configuration")
    folds = load_folds(info, "package")
    out = Path(output) if output else DEFAULT_MODEL_PATH
    info_path = DEFAULT_MODEL_INFO if out.resolve() == DEFAULT_MODEL_PATH.resolve() else out.with_suffix(".json")
    oof = saved["result"]["out_of_fold"]
    temperature = fit_temperature(np.array(oof["labels"]), np.array(oof["scores"]))
    if retrain:
        feats = Features(work, workers)
        t0 = time.perf_counter()
        trained = [_train_on_all(r, folds, feats, seed) for r in members]
        det = trained[0][0] if len(trained) == 1 else EnsembleDetector.from_members([d for d, _ in trained])
        fit_s = time.perf_counter() - t0
        n_labelled, n_bird, n_unlabelled = trained[0][1]
        det.temperature = temperature
    else:
        det = load_detector(out)
        old = json.loads(info_path.read_text())
        if old.get("candidate") != name or abs(det.temperature - temperature) > 1e-6 * temperature:
            raise SystemExit(f"{out} is not the model {name} --final wrote: retrain it")
        fit_s = float(old["fit_seconds"])
        n_labelled = sum(len(f.clips) for f in folds)
        n_bird = sum(int(c.label) for f in folds for c in f.clips)
        n_unlabelled = sum(len(f.unlabelled) for f in folds) if all(r.semi for r in members) else 0
    ece_after = expected_calibration_error(np.array(oof["labels"]), apply_temperature(np.array(oof["scores"]), temperature))
    recipe = members[0]  # the features are the members' (one configuration)
    det.feature_config = FeatureConfig(threshold=recipe.threshold, pool_s=recipe.pool_s)
    if retrain:
        det.save(out)
    loaded = load_detector(out)
    validation = {scheme: {n: {k: v for k, v in row["result"].items() if k != "out_of_fold"}
                           | {"note": row["note"], "recipe": row["recipe"], "seed": row.get("seed", 0)}
                           for n, row in rows.items()} for scheme, rows in results.items()}
    description = {
        "what": "scatterbird's bundled default bird detector",
        "trained_on": {
            "summary": (
                f"{n_labelled} labelled 10 s clips ({n_bird} with birds) and {n_unlabelled} unlabelled ones, mixed "
                f"from {info['segments']} cuts of {len(info['files'])} sound files in {len(info['packages'])} Debian "
                "packages (data/bootstrap_sources.csv and data/training_sources.csv, each file's SHA-256 checked), "
                "with synthetic bird song (data/synthetic.py), augmentations and hard negatives (data/bootstrap.py)"
            ),
            "packages": {p: {k: v[k] for k in ("version", "sha256", "size")} | {"deb": Path(v["deb"]).name}
                         for p, v in sorted(info["packages"].items())},
            "lists_sha256": {Path(k).name: v for k, v in info["lists"].items()},
            "bird_packages": info["bird_packages"],
            "refused": info["refused"],
            "folds": info["folds"],
            "clips_per_fold": info["clips_per_fold"],
            "unlabeled_per_fold": info["unlabeled_per_fold"],
            "mix": info["mix"],
            "seed": info["seed"],
            "recipe": "scripts/build_corpus.py (data/corpus.py, data/bootstrap.py), then scripts/validate_detection.py "
                      f"--recipe ... --final {name}",
        },
        "kind": det.kind,
        "candidate": name,
        "recipe": RECIPES[name].__dict__,
        "members": list(RECIPES[name].members),
        "params": det.get_params(),
        "semi_supervised": all(r.semi for r in members),
        "feature_config": det.feature_config.to_dict(),
        "feature_config_hash": det.feature_config.hash,
        "model_hash": loaded.model_hash,
        "file_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "file_bytes": out.stat().st_size,
        "fit_seconds": round(fit_s),
        "calibration": {
            "temperature": round(float(temperature), 4),
            "fitted_on": f"the pooled leave-package-out scores of {name} ({len(oof['labels'])} clips)",
            "ece_before": saved["result"]["ece"], "ece_after": round(float(ece_after), 4),
        },
        "validation": {
            "protocol": (
                f"leave-package-out: {info['folds']} folds of Debian packages (a fold's sources never share a package "
                "with the training folds; each fold holds one of the five packages with birds); each fold's clips mixed "
                "only from its own sources; train on the other folds, score the held-out one. leave-source-out: the "
                "same over folds of source files"
            ),
            "chosen": name,
            "roc_auc_pooled_out_of_fold": {"roc_auc": saved["result"]["pooled_roc_auc"],
                                           "roc_auc_ci95": saved["result"]["pooled_ci95"],
                                           "n": saved["result"]["n"]},
            "results": validation,
            "table": table_text,
        },
        "caveat": (
            "Trained on sound effects and recordings from Debian packages mixed into synthetic backgrounds, not on "
            "field recordings: validated leave-package-out on such mixes only. For a survey, adapt it to your site "
            "(`scatterbird adapt`) or train on a few hundred labelled clips of your own recordings."
        ),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info_path.write_text(json.dumps(description, indent=1) + "\n")
    print(f"{name}: {n_labelled} clips in {fit_s:.0f} s, T={temperature:.3f}, -> {out} ({out.stat().st_size / 1e6:.2f} MB); "
          f"description {info_path}", file=sys.stderr)
    return out


# -- table -----------------------------------------------------------------------------------------------------
def table(results: dict[str, dict[str, dict]]) -> str:
    lines = []
    for scheme, rows in results.items():
        if not rows:
            continue
        # a package fold is named by its one bird package (a source fold draws birds from them all)
        names = [f["name"] + (f" ({f['bird_packages'][0].split('-')[0]})" if len(f["bird_packages"]) == 1 else "")
                 for f in next(iter(rows.values()))["result"]["folds"]]
        lines += [f"\n**leave-{scheme}-out** ({next(iter(rows.values()))['result']['n']} clips)\n",
                  "| recipe | pooled AUC [95 % CI] | " + " | ".join(names) + " | ECE | note |",
                  "|---|---|" + "---|" * len(names) + "---|---|"]
        for name, row in sorted(rows.items(), key=lambda kv: -kv[1]["result"]["pooled_roc_auc"]):
            r = row["result"]
            lines.append(f"| {name} | {r['pooled_roc_auc']:.3f} [{r['pooled_ci95'][0]:.3f}, {r['pooled_ci95'][1]:.3f}] | "
                         + " | ".join(f"{f['roc_auc']:.3f}" for f in r["folds"]) + f" | {r['ece']:.3f} | {row['note']} |")
            if "adapted" in r:
                a = r["adapted"]
                lines.append(f"| {name} + adapt | {a['pooled_roc_auc']:.3f} [{a['pooled_ci95'][0]:.3f}, "
                             f"{a['pooled_ci95'][1]:.3f}] | " + " | ".join(f"{f['roc_auc']:.3f}" for f in a["folds"])
                             + f" | {a['ece']:.3f} | held-out fold's unlabelled audio given to adapt |")
    return "\n".join(lines) + "\n"


def category_table(result: dict, min_conf: float) -> str:
    rows = sorted(result["categories"].items(), key=lambda kv: (not kv[1]["bird"], kv[0]))
    lines = [f"| clip category | clips | share scored >= {min_conf} |", "|---|---|---|"]
    for c, v in rows:
        lines.append(f"| {c} ({'detection rate' if v['bird'] else 'false positives'}) | {v['n']} | {v['rate']:.3f} |")
    return "\n".join(lines) + "\n"


def _load_results(work: Path) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for p in sorted((work / "validation").glob("*/*.json")):
        out.setdefault(p.parent.name, {})[p.stem] = json.loads(p.read_text())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="the corpus folder (default %(default)s)")
    p.add_argument("--scheme", action="append", choices=("package", "source"), help="fold schemes (default: package)")
    p.add_argument("--recipe", action="append", choices=sorted(RECIPES), help="recipes to run (repeatable)")
    p.add_argument("--adapt", action="store_true", help="also adapt each fold's model to the held-out fold's unlabelled audio")
    p.add_argument("--workers", type=int, default=1, help="processes for the features (default %(default)s)")
    p.add_argument("--min-conf", type=float, default=0.5, help="score threshold of the category rates (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="recompute results already saved")
    p.add_argument("--table", help="write the markdown tables here too")
    p.add_argument("--table-only", action="store_true", help="print the saved results and stop")
    p.add_argument("--final", choices=sorted(RECIPES),
                   help="train this recipe on every package fold and write it as the bundled model (after its validation)")
    p.add_argument("--output", default=None, help="model file of --final (default: the bundled data/default_model.pt)")
    p.add_argument("--describe-only", action="store_true",
                   help="with --final: keep the model file, rewrite its description from the saved results")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    work = Path(args.workdir).expanduser()
    info = load_build(work)
    for scheme in ([] if args.table_only else args.scheme or ["package"]):
        folds = load_folds(info, scheme)
        feats = Features(work, args.workers)
        for name in args.recipe or []:
            recipe = RECIPES[name]
            path = work / "validation" / scheme / f"{name}.json"
            # adapt needs a model that learns from unlabelled clips, trained on this build
            adapt = args.adapt and recipe.semi and not recipe.previous_model and not recipe.train_build
            saved = json.loads(path.read_text()) if path.is_file() else {}
            if saved and not args.force and saved.get("key") == recipe.key() and saved.get("seed", 0) == args.seed \
                    and (not adapt or "adapted" in saved["result"]):
                print(f"{scheme}/{name}: saved result reused", file=sys.stderr)
                continue
            train_folds = folds
            if recipe.train_build:
                other = work.parent / recipe.train_build
                if not (other / "build.json").is_file():
                    print(f"{scheme}/{name}: skipped, build {other} is missing", file=sys.stderr)
                    continue
                other_info = load_build(other)
                train_folds = load_folds(other_info, scheme)
                if [(f.get("packages"), f.get("source_files")) for f in other_info["schemes"][scheme]["folds"]] != \
                        [(f.get("packages"), f.get("source_files")) for f in info["schemes"][scheme]["folds"]]:
                    raise SystemExit(f"{other}: its {scheme} folds are not those of {work}")
            print(f"{scheme}/{name}: {recipe.note}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            if recipe.members:
                result = ensemble_result(recipe, folds, work / "validation" / scheme, min_conf=args.min_conf, seed=args.seed)
            else:
                result = run_recipe(name, recipe, folds, train_folds, feats, seed=args.seed, min_conf=args.min_conf,
                                adapt=adapt)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"key": recipe.key(), "seed": args.seed, "recipe": recipe.__dict__, "note": recipe.note,
                                        "seconds": round(time.perf_counter() - t0), "result": result}, indent=1,
                                       default=str) + "\n")
            print(f"{scheme}/{name}: pooled AUC {result['pooled_roc_auc']:.3f} {result['pooled_ci95']}",
                  file=sys.stderr, flush=True)
    results = _load_results(work)
    text = table(results)
    for scheme, rows in results.items():
        best = max(rows, key=lambda n: rows[n]["result"]["pooled_roc_auc"]) if rows else None
        if best:
            text += f"\nPer clip category, leave-{scheme}-out, {best}:\n\n" + category_table(rows[best]["result"], args.min_conf)
    print(text)
    if args.table:
        Path(args.table).write_text(text)
    if args.final:
        train_final(args.final, work, info, results, seed=args.seed, workers=args.workers, output=args.output,
                    table_text=text, retrain=not args.describe_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
