"""Features of many recordings, for training and evaluation, computed through one executor and cached on disk.

A labelled clip becomes one sequence: its whole scattergram pooled to ``FeatureConfig.pool_s``
(:func:`clip_sequence`); the clips of one job are read whole and scattered together in batches
(:func:`~scatterbird.pipeline.frontend.clips.scatter_clips`), so a short clip costs about its own length
rather than a streaming buffer. A recording of any length can instead be cut into the windows detection
scores (:func:`window_sequences`), streamed. :func:`compute_features` runs either over many files in this
process, on local worker processes or on a Dask cluster (:mod:`pipeline.executor`), reading back what the
cache holds: entries live under ``CACHE/<feature-config hash>/`` and are keyed by the file's absolute path,
size and modification time and by the cut, so a second run recomputes nothing and an edited recording or
another configuration never reuses stale features. ``scatterbird train``, ``evaluate``, ``crossval`` and ``analyze`` share it, so a
model is evaluated on exactly what it was trained on, and a dataset used for both is scattered once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from scatterbird.errors import AudioError
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.datasets import Clip
from scatterbird.pipeline.detect.windows import WindowSpec, iter_windows, pool_sequence
from scatterbird.pipeline.executor import open_executor, run_each
from scatterbird.pipeline.frontend.audio import stream_audio
from scatterbird.pipeline.frontend.clips import MAX_BATCH_SAMPLES, read_if_short, scatter_clips
from scatterbird.pipeline.frontend.features import failure_reason, scattering_for
from scatterbird.pipeline.frontend.scattering import Scattergram, Scattering, concatenate, scatter_file

#: Whole clips per job, in this process too: a job's clips are scattered together (in batches of at most
#: ``MAX_BATCH_SAMPLES``), its decoded audio is held at once, and the progress bar moves job by job.
CLIPS_PER_JOB = 16


class FeatureCache:
    """Sequences per recording on disk, under ``ROOT/<config hash>/<key>.npz``.

    The key hashes the recording's absolute path, size and modification time, and what is cut from it
    (the whole clip, or windows of a given length and hop). Files are plain ``.npz`` (no pickle).

    Parameters
    ----------
    root : path or None
        Cache folder (created); None disables caching.
    config : FeatureConfig
    """

    def __init__(self, root: str | os.PathLike | None, config: FeatureConfig) -> None:
        self.config = config
        self.root = Path(root) if root is not None else None
        self.dir = self.root / config.hash if self.root is not None else None
        self.hits = 0
        self.misses = 0
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            info = self.dir / "config.json"
            if not info.exists():
                info.write_text(config.to_json() + "\n")

    def key(self, path: Path, cut: str) -> str:
        st = path.stat()
        ident = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "cut": cut}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]

    def get(self, path: Path, cut: str) -> list[np.ndarray] | None:
        if self.dir is None:
            return None
        f = self.dir / f"{self.key(path, cut)}.npz"
        try:
            with np.load(f, allow_pickle=False) as z:
                frames, bounds = z["frames"], z["bounds"]
        except (OSError, KeyError, ValueError):  # absent or damaged: recompute
            return None
        self.hits += 1
        return [frames[a:b] for a, b in bounds]

    def put(self, path: Path, cut: str, seqs: Sequence[np.ndarray]) -> None:
        if self.dir is None:
            return
        ends = np.cumsum([s.shape[0] for s in seqs])
        bounds = np.stack([ends - [s.shape[0] for s in seqs], ends], axis=1)
        f = self.dir / f"{self.key(path, cut)}.npz"
        tmp = Path(f"{f}.tmp.npz")
        np.savez(tmp, frames=np.concatenate(seqs).astype(np.float32), bounds=bounds, source=np.str_(path))
        os.replace(tmp, f)  # a crash never leaves a half-written entry under the real name


def clip_scattergram(path: str | os.PathLike, config: FeatureConfig) -> Scattergram:
    """The whole-clip scattergram of one recording (raises AudioError)."""
    return scatter_file(path, scattering=scattering_for(config))


def clip_sequence(path: Path, config: FeatureConfig, scattering: Scattering) -> np.ndarray:
    """A whole labelled clip as one (n_steps, n_channels) sequence (pooled to ``config.pool_s``), streamed
    alone (:func:`clip_sequences` does many clips at once)."""
    return _pooled(scatter_file(path, scattering=scattering), config)


def _pooled(sg: Scattergram, config: FeatureConfig) -> np.ndarray:
    return pool_sequence(np.ascontiguousarray(sg.S.T), sg.frame_rate, config.pool_s)


def _failure(exc: Exception) -> str:
    """The reason recorded for a recording whose features raised ``exc`` (AudioError, ValueError, OSError)."""
    if isinstance(exc, AudioError):
        return exc.reason
    if isinstance(exc, OSError):  # the file vanished or cannot be stat'ed since it was found
        return f"cannot be read ({exc.strerror or exc})"
    return str(exc)  # ValueError: e.g. a recording too short for one frame, or for one window


def clip_sequences(
    paths: Sequence[Path], config: FeatureConfig, scattering: Scattering
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Whole clips as sequences (as :func:`clip_sequence`), scattered together; each failure stays its clip's.

    A clip is decoded whole (as the stream reads it: mixed to mono, resampled) when its header promises at
    most ``MAX_BATCH_SAMPLES`` samples at the pipeline rate; the short ones are then scattered in batches
    (:func:`scatter_clips`). A longer one is streamed alone, in bounded memory.

    Returns
    -------
    (found, failed) : dicts keyed by ``str(path)``
        The sequence of each clip computed, the reason of each clip that could not be.
    """
    found: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    short: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        try:
            stream = stream_audio(path, config.sample_rate)
            x, blocks = read_if_short(stream, MAX_BATCH_SAMPLES) if stream.expected_samples <= MAX_BATCH_SAMPLES else (None, stream)
            if x is None:  # long (or longer than its header said): streamed alone, in bounded memory
                found[str(path)] = _pooled(concatenate(list(scattering.stream(blocks))), config)
                continue
            if x.size < 2:  # what `whole` refuses; not reached through the reader's shortest duration
                raise ValueError(f"too short: {x.size} sample(s) at {config.sample_rate} Hz")
            short.append((path, x))
        except (AudioError, ValueError, OSError) as exc:
            failed[str(path)] = _failure(exc)
    for (path, _), sg in zip(short, scatter_clips(scattering, [x for _, x in short]) if short else []):
        found[str(path)] = _pooled(sg, config)
    return found, failed


