"""``lgl-kit train stage1|stage2 --params FILE``: one stage, as a notebook would run it, in a process
that ``torchrun`` can launch (one per GPU; several nodes through torchrun's rendezvous).

FILE is a resolved-parameters JSON the notebooks write (``runs/<run>/stage1/stage1_params.json``,
``.../launch_params.json``), ``{"params": {...}}`` or the plain mapping. Its keys must be fields of the
stage's config, or what the stages write there beside them (the resolved data paths, Stage II's
``mode``): any other key is refused, naming the closest field, as a typo would otherwise be ignored.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from lgl_helpers.runs import DATA_KEYS

STAGES = ("stage1", "stage2")
# Keys a stage's params file holds besides its config's fields: the data paths as resolved, Stage II's mode.
WRITTEN_BESIDE = (*DATA_KEYS, "mode")


def read_params(path: str | Path, config_class) -> object:
    """The config of ``config_class`` from a params JSON file; one-line errors name the file."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--params {path}: no such file") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--params {path}: not JSON ({error.msg}, line {error.lineno})") from None
    params = obj.get("params", obj) if isinstance(obj, dict) else None
    if not isinstance(params, dict):
        raise ValueError(f"--params {path}: expected a JSON object of parameters (or {{'params': {{...}}}})")
    missing = [name for name in ("run_name",) if name not in params]
    if missing:
        raise ValueError(f"--params {path}: no {', '.join(missing)}; is this a stage's params file?")
    try:
        return config_class.from_mapping(params, ignored=WRITTEN_BESIDE)
    except ValueError as error:
        raise ValueError(f"--params {path}: {error}") from None


def _stage2_config_class(args: argparse.Namespace):
    """BaselineConfig or LGLConfig: ``--mode``, else the file's ``mode``, else its folder ``stage2_<mode>``."""
    from lgl_helpers.training.stage2.config import CONFIGS

    mode = args.mode
    if mode is None:
        try:
            mode = json.loads(Path(args.params).read_text()).get("params", {}).get("mode")
        except (OSError, ValueError, AttributeError):
            mode = None  # read_params reports what is wrong with the file
    if mode is None and Path(args.params).parent.name.startswith("stage2_"):
        mode = Path(args.params).parent.name.removeprefix("stage2_")
    if mode not in CONFIGS:
        raise ValueError(f"--params {args.params}: which Stage II system? give --mode {' or '.join(CONFIGS)}")
    return CONFIGS[mode]


def _train(args: argparse.Namespace) -> int:
    from lgl_helpers.core import distributed

    # The stage logs to stdout and its log file itself; the console handler main() set up would repeat every line.
    for handler in list(logging.root.handlers):
        logging.root.removeHandler(handler)
    try:
        if args.stage == "stage1":
            from lgl_helpers.training.stage1 import Stage1Config, train_stage1

            result = train_stage1(read_params(args.params, Stage1Config))
            done = result["completed"]
        else:
            from lgl_helpers.training.stage2 import run_stage2

            result = run_stage2(read_params(args.params, _stage2_config_class(args)))
            done = result["status"] == "done"
        main_rank = distributed.is_main()
    finally:
        distributed.shutdown()
    if main_rank:
        print(f"lgl-kit train {args.stage}: {'finished' if done else 'stopped before the end'}; {result['stage_dir']}")
    return 0


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train one stage from a params file (what torchrun launches)",
        description="Train Stage I or Stage II exactly as its notebook would, from the resolved-parameters "
        "JSON the notebook writes. Run it directly for one process, or under torchrun for several: "
        "torchrun --nproc_per_node 8 -m lgl_helpers.app.cli train stage1 --params FILE",
    )
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--mode", choices=("baseline", "lgl"), help="Stage II's system (default: from the file)")
    parser.add_argument(
        "--params", required=True, help="resolved-parameters JSON (e.g. runs/R/stage1/stage1_params.json)"
    )
    parser.set_defaults(func=_train)
    return parser
