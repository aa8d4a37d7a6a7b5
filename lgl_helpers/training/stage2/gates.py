"""The gate of each phase L: overrides written by the gate tuner, and the one rule that picks the gate.

Precedence for iteration k: a value in ``gate_overrides.json`` (the tuner's "use this gate"), else
the config's ``gates[k-1]``, where ``"auto"`` places it by the config's ``gate_rule`` (seeded with the
config's ``seed``) on the per-sample losses of iteration k's best T epoch, the model phase L starts from
(:func:`lgl_helpers.training.stage2.statefile.gate_losses_record`): ``"valley"``
(:func:`lgl_helpers.core.gate.valley_gate`) or ``"gmm"`` (:func:`lgl_helpers.core.gate.gmm_gate`,
which falls back to the valley rule and says why). The engine and the gate tuner both call
:func:`choose_gate` (or its short form :func:`resolve_gate`), so the tuner shows the gate training uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from lgl_helpers import files
from lgl_helpers.config import check_gate
from lgl_helpers.core.gate import GateChoice, gmm_gate, valley_gate
from lgl_helpers.training.stage2.config import LGLConfig
from lgl_helpers.training.stage2.statefile import GATE_OVERRIDES, read_state


def read_gate_overrides(stage_dir: str | Path) -> dict[int, float]:
    """``{iteration: gate}`` from ``stage_dir/gate_overrides.json`` (empty when absent)."""
    path = Path(stage_dir) / GATE_OVERRIDES
    if not path.is_file():
        return {}
    overrides = {}
    for key, value in files.read_json(path).items():
        try:
            overrides[int(key)] = check_gate(value, name=f"gate of iteration {key}")
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: entry {key!r}: {error}") from None
    return overrides


def write_gate_override(stage_dir: str | Path, iteration: int, gate: float) -> Path:
    """Set the gate of ``iteration``'s phase L (takes precedence over ``gates``); atomic."""
    gate = check_gate(gate)
    overrides = read_gate_overrides(stage_dir)
    overrides[int(iteration)] = gate
    return files.write_json(Path(stage_dir) / GATE_OVERRIDES, {str(k): v for k, v in sorted(overrides.items())})


def next_gate_iteration(state: dict) -> int | None:
    """The iteration whose phase L has not fixed its gate yet (the one a tuned gate applies to), or None."""
    if state.get("mode") != "lgl" or state.get("phase") == "done":
        return None
    iteration = int(state["iteration"])
    if state["phase"] == "L" and state.get("gate") is not None:
        iteration += 1
    return iteration if iteration <= int(state["params"].get("max_iterations", iteration)) else None


def apply_gate(stage_dir: str | Path, gate: float) -> str:
    """Gate-tuner button: make ``gate`` the gate of the next phase L that has not started. Returns a message."""
    state = read_state(stage_dir)
    target = None if state is None else next_gate_iteration(state)
    if target is None:
        return "no phase L is pending (the run is finished or not in LGL mode): set gates / max_iterations instead"
    write_gate_override(stage_dir, target, gate)
    return f"gate {float(gate):.3f} will be used by phase L of iteration {target}; run the training cell again"


def choose_gate(stage_dir: str | Path, config: LGLConfig, iteration: int, t_losses: Callable[[], np.ndarray]) -> dict:
    """The gate of ``iteration``'s phase L: ``{"gate", "gate_source", "gate_rule", "gate_rule_reason",
    "gate_mixture"}``.

    gate_source: ``"override"``, ``"config"`` or ``"auto"``; gate_rule: the rule that placed it
    (``"gmm"``, ``"valley"``, ``"otsu"``, ``"constant"``; ``"fixed"`` for an override or a number);
    gate_rule_reason: why ``gate_rule="gmm"`` fell back, else None; gate_mixture: the GMM's components
    on the log losses when one was fitted (:class:`~lgl_helpers.core.gate.GateChoice`).
    ``t_losses()``: (N,) per-sample losses of the iteration's best T epoch, read only for ``"auto"``.
    """
    overrides = read_gate_overrides(stage_dir)
    if iteration in overrides:
        return _choice(GateChoice(overrides[iteration], "fixed"), "override")
    spec = config.gate_spec(iteration)
    if spec != "auto":
        return _choice(GateChoice(float(spec), "fixed"), "config")
    if config.gate_rule == "gmm":
        return _choice(gmm_gate(t_losses(), seed=config.seed), "auto")
    gate, rule = valley_gate(t_losses(), seed=config.seed)
    return _choice(GateChoice(float(gate), rule), "auto")


def _choice(choice: GateChoice, source: str) -> dict:
    return {
        "gate": float(choice.gate),
        "gate_source": source,
        "gate_rule": choice.rule,
        "gate_rule_reason": choice.reason,
        "gate_mixture": choice.mixture,
    }


def resolve_gate(
    stage_dir: str | Path, config: LGLConfig, iteration: int, t_losses: Callable[[], np.ndarray]
) -> tuple[float, str]:
    """:func:`choose_gate`'s gate and source (``"override"``, ``"config"`` or ``"auto"``)."""
    choice = choose_gate(stage_dir, config, iteration, t_losses)
    return choice["gate"], choice["gate_source"]