def window_sequences(path: Path, config: FeatureConfig, scattering: Scattering, spec: WindowSpec) -> list[np.ndarray]:
    """A recording of any length cut into the windows detection would score."""
    stream = stream_audio(path, config.sample_rate)
    chunks = scattering.stream(stream)
    return [w.frames for w in iter_windows(chunks, config, spec, lambda: stream.samples_out)]


def _cut(windows: WindowSpec | None) -> str:
    return "clip" if windows is None else f"windows:{windows.window_s}:{windows.hop_s}"


@dataclass
class FeatureSet:
    """Sequences of many recordings: ``sequences[i]`` holds the windows of ``paths[i]`` (one for a clip)."""

    paths: list[Path] = field(default_factory=list)
    sequences: list[list[np.ndarray]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class _JobResult:
    found: dict[str, list[np.ndarray]]
    failed: dict[str, str]
    hits: int
    misses: int


def features_job(
    paths: Sequence[Path],
    config: FeatureConfig,
    cache_root: Path | None,
    windows: WindowSpec | None,
    *,
    device: str = "cpu",
) -> _JobResult:
    """The features of a few recordings, from the cache or computed (and cached); run by any executor.

    Whole clips not in the cache are scattered together (:func:`clip_sequences`); windows are streamed file
    by file. ``device``: where the front end runs (:func:`~scatterbird.pipeline.frontend.features.scattering_for`).
    """
    cache = FeatureCache(cache_root, config)
    cut = _cut(windows)
    found: dict[str, list[np.ndarray]] = {}
    failed: dict[str, str] = {}
    todo: list[Path] = []  # whole clips to compute
    for path in paths:
        try:
            seqs = cache.get(path, cut)
            if seqs is None and windows is None:
                todo.append(path)
                continue
            if seqs is None:
                seqs = window_sequences(path, config, scattering_for(config, device=device), windows)
                cache.misses += 1
                cache.put(path, cut, seqs)
        except (AudioError, ValueError, OSError) as exc:
            failed[str(path)] = _failure(exc)
        else:
            found[str(path)] = seqs
    if todo:
        computed, bad = clip_sequences(todo, config, scattering_for(config, device=device))
        failed.update(bad)
        for path in todo:
            if str(path) not in computed:
                continue
            cache.misses += 1
            try:
                cache.put(path, cut, [computed[str(path)]])
            except OSError as exc:  # the file vanished since it was read: its key cannot be made
                failed[str(path)] = _failure(exc)
            else:
                found[str(path)] = [computed[str(path)]]
    return _JobResult(found, failed, cache.hits, cache.misses)


def compute_features(
    paths: Sequence[Path],
    config: FeatureConfig,
    cache: FeatureCache | None = None,
    *,
    windows: WindowSpec | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    desc: str = "features",
    progress: bool = True,
    device: str = "cpu",
) -> FeatureSet:
    """Features of every recording, from the cache when there; unreadable recordings are recorded, not raised.

    Parameters
    ----------
    paths : sequence of Path
    config : FeatureConfig
    cache : FeatureCache, optional
        Read and written; its ``hits`` and ``misses`` count this call's work. None: no cache.
    windows : WindowSpec, optional
        Cut each recording into these windows; None keeps each whole (a labelled clip).
    workers, scheduler
        Where the work runs (:func:`pipeline.executor.open_executor`).
    desc : str
        Progress bar label.
    progress : bool
        Show a progress bar (tqdm) on stderr.
    device : str
        Where the front end runs (``"cpu"``, ``"cuda"``, ...; see
        :func:`~scatterbird.pipeline.frontend.features.scattering_for`).

    Returns
    -------
    FeatureSet
        The recordings whose features were computed, and the failures, each in the order of ``paths``.
    """
    cache = cache if cache is not None else FeatureCache(None, config)
    step = CLIPS_PER_JOB if windows is None else 1  # whole clips are scattered a job's worth at a time
    jobs = [list(paths[i : i + step]) for i in range(0, len(paths), step)]
    found: dict[str, list[np.ndarray]] = {}
    failed: dict[str, str] = {}
    job = partial(features_job, config=config, cache_root=cache.root, windows=windows, device=device)
    with tqdm(total=len(paths), desc=desc, unit="file", disable=not progress, leave=False) as bar:
        with open_executor(workers if len(jobs) > 1 else 1, scheduler if jobs else None) as ex:
            for batch, res, error in run_each(ex, job, jobs):
                if error is not None:
                    failed.update((str(p), failure_reason(error)) for p in batch)
                else:
                    found.update(res.found)
                    failed.update(res.failed)
                    cache.hits += res.hits
                    cache.misses += res.misses
                bar.update(len(batch))
    out = FeatureSet(failed=[(str(p), failed[str(p)]) for p in paths if str(p) in failed])
    for p in paths:
        if str(p) in found:
            out.paths.append(p)
            out.sequences.append(found[str(p)])
    return out


def compute_sequences(
    clips: Sequence[Clip],
    config: FeatureConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    desc: str = "features",
    device: str = "cpu",
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Detector inputs of many clips (:func:`compute_features` of whole clips), aligned with ``clips``.

    Parameters
    ----------
    clips : sequence of Clip
    config : FeatureConfig
    cache_dir : path, optional
        Feature cache root (:class:`FeatureCache`); None: no cache.
    workers, scheduler
        Where the work runs (:func:`pipeline.executor.open_executor`).
    progress : bool
        A tqdm bar on stderr.
    device : str
        Where the front end runs (:func:`compute_features`).

    Returns
    -------
    (sequences, reasons) : two lists aligned with ``clips``
        An unreadable clip gives ``None`` and its reason, never an exception.
    """
    paths = [Path(c.path) for c in clips]
    fs = compute_features(paths, config, FeatureCache(cache_dir, config), workers=workers, scheduler=scheduler,
                          desc=desc, progress=progress, device=device)
    found = {str(p): s[0] for p, s in zip(fs.paths, fs.sequences)}
    failed = dict(fs.failed)
    seqs = [found.get(str(p)) for p in paths]
    reasons = [None if s is not None else failed.get(str(p), "features could not be computed") for p, s in zip(paths, seqs)]
    return seqs, reasons
