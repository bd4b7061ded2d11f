"""scatterbird's command line: the thin face of the pipeline (parse, call library functions, print).

Run ``scatterbird --help`` (installed) or ``python cli.py --help`` (from a checkout).
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from scatterbird.errors import AnalysisError, Interrupted, OutputError, ScatterbirdError
from scatterbird.models.registry import available_detectors, build_detector, describe_model, load_detector
from scatterbird.pipeline.analysis.run import STAGES, AnalysisOptions, analyze_inputs
from scatterbird.pipeline.config import GRIDS, THRESHOLD_MODES, FeatureConfig
from scatterbird.pipeline.datasets import Dataset, load_datasets
from scatterbird.pipeline.detect.batch import DetectParams, parse_shard, run_detect, shard_from_env
from scatterbird.pipeline.detect.exports import export_store, parse_formats
from scatterbird.pipeline.detect.report import ReportOptions, ReportSummary, write_report
from scatterbird.pipeline.detect.store import STORE_NAME, ResultsStore, iter_store_paths, merge_stores
from scatterbird.pipeline.device import DEVICE_CHOICES, resolve_device
from scatterbird.pipeline.evaluate.run import crossval, evaluate
from scatterbird.pipeline.frontend.features import extract_features
from scatterbird.pipeline.frontend.inputs import find_audio
from scatterbird.pipeline.output_files import prepare_output_dir
from scatterbird.pipeline.threads import default_threads, use_threads
from scatterbird.pipeline.train.adapt import run_adapt
from scatterbird.pipeline.train.training import parse_params, run_train
from scatterbird.version import __version__

#: Exit codes (documented in the README).
EXIT_OK = 0
EXIT_SOME_FAILED = 1  # the run finished but some inputs could not be processed
EXIT_USAGE = 2  # bad options, no usable input or no model
EXIT_INTERRUPTED = 130  # 128 + the signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM

#: Detector kind of `train` and `crossval` when --kind is not given.
DEFAULT_KIND = "inversion"

#: Default sequence step for the RNTK (a 10 s clip becomes 40 steps).
RNTK_DEFAULT_POOL_S = 0.25

#: Default sequence step for the inversion network and ensembles of them: the bundled model's (validated on
#: the real-sound corpus), four times fewer steps to train on than the 23 ms frames.
INVERSION_DEFAULT_POOL_S = 0.1


def _fail(command: str, message: str) -> int:
    """Print the one-line error of a command and return EXIT_USAGE."""
    print(f"scatterbird {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


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
    g.add_argument(
        "--grid",
        choices=GRIDS,
        default=d.grid,
        help="where the wavelet coefficients are sampled: at each filter's bandwidth, or on kymatio's grid "
        "(equal to kymatio.Scattering1D, about twice the work) (default %(default)s)",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Where the work runs: one way for every command (pipeline/executor.py)."""
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default %(default)s: in this process)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on this Dask scheduler's workers instead, e.g. tcp://host:8786 (needs the cluster extra)")
    _add_threads_option(p)


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    """The thread budget on this machine (pipeline/threads.py); main() applies it before the command runs."""
    p.add_argument("--threads", type=int, metavar="N",
                   help=f"compute threads on this machine, shared among --workers (default {default_threads()}: "
                        "OMP_NUM_THREADS when set, else the cores this process may use less those busy with other "
                        "work while it started)")


def _add_device_option(p: argparse.ArgumentParser) -> None:
    """Where the scattering front end and the detector's scoring (and training) run; main() checks it first."""
    p.add_argument("--device", default="cpu", metavar="{" + ",".join(DEVICE_CHOICES) + "}",
                   help="where the scattering front end and the detector's scoring run: cpu (default), cuda (or "
                        "cuda:N) or auto (cuda when a CUDA device is usable, else cpu); the inversion detector "
                        "also trains there, other detectors compute on the CPU")


