"""Write the scattering features of recordings to ``.npz`` files (the ``features`` command's work)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.executor import open_executor, run_each, worker_died
from scatterbird.pipeline.frontend.audio import AudioError, stream_audio
from scatterbird.pipeline.frontend.scattering import Scattergram, Scattering, concatenate

#: What a file's failure says when the worker process computing it died (a crash, or out of memory).
WORKER_DIED = "a worker process died while this file was in flight (crash or out of memory); rerun to retry"

_SCATTERINGS: dict[str, Scattering] = {}


def scattering_for(config: FeatureConfig) -> Scattering:
    """One front end per configuration and process: building its filter banks takes seconds."""
    sc = _SCATTERINGS.get(config.hash)
    if sc is None:
        sc = _SCATTERINGS[config.hash] = Scattering(config)
    return sc


def failure_reason(error: BaseException) -> str:
    """What to record for a file whose job raised ``error``."""
    if isinstance(error, AudioError):
        return error.reason
    if worker_died(error):
        return WORKER_DIED
    return f"processing error ({type(error).__name__}: {error})"


def save_scattergram(path: str | os.PathLike, sg: Scattergram, config: FeatureConfig, source: str = "") -> None:
    """Write one ``.npz`` with ``S`` (float32, channels x frames), its metadata and the configuration."""
    tmp = Path(f"{os.fspath(path)}.tmp.npz")
    np.savez_compressed(
        tmp,
        S=sg.S.astype(np.float32),
        frame_rate=np.float64(sg.frame_rate),
        start_time=np.float64(sg.start_time),
        order=sg.order,
        frequency=sg.frequency,
        frequency2=sg.frequency2,
        config_hash=np.str_(config.hash),
        config_json=np.str_(config.to_json()),
        source=np.str_(source),
    )
    os.replace(tmp, path)


def load_scattergram(path: str | os.PathLike) -> Scattergram:
    """Read a file written by :func:`save_scattergram` (plain arrays; no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        return Scattergram(
            S=z["S"],
            frame_rate=float(z["frame_rate"]),
            start_time=float(z["start_time"]),
            order=z["order"],
            frequency=z["frequency"],
            frequency2=z["frequency2"],
            config_hash=str(z["config_hash"]),
        )


def output_name(path: Path, root: Path | None) -> str:
    """A flat, collision-free output stem: the path relative to its input root, '/' replaced by '__'."""
    rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
    return "__".join(rel.with_suffix("").parts) + path.suffix.replace(".", "_")


@dataclass
class FeatureRun:
    done: list[tuple[str, str]] = field(default_factory=list)  # (input, output)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)


def write_features(file: tuple[Path, Path | None], outdir: Path, config: FeatureConfig) -> str:
    """Scatter one recording (found under an input root) into ``OUTDIR/<name>.npz``; the file written.

    Raises
    ------
    AudioError
        When the recording cannot be used.
    """
    path, root = file
    stream = stream_audio(path, config.sample_rate)
    sg = concatenate(list(scattering_for(config).stream(stream)))
    target = outdir / (output_name(path, root) + ".npz")
    save_scattergram(target, sg, config, source=str(path))
    return str(target)


def extract_features(
    files: Sequence[tuple[Path, Path | None]],
    outdir: str | os.PathLike,
    config: FeatureConfig,
    *,
    progress: bool = True,
    workers: int = 1,
    scheduler: str | None = None,
) -> FeatureRun:
    """Scatter each file and write ``OUTDIR/<name>.npz``; unreadable files are recorded, not raised.

    Parameters
    ----------
    files : sequence of (path, root)
        Each recording and the input root it was found under (for the output name).
    outdir : path
        Output directory (created).
    config : FeatureConfig
    progress : bool
        Show a progress bar (tqdm) on stderr.
    workers, scheduler
        Where the files are scattered (:func:`pipeline.executor.open_executor`).

    Returns
    -------
    FeatureRun
        Files written and files failed, each in the order of ``files``.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[Path, str] = {}
    failed: dict[Path, str] = {}
    with tqdm(total=len(files), desc="features", unit="file", disable=not progress) as bar:
        with open_executor(workers, scheduler) as ex:
            for (path, _root), target, error in run_each(ex, partial(write_features, outdir=out, config=config), files):
                if error is None:
                    written[path] = target
                else:
                    failed[path] = failure_reason(error)
                bar.set_postfix_str(path.name[-30:])
                bar.update(1)
    return FeatureRun(
        done=[(str(p), written[p]) for p, _ in files if p in written],
        failed=[(str(p), failed[p]) for p, _ in files if p in failed],
    )
