"""The Python face of scatterbird: detect in files or arrays, train and evaluate, in a few calls.

Every function here composes the pipeline's parts; the command line (``scatterbird ...``) does the same for
the shell. See the README's "Python API" section for examples.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from scatterbird.errors import AudioError, DatasetError
from scatterbird.models.base import Detector
from scatterbird.models.registry import describe_model, load_detector
from scatterbird.pipeline.datasets import load_datasets
from scatterbird.pipeline.detect.batch import DetectParams, detect_file, score_blocks
from scatterbird.pipeline.detect.store import FileResult
from scatterbird.pipeline.device import resolve_device
from scatterbird.pipeline.evaluate.run import evaluate as evaluate_datasets
from scatterbird.pipeline.frontend.audio import mono_at_rate
from scatterbird.pipeline.frontend.inputs import find_audio
from scatterbird.pipeline.train.adapt import AdaptReport, run_adapt
from scatterbird.pipeline.train.training import TrainReport, run_train

PathLike = Union[str, os.PathLike]
ModelLike = Union[Detector, PathLike, None]


def _detector(model: ModelLike) -> Detector:
    det = model if isinstance(model, Detector) else load_detector(model)
    if det.feature_config is None:
        raise AudioError("<model>", "the detector carries no feature configuration; train it with scatterbird.train")
    return det


def detect(
    source: np.ndarray | PathLike | Sequence[PathLike],
    *,
    sample_rate: int | None = None,
    model: ModelLike = None,
    window_s: float = 10.0,
    hop_s: float = 5.0,
    min_conf: float = 0.5,
    extensions: Iterable[str] | None = None,
    device: str = "cpu",
) -> FileResult | list[FileResult]:
    """Score every window of a recording given as an array, or of audio files, with a detector.

    Parameters
    ----------
    source : ndarray, path, or sequence of paths
        An in-memory recording, shape ``(n_samples,)`` or ``(n_samples, n_channels)``; or audio files,
        directories (searched recursively) and ``.txt`` lists of paths.
    sample_rate : int, optional
        The array's rate in Hz (required for an array; files say their own).
    model : Detector, path, or None
        A fitted detector, a model file, or None for the bundled default model.
    window_s, hop_s : float
        Window length and hop in seconds.
    min_conf : float
        Windows scoring at least this are merged into events.
    extensions : iterable of str, optional
        Extensions searched for in directories.
    device : str
        Where the scattering and the detector's scoring run: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or
        ``"auto"`` (CUDA when available). The results come back as NumPy arrays either way.

    Returns
    -------
    FileResult or list of FileResult
        For an array, one result (``path == "<array>"``); for files, one per file found, in order. Each has
        ``windows`` (``start_s, end_s, score`` rows), ``events`` (``start_s, end_s, peak_score, peak_s``) and
        ``status``; an unreadable file has ``status == "failed"`` and its ``error``, and the others go on.

    Raises
    ------
    AudioError
        For an unusable array. DetectorError for an unusable model; DatasetError when no file is found;
        OptionError for a device this machine does not have.

    Examples
    --------
    >>> import numpy as np, scatterbird                                  # doctest: +SKIP
    >>> result = scatterbird.detect(np.zeros(22050 * 12), sample_rate=22050)
    >>> result.windows[:, 2]                                           # one score per 10 s window
    """
    dev = str(resolve_device(device, option="device"))  # before any work
    det = _detector(model)
    params = DetectParams(window_s=window_s, hop_s=hop_s, min_conf=min_conf)
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise AudioError("<array>", "give the array's sample_rate")
        mono = mono_at_rate(source, sample_rate, det.feature_config.sample_rate)
        windows, events = score_blocks([mono], lambda: mono.size, det, params, device=dev, expected_samples=mono.size)
        return FileResult(path="<array>", size=None, mtime_ns=None, status="done", windows=windows, events=events,
                          duration_s=mono.size / det.feature_config.sample_rate, source_rate=int(sample_rate),
                          channels=1 if np.ndim(source) == 1 else int(np.shape(source)[1]))
    inputs = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    scan = find_audio(inputs, extensions)
    if not scan.files:
        problems = "; ".join(f"{p}: {why}" for p, why in scan.problems) or "no audio files"
        raise DatasetError(f"nothing to detect in {', '.join(map(str, inputs))} ({problems})")
    return [detect_file(p, det, params, device=dev) for p in scan.files]


def train(
    output: PathLike,
    *,
    dataset: PathLike | None = None,
    audio: PathLike | None = None,
    labels: PathLike | None = None,
    unlabeled: Sequence[PathLike] | None = None,
    kind: str = "inversion",
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = False,
    device: str = "cpu",
    **options: Any,
) -> TrainReport:
    """Train a detector on a labelled folder (Bird Audio Detection layout, or ``audio`` + ``labels``).

    Parameters
    ----------
    output : path
        The model file to write.
    dataset : path, optional
        A folder holding ``wav/`` and its label CSV.
    audio, labels : path, optional
        An audio folder and a label CSV (``itemid,hasbird``), instead of ``dataset``.
    unlabeled : sequence of path, optional
        Unlabeled recordings for the semi-supervised detectors.
    kind : str
        Detector kind (``scatterbird.models.available_detectors()``).
    params : mapping, optional
        Detector hyper-parameters.
    seed : int
        Seeds everything random.
    progress : bool
        Progress bars on stderr.
    device : str
        Where the features are computed and the detector trains: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"``
        or ``"auto"``. The model file written is the same on any device (its tensors are saved on the CPU).
    **options
        Further options of :func:`scatterbird.pipeline.train.training.run_train` (feature config, cache).

    Returns
    -------
    TrainReport
    """
    inputs: dict[str, Any] = {"dataset": dataset, "audio": audio, "labels": labels, "unlabeled": unlabeled}
    inputs = {k: v for k, v in inputs.items() if v is not None}
    dev = str(resolve_device(device, option="device"))
    return run_train(output, model=kind, params=params, seed=seed, progress=progress, device=dev, **inputs, **options)


def adapt(
    recordings: PathLike | Sequence[PathLike],
    output: PathLike,
    *,
    model: PathLike | None = None,
    labelled: Sequence[PathLike] | None = None,
    epochs: int = 5,
    labelled_share: float = 0.5,
    seed: int = 0,
    progress: bool = False,
    device: str = "cpu",
    **options: Any,
) -> AdaptReport:
    """Fine-tune an inversion model to a site from its unlabeled recordings (``scatterbird adapt``).

    Parameters
    ----------
    recordings : path or sequence of paths
        The site's recordings: files, directories (searched recursively), ``.txt`` path lists.
    output : path
        The adapted model file to write.
    model : path, optional
        The model to adapt; None for the bundled default model.
    labelled : sequence of path, optional
        Labelled folders (Bird Audio Detection layout) for the labelled share of every batch; default the
        corpus cache, else synthetic clips.
    epochs : int
        Passes over the recordings' windows.
    labelled_share : float
        Share of every batch taken by labelled clips, in (0, 1).
    seed : int
        Seeds the batch order and the labelled draw.
    progress : bool
        Progress bars on stderr.
    device : str
        Where the features are computed and the network trains: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"``
        or ``"auto"``.
    **options
        Further options of :func:`scatterbird.pipeline.train.adapt.run_adapt` (lr, workers, cache_dir).

    Returns
    -------
    AdaptReport
    """
    inputs = [recordings] if isinstance(recordings, (str, os.PathLike)) else list(recordings)
    dev = str(resolve_device(device, option="device"))
    return run_adapt(inputs, output, model=model, labelled=labelled, epochs=epochs, labelled_share=labelled_share,
                     seed=seed, progress=progress, device=dev, **options)


def evaluate(
    datasets: Mapping[str, PathLike] | Sequence[PathLike],
    output: PathLike,
    *,
    model: ModelLike = None,
    progress: bool = False,
    device: str = "cpu",
    **options: Any,
):
    """ROC AUC of a detector on labelled datasets, with bootstrap intervals, plots and an HTML report.

    Parameters
    ----------
    datasets : mapping of name to path, or sequence of paths
        Challenge-style folders (or label CSVs); names are recognised from the folder when not given.
    output : path
        Folder for ``metrics.json``, ``predictions.csv``, plots and ``report.html``.
    model : Detector, path, or None
        The detector; None for the bundled default model.
    progress : bool
        Progress bars on stderr.
    device : str
        Where the features are computed and the detector scores: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"``
        or ``"auto"``.
    **options
        Further options of :func:`scatterbird.pipeline.evaluate.run.evaluate` (workers, cache, bootstrap).

    Returns
    -------
    RunResult
        Per dataset its metrics; ``harmonic_auc`` over the datasets.
    """
    specs = [f"{k}={v}" for k, v in datasets.items()] if isinstance(datasets, Mapping) else [os.fspath(d) for d in datasets]
    dev = str(resolve_device(device, option="device"))  # before the model and the datasets are read
    det = _detector(model)
    source = None if isinstance(model, Detector) else model
    loaded = load_datasets(specs)
    return evaluate_datasets(det, loaded, Path(output), model_path=describe_model(source), progress=progress,
                             device=dev, **options)