def _config_from(args: argparse.Namespace) -> FeatureConfig:
    return FeatureConfig(
        sample_rate=args.sr, J=args.J, Q1=args.q1, Q2=args.q2, max_order=args.order, threshold=args.threshold,
        grid=args.grid,
    )


def _report_problems(problems: Sequence[tuple[str, str]], what: str = "skipped") -> None:
    for path, reason in problems:
        print(f"{what}: {path}: {reason}", file=sys.stderr)


# -- features ------------------------------------------------------------------------------------
def cmd_features(args: argparse.Namespace) -> int:
    config = _config_from(args)
    scan = find_audio(args.inputs, args.ext)
    _report_problems(scan.problems)
    if not scan.files:
        return _fail(args.command, "no audio files found in the given inputs")
    run = extract_features(
        scan.with_roots(), args.output, config, progress=not args.quiet, workers=args.workers, scheduler=args.scheduler,
        force=args.force, device=args.device,
    )
    _report_problems(run.failed, "failed")
    print(
        f"features: {len(run.done)} file(s) written to {args.output}, {len(run.skipped)} skipped (already done), "
        f"{len(run.failed)} failed (config {config.hash})"
    )
    return EXIT_SOME_FAILED if (run.failed or scan.problems) else EXIT_OK


# -- detect / export / failures / merge ----------------------------------------------------------------
def cmd_detect(args: argparse.Namespace) -> int:
    summary = run_detect(
        args.inputs,
        args.output,
        model_path=args.model,
        params=DetectParams(args.window, args.hop, args.min_conf),
        extensions=args.ext,
        force=args.force,
        workers=args.workers,
        scheduler=args.scheduler,
        shard=parse_shard(args.shard) if args.shard else shard_from_env(),
        formats=parse_formats(args.format),
        progress=not args.quiet,
        device=args.device,
    )
    print("\n".join(summary.lines()))
    if not args.no_report and summary.store.name == STORE_NAME:  # a shard's report comes after `merge`
        _print_report(write_report(args.output, run_id=summary.run.id, options=_report_options(args)))
    return EXIT_SOME_FAILED if (summary.failed or summary.problems) else EXIT_OK


def _report_options(args: argparse.Namespace) -> ReportOptions:
    return ReportOptions(n_files=args.report_files, n_events=args.report_events)


def _print_report(report: ReportSummary) -> None:
    for note in report.notes:
        print(f"report: note: {note}", file=sys.stderr)
    print(f"report: {report.path} ({report.strips} score strip(s), {report.clips} event clip(s))")


def cmd_report(args: argparse.Namespace) -> int:
    _print_report(write_report(args.outdir, run_id=args.run, options=_report_options(args)))
    return EXIT_OK


def _add_report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report-files", type=int, default=ReportOptions.n_files, metavar="N",
                   help="score strips in report.html for the N files with the most events (default %(default)s)")
    p.add_argument("--report-events", type=int, default=ReportOptions.n_events, metavar="K",
                   help="top events in report.html with a sound clip and a scattergram (default %(default)s)")


def cmd_export(args: argparse.Namespace) -> int:
    run, written = export_store(args.outdir, parse_formats(args.format), run_id=args.run, to=args.to)
    with ResultsStore(Path(args.outdir) / STORE_NAME) as store:
        if (note := store.incomplete(run.id)) is not None:
            print(f"export: warning: {note}; the exports hold only those", file=sys.stderr)
    print(f"export: run {run.id} (model {run.model_hash}, config {run.config_hash}): {len(written)} file(s) "
          f"written to {args.to or args.outdir}")
    return EXIT_OK


