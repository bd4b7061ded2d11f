"""Write the scattering features of recordings to ``.npz`` files (the ``features`` command's work)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from scatterbird.errors import OutputError
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.device import resolve_device
from scatterbird.pipeline.executor import open_executor, run_each, worker_died
from scatterbird.pipeline.frontend.audio import AudioError, stream_audio
from scatterbird.pipeline.frontend.clips import scatter_recording
from scatterbird.pipeline.frontend.scattering import Scattergram, Scattering, concatenate
from scatterbird.pipeline.output_files import prepare_output_dir, write_bytes_atomic

#: What a file's failure says when the worker process computing it died (a crash, or out of memory).
WORKER_DIED = "a worker process died while this file was in flight (crash or out of memory); rerun to retry"

_SCATTERINGS: dict[tuple[str, str], Scattering] = {}


def scattering_for(config: FeatureConfig, device: str | torch.device = "cpu") -> Scattering:
    """One front end per configuration, device and process: building its filter banks takes seconds.

    Parameters
    ----------
    config : FeatureConfig
    device : str or torch.device
        Where the transform runs (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``; see
        :func:`scatterbird.pipeline.device.resolve_device`, which refuses a device this machine lacks).
        The features come back on the CPU whatever the device.
    """
    dev = resolve_device(device, option="device")
    key = (config.hash, str(dev))
    sc = _SCATTERINGS.get(key)
    if sc is None:
        sc = _SCATTERINGS[key] = Scattering(config, device=dev)
    return sc


def failure_reason(error: BaseException) -> str:
    """What to record for a file whose job raised ``error``."""
    if isinstance(error, AudioError):
        return error.reason
    if worker_died(error):
        return WORKER_DIED
    return f"processing error ({type(error).__name__}: {error})"


def save_scattergram(
    path: str | os.PathLike,
    sg: Scattergram,
    config: FeatureConfig,
    source: str = "",
    source_stat: tuple[int, int] | None = None,
) -> None:
    """Write one ``.npz`` with ``S`` (float32, channels x frames), its metadata and the configuration.

    ``source_stat`` is the source recording's ``(size, mtime_ns)`` when it was read (-1, -1 when unknown): a
    rerun of ``features`` skips the file while they and the configuration are unchanged (:func:`is_up_to_date`).
    """
    size, mtime_ns = source_stat if source_stat is not None else (-1, -1)
    buf = io.BytesIO()  # compressed in memory, then written whole or not at all (OutputError on failure)
    np.savez_compressed(
        buf,
        S=sg.S.astype(np.float32),
        frame_rate=np.float64(sg.frame_rate),
        start_time=np.float64(sg.start_time),
        order=sg.order,
        frequency=sg.frequency,
        frequency2=sg.frequency2,
        config_hash=np.str_(config.hash),
        config_json=np.str_(config.to_json()),
        source=np.str_(source),
        source_size=np.int64(size),
        source_mtime_ns=np.int64(mtime_ns),
    )
    write_bytes_atomic(path, buf.getvalue())


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


def source_stat(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a source recording, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


def is_up_to_date(target: str | os.PathLike, source: str | os.PathLike, config: FeatureConfig) -> bool:
    """Whether ``target`` already holds ``source``'s features for ``config``: it exists, reads back whole, and
    records the same configuration hash and the source's present size and modification time."""
    stat = source_stat(source)
    if stat is None or not os.path.isfile(target):
        return False
    try:
        with np.load(target, allow_pickle=False) as z:
            if str(z["config_hash"]) != config.hash:
                return False
            if (int(z["source_size"]), int(z["source_mtime_ns"])) != stat:
                return False
            z["S"]  # decompressed in full: a damaged file fails its checksum here
    except Exception:  # unreadable, not an npz, written before the source stat was stored: redo it
        return False
    return True


def output_name(path: Path, root: Path | None) -> str:
    """A flat, collision-free output stem: the path relative to its input root, '/' replaced by '__'."""
    rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
    return "__".join(rel.with_suffix("").parts) + path.suffix.replace(".", "_")


@dataclass
class FeatureRun:
    done: list[tuple[str, str]] = field(default_factory=list)  # (input, output) computed now
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, output) already up to date


def write_features(file: tuple[Path, Path | None], outdir: Path, config: FeatureConfig, device: str = "cpu") -> str:
    """Scatter one recording (found under an input root) into ``OUTDIR/<name>.npz``; the file written.

    ``device`` is where the transform runs, by name (a string, so that it travels to worker processes).

    Raises
    ------
    AudioError
        When the recording cannot be used.
    """
    path, root = file
    stat = source_stat(path)  # before reading: a file changed meanwhile is redone on the next run
    stream = stream_audio(path, config.sample_rate)
    # a short file in a buffer of about its own length (pipeline/frontend/clips.py), not a whole streaming buffer
    sg = concatenate(list(scatter_recording(scattering_for(config, device), stream, stream.expected_samples)))
    target = outdir / (output_name(path, root) + ".npz")
    save_scattergram(target, sg, config, source=str(path), source_stat=stat)
    return str(target)


def extract_features(
    files: Sequence[tuple[Path, Path | None]],
    outdir: str | os.PathLike,
    config: FeatureConfig,
    *,
    progress: bool = True,
    workers: int = 1,
    scheduler: str | None = None,
    force: bool = False,
    device: str | torch.device = "cpu",
) -> FeatureRun:
    """Scatter each file and write ``OUTDIR/<name>.npz``; unreadable files are recorded, not raised.

    A file whose ``.npz`` is already up to date (:func:`is_up_to_date`: same configuration, source unchanged)
    is skipped, as ``detect`` skips the files it has done; ``force`` redoes every file.

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
    force : bool
        Recompute the files already up to date too.
    device : str or torch.device
        Where the scattering runs (:func:`scatterbird.pipeline.device.resolve_device`; checked before any
        work). The features written are the same whatever the device, up to float rounding.

    Returns
    -------
    FeatureRun
        Files written, skipped and failed, each in the order of ``files``.
    """
    device_name = str(resolve_device(device))  # no such device: OptionError before any work
    out = prepare_output_dir(outdir)  # a file, read-only, not writable: OutputError before any work
    skipped: dict[Path, str] = {}
    for path, root in [] if force else files:
        target = out / (output_name(path, root) + ".npz")
        if is_up_to_date(target, path, config):
            skipped[path] = str(target)
    todo = [f for f in files if f[0] not in skipped]
    written: dict[Path, str] = {}
    failed: dict[Path, str] = {}
    with tqdm(total=len(todo), desc="features", unit="file", disable=not progress) as bar:
        with open_executor(workers if todo else 1, scheduler if todo else None) as ex:  # no pool for none
            job = partial(write_features, outdir=out, config=config, device=device_name)
            for (path, _root), target, error in run_each(ex, job, todo):
                if error is None:
                    written[path] = target
                elif isinstance(error, OutputError):  # the next files would fail alike: stop the run
                    raise error
                else:
                    failed[path] = failure_reason(error)
                bar.set_postfix_str(path.name[-30:])
                bar.update(1)
    return FeatureRun(
        done=[(str(p), written[p]) for p, _ in files if p in written],
        failed=[(str(p), failed[p]) for p, _ in files if p in failed],
        skipped=[(str(p), skipped[p]) for p, _ in files if p in skipped],
    )
