"""The ``lgl-kit`` console script: every subcommand's parser and handler.

    lgl-kit toy OUT [--preset tiny] [--seed N] ...
    lgl-kit lists build --root DIR --out FILE
    lgl-kit lists subset --list FILE --out FILE --n-utterances N [--n-speakers K] [--seed S]
    lgl-kit lists check --list FILE --root DIR [--kind train|trials]
    lgl-kit lists fetch-voxceleb [--out data_lists/voxceleb]
    lgl-kit prep voxceleb --src DIR [--src DIR ...] --dst DIR [--workers N]
    lgl-kit run [--profile demo] [--run-name NAME] [--set KEY=VALUE ...] [--from NB | --only NB]
    lgl-kit report [--run-name NAME]
    lgl-kit doctor [--profile demo] [--run-name NAME] ...
    lgl-kit embed --checkpoint CKPT (FILES... | --list LIST [--root DIR]) --out emb.npy
    lgl-kit verify --checkpoint CKPT A.wav B.wav
    lgl-kit export --checkpoint CKPT --format onnx|torchscript --out FILE
    lgl-kit gate --run-name NAME --iteration K --value G
    lgl-kit train stage1|stage2 --params FILE [--mode baseline|lgl]   (also under torchrun)

Each subcommand registers its own parser in an ``add_<name>_parser(subparsers)`` function and sets
``func``; :func:`main` builds the parser at call time (never at import) and returns the exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import traceback

from lgl_helpers.app import doctor, pipeline
from lgl_helpers.app.gate_cli import add_gate_parser
from lgl_helpers.app.planning import PipelineError, parse_overrides, plan_run
from lgl_helpers.app.reuse import add_embed_parser, add_export_parser, add_verify_parser
from lgl_helpers.app.train_cli import add_train_parser
from lgl_helpers.runs import run_folder

EXIT_ERROR = 1


def _run_toy(args: argparse.Namespace) -> int:
    from lgl_helpers.corpus.toy import ToyConfig, generate_toy_corpus

    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(ToyConfig) if getattr(args, f.name) is not None
    }
    config = ToyConfig.preset(args.preset, **overrides)
    summary = generate_toy_corpus(args.out, config, workers=args.workers, overwrite=args.force)
    print(f"toy corpus written to {summary['root']} in {summary['seconds']:.1f} s")
    for key in (
        "n_train_speakers",
        "n_train_utterances",
        "train_hours",
        "n_test_speakers",
        "n_test_files",
        "n_trials",
        "n_target_same_session",
        "n_target_cross_session",
        "n_nontarget",
        "n_val_speakers",
        "n_val_files",
        "n_val_trials",
        "musan_chunks",
        "n_rirs",
        "train_list",
        "trials",
        "val_trials",
    ):
        print(f"  {key}: {summary[key]}")
    return 0


def add_toy_parser(subparsers) -> argparse.ArgumentParser:
    """``lgl-kit toy OUT``: every ToyConfig field is an option (``--n-train-speakers`` ...)."""
    from lgl_helpers.corpus.toy import PRESETS, ToyConfig

    parser = subparsers.add_parser(
        "toy",
        help="generate the embedded toy corpus (VoxCeleb/MUSAN/RIR layout)",
        description="Generate a deterministic toy speaker corpus in the VoxCeleb, MUSAN and RIR layouts, "
        "with lists/train_list.txt and lists/trials.txt. Same options, same bytes.",
    )
    parser.add_argument("out", help="output folder (must not exist or be empty, unless --force)")
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="default",
        help="sizes to start from: 'default' (demo pipeline) or 'tiny' (tests); default %(default)s",
    )
    defaults = ToyConfig()
    for field in dataclasses.fields(ToyConfig):
        value = getattr(defaults, field.name)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=type(value),
            default=None,
            metavar=type(value).__name__.upper(),
            help=f"override the preset (default preset: {value})",
        )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: all cores); any value gives the same files"
    )
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.set_defaults(func=_run_toy)
    return parser


def _run_lists_build(args: argparse.Namespace) -> int:
    from lgl_helpers.corpus.lists import build_train_list

    entries = build_train_list(
        args.root, args.out, workers=args.workers, min_seconds=args.min_seconds, skip_bad=args.skip_bad
    )
    hours = sum(e.duration for e in entries) / 3600.0
    print(f"{args.out}: {len(entries)} utterances of {len({e.speaker for e in entries})} speakers, {hours:.2f} h")
    return 0


def _run_lists_subset(args: argparse.Namespace) -> int:
    from lgl_helpers.corpus.lists import read_train_list, subset_train_list, write_train_list

    entries = subset_train_list(
        read_train_list(args.list),
        args.n_utterances,
        n_speakers=args.n_speakers,
        seed=args.seed,
        per_speaker=args.per_speaker,
    )
    write_train_list(args.out, entries)
    print(f"{args.out}: {len(entries)} utterances of {len({e.speaker for e in entries})} speakers")
    return 0


def _run_lists_check(args: argparse.Namespace) -> int:
    from lgl_helpers.corpus.lists import check_list

    counts = check_list(args.list, args.root, args.kind, min_seconds=args.min_seconds, workers=args.workers)
    print(f"{args.list}: OK")
    for key, value in counts.items():
        print(f"  {key}: {value}")
    return 0


def _run_lists_fetch(args: argparse.Namespace) -> int:
    from lgl_helpers.corpus.lists import fetch_voxceleb

    for name, path in fetch_voxceleb(args.out, timeout=args.timeout).items():
        print(f"{name}: {path} (verified)")
    return 0


def add_lists_parser(subparsers) -> argparse.ArgumentParser:
    """``lgl-kit lists build|subset|check|fetch-voxceleb``."""
    from lgl_helpers.core.audio import MIN_SECONDS

    parser = subparsers.add_parser(
        "lists",
        help="build, subset, check or fetch VoxCeleb-format lists",
        description="Tools for the training-list and trial-list formats.",
    )
    commands = parser.add_subparsers(dest="lists_command", metavar="{build,subset,check,fetch-voxceleb}", required=True)

    build = commands.add_parser(
        "build",
        help="scan <root>/<speaker>/<session>/<utt>.wav into a training list",
        description="Scan a VoxCeleb-layout folder into '<speaker> <relative path> <seconds>' lines. "
        "Durations come from the wav headers (no decoding), read in parallel; output sorted by path.",
    )
    build.add_argument("--root", required=True, help="training audio folder, e.g. voxceleb2/dev/wav")
    build.add_argument("--out", required=True, help="training list to write (atomically)")
    build.add_argument("--workers", type=int, default=8, help="header-reading threads (default %(default)s)")
    build.add_argument(
        "--min-seconds", type=float, default=MIN_SECONDS, help="shortest usable file (default %(default)s)"
    )
    build.add_argument(
        "--skip-bad", action="store_true", help="leave unusable files out with a warning instead of failing"
    )
    build.set_defaults(func=_run_lists_build)

    subset = commands.add_parser(
        "subset",
        help="draw a speaker-stratified subset of a training list",
        description="Draw a speaker-stratified subset by seed, e.g. the reference's train_mini: "
        "--n-utterances 100000 --n-speakers 4082.",
    )
    subset.add_argument("--list", required=True, help="training list to draw from")
    subset.add_argument("--out", required=True, help="subset list to write")
    subset.add_argument("--n-utterances", type=int, required=True, help="utterances in the subset")
    subset.add_argument("--n-speakers", type=int, default=None, help="speakers drawn first (default: all)")
    subset.add_argument(
        "--per-speaker",
        choices=["equal", "proportional"],
        default="equal",
        help="split utterances evenly over speakers or draw them uniformly (default %(default)s)",
    )
    subset.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    subset.set_defaults(func=_run_lists_subset)

    check = commands.add_parser(
        "check",
        help="validate a training or trial list against its audio",
        description="Validate every line's format and that each referenced file exists, is readable, 16 kHz mono "
        "and long enough. Reports every problem as file:line and exits non-zero; prints counts on success.",
    )
    check.add_argument("--list", required=True, help="list file to check")
    check.add_argument("--root", required=True, help="folder the list's paths are relative to")
    check.add_argument(
        "--kind",
        choices=["auto", "train", "trials"],
        default="auto",
        help="list format (default: detect from what most of the first lines look like)",
    )
    check.add_argument(
        "--min-seconds", type=float, default=MIN_SECONDS, help="shortest usable file (default %(default)s)"
    )
    check.add_argument("--workers", type=int, default=8, help="header-reading threads (default %(default)s)")
    check.set_defaults(func=_run_lists_check)

    fetch = commands.add_parser(
        "fetch-voxceleb",
        help="download and verify the official Vox1-O/E/H trial lists",
        description="Download veri_test2.txt, list_test_all2.txt and list_test_hard2.txt (VoxCeleb1 cleaned "
        "trial lists), verify trial counts and Vox1-O's sha256, and write them atomically.",
    )
    fetch.add_argument("--out", default="data_lists/voxceleb", help="folder to write into (default %(default)s)")
    fetch.add_argument("--timeout", type=float, default=60.0, help="seconds per download attempt (default %(default)s)")
    fetch.set_defaults(func=_run_lists_fetch)
    return parser


def _run_prep_voxceleb(args: argparse.Namespace) -> int:
    from lgl_helpers.corpus.prep import failure_lines, prepare_voxceleb

    summary = prepare_voxceleb(args.src, args.dst, workers=args.workers, ffmpeg=args.ffmpeg)
    print(f"prep voxceleb: {summary.line()}")
    if summary.failed:
        print(f"lgl-kit prep: {len(summary.failed)} file(s) failed; rerun to retry them:", file=sys.stderr)
        print("\n".join(failure_lines(summary)), file=sys.stderr)
        return EXIT_ERROR
    print(f"next: lgl-kit lists build --root {args.dst} --out <train_list.txt>")
    return 0


def add_prep_parser(subparsers) -> argparse.ArgumentParser:
    """``lgl-kit prep voxceleb``."""
    parser = subparsers.add_parser(
        "prep",
        help="convert downloaded corpora into the kit's layout",
        description="Data preparation. MUSAN needs none: musan_root may be MUSAN as distributed or split.",
    )
    commands = parser.add_subparsers(dest="prep_command", metavar="{voxceleb}", required=True)
    voxceleb = commands.add_parser(
        "voxceleb",
        help="VoxCeleb m4a/wav to <dst>/<speaker>/<video>/<nnnnn>.wav, 16 kHz mono 16-bit",
        description="Convert VoxCeleb2 (aac/<speaker>/<video>/<nnnnn>.m4a, decoded by ffmpeg) or copy VoxCeleb1 "
        "(wav/...) into DST/<speaker>/<video>/<nnnnn>.wav at 16 kHz mono 16-bit, in parallel. Resumable: a rerun "
        "skips finished files and redoes interrupted ones. Repeat --src to merge sources with disjoint speakers "
        "(VoxCeleb1 dev + test for Vox1-E/H). Exits non-zero naming the files that failed.",
    )
    voxceleb.add_argument(
        "--src",
        action="append",
        required=True,
        metavar="DIR",
        help="a folder holding aac/ or wav/, or the speaker folders themselves; repeat to merge",
    )
    voxceleb.add_argument("--dst", required=True, metavar="DIR", help="output root (created; reruns resume it)")
    voxceleb.add_argument("--workers", type=int, default=None, help="files converted at once (default: all cores)")
    voxceleb.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg executable (default: the one on PATH)")
    voxceleb.set_defaults(func=_run_prep_voxceleb)
    return parser


def _run_pipeline(args: argparse.Namespace) -> int:
    try:
        state = pipeline.run_pipeline(
            args.profile,
            args.run_name,
            parse_overrides(args.set),
            runs_dir=args.runs_dir,
            start=args.start,
            only=args.only,
            log_output=args.log_output,
            force=args.force,
        )
    except PipelineError as error:
        print(f"lgl-kit run: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lgl-kit run: {pipeline.INTERRUPTED_MESSAGE}", file=sys.stderr)
        return pipeline.EXIT_INTERRUPTED
    print(pipeline.outcome_line(state, args.run_name, args.runs_dir))
    return 0


def add_plan_options(parser: argparse.ArgumentParser) -> None:
    """The options that decide a run's plan, shared by ``run`` and ``doctor`` so both see the same run."""
    parser.add_argument(
        "--profile", default="demo", help="profile name in notebooks/params/ (ci, demo, full) or a YAML path"
    )
    parser.add_argument("--run-name", default="demo", help="folder under --runs-dir for every output")
    parser.add_argument("--runs-dir", default="runs", help="where run folders live (default: runs/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter of every notebook that has it, or NOTEBOOK.KEY=VALUE for one; "
        "values as written: 1e-3, 010, true, [1, 2], auto; repeatable",
    )