def cmd_failures(args: argparse.Namespace) -> int:
    with ResultsStore(Path(args.outdir) / STORE_NAME) as store:
        run = store.run(args.run)
        failed = [(f["path"], f["error"] or "unknown error") for f in store.files(run.id) if f["status"] == "failed"]
        problems = store.problems(run.id)
        warned = store.warnings(run.id)  # processed, but truncated, damaged or at a low rate: not failures
    # Input problems (symlink loops, unreadable directories) are what the scan skipped, as `detect` reports
    # them: a section of their own, not counted as failed files. Rows stay `path<TAB>reason`; headers start '#'.
    for title, rows in (("failed files", failed), ("input problems", problems), ("processed with warnings", warned)):
        if rows:
            print(f"# {title} ({len(rows)})")
            for path, reason in rows:
                print(f"{path}\t{reason}")
    print(f"run {run.id}: {len(failed)} failed file(s), {len(problems)} input problem(s)"
          + (f", {len(warned)} file(s) processed with warnings" if warned else ""), file=sys.stderr)
    return EXIT_SOME_FAILED if (failed or problems) else EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    formats = parse_formats(args.format)  # a bad option is refused before anything is read
    sources = args.stores or list(iter_store_paths(args.outdir))
    if not sources:
        return _fail(args.command, f"no shard stores (scatterbird.shard-*-of-*.sqlite) in {args.outdir}")
    report = merge_stores(Path(args.outdir) / STORE_NAME, sources)
    # normally one run; with several (shards of different models), the newest is exported
    written = export_store(args.outdir, formats, run_id=max(report.runs))[1] if formats and report.runs else []
    print(f"merge: {len(report.sources)} store(s) into {Path(args.outdir) / STORE_NAME}: {report.copied} file "
          f"result(s) copied, {report.kept} already there; run(s) {report.runs}; {len(written)} export file(s)")
    return EXIT_OK


