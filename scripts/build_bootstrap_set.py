#!/usr/bin/env python
"""Build the default model's training set from real recordings in two Debian packages (see data/bootstrap.py).

Fetches ``qabcs-data`` and ``scorched3d-data`` with ``apt-get download`` (Debian or Ubuntu with the archive
reachable), extracts the files listed in ``data/bootstrap_sources.csv``, cuts the listed segments, deals the
source files to folds and mixes each fold's 10 s clips. Everything is written under ``--workdir`` (default
``~/.cache/scatterbird/bootstrap``), never into the repository. Rerunning reuses the downloaded packages.

Example::

    python scripts/build_bootstrap_set.py --folds 4 --clips-per-fold 150
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scatterbird.data.bootstrap import DEFAULT_WORKDIR, SOURCES_CSV, BootstrapError, MixOptions, build  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="where everything is written (default %(default)s)")
    p.add_argument("--sources", default=str(SOURCES_CSV), help="the sources list (default %(default)s)")
    p.add_argument("--folds", type=int, default=4, help="source-file folds (default %(default)s)")
    p.add_argument("--clips-per-fold", type=int, default=150, help="labelled 10 s clips per fold (default %(default)s)")
    p.add_argument("--unlabeled-per-fold", type=int, default=0, help="extra unlabeled clips per fold (default %(default)s)")
    p.add_argument("--sr", type=int, default=22050, help="sample rate of the clips (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split and the mixing (default %(default)s)")
    args = p.parse_args(argv)
    try:
        info = build(
            args.workdir, sources=args.sources, folds=args.folds, clips_per_fold=args.clips_per_fold,
            unlabeled_per_fold=args.unlabeled_per_fold, sr=args.sr, seed=args.seed, opts=MixOptions(),
        )
    except BootstrapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for k, d in enumerate(info["fold_dirs"]):
        print(f"fold{k}: {d} ({len(info['fold_files'][f'fold{k}'])} source files)")
    print(f"build description: {Path(args.workdir).expanduser() / 'build.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
