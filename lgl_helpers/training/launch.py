"""Run a stage under ``torchrun`` from a notebook kernel: one process per GPU, the log streamed back.

A notebook with ``nproc > 1`` writes its config as JSON next to the stage's outputs and runs
``torchrun --standalone --nproc_per_node N -m lgl_helpers.app.cli train <stage> --params FILE``, the
same entry point a cluster job uses, so a papermill run stays one command. The kernel then reads the
stage's results from its files, as after a run in the kernel itself.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

from lgl_helpers import files
from lgl_helpers.training.step_checkpoints import TrainingStopped

log = logging.getLogger(__name__)

LAUNCH_FILE = "launch_params.json"
TAIL_LINES = 40  # lines of the workers' output an error message repeats
# How a rank reports its failure (``lgl-kit``'s one-line error). torchrun's own traceback that follows
# fills the tail, so these lines are kept apart and lead the error message.
RANK_ERROR_PREFIX = "lgl-kit train: error:"


def torchrun_command(stage: str, params_file: Path, nproc: int) -> list[str]:
    """The command line that runs ``stage`` on ``nproc`` local ranks (``python -m torch.distributed.run`` = torchrun)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "lgl_helpers.app.cli",
        "train",
        stage,
        "--params",
        str(params_file),
    ]


def write_launch_params(config, stage_dir: Path) -> Path:
    """``stage_dir/launch_params.json``: ``{"params": <every field of config>}`` (plus Stage II's ``mode``),
    what ``--params`` reads."""
    params = dataclasses.asdict(config)
    if hasattr(config, "mode"):
        params["mode"] = config.mode
    return files.write_json(stage_dir / LAUNCH_FILE, {"params": params})


def stream(command: list[str]) -> int:
    """Run ``command``, printing its output line by line as it comes; returns the exit status.

    SIGTERM meanwhile (a scheduler, or ``lgl-kit run`` stopping the kernel) is passed on to it:
    torchrun hands it to every rank, which writes its mid-epoch checkpoint and stops; then this raises
    :class:`~lgl_helpers.training.step_checkpoints.TrainingStopped`. Raises RuntimeError with the
    ranks' error lines and the last lines of output when it fails.
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    rank_errors: list[str] = []
    signalled = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:

        def forward(signum, frame) -> None:
            signalled.append(signum)
            proc.send_signal(signal.SIGTERM)

        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, forward) if in_main else None
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                tail.append(line)
                if line.startswith(RANK_ERROR_PREFIX):
                    rank_errors.append(line)
        except BaseException:  # an interrupted kernel stops the ranks too (SIGTERM: they checkpoint and exit)
            proc.terminate()
            proc.wait()
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    if signalled:
        raise TrainingStopped("SIGTERM: passed on to the torchrun ranks, which checkpoint and stop; rerun to resume")
    if proc.returncode:
        errors = f"the ranks' errors:\n{''.join(rank_errors)}" if rank_errors else ""
        raise RuntimeError(
            f"{' '.join(command[:6])} ... exited with status {proc.returncode}; {errors}its last lines:\n"
            + "".join(tail)
        )
    return proc.returncode


def run_under_torchrun(stage: str, config, stage_dir: Path) -> None:
    """Train ``stage`` ("stage1" | "stage2") with ``config`` on ``config.nproc`` local ranks; returns when they finish."""
    params_file = write_launch_params(config, stage_dir)
    command = torchrun_command(stage, params_file, config.nproc)
    log.info("launching %d ranks: %s", config.nproc, " ".join(command))
    stream(command)
