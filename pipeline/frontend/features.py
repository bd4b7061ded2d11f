"""Write the scattering features of recordings to ``.npz`` files (the ``features`` command's work)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from scatterbird.pipeline.frontend.audio import AudioError, stream_audio
from scatterbird.pipeline.config import FeatureConfig
from scatterbird.pipeline.frontend.scattering import Scattergram, Scattering, concatenate


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


def extract_features(
    files: Sequence[tuple[Path, Path | None]],
    outdir: str | os.PathLike,
    config: FeatureConfig,
    *,
    progress: bool = True,
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
    """
    from tqdm import tqdm

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    sc = Scattering(config)
    run = FeatureRun()
    bar = tqdm(files, desc="features", unit="file", disable=not progress)
    for path, root in bar:
        bar.set_postfix_str(path.name[-30:])
        try:
            stream = stream_audio(path, config.sample_rate)
            sg = concatenate(list(sc.stream(stream)))
        except AudioError as exc:
            run.failed.append((str(path), exc.reason))
            continue
        target = out / (output_name(path, root) + ".npz")
        save_scattergram(target, sg, config, source=str(path))
        run.done.append((str(path), str(target)))
    return run
