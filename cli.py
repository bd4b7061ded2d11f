"""scatterbird's command line: the thin face of the pipeline (parse, call library functions, print).

Run ``scatterbird --help`` (installed) or ``python cli.py --help`` (from a checkout).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, "") and str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # `python cli.py` from a checkout

from pipeline import __version__  # noqa: E402
from pipeline.config import THRESHOLD_MODES, ConfigError, FeatureConfig  # noqa: E402

#: Exit codes (documented in the README).
EXIT_OK = 0
EXIT_SOME_FAILED = 1  # the run finished but some inputs could not be processed
EXIT_USAGE = 2  # bad options or no usable input


def _add_feature_options(p: argparse.ArgumentParser) -> None:
    d = FeatureConfig()
    g = p.add_argument_group("feature configuration")
    g.add_argument("--sr", type=int, default=d.sample_rate, help="pipeline sample rate in Hz (default %(default)s)")
    g.add_argument("-J", type=int, default=d.J, help="log2 averaging scale in samples (default %(default)s)")
    g.add_argument("--q1", type=int, default=d.Q1, help="first-order wavelets per octave (default %(default)s)")
    g.add_argument("--q2", type=int, default=d.Q2, help="second-order wavelets per octave (default %(default)s)")
    g.add_argument("--order", type=int, choices=(1, 2), default=d.max_order, help="scattering order (default %(default)s)")
    g.add_argument(
        "--threshold",
        choices=THRESHOLD_MODES,
        default=d.threshold,
        help="thresholding of the wavelet coefficients before the modulus (default %(default)s)",
    )


def _config_from(args: argparse.Namespace) -> FeatureConfig:
    return FeatureConfig(
        sample_rate=args.sr, J=args.J, Q1=args.q1, Q2=args.q2, max_order=args.order, threshold=args.threshold
    )


def _report_problems(problems: Sequence[tuple[str, str]], what: str = "skipped") -> None:
    for path, reason in problems:
        print(f"{what}: {path}: {reason}", file=sys.stderr)


# -- features ------------------------------------------------------------------------------------
def cmd_features(args: argparse.Namespace) -> int:
    from pipeline.features import extract_features
    from pipeline.inputs import find_audio

    config = _config_from(args)
    scan = find_audio(args.inputs, args.ext)
    _report_problems(scan.problems)
    if not scan.files:
        print("error: no audio files found in the given inputs", file=sys.stderr)
        return EXIT_USAGE
    run = extract_features(scan.with_roots(), args.output, config, progress=not args.quiet)
    _report_problems(run.failed, "failed")
    print(
        f"features: {len(run.done)} file(s) written to {args.output}, {len(run.failed)} failed "
        f"(config {config.hash})"
    )
    return EXIT_SOME_FAILED if (run.failed or scan.problems) else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scatterbird",
        description="Find bird activity in audio recordings with wavelet-scattering features.",
    )
    parser.add_argument("--version", action="version", version=f"scatterbird {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("features", help="compute log-scattering features of recordings into .npz files")
    p.add_argument("inputs", nargs="+", help="audio files, directories (searched recursively) or .txt path lists")
    p.add_argument("-o", "--output", required=True, help="output directory for the .npz files")
    p.add_argument("--ext", action="append", help="extension to look for in directories (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_feature_options(p)
    p.set_defaults(func=cmd_features)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        parser.error(str(exc))  # exits with EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