def add_run_parser(subparsers) -> argparse.ArgumentParser:
    """``lgl-kit run``: the notebooks headless, parameters from a profile plus ``--set``."""
    run = subparsers.add_parser(
        "run",
        help="execute the notebooks headlessly with papermill",
        description="Execute notebooks 00→05 with papermill into runs/RUN/notebooks/, parameters from a profile plus --set.",
    )
    add_plan_options(run)
    run.add_argument(
        "--from", dest="start", metavar="NOTEBOOK", help="start at this notebook (e.g. 02 or 02_clustering_umap)"
    )
    run.add_argument("--only", metavar="NOTEBOOK", help="run only this notebook")
    run.add_argument("--log-output", action="store_true", help="stream each notebook's output (one log line per epoch)")
    run.add_argument("--force", action="store_true", help="rerun notebooks even when finished with the same parameters")
    run.set_defaults(func=_run_pipeline)
    return run


def _run_report(args: argparse.Namespace) -> int:
    from lgl_helpers.app.report import read_report_file, results_table, run_status_lines

    path = run_folder(args.run_name, args.runs_dir) / "report.json"
    for line in run_status_lines(path.parent, args.runs_dir):
        print(line)
    if not path.is_file():
        print(f"lgl-kit report: {path} does not exist; run notebook 05_compare first", file=sys.stderr)
        return 1
    report = read_report_file(path)
    print(results_table(report))
    timings = report.get("timings") or {}
    if timings and all(isinstance(record, dict) for record in timings.values()):
        from lgl_helpers.timings import summary_line

        print(f"\n{summary_line(timings)}")  # a report.json written before the breakdown has none
    print(f"\nfull report: {path.with_suffix('.md')}")
    return 0


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """``lgl-kit report``: the results table of a finished run."""
    report = subparsers.add_parser(
        "report",
        help="print the results table of a finished run",
        description="Print the results table from runs/RUN/report.json.",
    )
    report.add_argument("--run-name", default="demo", help="run folder name")
    report.add_argument("--runs-dir", default="runs", help="where run folders live")
    report.set_defaults(func=_run_report)
    return report


