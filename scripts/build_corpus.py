#!/usr/bin/env python
"""Build the real-sound training corpus from 52 Debian packages (see data/corpus.py).

Fetches each listed package with ``apt-get download`` (a ``.deb`` already in ``WORKDIR/debs`` or in the
bootstrap set's ``debs`` folder is used as is), extracts and verifies the listed files against
``data/training_sources_sha256.csv`` (a changed or missing file is reported and left out), cuts them, deals
them to folds by package (and by source file) and mixes each fold's 10 s clips. Everything is written under
``--workdir`` (default ``~/.cache/scatterbird/corpus`` or ``$SCATTERBIRD_CORPUS``), never into the repository.
A rerun reuses every step already done, folds included.

Examples::

    python scripts/build_corpus.py --no-mix            # fetch, unpack, verify, cut; describe the folds
    python scripts/build_corpus.py --folds 5 --clips-per-fold 1100 --unlabeled-per-fold 300
    # an ablation: the same sources and folds, mixed without one ingredient, reusing the cuts above
    python scripts/build_corpus.py --workdir ~/.cache/scatterbird/corpus-nohard --cuts-from ~/.cache/scatterbird/corpus \
        --clips-per-fold 300 --unlabeled-per-fold 0 --mix p_hard_negative=0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from scatterbird.data.bootstrap import MixOptions
from scatterbird.data.corpus import DEFAULT_WORKDIR, SCHEMES, build_corpus
from scatterbird.errors import BootstrapError, ScatterbirdError


def _offline(package: str, version: str, folder: Path) -> None:
    raise BootstrapError(f"{package}={version} is not in {folder} and --offline forbids downloading it")


def mix_options(items: list[str]) -> MixOptions:
    """``MixOptions`` with ``KEY=VALUE`` overrides (values in JSON; lists become tuples)."""
    fields = {f.name for f in dataclasses.fields(MixOptions)}
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in fields:
            raise BootstrapError(f"--mix {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(fields))}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise BootstrapError(f"--mix {item!r}: the value must be JSON (a number, a list, an object)") from None
        values[key] = tuple(value) if isinstance(value, list) else value
    return MixOptions(**values)


def link_cuts(workdir: Path, source: Path, sr: int) -> list[Path]:
    """Point ``workdir``'s extracted files and cuts at another build's (same lists, same rate): an ablation
    build then only mixes. Returns the other build's ``debs`` folder, to be searched for packages."""
    source = source.expanduser().resolve()
    for sub in ("extract", f"segments/sr{sr}"):
        if not (source / sub).is_dir():
            raise BootstrapError(f"--cuts-from {source}: it has no {sub} (build it first)")
        link = workdir / sub
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(source / sub, target_is_directory=True)
    return [source / "debs"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="where everything is written (default %(default)s)")
    p.add_argument("--folds", type=int, default=5, help="folds of each scheme (default %(default)s)")
    p.add_argument("--clips-per-fold", type=int, default=1100, help="labelled clips per package fold (default %(default)s)")
    p.add_argument("--unlabeled-per-fold", type=int, default=300,
                   help="unlabelled clips per fold of each mixed scheme (default %(default)s)")
    p.add_argument("--source-clips-per-fold", type=int, default=0,
                   help="labelled clips per source-file fold; 0: not mixed (default %(default)s)")
    p.add_argument("--sr", type=int, default=22050, help="sample rate of the clips (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the folds and the mixing (default %(default)s)")
    p.add_argument("--no-mix", action="store_true", help="fetch, unpack, verify, cut and describe the folds only")
    p.add_argument("--offline", action="store_true", help="never download: a missing .deb is an error")
    p.add_argument("--mix", action="append", default=[], metavar="KEY=VALUE",
                   help="override a mixing option (data.bootstrap.MixOptions; repeatable), e.g. p_reverb=0")
    p.add_argument("--cuts-from", metavar="WORKDIR", help="reuse another build's extracted files and cuts (ablations)")
    args = p.parse_args(argv)
    clips = (0, 0, 0) if args.no_mix else (args.clips_per_fold, args.unlabeled_per_fold, args.source_clips_per_fold)
    t0 = time.perf_counter()
    try:
        opts = mix_options(args.mix)
        work = Path(args.workdir).expanduser()
        debs = link_cuts(work, Path(args.cuts_from), args.sr) if args.cuts_from else []
        info = build_corpus(
            work, folds=args.folds, clips_per_fold=clips[0], unlabeled_per_fold=clips[1],
            source_clips_per_fold=clips[2], sr=args.sr, seed=args.seed, opts=opts,
            download=_offline if args.offline else None,
            deb_folders=[*debs, Path.home() / ".cache" / "scatterbird" / "bootstrap" / "debs"] if debs else None,
        )
    except (ScatterbirdError, OSError, TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{info['segments']} cuts from {len(info['packages'])} packages; {len(info['refused'])} refused")
    for scheme in SCHEMES:
        for f in info["schemes"][scheme]["folds"]:
            where = f["dir"] or "(not mixed)"
            print(f"{scheme} {f['name']}: {f['birds']} bird / {f['others']} other cuts, {len(f['packages'])} packages "
                  f"(birds from {', '.join(f['bird_packages']) or '-'}): {where}")
    print(f"build description: {Path(info['workdir']) / 'build.json'} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
