"""Run parameters: the notebooks' ``parameters`` cells, profiles, ``--set`` overrides and the run plan.

A profile (``notebooks/params/<profile>.yaml``) gives values shared by every notebook under
``common:`` and per-notebook values under the notebook's name; ``--set`` overrides come on top. Every
name and value is checked against the notebooks' ``parameters`` cells before anything runs (papermill
itself only warns about unknown names), and :func:`plan_run` turns the result into one
:class:`PlannedNotebook` per notebook to execute.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lgl_helpers.config import unknown_name
from lgl_helpers.runs import project_root, resolve_path, run_folder

NOTEBOOKS = (
    "00_data_setup",
    "01_stage1_contrastive",
    "02_clustering_umap",
    "03_stage2_baseline",
    "04_stage2_lgl",
    "05_compare",
)
# Set by the pipeline itself for every notebook, so a profile never has to repeat them.
PIPELINE_PARAMETERS = ("run_name", "runs_dir", "interactive", "recompute")
# Not part of a notebook's fingerprint: where the run folder lives (a copied run resumes where it was) and
# recompute, which the pipeline always sets (it only executes a notebook whose results are to be computed).
_UNFINGERPRINTED = ("runs_dir", "recompute")
# What to write instead of setting one of them in a profile or --set (the pipeline's value would win).
_PIPELINE_PARAMETER_HINTS = {
    "run_name": "use the command-line option --run-name",
    "runs_dir": "use the command-line option --runs-dir",
    "interactive": "headless runs always use interactive=False; open the notebook in JupyterLab for widgets",
    "recompute": "lgl-kit run computes every notebook it executes; --force executes finished ones again",
}


class PipelineError(RuntimeError):
    """A pipeline problem reported before or while running notebooks (bad profile, unknown parameter, failed cell)."""


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def notebook_path(name: str) -> Path:
    return notebooks_dir() / f"{name}.ipynb"


def parameters_cell_source(path: str | Path) -> str:
    """Source of the single code cell tagged ``parameters``; an error if there is none or several."""
    with open(path) as handle:
        cells = json.load(handle)["cells"]
    tagged = [c for c in cells if c["cell_type"] == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise PipelineError(f"{path}: expected exactly one cell tagged 'parameters', found {len(tagged)}")
    source = tagged[0]["source"]
    return "".join(source) if isinstance(source, list) else source


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """Parameter name → literal default, read from the notebook's ``parameters`` cell."""
    source = parameters_cell_source(path)
    parameters = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise PipelineError(
                f"{path}: parameters cell line {node.lineno} is not a plain `name = literal` assignment"
            )
        try:
            parameters[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise PipelineError(
                f"{path}: parameter {node.targets[0].id!r} (line {node.lineno}) is not a literal"
            ) from None
    return parameters


def _type_name(value: Any) -> str:
    return type(value).__name__


def check_value(notebook: str, name: str, value: Any, default: Any) -> Any:
    """Return ``value`` if it has the default's type (int accepted for float; lists and strings interchangeable
    where the default allows both, as for ``gates``; a mapping for a mapping, as for ``eval_trials``), else
    raise naming the parameter."""
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    elif isinstance(default, (int, str, list, dict)) and isinstance(value, type(default)):
        return value
    elif isinstance(default, list) and isinstance(value, str):
        return value  # e.g. gates = "auto"
    elif default is None:
        return value
    raise PipelineError(
        f"parameter {name!r} of {notebook} must be {_type_name(default)} (default {default!r}), got {value!r}"
    )


class _ParameterLoader(yaml.SafeLoader):
    """YAML with the plain scalars a user means: YAML 1.2's core schema plus Python's spellings.

    PyYAML follows YAML 1.1, where ``1e-3`` is a string, ``010`` is octal 8, ``yes``/``on`` are booleans
    and ``1:30`` is 90. Here ``1e-3``, ``1E-3`` and ``.5`` are floats, ``010`` is ten and ``100_000`` a
    hundred thousand (``0x1f``/``0o17`` for other bases), only true/false (True, TRUE ...) are booleans,
    ``null``/``None``/``~`` are None, and anything else plain (``yes``, ``1:30``, ``2024-01-01``) stays
    a string.
    """


# Replace, not extend, YAML 1.1's resolvers; the merge key keeps `<<: *anchor` working in profiles.
_ParameterLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("null", r"~|null|Null|NULL|None|", ["~", "n", "N", ""]),
    ("int", r"[-+]?[0-9]+(_[0-9]+)*|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    (
        "float",
        r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
        "-+0123456789.",
    ),
    ("merge", r"<<", "<"),
):
    _ParameterLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), list(_first))


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node)
    return int(text, 0) if text.lower().startswith(("0x", "0o")) else int(text, 10)  # int("010", 10) == 10