def _run_doctor(args: argparse.Namespace) -> int:
    try:
        plan = plan_run(args.profile, args.run_name, parse_overrides(args.set), runs_dir=args.runs_dir)
    except PipelineError as error:
        print(f"lgl-kit doctor: {error}", file=sys.stderr)
        return 1
    checks = doctor.diagnose(plan)
    for check in checks:
        print(check.line())
    errors = sum(not check.ok for check in checks)
    pending = (
        " (`lgl-kit run` repeats the pending data checks after notebook 00)" if any(c.pending for c in checks) else ""
    )
    print(f"{len(checks)} checks, {errors} error(s){pending}")
    return 1 if errors else 0


def add_doctor_parser(subparsers) -> argparse.ArgumentParser:
    """``lgl-kit doctor``: the options of ``lgl-kit run`` that decide what a run reads and needs."""
    parser = subparsers.add_parser(
        "doctor",
        help="check the environment, data and configuration of a run without running it",
        description="Check what `lgl-kit run` with the same options needs: torch/torchaudio/faiss, CUDA, every "
        "data root and list, each notebook's configuration against the data, and free disk. One line "
        "per check; exits non-zero on any error.",
    )
    add_plan_options(parser)
    parser.set_defaults(func=_run_doctor)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lgl-kit", description="LGL Kit: self-supervised speaker recognition with loss-gated learning."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(
        dest="command", metavar="{toy,lists,prep,run,report,doctor,embed,verify,export,gate}", required=True
    )
    add_toy_parser(subparsers)
    add_lists_parser(subparsers)
    add_prep_parser(subparsers)
    add_run_parser(subparsers)
    add_report_parser(subparsers)
    add_doctor_parser(subparsers)
    add_embed_parser(subparsers)
    add_verify_parser(subparsers)
    add_export_parser(subparsers)
    add_gate_parser(subparsers)
    add_train_parser(subparsers)
    return parser


def _os_error_text(error: OSError) -> str:
    """``"<reason>: <path>"`` for an OSError from the system; the kit's own messages (no filename) as they are."""
    if error.filename is None:
        return str(error)
    paths = str(error.filename) + (f" -> {error.filename2}" if error.filename2 is not None else "")
    return f"{error.strerror or type(error).__name__}: {paths}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lgl-kit``; returns the exit status.

    Every error prints one clear message and exits 1 (``-v`` adds the traceback of system and
    unexpected errors); Ctrl-C exits 130 (``run`` says how to resume).
    """
    from lgl_helpers.corpus.lists import FetchError, ListFormatError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ListFormatError, FetchError, ValueError) as error:
        print(f"lgl-kit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"lgl-kit {args.command}: error: {_os_error_text(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"lgl-kit {args.command}: interrupted", file=sys.stderr)
        return pipeline.EXIT_INTERRUPTED
    except Exception as error:  # unforeseen (a bug, a library failure): still one line, the traceback on -v
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else " (lgl-kit -v ... prints the traceback)"
        print(f"lgl-kit {args.command}: error: {type(error).__name__}: {error}{hint}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
