"""The notebooks' defaults are the demo profile: stepping through them in JupyterLab trains what ``make demo`` trains.

A parameters cell holds literals (papermill injects its values after it), so it cannot read the
profile at run time. Instead :func:`profile_differences` lists every default that differs from
``notebooks/params/demo.yaml`` (a test keeps the list empty), and :func:`write_profile_defaults`
rewrites those defaults in place, keeping each line's comment:
``python -m lgl_helpers.app.notebook_defaults`` after retuning the demo profile.

Only the run name differs on purpose: the notebooks default to :data:`INTERACTIVE_RUN_NAME`, so that
stepping through them never continues or overwrites the run ``make demo`` wrote (``runs/demo``);
to look at that run, set ``run_name = "demo"`` explicitly.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

from lgl_helpers.app.planning import PIPELINE_PARAMETERS, notebook_parameters, parameters_cell_source, plan_run

DEFAULTS_PROFILE = "demo"
INTERACTIVE_RUN_NAME = "lab"


def _as_default(name: str, value: Any, default: Any, parameters: dict[str, Any]) -> Any:
    """``value`` as the notebook's literal would hold it. ``gates: auto`` is written as one ``"auto"`` per
    iteration: the cell's default must stay a list, so that profiles giving a list still type-check."""
    if name == "gates" and value == "auto" and isinstance(default, list):
        return ["auto"] * int(parameters.get("max_iterations", len(default)))
    return value


def profile_differences(profile: str = DEFAULTS_PROFILE) -> list[tuple[str, str, Any, Any]]:
    """``(notebook, parameter, notebook default, profile value)`` for every default that differs from
    ``profile``, plus every ``run_name`` default other than :data:`INTERACTIVE_RUN_NAME`."""
    differences = []
    for step in plan_run(profile, INTERACTIVE_RUN_NAME):
        defaults = notebook_parameters(step.source)
        effective = {**defaults, **step.parameters}
        for name, value in step.parameters.items():
            if name in PIPELINE_PARAMETERS:
                continue
            wanted = _as_default(name, value, defaults[name], effective)
            if wanted != defaults[name]:
                differences.append((step.name, name, defaults[name], wanted))
        if defaults.get("run_name") != INTERACTIVE_RUN_NAME:
            differences.append((step.name, "run_name", defaults.get("run_name"), INTERACTIVE_RUN_NAME))
    return differences


def _literal(value: Any) -> str:
    """A parameters-cell literal, strings in double quotes as the cells write them."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    return repr(value)


def _replace_default(source: str, name: str, value: Any) -> str:
    """``source`` (a parameters cell) with ``name``'s literal replaced, its comment kept in its column."""
    lines = source.split("\n")
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.Assign) and n.targets[0].id == name)
    row = node.lineno - 1
    line = lines[row]
    head, tail = line[: node.value.col_offset], line[node.value.end_col_offset :]
    literal = _literal(value)
    comment = tail.lstrip()
    if comment:
        # keep the comment where it was when the new literal fits, else one space after it
        width = len(line) - len(comment) - len(head)
        literal = literal.ljust(width - 1) if len(literal) < width else literal
        lines[row] = f"{head}{literal} {comment}"
    else:
        lines[row] = f"{head}{literal}"
    return "\n".join(lines)


def write_profile_defaults(profile: str = DEFAULTS_PROFILE) -> list[tuple[str, str, Any, Any]]:
    """Rewrite every default :func:`profile_differences` lists; return what was changed.

    Each notebook is read right before it is written (JSON with indent 1, as committed), and only
    its parameters cell changes.
    """
    changes = profile_differences(profile)
    for notebook in dict.fromkeys(change[0] for change in changes):
        path = next(step.source for step in plan_run(profile, INTERACTIVE_RUN_NAME) if step.name == notebook)
        source = parameters_cell_source(path)
        for _, name, _, value in (c for c in changes if c[0] == notebook):
            source = _replace_default(source, name, value)
        content = json.loads(Path(path).read_text())
        cell = next(c for c in content["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        cell["source"] = source.splitlines(keepends=True)
        Path(path).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")
    return changes


if __name__ == "__main__":
    for notebook, name, old, new in write_profile_defaults(*sys.argv[1:2]):
        print(f"{notebook}: {name} = {_literal(new)} (was {_literal(old)})")