def _construct_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    text = loader.construct_scalar(node).lower()
    if text.endswith(".inf"):
        return -math.inf if text.startswith("-") else math.inf
    return math.nan if text == ".nan" else float(text)


_ParameterLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_ParameterLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def _yaml_problem(error: Exception) -> str:
    """One line from a YAML error (PyYAML's own message spans several lines with a source excerpt)."""
    if isinstance(error, yaml.MarkedYAMLError):
        return ", ".join(part for part in (error.context, error.problem) if part) or "not valid YAML"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def parse_value(text: str, where: str) -> Any:
    """A parameter value written as text (``1e-3``, ``010``, ``[1, 2]``, ``auto``, ``"quoted"``) →
    Python value, by :class:`_ParameterLoader`'s rules; a malformed value raises naming ``where``."""
    try:
        return yaml.load(text, Loader=_ParameterLoader)
    except (yaml.YAMLError, ValueError) as error:
        raise PipelineError(f"{where}: {text!r} is not a valid value ({_yaml_problem(error)})") from None


def profile_path(profile: str | Path) -> Path:
    """The YAML file of ``profile``: a path ending in .yaml/.yml, else a name in ``notebooks/params/``."""
    path = Path(profile) if str(profile).endswith((".yaml", ".yml")) else notebooks_dir() / "params" / f"{profile}.yaml"
    return resolve_path(path)


def load_profile(profile: str | Path) -> dict[str, dict[str, Any]]:
    """Profile YAML → ``{"common": {...}, "<notebook>": {...}}``. ``profile`` is a name or a path.

    Values are read by the same rules as ``--set`` values (:class:`_ParameterLoader`).
    """
    path = profile_path(profile)
    if not path.is_file():
        available = sorted(p.stem for p in (notebooks_dir() / "params").glob("*.yaml"))
        raise PipelineError(f"profile {str(profile)!r} not found at {path}; available profiles: {available}")
    with open(path) as handle:
        try:
            data = yaml.load(handle, Loader=_ParameterLoader) or {}
        except yaml.YAMLError as error:
            # where the unclosed construct began (an unclosed "[" is noticed only at the end of the file)
            mark = getattr(error, "context_mark", None) or getattr(error, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise PipelineError(f"{where}: not valid YAML ({_yaml_problem(error)})") from None
        except ValueError as error:  # e.g. an explicit `!!int x`
            raise PipelineError(f"{path}: {error}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected sections 'common:' and '<notebook>:', got a {_type_name(data)}")
    unknown = set(data) - {"common", *NOTEBOOKS}
    if unknown:
        raise PipelineError(
            f"{path}: unknown sections {sorted(unknown)}; valid: ['common', {', '.join(map(repr, NOTEBOOKS))}]"
        )
    not_mappings = [key for key, value in data.items() if not isinstance(value, (dict, type(None)))]
    if not_mappings:
        raise PipelineError(f"{path}: section {not_mappings[0]!r} must hold 'name: value' lines")
    return {key: dict(value or {}) for key, value in data.items()}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["epochs=3", "gates=[1, 2]", "01_stage1_contrastive.lr=1e-3"]`` → dict; values by :func:`parse_value`."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise PipelineError(f"--set {item!r}: expected key=value")
        key = key.strip()
        overrides[key] = parse_value(text, f"--set {key}") if text.strip() else ""
    return overrides


@dataclass
class PlannedNotebook:
    name: str
    source: Path
    output: Path
    parameters: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        defining = {key: value for key, value in self.parameters.items() if key not in _UNFINGERPRINTED}
        return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]


