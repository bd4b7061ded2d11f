"""Adapt a trained detector to a user's own site from unlabeled recordings: the ``adapt`` command's work.

A detector trained on one corpus meets other microphones, other backgrounds and other birds at a user's site.
Adapting continues training the model's own network (same weights to start from, same standardisation, same
feature configuration, same architecture) with the semi-supervised inversion loss on the user's recordings,
cut into windows of the clip length the model was trained on: their prediction entropy and reconstruction
error are lowered, while every batch keeps a share of labelled clips (cross-entropy) so that the classes
keep their meaning (:meth:`scatterbird.models.inversion.InversionDetector.fine_tune`).

The labelled share comes from, in this order: the folders given (Bird Audio Detection layout), the corpus
cache when it has been built (``~/.cache/scatterbird/corpus/build.json``, its package-grouped folds), the
older bootstrap cache (``~/.cache/scatterbird/bootstrap/build.json``), else seeded synthetic clips
(:mod:`scatterbird.data.synthetic`), with a warning that the real corpus is better.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scatterbird.data.bootstrap import DEFAULT_WORKDIR as BOOTSTRAP_WORKDIR
from scatterbird.data.corpus import DEFAULT_WORKDIR as CORPUS_WORKDIR
from scatterbird.data.corpus import fold_dirs, load_build
from scatterbird.data.default_model import default_model_info
from scatterbird.data.synthetic import write_dataset
from scatterbird.errors import BootstrapError, OptionError, TrainingError
from scatterbird.models.ensemble import EnsembleDetector
from scatterbird.models.inversion import InversionDetector
from scatterbird.models.registry import describe_model, load_detector
from scatterbird.pipeline.clip_features import FeatureCache, compute_features
from scatterbird.pipeline.datasets import Clip, load_dataset
from scatterbird.pipeline.detect.windows import WindowSpec
from scatterbird.pipeline.device import detector_on, resolve_device
from scatterbird.pipeline.train.training import (
    check_both_classes,
    default_cache_dir,
    find_unlabeled,
    validate_output,
)

#: Window length (and hop) for the user's recordings when the model does not say its clip length.
DEFAULT_CLIP_S = 10.0

#: Labelled clips drawn (stratified) from a larger labelled set: enough for the anchor, few enough to scatter.
MAX_LABELLED = 1000

#: Synthetic labelled clips made when no real labelled set is there.
SYNTHETIC_CLIPS = 200

NO_CORPUS_WARNING = (
    "no labelled corpus found: the labelled share of every batch is {n} synthetic clips; adapting with the real "
    "corpus is better (build it once with `python scripts/build_corpus.py`, or give --labelled DIR)"
)


# -- the library step ----------------------------------------------------------------------------------
def check_adapt_options(epochs: int, labelled_share: float, lr: float | None = None) -> None:
    """Raise OptionError for options out of range (before any work)."""
    if int(epochs) < 1:
        raise OptionError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 < float(labelled_share) < 1.0:
        raise OptionError(f"labelled share must be between 0 and 1 (exclusive), got {labelled_share}")
    if lr is not None and not float(lr) > 0:
        raise OptionError(f"lr must be > 0, got {lr}")


def check_adaptable(detector: Any) -> InversionDetector | EnsembleDetector:
    """The detector, if it can adapt: an inversion detector, or an ensemble of them; OptionError otherwise."""
    if isinstance(detector, EnsembleDetector):
        members = getattr(detector, "members_", [])
        if not members:
            raise OptionError("this ensemble has no fitted members; fit it before adapting")
        if all(isinstance(m, InversionDetector) for m in members):
            return detector
    if not isinstance(detector, InversionDetector):
        if isinstance(detector, EnsembleDetector):
            what = f"an ensemble of {detector.members_[0].kind!r} detectors"
        else:
            what = f"a {getattr(detector, 'kind', type(detector).__name__)!r} detector"
        raise OptionError(
            "only inversion detectors (or ensembles of them) can adapt (their loss uses unlabeled recordings); "
            f"this model is {what}"
        )
    return detector


def adaptation_records(detector: Any) -> list[dict[str, Any]]:
    """The last adaptation record of an adapted detector, or of each member of an adapted ensemble."""
    parts = detector.members_ if isinstance(detector, EnsembleDetector) else [detector]
    return [m.adaptations_[-1] for m in parts]


def adapt_detector(
    detector: InversionDetector | EnsembleDetector,
    unlabeled: Sequence[np.ndarray],
    labelled: Sequence[np.ndarray],
    labels: np.ndarray | Sequence[int],
    *,
    epochs: int = 5,
    labelled_share: float = 0.5,
    lr: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    balance: float = 1.0,
) -> InversionDetector | EnsembleDetector:
    """A copy of ``detector`` fine-tuned on ``unlabeled`` sequences with ``labelled`` ones in every batch.

    An ensemble of inversion detectors is adapted member by member, each with the same sequences and
    options, member ``i`` with the seed ``seed + i``; the result is an ensemble of the adapted copies.

    Parameters
    ----------
    detector : InversionDetector or EnsembleDetector
        A fitted detector; it is not changed.
    unlabeled : sequence of ndarray
        Sequences (n_frames, n_channels) of the user's recordings, in the detector's feature configuration.
    labelled, labels
        Labelled sequences and their 0/1 labels (both classes).
    epochs : int
        Passes over the unlabeled sequences.
    labelled_share : float
        Share of every batch taken by labelled sequences, in (0, 1).
    lr : float, optional
        Step size (default: the detector's, lowered; see ``FINE_TUNE_LR_FACTOR``).
    seed : int
        Seeds the batch order (of member ``i`` of an ensemble: ``seed + i``).
    device : str
        Where it trains (:func:`scatterbird.pipeline.device.resolve_device`); the result lives on the CPU.
    progress : bool
        An epoch progress bar on stderr.
    balance : float
        Weight of the class-balance term (see :meth:`InversionDetector.fine_tune`); 0 switches it off.

    Returns
    -------
    InversionDetector or EnsembleDetector
        The adapted copy, its feature configuration kept, with a record in ``adaptations_`` (of every member of
        an ensemble); a calibration temperature of the original is dropped (recalibrate on labelled clips of
        the site if needed).

    Raises
    ------
    OptionError
        For a detector that is not an inversion detector or an ensemble of them, or options out of range.
    TrainingError
        For no unlabeled sequence or a labelled set without both classes.
    """
    check_adaptable(detector)
    check_adapt_options(epochs, labelled_share, lr)
    if len(unlabeled) == 0:
        raise TrainingError("no unlabeled sequences to adapt to")
    y = np.asarray(labels)
    if set(np.unique(y).tolist()) != {0, 1}:
        raise TrainingError(f"the labelled set must hold both bird (1) and no-bird (0) clips; it holds {sorted(set(y.tolist()))}")
    dev = str(resolve_device(device, option="device"))
    if isinstance(detector, EnsembleDetector):
        return _adapt_ensemble(detector, unlabeled, labelled, y, epochs=epochs, labelled_share=labelled_share,
                               lr=lr, seed=seed, device=dev, progress=progress, balance=balance)
    det = copy.deepcopy(detector)
    old_t = float(getattr(det, "temperature", 1.0))  # fine_tune drops it: fitted to the old network's scores
    det.verbose = bool(progress)
    try:
        with detector_on(det, dev):
            det.fine_tune(labelled, y, unlabeled, epochs=int(epochs), labelled_share=float(labelled_share), lr=lr,
                          random_state=int(seed), balance=float(balance))
    finally:
        det.verbose = detector.verbose  # a display option: the saved model reads as the original did
    det.feature_config = detector.feature_config
    if old_t != 1.0:
        det.adaptations_[-1]["dropped_calibration_temperature"] = old_t
    return det


def _adapt_ensemble(ensemble: EnsembleDetector, unlabeled: Sequence[np.ndarray], labelled: Sequence[np.ndarray],
                    y: np.ndarray, *, seed: int, **options: Any) -> EnsembleDetector:
    """An ensemble's copy whose members are adapted copies of its members (member ``i`` seeded ``seed + i``)."""
    members = [adapt_detector(m, unlabeled, labelled, y, seed=int(seed) + i, **options)
               for i, m in enumerate(ensemble.members_)]
    out = copy.copy(ensemble)  # the hyperparameters and settings; the members are replaced, never shared
    out.members_ = members
    out.temperature = 1.0  # fitted to the old members' mean: it no longer holds
    out.feature_config = ensemble.feature_config
    if ensemble.temperature != 1.0:
        for rec in adaptation_records(out):
            rec["dropped_calibration_temperature"] = float(ensemble.temperature)
    return out


# -- where the labelled share comes from -----------------------------------------------------------------
def _existing(dirs: Sequence[str | os.PathLike]) -> list[Path]:
    return [Path(d) for d in dirs if Path(d).is_dir()]


def corpus_fold_dirs(workdir: str | os.PathLike = CORPUS_WORKDIR) -> list[Path]:
    """The corpus's package-grouped fold folders (:func:`scatterbird.data.corpus.fold_dirs`); [] when not built."""
    try:
        return _existing(fold_dirs(load_build(workdir), "package"))
    except BootstrapError:  # not built (or built without labelled clips)
        return []


def bootstrap_fold_dirs(workdir: str | os.PathLike = BOOTSTRAP_WORKDIR) -> list[Path]:
    """The older bootstrap set's fold folders (``WORKDIR/build.json``, ``fold_dirs``); [] when not built."""
    try:
        info = json.loads((Path(workdir) / "build.json").read_text())
    except (OSError, ValueError):
        return []
    return _existing(info.get("fold_dirs", []) if isinstance(info, dict) else [])


def synthetic_labelled_dir(root: Path, n_clips: int, clip_s: float, sample_rate: int, seed: int) -> Path:
    """A folder of seeded synthetic labelled clips under ``root`` (written once, reused after)."""
    d = root / f"adapt-synthetic-{n_clips}x{clip_s:g}s-{sample_rate}Hz-seed{seed}"
    done = d / "done"
    if not done.exists():
        write_dataset(d, n_clips, datasetid="synthetic", duration=clip_s, sr=sample_rate, seed=seed)
        done.write_text("ok\n")  # written last: an interrupted run writes the folder again
    return d


def subsample_clips(clips: Sequence[Clip], limit: int, seed: int) -> list[Clip]:
    """At most ``limit`` clips, drawn per class in proportion (seeded); all of them when fewer."""
    if len(clips) <= limit:
        return list(clips)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in (0, 1):
        idx = [i for i, clip in enumerate(clips) if clip.label == c]
        k = max(1, round(limit * len(idx) / len(clips)))
        keep.extend(int(i) for i in rng.permutation(idx)[:k])
    return [clips[i] for i in sorted(keep)]


# -- the whole command ---------------------------------------------------------------------------------
@dataclass
class AdaptReport:
    """What ``run_adapt`` did."""

    model_path: Path
    detector: InversionDetector | EnsembleDetector
    base_model: str
    clip_s: float
    n_recordings: int
    n_windows: int
    n_labelled: int
    n_labelled_birds: int
    labelled_from: str
    mean_score_before: float
    mean_score_after: float
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def model_clip_seconds(detector: Any, model: str | os.PathLike | None) -> float:
    """The clip length the model was trained on: recorded by an earlier adaptation, in the bundled model's
    description, else ``DEFAULT_CLIP_S``."""
    first = detector.members_[0] if isinstance(detector, EnsembleDetector) else detector
    for rec in reversed(getattr(first, "adaptations_", []) or []):
        if rec.get("clip_s"):
            return float(rec["clip_s"])
    if model is None:
        duration = default_model_info().get("trained_on", {}).get("mix", {}).get("duration")
        if duration:
            return float(duration)
    return DEFAULT_CLIP_S


def run_adapt(
    recordings: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    labelled: Sequence[str | os.PathLike] | None = None,
    epochs: int = 5,
    labelled_share: float = 0.5,
    lr: float | None = None,
    seed: int = 0,
    workers: int = 1,
    scheduler: str | None = None,
    device: str = "cpu",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    max_labelled: int = MAX_LABELLED,
    synthetic_clips: int = SYNTHETIC_CLIPS,
) -> AdaptReport:
    """Check everything, compute the features, adapt the model to ``recordings`` and write it to ``output``.

    Parameters
    ----------
    recordings : sequence of path
        The user's unlabeled recordings (files, folders searched recursively, ``.txt`` path lists).
    output : path
        The adapted model file to write.
    model : path, optional
        The model to adapt; default the bundled one.
    labelled : sequence of path, optional
        Labelled folders (Bird Audio Detection layout); default the corpus cache, else synthetic clips.
    epochs, labelled_share, lr, seed
        See :func:`adapt_detector`.
    workers, scheduler, device
        Where the features are computed (and the network trains: ``device``).
    cache_dir : path, optional
        Feature cache root (also where synthetic labelled clips are written); default ``<output folder>/.cache``.
    progress : bool
    max_labelled : int
        At most this many labelled clips are used (a stratified seeded draw).
    synthetic_clips : int
        Synthetic labelled clips made when no labelled set is found.

    Raises
    ------
    OptionError, TrainingError, DatasetError, DetectorError
        For unusable inputs or options, before any feature is computed; TrainingError also when none of the
        recordings (or of the labelled clips) can be read.
    """
    dev = str(resolve_device(device))
    check_adapt_options(epochs, labelled_share, lr)
    if int(max_labelled) < 2:
        raise OptionError(f"max_labelled must be >= 2, got {max_labelled}")
    out = validate_output(output)
    base = check_adaptable(load_detector(model))
    config = base.feature_config
    if config is None:
        raise TrainingError(f"{describe_model(model)} carries no feature configuration; it cannot be adapted")
    files = find_unlabeled(recordings)
    clip_s = model_clip_seconds(base, model)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir(out)
    notes: list[str] = []

    if labelled:
        dirs, source = [Path(d) for d in labelled], ", ".join(map(str, labelled))
    elif dirs := corpus_fold_dirs():
        source = f"the corpus ({len(dirs)} fold(s) in {CORPUS_WORKDIR})"
    elif dirs := bootstrap_fold_dirs():
        source = f"the bootstrap set ({len(dirs)} fold(s) in {BOOTSTRAP_WORKDIR})"
    else:
        dirs = [synthetic_labelled_dir(cache_root, int(synthetic_clips), clip_s, config.sample_rate, int(seed))]
        source = f"{int(synthetic_clips)} synthetic clips (seed {seed})"
        notes.append(NO_CORPUS_WARNING.format(n=int(synthetic_clips)))
    clips: list[Clip] = []
    for d in dirs:
        found = load_dataset(d, require_labels=True)
        notes.extend(found.problems())
        clips.extend(found.clips)
    check_both_classes(clips, "the labelled set")
    labelled_paths = {c.path.resolve() for c in clips}
    files = [f for f in files if f.resolve() not in labelled_paths]  # a labelled clip is not the user's site
    if not files:
        raise TrainingError("every recording given is also a labelled clip; give recordings of your own site")
    clips = subsample_clips(clips, int(max_labelled), int(seed))

    cache = FeatureCache(cache_root, config)
    run = {"workers": workers, "scheduler": scheduler, "progress": progress, "device": dev}
    unl = compute_features(files, config, cache, windows=WindowSpec(clip_s, clip_s), desc="recordings", **run)
    windows = [w for seqs in unl.sequences for w in seqs]
    if not windows:
        raise TrainingError("none of the recordings could be read; see the failures above")
    lab = compute_features([c.path for c in clips], config, cache, desc="labelled", **run)
    ok = {p: s[0] for p, s in zip(lab.paths, lab.sequences)}
    used = [c for c in clips if c.path in ok]
    check_both_classes(used, "the readable labelled clips")
    y = np.array([c.label for c in used], dtype=np.int64)

    adapted = adapt_detector(base, windows, [ok[c.path] for c in used], y, epochs=epochs,
                             labelled_share=labelled_share, lr=lr, seed=seed, device=dev, progress=progress)
    for rec in adaptation_records(adapted):
        rec.update(base_model=describe_model(model), base_model_hash=base.model_hash, clip_s=clip_s,
                   recordings=len(unl.paths), windows=len(windows), labelled_from=source)
    adapted.save(out)
    with detector_on(base, dev), detector_on(adapted, dev):
        before, after = float(base.predict_proba(windows).mean()), float(adapted.predict_proba(windows).mean())
    return AdaptReport(
        model_path=out, detector=adapted, base_model=describe_model(model), clip_s=clip_s,
        n_recordings=len(unl.paths), n_windows=len(windows), n_labelled=len(used), n_labelled_birds=int(y.sum()),
        labelled_from=source, mean_score_before=before, mean_score_after=after,
        failed=unl.failed + lab.failed, notes=notes,
    )
