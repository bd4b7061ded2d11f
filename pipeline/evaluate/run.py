"""Evaluation runs on labelled challenge data: score the clips, or train and test leaving one dataset out.

:func:`evaluate` scores every clip of each dataset with a trained detector; :func:`crossval` follows the
DCASE 2018 Task 3 leave-one-dataset-out protocol. Both return a :class:`~pipeline.evaluate.results.RunResult`
and write its files (:mod:`pipeline.evaluate.outputs`, :mod:`pipeline.evaluate.report`). Datasets come from
:mod:`pipeline.datasets`; the metrics from :mod:`pipeline.evaluate.metrics`.

A clip is one sequence for the detector, computed and cached exactly as ``scatterbird train`` does
(:func:`pipeline.clip_features.compute_sequences`: the whole scattergram pooled to ``FeatureConfig.pool_s``;
the cache is keyed by the feature-config hash and the file's path, size and modification time).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from scatterbird.errors import AudioError, DatasetError, FeatureConfigMismatch
from scatterbird.pipeline.clip_features import clip_scattergram, compute_sequences
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.datasets import Clip, Dataset, check_distinct_names
from scatterbird.pipeline.device import detector_on, resolve_device
from scatterbird.pipeline.evaluate.outputs import write_outputs
from scatterbird.pipeline.evaluate.results import DatasetResult, RunResult, harmonic_mean_auc, metrics_for, worst_clips


# =====================================================================================================
# Scoring
# =====================================================================================================
def score_sequences(detector, sequences: Sequence[np.ndarray], batch: int = 256, device: str = "cpu") -> np.ndarray:
    """``detector.predict_proba`` in batches (bounds the memory of kernel detectors), as float64.

    ``device``: where a detector that can (:func:`scatterbird.pipeline.device.detector_on`) scores.
    """
    with detector_on(detector, str(resolve_device(device, option="device"))):
        out = [np.asarray(detector.predict_proba(list(sequences[i : i + batch])), dtype=np.float64)
               for i in range(0, len(sequences), batch)]
    return np.concatenate(out) if out else np.zeros(0)


# =====================================================================================================
# Runs
# =====================================================================================================
def _model_info(detector, path: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": detector.kind, "path": path}
    try:
        info["model_hash"] = detector.model_hash
    except Exception:  # an unfitted or foreign detector: the hash is a nicety
        info["model_hash"] = None
    cfg = getattr(detector, "feature_config", None)
    info["feature_config_hash"] = cfg.hash if cfg else None
    try:
        info["params"] = detector.get_params()
    except NotImplementedError:
        info["params"] = {}
    return info


def evaluate(
    detector,
    datasets: Sequence[Dataset],
    outdir: str | os.PathLike | None = None,
    *,
    config: FeatureConfig | None = None,
    model_path: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    n_worst: int = 5,
    progress: bool = True,
    device: str = "cpu",
) -> RunResult:
    """Score every clip of each dataset with a trained detector and write the evaluation outputs.

    Parameters
    ----------
    detector : Detector
        Trained; its ``feature_config`` (or ``config``) makes the features.
    datasets : sequence of Dataset
        From :func:`pipeline.datasets.load_dataset`; names must be distinct.
    outdir : path, optional
        Where ``metrics.json``, ``predictions.csv``, ``scores.csv``, ``roc.png``, ``report.html`` and its
        images go (created). None writes nothing.
    config : FeatureConfig, optional
        Only for a detector saved without one; otherwise it must equal the detector's.
    cache_dir : path, optional
        Feature cache (see :func:`compute_sequences`).
    workers : int
        Processes for the features.
    scheduler : str, optional
        A Dask scheduler's address: the features are computed on its workers instead.
    n_boot, seed : int
        Bootstrap replicates for the AUC intervals (0: none) and their seed.
    n_worst : int
        False positives and false negatives shown per dataset in the report, by rank (:func:`worst_clips`).
    device : str
        Where the features are computed and the detector scores: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
        ``"auto"`` (:func:`scatterbird.pipeline.device.resolve_device`, checked before any work).

    Returns
    -------
    RunResult
    """
    device = str(resolve_device(device))  # no such device: OptionError before any feature work
    cfg = getattr(detector, "feature_config", None)
    if cfg is None:
        cfg = config or FeatureConfig()
    elif config is not None and config.hash != cfg.hash:
        raise FeatureConfigMismatch(
            f"the model's features have config hash {cfg.hash}, the run asked for {config.hash}"
        )
    check_distinct_names(datasets)
    results = []
    for data in datasets:
        seqs, reasons = compute_sequences(
            data.clips, cfg, cache_dir=cache_dir, workers=workers, scheduler=scheduler, progress=progress, desc=data.name,
            device=device,
        )
        scores = np.full(len(data.clips), np.nan)
        ok = [i for i, s in enumerate(seqs) if s is not None]
        if ok:
            scores[ok] = score_sequences(detector, [seqs[i] for i in ok], device=device)
        results.append(DatasetResult(data, scores, reasons, metrics_for(data, scores, reasons, n_boot, seed)))
    run = RunResult("evaluate", results, cfg, _model_info(detector, model_path), harmonic_mean_auc(results))
    run.bootstrap = {"replicates": n_boot, "seed": seed, "method": "stratified percentile", "level": 0.95}
    if outdir is not None:
        write_outputs(run, outdir, worst_scattergrams(run, n_worst))
    return run


def crossval(
    datasets: Sequence[Dataset],
    make: Callable[[], Any],
    outdir: str | os.PathLike | None = None,
    *,
    config: FeatureConfig | None = None,
    semi_supervised: bool = True,
    unlabeled_by_dataset: Mapping[str, Sequence[np.ndarray]] | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    n_worst: int = 5,
    save_models: bool = False,
    progress: bool = True,
) -> RunResult:
    """The DCASE 2018 Task 3 protocol: leave one dataset out, for each dataset.

    For each labelled dataset in turn, a fresh detector (``make()``) is trained on the labelled clips of all
    the others and scores the one left out. With ``semi_supervised``, the left-out dataset's sequences are
    also given to ``fit`` as ``unlabeled`` (their labels are never seen), as a semi-supervised detector may
    use the test domain's audio; detectors that do not use unlabeled data ignore it.

    Parameters
    ----------
    datasets : sequence of Dataset
        At least two, all with labels.
    make : callable
        Returns a new unfitted Detector (e.g. ``lambda: build_detector("inversion", params)``).
    outdir : path, optional
        Outputs as for :func:`evaluate`; ``predictions.csv`` holds every clip's held-out score.
    semi_supervised : bool
        Give the held-out dataset's sequences to ``fit`` as ``unlabeled``.
    unlabeled_by_dataset : mapping, optional
        Unlabeled sequences that belong to a dataset (e.g. more audio of the same sources): given to ``fit``
        as ``unlabeled`` whenever that dataset is in the training set, never when it is held out.
    save_models : bool
        Also write each fold's model to ``OUTDIR/models/<held-out>.pt``.

    Returns
    -------
    RunResult
        One result per held-out dataset, and the harmonic mean of their AUCs.
    """
    cfg = config or FeatureConfig()
    check_distinct_names(datasets)
    if len(datasets) < 2:
        raise DatasetError("leave-one-dataset-out needs at least two datasets")
    hidden = [d.name for d in datasets if not d.has_labels]
    if hidden:
        raise DatasetError(f"cross-validation needs labels; hidden in: {', '.join(hidden)}")
    feats: dict[str, tuple[list, list]] = {}
    for data in datasets:
        feats[data.name] = compute_sequences(
            data.clips, cfg, cache_dir=cache_dir, workers=workers, scheduler=scheduler, progress=progress, desc=data.name
        )
    results = []
    model_info: dict[str, Any] = {"folds": {}}
    for held in datasets:
        train_seqs: list[np.ndarray] = []
        train_y: list[int] = []
        for other in datasets:
            if other is held:
                continue
            for clip, s in zip(other.clips, feats[other.name][0]):
                if s is not None:
                    train_seqs.append(s)
                    train_y.append(int(clip.label))
        if len(set(train_y)) < 2:
            raise DatasetError(f"leaving {held.name} out leaves a training set with one class only")
        test_seqs, reasons = feats[held.name]
        ok = [i for i, s in enumerate(test_seqs) if s is not None]
        det = make()
        det.feature_config = cfg
        unlabeled = [test_seqs[i] for i in ok] if semi_supervised and ok else []
        for other in datasets:
            if other is not held and unlabeled_by_dataset:
                unlabeled += list(unlabeled_by_dataset.get(other.name, ()))
        unlabeled = unlabeled or None
        if progress:
            print(
                f"crossval: training on {len(train_seqs)} clips ({', '.join(d.name for d in datasets if d is not held)})"
                f"{f', {len(unlabeled)} unlabeled' if unlabeled else ''}; testing on {held.name}",
                file=sys.stderr,
            )
        det.fit(train_seqs, train_y, unlabeled=unlabeled)
        scores = np.full(len(held.clips), np.nan)
        if ok:
            scores[ok] = score_sequences(det, [test_seqs[i] for i in ok])
        res = DatasetResult(held, scores, reasons, metrics_for(held, scores, reasons, n_boot, seed))
        res.train_on = [d.name for d in datasets if d is not held]
        results.append(res)
        model_info["folds"][held.name] = _model_info(det, None)
        if save_models and outdir is not None:
            (Path(outdir) / "models").mkdir(parents=True, exist_ok=True)
            det.save(Path(outdir) / "models" / f"{_safe(held.name)}.pt")
            model_info["folds"][held.name]["path"] = f"models/{_safe(held.name)}.pt"
    first = next(iter(model_info["folds"].values()))
    model_info.update(
        kind=first["kind"], params=first.get("params", {}), semi_supervised=semi_supervised,
        unlabeled_by_dataset={k: len(v) for k, v in (unlabeled_by_dataset or {}).items()}, feature_config_hash=cfg.hash,
    )
    run = RunResult("crossval", results, cfg, model_info, harmonic_mean_auc(results))
    run.bootstrap = {"replicates": n_boot, "seed": seed, "method": "stratified percentile", "level": 0.95}
    if outdir is not None:
        write_outputs(run, outdir, worst_scattergrams(run, n_worst))
    return run



def _safe(name: str) -> str:
    """A file-name-safe form of a dataset or item name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def worst_scattergrams(run: RunResult, n_worst: int) -> dict[str, dict[str, list[tuple[Clip, float, Any]]]]:
    """The worst false positives and negatives of each dataset (:func:`worst_clips`) with their scattergrams.

    Scattergrams are recomputed for these clips only (keeping every clip's frames would not scale); one that
    cannot be computed is None.
    """
    worst: dict[str, dict[str, list[tuple[Clip, float, Any]]]] = {}
    for r in run.results:
        fp, fn = worst_clips(r, n_worst)
        entry: dict[str, list[tuple[Clip, float, Any]]] = {"fp": [], "fn": []}
        for key, idx in (("fp", fp), ("fn", fn)):
            for i in idx:
                clip = r.dataset.clips[i]
                try:
                    sg = clip_scattergram(clip.path, run.config)
                except (AudioError, ValueError, RuntimeError):
                    sg = None
                entry[key].append((clip, float(r.scores[i]), sg))
        worst[r.metrics.name] = entry
    return worst