def plan_run(
    profile: str | Path,
    run_name: str,
    overrides: dict[str, Any] | None = None,
    runs_dir: str = "runs",
    notebooks: tuple[str, ...] = NOTEBOOKS,
) -> list[PlannedNotebook]:
    """Resolve and validate every notebook's parameters; nothing is executed.

    Keys in the profile's ``common`` section and in ``overrides`` apply to every notebook that has a
    parameter of that name (an error if none has it); ``<notebook>.<name>`` targets one notebook.
    :data:`PIPELINE_PARAMETERS` come from the arguments only.
    """
    overrides = overrides or {}
    sections = load_profile(profile)
    source = profile_path(profile)
    defaults = {name: notebook_parameters(notebook_path(name)) for name in NOTEBOOKS}
    valid_names = sorted({p for params in defaults.values() for p in params})

    def apply(target: dict[str, dict], key: str, value: Any, origin: str) -> None:
        notebook, dot, name = key.rpartition(".")
        if name in PIPELINE_PARAMETERS:
            raise PipelineError(
                f"{origin} {key!r}: {name} is set by the pipeline for every notebook; {_PIPELINE_PARAMETER_HINTS[name]}"
            )
        if dot:
            if notebook not in defaults:
                raise PipelineError(f"{origin} {key!r}: unknown notebook {notebook!r}; valid: {list(NOTEBOOKS)}")
            if name not in defaults[notebook]:
                problem = f"{origin} {key!r}: {notebook} has no parameter {name!r}"
                raise PipelineError(unknown_name(name, defaults[notebook], problem, list_valid=True))
            target[notebook][name] = check_value(notebook, name, value, defaults[notebook][name])
            return
        owners = [nb for nb in NOTEBOOKS if key in defaults[nb]]
        if not owners:
            problem = f"{origin} {key!r}: no notebook has this parameter"
            raise PipelineError(unknown_name(key, valid_names, problem, list_valid=True))
        for notebook in owners:
            target[notebook][key] = check_value(notebook, key, value, defaults[notebook][key])

    resolved: dict[str, dict[str, Any]] = {name: {} for name in NOTEBOOKS}
    for key, value in sections.get("common", {}).items():
        apply(resolved, key, value, f"{source} common:")
    for notebook in NOTEBOOKS:
        for key, value in sections.get(notebook, {}).items():
            apply(resolved, f"{notebook}.{key}", value, str(source))
    for key, value in overrides.items():
        apply(resolved, key, value, "--set")

    out_dir = run_folder(run_name, runs_dir) / "notebooks"
    plan = []
    for name in notebooks:
        parameters = dict(resolved[name])
        pipeline_values = {"run_name": run_name, "runs_dir": str(resolve_path(runs_dir))}
        for key, value in {**pipeline_values, "interactive": False, "recompute": True}.items():
            if key in defaults[name]:
                parameters[key] = value
        plan.append(PlannedNotebook(name, notebook_path(name), out_dir / f"{name}.ipynb", parameters))
    return plan


def select_notebooks(start: str | None = None, only: str | None = None) -> tuple[str, ...]:
    """Notebook names from ``--from`` / ``--only`` (a full name or its two-digit prefix)."""

    def find(key: str) -> str:
        matches = [n for n in NOTEBOOKS if n == key or n.split("_")[0] == key or n == Path(key).stem]
        if not matches:
            raise PipelineError(f"unknown notebook {key!r}; valid: {list(NOTEBOOKS)}")
        return matches[0]

    if only:
        return (find(only),)
    if start:
        return NOTEBOOKS[NOTEBOOKS.index(find(start)) :]
    return NOTEBOOKS
