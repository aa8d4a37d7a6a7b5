"""``lgl-kit gate``: set the gate of the phase L that an LGL run waits for, without a notebook.

    lgl-kit gate --run-name R --iteration K --value G [--runs-dir DIR]

The command-line twin of notebook 04's "use this gate" button: the value goes to the LGL stage's
``gate_overrides.json`` (:func:`lgl_helpers.training.stage2.write_gate_override`) for the iteration
whose phase L has not fixed its gate yet (:func:`~lgl_helpers.training.stage2.next_gate_iteration`),
and the next ``lgl-kit run`` of the run trains that phase L with it. Also here: the lines
``lgl-kit run`` and ``lgl-kit report`` print about a run that waits for a gate.
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path

from lgl_helpers.runs import run_folder

# The LGL stage's folder in a run (stage2.stage_folder of notebook 04's config).
LGL_STAGE_DIR = "stage2_lgl"


def gate_command(run_name: str, runs_dir: str, iteration: int) -> str:
    """The ``lgl-kit gate`` call that sets ``iteration``'s gate of a run (``G`` for the value)."""
    where = "" if runs_dir == "runs" else f" --runs-dir {shlex.quote(str(runs_dir))}"
    return f"lgl-kit gate --run-name {shlex.quote(run_name)}{where} --iteration {iteration} --value G"


def waiting_line(stage_dir: str | Path, run_name: str, runs_dir: str) -> str | None:
    """One line when the LGL stage in ``stage_dir`` is paused before a phase L, else None: the gate it
    waits for and how to set it, or the gate already set and that a rerun trains it."""
    from lgl_helpers.training import stage2

    state = stage2.read_state(stage_dir)
    if state is None or state.get("status") != "paused_before_gate":
        return None
    iteration = int(state["iteration"])
    override = stage2.read_gate_overrides(stage_dir).get(iteration)
    if override is not None:
        return (
            f"LGL is paused before phase L of iteration {iteration}, its gate {override:.3f} set in "
            f"{Path(stage_dir) / stage2.GATE_OVERRIDES}: rerun `lgl-kit run` with the same options to train it"
        )
    return (
        f"LGL is waiting for the gate of phase L of iteration {iteration}: set it with "
        f"`{gate_command(run_name, runs_dir, iteration)}` (or notebook 04's gate tuner), then rerun `lgl-kit run` "
        "with the same options (without a gate set, the rerun uses gates from the parameters)"
    )


def set_gate(run_name: str, runs_dir: str, iteration: int, value: float) -> str:
    """Write ``value`` as the gate of ``iteration``'s phase L of run ``run_name``; return what was done.

    Raises ValueError with one line when there is no such run, no LGL stage, ``iteration`` is not the
    one whose phase L takes a gate next, or ``value`` is not a positive finite number.
    """
    from lgl_helpers.training import stage2

    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"--value {value:g}: a gate is a positive, finite per-sample loss (samples at or below it train)"
        )
    run_dir = run_folder(run_name, runs_dir)
    if not run_dir.is_dir():
        raise ValueError(f"--run-name {run_name!r}: no run folder {run_dir} (see --runs-dir)")
    stage_dir = run_dir / LGL_STAGE_DIR
    state = stage2.read_state(stage_dir)
    if state is None:
        raise ValueError(
            f"run {run_name!r} has no LGL stage: {stage_dir / 'state.json'} does not exist (notebook 04 has not run)"
        )
    target = stage2.next_gate_iteration(state)
    if target is None:
        raise ValueError(
            f"run {run_name!r}: its LGL stage has no phase L left to take a gate (phase {state.get('phase')!r}); "
            "a new gate needs a new run (gates = [...])"
        )
    if iteration != target:
        waits = "waits for the gate of" if state.get("status") == "paused_before_gate" else "takes the next gate in"
        raise ValueError(f"--iteration {iteration}: run {run_name!r} {waits} iteration {target}")
    previous = stage2.read_gate_overrides(stage_dir).get(iteration)
    path = stage2.write_gate_override(stage_dir, iteration, value)
    replaced = f" (replaces {previous:.3f})" if previous is not None and previous != value else ""
    if state.get("status") == "paused_before_gate":
        after = "rerun `lgl-kit run` with the same options to train phase L with it"
    else:
        after = f"the run uses it when phase L of iteration {iteration} starts"
    return f"gate {value:.3f}{replaced} set for phase L of iteration {iteration} in {path}; {after}"


def _run_gate(args: argparse.Namespace) -> int:
    print(set_gate(args.run_name, args.runs_dir, args.iteration, args.value))
    return 0


def add_gate_parser(subparsers) -> argparse.ArgumentParser:
    """``lgl-kit gate``: the gate of a paused (or not yet gated) LGL phase L."""
    parser = subparsers.add_parser(
        "gate",
        help="set the gate of the phase L an LGL run waits for",
        description="Write the loss gate of an LGL iteration's phase L into runs/RUN/stage2_lgl/gate_overrides.json, "
        "as notebook 04's gate tuner does. A run paused before that phase L (pause_before_gate) trains it with "
        "this gate when `lgl-kit run` is run again.",
    )
    parser.add_argument("--run-name", required=True, help="run folder name")
    parser.add_argument("--runs-dir", default="runs", help="where run folders live (default: runs/)")
    parser.add_argument(
        "--iteration", type=int, required=True, help="the LGL iteration whose phase L waits for its gate"
    )
    parser.add_argument("--value", type=float, required=True, metavar="G", help="the gate: a per-sample loss > 0")
    parser.set_defaults(func=_run_gate)
    return parser