# -- train ---------------------------------------------------------------------------------------------
class _DeprecatedKindOption(argparse.Action):
    """``--model KIND`` of train and crossval: the old spelling of ``--kind``, accepted with a warning."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: warning: {option_string} KIND is deprecated and will name a model file; "
              f"use --kind {values}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_kind_options(p: argparse.ArgumentParser) -> None:
    kinds = sorted(available_detectors())
    p.add_argument("--kind", choices=kinds, default=DEFAULT_KIND, help="detector kind (default %(default)s)")
    p.add_argument("--model", dest="kind", choices=kinds, default=argparse.SUPPRESS, metavar="KIND",
                   action=_DeprecatedKindOption, help="deprecated spelling of --kind")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="detector hyperparameter, value as JSON, e.g. max_epochs=30 (repeatable)")
    p.add_argument("--pool", type=float, default=None,
                   help="average-pool frames to this step in seconds, 0 keeps the 23 ms frames "
                        "(default: 0.25 for --kind rntk, whose cost grows with the steps squared; 0.1 for inversion and "
                        "ensemble, the bundled model's; 0 otherwise)")


def _pool_for(args: argparse.Namespace) -> float:
    """The sequence step: as given, else RNTK_DEFAULT_POOL_S for the RNTK, INVERSION_DEFAULT_POOL_S for the
    inversion network (and ensembles), native frames otherwise."""
    if args.pool is not None:
        return float(args.pool)
    if args.kind == "rntk":
        return RNTK_DEFAULT_POOL_S
    return INVERSION_DEFAULT_POOL_S if args.kind in ("inversion", "ensemble") else 0.0


def cmd_train(args: argparse.Namespace) -> int:
    config = _config_from(args).replace(pool_s=_pool_for(args))
    inputs = {"unlabeled": args.unlabeled or [], "labelled_fraction": args.labelled_fraction, "window_s": args.window}
    if args.dataset is not None:
        inputs["dataset"] = args.dataset
    if args.audio is not None or args.labels is not None:
        inputs.update(audio=args.audio, labels=args.labels)
    report = run_train(
        args.output, model=args.kind, params=parse_params(args.param or []), seed=args.seed, config=config,
        cache_dir=args.cache, progress=not args.quiet, workers=args.workers, scheduler=args.scheduler,
        device=args.device, **inputs,
    )
    d = report.data
    incomplete = _print_datasets([d.dataset])  # bad label rows, skipped
    _report_problems(d.failed, "failed")
    print(
        f"train: {args.kind} on {len(d.labels)} labelled clip(s) ({int(d.labels.sum())} with birds) and "
        f"{len(d.unlabeled)} unlabeled window(s) ({d.n_unlabeled_files} file(s), {d.n_hidden} clip(s) with "
        f"hidden labels); features: {d.cache_hits} from the cache, {d.cache_misses} computed; fitted in "
        f"{report.fit_seconds:.1f} s" + (f"; {report.validation}" if report.validation else "")
        + f"; model written to {report.model_path} (config {config.hash})"
    )
    return EXIT_SOME_FAILED if d.failed or incomplete else EXIT_OK


# -- adapt ---------------------------------------------------------------------------------------------
def cmd_adapt(args: argparse.Namespace) -> int:
    report = run_adapt(
        args.recordings, args.output, model=args.model, labelled=args.labelled, epochs=args.epochs,
        labelled_share=args.labelled_share, lr=args.lr, seed=args.seed, workers=args.workers,
        scheduler=args.scheduler, device=args.device, cache_dir=args.cache, progress=not args.quiet,
    )
    for note in report.notes:
        print(f"adapt: warning: {note}", file=sys.stderr)
    _report_problems(report.failed, "failed")
    print(
        f"adapt: {report.base_model} adapted on {report.n_windows} window(s) of {report.clip_s:g} s from "
        f"{report.n_recordings} recording(s), with {report.n_labelled} labelled clip(s) ({report.n_labelled_birds} "
        f"with birds) from {report.labelled_from}; mean score on the recordings {report.mean_score_before:.3f} "
        f"before, {report.mean_score_after:.3f} after; model written to {report.model_path} "
        f"(config {report.detector.feature_config.hash})"
    )
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


# -- evaluate / crossval -------------------------------------------------------------------------------
def _print_datasets(datasets: Sequence[Dataset]) -> bool:
    """Print what was found; return True when some dataset is incomplete."""
    for d in datasets:
        print(d.summary(), file=sys.stderr)
        for msg in d.problems():
            print(f"  warning: {msg}", file=sys.stderr)
    return any(d.incomplete for d in datasets)


def _print_run(run, incomplete: bool) -> int:
    print(run.table())
    for ds, item, why in [(r.metrics.name, i, w) for r in run.results for i, _, w in r.metrics.failed]:
        print(f"failed: {ds}/{item}: {why}", file=sys.stderr)
    print(f"{run.kind}: report {run.outdir / 'report.html'}; metrics.json, predictions.csv in {run.outdir}")
    return EXIT_SOME_FAILED if (run.n_failed or incomplete) else EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    prepare_output_dir(args.output)  # a file or a read-only place fails now, not after the scoring
    datasets = load_datasets(args.dataset or [], args.audio or [], args.labels or [])
    incomplete = _print_datasets(datasets)
    detector, source = load_detector(args.model), describe_model(args.model)
    run = evaluate(
        detector, datasets, args.output, model_path=source, cache_dir=args.cache, workers=args.workers, scheduler=args.scheduler,
        n_boot=args.bootstrap, seed=args.seed, n_worst=args.worst, progress=not args.quiet, device=args.device,
    )
    return _print_run(run, incomplete)


def cmd_crossval(args: argparse.Namespace) -> int:
    prepare_output_dir(args.output)
    config = _config_from(args).replace(pool_s=_pool_for(args))
    params = parse_params(args.param or [])
    build_detector(args.kind, params, args.seed)  # a bad option fails before any feature work
    datasets = load_datasets(args.dataset or [], args.audio or [], args.labels or [])
    incomplete = _print_datasets(datasets)
    run = crossval(
        datasets, lambda: build_detector(args.kind, params, args.seed), args.output, config=config,
        semi_supervised=args.heldout_unlabeled, cache_dir=args.cache, workers=args.workers, scheduler=args.scheduler,
        n_boot=args.bootstrap, seed=args.seed, n_worst=args.worst, save_models=args.save_models,
        progress=not args.quiet,
    )
    return _print_run(run, incomplete)


def _add_dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", action="append", metavar="NAME=PATH",
                   help="a dataset folder (as its archive unpacks: wav/ and the label CSV) or its label CSV; NAME is "
                   "a published name (ff1010bird, warblrb10k, BirdVox-DCASE-20k, ...) or your own (repeatable)")
    p.add_argument("--audio", action="append", metavar="DIR", help="audio folder of a dataset in another layout (pairs with --labels; repeatable)")
    p.add_argument("--labels", action="append", metavar="CSV", help="its label CSV: itemid[,datasetid],hasbird (repeatable)")
    p.add_argument("-o", "--output", required=True, help="output folder: metrics.json, predictions.csv, report.html, figures")
    p.add_argument("--cache", help="feature cache folder (the one `train` uses; default: none)")
    _add_run_options(p)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates of the AUC interval (default %(default)s)")
    p.add_argument("--worst", type=int, default=5, help="worst false positives/negatives shown per dataset (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the bootstrap (and, for crossval, the detector) (default %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


# -- analyze -------------------------------------------------------------------------------------------
def _number_list(option: str, text: str, kind: type) -> tuple:
    """A comma-separated option value as numbers, or an error naming the option."""
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise AnalysisError(f"{option}: expected comma-separated {kind.__name__} values, got {text!r}") from None
    if not values:
        raise AnalysisError(f"{option}: no value given")
    return values


def cmd_analyze(args: argparse.Namespace) -> int:
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip()) if args.stages else STAGES
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise AnalysisError(f"--stages: unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    couplings = _number_list("--gan-couplings", args.gan_couplings, float)
    sizes = _number_list("--ae-sizes", args.ae_sizes, int)
    if min(couplings) < 0:
        raise AnalysisError(f"--gan-couplings: couplings must be >= 0, got {args.gan_couplings}")
    if min(sizes) < 2:
        raise AnalysisError(f"--ae-sizes: sizes must be >= 2 windows, got {args.ae_sizes}")
    couplings, sizes = tuple(dict.fromkeys(couplings)), tuple(dict.fromkeys(sizes))  # repeats dropped, order kept
    options = AnalysisOptions(
        stages=stages, max_clips=args.max_clips, detail_clips=args.detail_clips, slice_grid=args.slice_grid, seed=args.seed,
        em_latent=args.em_latent, em_iters=args.em_iters, gan_couplings=couplings, gan_steps=args.gan_steps,
        ae_sizes=sizes, ae_group_weight=args.ae_group_weight, ae_steps=args.ae_steps,
    )
    analysis, written, clips = analyze_inputs(
        args.inputs, args.output, model_path=args.model, labels_csv=args.labels, options=options,
        extensions=args.ext, cache_dir=args.cache, progress=not args.quiet,
    )
    _report_problems(clips.problems)
    s = analysis.summary
    print(f"analyze: {s['n_clips']} clip(s), {len(written)} file(s) written to {args.output} "
          f"(open {Path(args.output) / 'index.html'})")
    return EXIT_SOME_FAILED if clips.problems else EXIT_OK


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
    p.add_argument("--force", action="store_true",
                   help="recompute every file (default: skip those whose .npz has the same configuration and "
                        "whose source is unchanged in size and modification time)")
    _add_run_options(p)
    _add_device_option(p)
    _add_feature_options(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser(
        "detect",
        help="score every window of many recordings; resumable results store and exports",
        description=(
            "Detect bird activity in recordings: every window of --window s (every --hop s; the last window "
            "is aligned to the end of the file) is scored by the model; windows scoring >= --min-conf are merged "
            "into events. Results go to OUTPUT/scatterbird.sqlite, one transaction per file; rerunning with the "
            "same model and options resumes (files already done are skipped), another model or options starts "
            "a new run. Exit status: 0 all files processed, 1 some files failed (see `scatterbird failures`), "
            "2 usage error, no model or an output that cannot be written, 130/143 stopped by SIGINT/SIGTERM "
            "(rerun to resume)."
        ),
    )
    p.add_argument("inputs", nargs="+", help="audio files, directories (searched recursively) or .txt path lists")
    p.add_argument("-o", "--output", required=True, help="output directory (results store and exports)")
    p.add_argument("--model", help="a trained detector file (default: the bundled data/default_model.pt)")
    p.add_argument("--window", type=float, default=10.0, help="window length in seconds (default %(default)s)")
    p.add_argument("--hop", type=float, default=5.0, help="step between windows in seconds (default %(default)s)")
    p.add_argument("--min-conf", type=float, default=0.5, help="event threshold on window scores (default %(default)s)")
    p.add_argument("--ext", action="append", help="extension to look for in directories (repeatable)")
    p.add_argument("--format", default="csv,raven",
                   help="exports, comma-separated: csv, raven, audacity, json or all (default %(default)s)")
    p.add_argument("--force", action="store_true", help="redo every file, even those already done")
    _add_run_options(p)
    _add_device_option(p)
    p.add_argument("--shard", metavar="i/N", help="process shard i of N (1-based) into its own store; default "
                   "from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when set")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write OUTPUT/report.html")
    _add_report_options(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("export", help="re-export a run from a results store")
    p.add_argument("outdir", help="the detect output directory (holding scatterbird.sqlite)")
    p.add_argument("--format", default="all", help="csv, raven, audacity, json or all (default %(default)s)")
    p.add_argument("--run", type=int, help="run id (default: the latest)")
    p.add_argument("--to", help="write the exports here instead of OUTDIR")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("failures", help="list the files a run could not process, with the reasons, then the "
                                        "input problems of its scan (symlink loops, unreadable folders), then the "
                                        "files processed with warnings (truncated, damaged, low sample rate)")
    p.add_argument("outdir", help="the detect output directory (holding scatterbird.sqlite)")
    p.add_argument("--run", type=int, help="run id (default: the latest)")
    p.set_defaults(func=cmd_failures)

    p = sub.add_parser("report", help="write OUTDIR/report.html for a run from its results store")
    p.add_argument("outdir", help="the detect output directory (holding scatterbird.sqlite)")
    p.add_argument("--run", type=int, help="run id (default: the latest)")
    _add_report_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("merge", help="combine shard stores into OUTDIR/scatterbird.sqlite and export")
    p.add_argument("outdir", help="output directory (its scatterbird.shard-*.sqlite are merged by default)")
    p.add_argument("stores", nargs="*", help="shard stores to merge (default: those in OUTDIR)")
    p.add_argument("--format", default="csv,raven", help="exports after merging (default %(default)s)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser(
        "train",
        help="train a detector from labelled (and unlabeled) recordings",
        description=(
            "Train a detector on a Bird Audio Detection style folder (audio under wav/ and a CSV with itemid and "
            "hasbird columns), or on --audio DIR --labels CSV. Unlabeled recordings of any length (--unlabeled) "
            "are cut into --window s windows. Features are cached under --cache (default: .cache next to the "
            "model file), keyed by feature configuration and file, so a second run recomputes nothing. "
            "Exit status: 0 trained, 1 trained but some recordings could not be read, 2 usage or input error."
        ),
    )
    p.add_argument("dataset", nargs="?", help="Bird Audio Detection style folder (or give --audio and --labels)")
    p.add_argument("--audio", help="directory of the labelled recordings (file name without extension = itemid)")
    p.add_argument("--labels", help="label CSV with itemid and hasbird (0/1) columns")
    p.add_argument("--unlabeled", action="append", metavar="DIR",
                   help="unlabeled recordings: directory, file or .txt path list (repeatable)")
    p.add_argument("-o", "--output", required=True, help="model file to write (e.g. model.pt)")
    _add_kind_options(p)
    p.add_argument("--labelled-fraction", type=float, default=1.0,
                   help="keep this stratified share of the labels, the rest become unlabeled (default %(default)s)")
    p.add_argument("--window", type=float, default=10.0,
                   help="window length in seconds for unlabeled recordings (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the kept labels and the detector (default %(default)s)")
    p.add_argument("--cache", help="feature cache folder (default: .cache next to the model file)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_run_options(p)
    _add_device_option(p)
    _add_feature_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "adapt",
        help="fine-tune a model to your site from your own unlabeled recordings",
        description=(
            "Adapt a trained inversion model (default: the bundled one) to the recordings of a site: they are cut "
            "into windows of the model's clip length (10 s) and its network goes on training on them with the "
            "semi-supervised inversion loss (prediction entropy, reconstruction, a class-balance term), while every "
            "batch keeps a share of labelled clips (--labelled folders in Bird Audio Detection layout; default: the corpus built by "
            "scripts/build_corpus.py, else synthetic clips) so that the classes keep their meaning. The adapted "
            "model keeps the feature configuration and records what it was adapted on. Exit status: 0 adapted, "
            "1 adapted but some recordings could not be read, 2 usage or input error."
        ),
    )
    p.add_argument("recordings", nargs="+", help="your recordings: files, directories (searched recursively) or "
                                                   ".txt path lists")
    p.add_argument("-o", "--output", required=True, help="adapted model file to write (e.g. model.pt)")
    p.add_argument("--model", help="the model to adapt (default: the bundled data/default_model.pt)")
    p.add_argument("--labelled", action="append", metavar="DIR",
                   help="labelled folder in Bird Audio Detection layout for the labelled share (repeatable; "
                        "default: the corpus cache, else synthetic clips)")
    p.add_argument("--epochs", type=int, default=5, help="passes over your recordings' windows (default %(default)s)")
    p.add_argument("--labelled-share", type=float, default=0.5,
                   help="share of every batch taken by labelled clips, between 0 and 1 (default %(default)s)")
    p.add_argument("--lr", type=float, default=None,
                   help="step size (default: the model's own, lowered for fine-tuning)")
    p.add_argument("--seed", type=int, default=0, help="seeds the batch order and the labelled draw (default %(default)s)")
    p.add_argument("--cache", help="feature cache folder (default: .cache next to the model file)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_run_options(p)
    _add_device_option(p)
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser(
        "evaluate",
        help="score labelled challenge datasets with a model: ROC AUC per dataset, harmonic mean, HTML report",
        description=(
            "Score every clip of each dataset with a trained model (default: the bundled one) and write "
            "OUTPUT/metrics.json (per dataset: clips, positives, ROC AUC with a bootstrap 95% interval; the "
            "harmonic mean of the AUCs, the DCASE 2018 score), OUTPUT/predictions.csv (itemid,prob: the challenge's "
            "submission form), OUTPUT/scores.csv, ROC and histogram PNGs and OUTPUT/report.html. Datasets with "
            "hidden labels (the evaluation sets) are scored without AUC. Unreadable clips are listed, not fatal: "
            "predictions.csv gives them prob 0.5, listed in OUTPUT/predictions_defaulted.csv. "
            "Exit status: 0 all clips scored, 1 some clips missing or unreadable, 2 usage or input error."
        ),
    )
    _add_dataset_options(p)
    p.add_argument("--model", help="a trained detector file (default: the bundled data/default_model.pt)")
    _add_device_option(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "crossval",
        help="leave-one-dataset-out cross-validation (the DCASE 2018 protocol) with any detector kind",
        description=(
            "For each dataset: train a new detector (--kind KIND, --param KEY=VALUE) on the other datasets' "
            "labelled clips and score the one left out; with --heldout-unlabeled the left-out dataset's audio is "
            "also given to the detector as unlabeled data (semi-supervised). Same outputs as `evaluate`, with "
            "the held-out scores in predictions.csv and the harmonic mean of the held-out AUCs. "
            "Exit status as for `evaluate`."
        ),
    )
    _add_dataset_options(p)
    _add_kind_options(p)
    p.add_argument("--heldout-unlabeled", action="store_true",
                   help="give the held-out dataset's audio to fit() as unlabeled data (its labels are never used)")
    p.add_argument("--save-models", action="store_true", help="also write each fold's model to OUTPUT/models/<dataset>.pt")
    _add_feature_options(p)
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser(
        "analyze",
        help="spline-theory analyses of a trained network detector (templates, codes, regions, beta-VQ, rugosity, "
        "and the generative stages: EM novelty, generator ensembles, group autoencoder)",
        description=(
            "Runs the analysis stages of models/spline on audio files (or .npz feature files) with a trained "
            "piecewise-affine detector and writes OUTDIR/analysis.json, PNG figures and OUTDIR/index.html. "
            "With --labels the class-dependent numbers (shared regions, 1-NN accuracy, beta-sweep AUC) are added."
        ),
    )
    p.add_argument("inputs", nargs="+", help="audio or .npz feature files, directories or .txt path lists")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--model", help="a trained detector file (default: the bundled data/default_model.pt)")
    p.add_argument("--labels", help="itemid,hasbird CSV labelling the clips (optional)")
    p.add_argument("--ext", action="append", help="extension to look for in directories (repeatable)")
    p.add_argument("--cache", help="feature cache folder (default: features/ in the user cache folder)")
    p.add_argument("--max-clips", type=int, default=64, help="clips for templates, codes, beta sweep (default %(default)s)")
    p.add_argument("--detail-clips", type=int, default=4,
                   help="clips for exact region counts, local complexity, rugosity (default %(default)s)")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    p.add_argument("--slice-grid", type=int, default=80, help="grid points per axis of the 2-D slices (default %(default)s)")
    p.add_argument("--em-latent", type=int, choices=(1, 2), default=1,
                   help="latent dimension of the EM generator of em_novelty (default %(default)s)")
    p.add_argument("--em-iters", type=int, default=20, help="EM iterations of em_novelty (default %(default)s)")
    p.add_argument("--gan-couplings", default="0,0.1,1,10",
                   help="coupling strengths (lambda) of gan_ensemble, comma-separated (default %(default)s)")
    p.add_argument("--gan-steps", type=int, default=1500, help="training steps per generator ensemble (default %(default)s)")
    p.add_argument("--ae-sizes", default="50,200,1000",
                   help="training windows of group_ae's generalisation gap, comma-separated (default %(default)s)")
    p.add_argument("--ae-group-weight", type=float, default=1.0,
                   help="weight of the group regulariser in group_ae (default %(default)s)")
    p.add_argument("--ae-steps", type=int, default=600, help="gradient steps per autoencoder fit in group_ae (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions and generative fits (default %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_threads_option(p)
    p.set_defaults(func=cmd_analyze)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every error scatterbird raises on purpose becomes one line on stderr and EXIT_USAGE."""
    parser = build_parser()
    args = parser.parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()  # where Python lets a handler be set
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupted) if in_main else None
    try:
        if "threads" in args:  # the compute commands
            use_threads(args.threads)
        if "device" in args:  # a device this machine lacks: one line and exit 2, before any work
            args.device = str(resolve_device(args.device))
        return int(args.func(args))
    except ScatterbirdError as exc:
        return _fail(args.command, str(exc))
    except OSError as exc:  # a write refused where no OutputError was made: still one line, not a traceback
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        return _fail(args.command, str(OutputError.from_os_error(exc)))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (a batch scheduler): what is done is kept
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(f"scatterbird {args.command}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _raise_interrupted(signum: int, frame: Any) -> None:
    """SIGTERM handler: stop like Ctrl-C does (the store keeps every file committed; workers are stopped)."""
    signal.signal(signum, signal.SIG_IGN)  # one is enough: cleaning up must not be interrupted again
    raise Interrupted(signum)


if __name__ == "__main__":
    sys.exit(main())
