"""Train a detector from labelled recordings (and unlabeled ones): the ``train`` command's work.

Steps, in this order, so that every input problem is reported before any feature is computed or any
training starts:

1. **Labels.** A Bird Audio Detection style folder or an audio directory and a label CSV, read by
   :mod:`pipeline.datasets` (bad label rows are skipped and reported). Each ``itemid`` must name an audio
   file (its name without extension). Both classes must be present.
2. **Few labels, simulated.** ``labelled_fraction < 1`` keeps a stratified random share of the labels; the
   other labelled clips join the unlabeled set with their labels hidden.
3. **Unlabeled recordings** of any length are cut into windows exactly as detection cuts them
   (:func:`scatterbird.pipeline.detect.windows.iter_windows`), so the network trains on what it will later score.
4. **Features** go through the pipeline (streamed audio -> scattering -> pooling) by
   :mod:`pipeline.clip_features`, in this process, on local workers or on a Dask cluster, and are cached on
   disk under ``CACHE/<feature-config hash>/``, keyed by the recording's absolute path, size and
   modification time (and the window spec for unlabeled ones): a second run recomputes nothing, and an
   edited recording or another configuration never reuses stale features.
5. **The detector** is built by name from the registry of :class:`models.base.Detector` subclasses
   (``inversion``, ``rntk``, ...), fitted, given the feature configuration, and saved.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from scatterbird.errors import DatasetError, TrainingError
from scatterbird.models.registry import available_detectors, build_detector
from scatterbird.pipeline.clip_features import FeatureCache, compute_features
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.datasets import Clip, Dataset, load_dataset
from scatterbird.pipeline.detect.windows import WindowSpec
from scatterbird.pipeline.device import detector_on, resolve_device
from scatterbird.pipeline.frontend.inputs import find_audio

#: Name of the feature cache folder next to the model file, when no cache directory is given.
CACHE_DIRNAME = ".cache"


# -- labels ----------------------------------------------------------------------------------------------
def check_both_classes(clips: Sequence[Clip], what: str = "the labels") -> None:
    """Raise unless both bird and no-bird clips are present."""
    ys = {c.label for c in clips}
    if len(ys) < 2:
        only = "bird (hasbird=1)" if ys == {1} else "no-bird (hasbird=0)"
        raise TrainingError(f"{what} hold a single class: every clip is {only}; both classes are needed to train")


def split_labelled(
    clips: Sequence[Clip], fraction: float, seed: int = 0
) -> tuple[list[Clip], list[Clip]]:
    """Keep a stratified random ``fraction`` of the labelled clips; return (kept, hidden).

    At least one clip of each class is kept. ``fraction = 1`` keeps all, in order.
    """
    if not 0 < fraction <= 1:
        raise TrainingError(f"labelled fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(clips), []
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for c in (0, 1):
        idx = [i for i, clip in enumerate(clips) if clip.label == c]
        k = max(1, int(round(fraction * len(idx))))
        keep.update(int(i) for i in rng.permutation(idx)[:k])
    kept = [c for i, c in enumerate(clips) if i in keep]
    hidden = [c for i, c in enumerate(clips) if i not in keep]
    return kept, hidden


def find_unlabeled(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Audio files of the unlabeled inputs (directories searched recursively, files, path lists).

    Raises
    ------
    TrainingError
        If an input is missing or they hold no audio at all.
    """
    scan = find_audio(list(inputs))
    missing = [p for p, why in scan.problems if why == "not found"]
    if missing:
        raise TrainingError(f"unlabeled input {missing[0]} not found")
    if not scan.files:
        raise TrainingError(f"the unlabeled input(s) {', '.join(map(str, inputs))} hold no audio files")
    return scan.files


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; values are read as JSON when they parse, else kept as strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TrainingError(f"model parameter {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


# -- the whole command -------------------------------------------------------------------------------
@dataclass
class TrainingData:
    """What a detector is fitted on, and where it came from."""

    sequences: list[np.ndarray]
    labels: np.ndarray
    unlabeled: list[np.ndarray]
    labelled_ids: list[str]
    n_hidden: int = 0  # labelled clips used as unlabeled (labelled_fraction < 1)
    n_unlabeled_files: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    cache_hits: int = 0
    cache_misses: int = 0
    dataset: Dataset | None = None  # the labelled dataset as found; its problems() list skipped label rows


def prepare_training_data(
    *,
    dataset: str | os.PathLike | None = None,
    audio: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    unlabeled: Sequence[str | os.PathLike] = (),
    config: FeatureConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    labelled_fraction: float = 1.0,
    window_s: float = 10.0,
    seed: int = 0,
    progress: bool = True,
    workers: int = 1,
    scheduler: str | None = None,
    device: str = "cpu",
) -> TrainingData:
    """Validate the inputs, then compute (or read back) the features of every recording.

    Parameters
    ----------
    dataset : path, optional
        A Bird Audio Detection style folder or its label CSV (see :func:`pipeline.datasets.locate`); or give
        ``audio`` and ``labels``.
    audio, labels : path, optional
        Audio directory and label CSV (``itemid,hasbird``).
    unlabeled : sequence of path
        Unlabeled recordings of any length (directories, files, path lists), cut into windows.
    config : FeatureConfig
    cache_dir : path, optional
        Feature cache root; None: no cache.
    labelled_fraction : float
        Share of labels kept (stratified); the rest of the labelled clips become unlabeled.
    window_s : float
        Window length (and hop) for the unlabeled recordings, in seconds.
    seed : int
        Seeds the choice of kept labels.
    progress : bool
    workers, scheduler
        Where the features are computed (:func:`pipeline.executor.open_executor`).
    device : str
        Where the scattering runs (:func:`scatterbird.pipeline.device.resolve_device`).

    Raises
    ------
    DatasetError
        For an unusable dataset (no labels, no usable row, labelled clips without audio).
    TrainingError
        For unusable options or unlabeled inputs, or a single class; all before any feature is computed.
    """
    config = config or FeatureConfig()
    if (dataset is None) == (audio is None and labels is None):
        raise TrainingError("give either a dataset folder or both --audio DIR and --labels CSV")
    if dataset is None and (audio is None or labels is None):
        raise TrainingError("--audio and --labels go together: give both")
    if not window_s > 0:
        raise TrainingError(f"window must be > 0 seconds, got {window_s}")
    found = load_dataset(dataset, audio=audio, labels=labels, require_labels=True)
    if found.missing:
        shown = ", ".join(found.missing[:5]) + (", ..." if len(found.missing) > 5 else "")
        raise DatasetError(
            f"{len(found.missing)} of {found.n_listed} labelled itemids have no audio file in {found.audio_dir}: {shown}"
        )
    clips = found.clips
    check_both_classes(clips)
    kept, hidden = split_labelled(clips, labelled_fraction, seed)
    unlab_files = find_unlabeled(unlabeled) if unlabeled else []
    labelled_paths = {c.path.resolve() for c in clips}
    unlab_files = [f for f in unlab_files if f.resolve() not in labelled_paths]  # never train on a clip twice

    cache = FeatureCache(cache_dir, config)
    run = {"workers": workers, "scheduler": scheduler, "progress": progress, "device": device}
    lab = compute_features([c.path for c in kept], config, cache, desc="labelled", **run)
    hid = compute_features([c.path for c in hidden], config, cache, desc="hidden-label", **run)
    unl = compute_features(unlab_files, config, cache, windows=WindowSpec(window_s, window_s), desc="unlabeled", **run)
    ok = {p: s[0] for p, s in zip(lab.paths, lab.sequences)}
    used = [c for c in kept if c.path in ok]
    if not used:
        raise TrainingError("none of the labelled recordings could be read; see the failures above")
    check_both_classes(used, "the readable labelled clips")
    return TrainingData(
        sequences=[ok[c.path] for c in used],
        labels=np.array([c.label for c in used], dtype=np.int64),
        unlabeled=[w for seqs in hid.sequences + unl.sequences for w in seqs],
        labelled_ids=[c.itemid for c in used],
        n_hidden=len(hid.paths),
        n_unlabeled_files=len(unl.paths),
        failed=lab.failed + hid.failed + unl.failed,
        cache_hits=cache.hits,
        cache_misses=cache.misses,
        dataset=found,
    )


def default_cache_dir(model_path: str | os.PathLike) -> Path:
    """``<the model file's folder>/.cache``: stable across runs that write the same model."""
    return Path(model_path).resolve().parent / CACHE_DIRNAME


def fit_detector(det, data: TrainingData, config: FeatureConfig, device: str = "cpu"):
    """Fit ``det`` on ``data`` (with the unlabeled windows when there are any); attach the configuration.

    ``device``: where a detector that can (:func:`scatterbird.pipeline.device.detector_on`) trains; the fitted
    state comes back on the CPU, and the saved model names no device.
    """
    with detector_on(det, str(resolve_device(device, option="device"))):
        if data.unlabeled:
            det.fit(data.sequences, data.labels, unlabeled=data.unlabeled)
        else:
            det.fit(data.sequences, data.labels)
    det.feature_config = config
    return det


def validate_output(path: str | os.PathLike) -> Path:
    """The model path, checked writable before hours of training."""
    p = Path(path)
    if p.is_dir():
        raise TrainingError(f"output {p} is a directory; give a model file name")
    parent = p.resolve().parent
    if not parent.is_dir():
        raise TrainingError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise TrainingError(f"output folder {parent} is not writable")
    return p


def validation_summary(det: Any) -> str | None:
    """The fitted detector's own validation score, in words; None when it keeps none.

    An inversion detector holds out a stratified validation split of the labelled clips for early stopping
    (``validation_auc_``, ``n_validation_``, ``best_epoch_``); an RNTK detector selects its kernel by
    cross-validation (``extra_["cv_auc"]``).
    """
    auc = getattr(det, "validation_auc_", None)
    if auc is not None:
        epochs = len(getattr(det, "history_", []))
        epoch = f" (epoch {det.best_epoch_ + 1} of {epochs} kept)" if epochs and det.best_epoch_ >= 0 else ""
        return f"validation ROC AUC {auc:.3f} on {det.n_validation_} held-out labelled clip(s){epoch}"
    if hasattr(det, "n_validation_"):  # it holds out a split when there are enough clips of each class
        return "no validation score (too few labelled clips of a class to hold out a validation split)"
    cv = (getattr(det, "extra_", None) or {}).get("cv_auc")
    if cv is not None:
        return f"cross-validated ROC AUC {cv:.3f} (kernel selection)"
    return None


@dataclass
class TrainReport:
    """What ``run_train`` did."""

    model_path: Path
    detector: Any
    data: TrainingData
    fit_seconds: float
    validation: str | None = None  # the detector's own validation score, in words (validation_summary)


def run_train(
    output: str | os.PathLike,
    *,
    model: str = "inversion",
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    config: FeatureConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device: str = "cpu",
    **inputs: Any,
) -> TrainReport:
    """Check everything, compute the features, train ``model`` and write it to ``output``.

    Parameters
    ----------
    output : path
        The model file to write.
    model : str
        Detector kind (see :func:`available_detectors`).
    params : mapping, optional
        Detector hyperparameters.
    seed : int
        Seeds the choice of kept labels and, as ``random_state``, the detector.
    config : FeatureConfig, optional
    cache_dir : path, optional
        Feature cache root; default ``<model folder>/.cache``.
    progress : bool
        Progress bars (features, and training when the detector takes ``verbose``).
    device : str
        Where the features are computed and the detector trains: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
        ``"auto"`` (:func:`scatterbird.pipeline.device.resolve_device`, checked before any work).
    **inputs
        ``dataset`` or ``audio`` + ``labels``, ``unlabeled``, ``labelled_fraction``, ``window_s``: see
        :func:`prepare_training_data`.

    Raises
    ------
    DatasetError, TrainingError
        For unusable inputs or options, before any feature is computed.
    """
    import time

    config = config or FeatureConfig()
    device = str(resolve_device(device))  # no such device: OptionError before any work
    out = validate_output(output)
    params = dict(params or {})
    if progress and "verbose" in inspect.signature(available_detectors().get(model, object).__init__).parameters:
        params.setdefault("verbose", True)
    det = build_detector(model, params, seed)  # a bad model name or parameter fails before any feature work
    data = prepare_training_data(
        config=config, cache_dir=cache_dir if cache_dir is not None else default_cache_dir(out),
        seed=seed, progress=progress, device=device, **inputs,
    )
    t0 = time.perf_counter()
    fit_detector(det, data, config, device)
    seconds = time.perf_counter() - t0
    det.save(out)
    return TrainReport(model_path=out, detector=det, data=data, fit_seconds=seconds,
                       validation=validation_summary(det))
