"""Headless pipeline: the notebooks 00 → 05 executed with papermill into ``runs/<run>/notebooks/``.

Parameters come from a profile file (``notebooks/params/<profile>.yaml``) plus ``--set`` overrides, and
are checked against each notebook's ``parameters`` cell before anything runs (papermill itself only
warns about unknown names). ``runs/<run>/pipeline.json`` records, per notebook, the parameters it ran
with and whether it finished, so rerunning a run skips finished notebooks and resumes the interrupted one.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lgl_helpers.runs import project_root, read_json, resolve_path, run_folder, write_json

log = logging.getLogger(__name__)

NOTEBOOKS = (
    "00_data_setup",
    "01_stage1_contrastive",
    "02_clustering_umap",
    "03_stage2_baseline",
    "04_stage2_lgl",
    "05_compare",
)
# Set by the pipeline itself for every notebook, so a profile never has to repeat them.
PIPELINE_PARAMETERS = ("run_name", "runs_dir", "interactive")


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
            raise PipelineError(f"{path}: parameters cell line {node.lineno} is not a plain `name = literal` assignment")
        try:
            parameters[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise PipelineError(f"{path}: parameter {node.targets[0].id!r} (line {node.lineno}) is not a literal") from None
    return parameters


def _type_name(value: Any) -> str:
    return type(value).__name__


def check_value(notebook: str, name: str, value: Any, default: Any) -> Any:
    """Return ``value`` if it has the default's type (int accepted for float; lists and strings interchangeable
    where the default allows both, as for ``gates``), else raise naming the parameter."""
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    elif isinstance(default, (int, str, list)) and isinstance(value, type(default)):
        return value
    elif isinstance(default, list) and isinstance(value, str):
        return value  # e.g. gates = "auto"
    elif default is None:
        return value
    raise PipelineError(
        f"parameter {name!r} of {notebook} must be {_type_name(default)} (default {default!r}), got {value!r}"
    )


def load_profile(profile: str | Path) -> dict[str, dict[str, Any]]:
    """Profile YAML → ``{"common": {...}, "<notebook>": {...}}``. ``profile`` is a name or a path."""
    path = Path(profile) if str(profile).endswith((".yaml", ".yml")) else notebooks_dir() / "params" / f"{profile}.yaml"
    path = resolve_path(path)
    if not path.is_file():
        available = sorted(p.stem for p in (notebooks_dir() / "params").glob("*.yaml"))
        raise PipelineError(f"profile {str(profile)!r} not found at {path}; available profiles: {available}")
    with open(path) as handle:
        data = yaml.safe_load(handle) or {}
    unknown = set(data) - {"common", *NOTEBOOKS}
    if unknown:
        raise PipelineError(f"{path}: unknown sections {sorted(unknown)}; valid: ['common', {', '.join(map(repr, NOTEBOOKS))}]")
    return {key: dict(value or {}) for key, value in data.items()}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["epochs=3", "gates=[1, 2]", "01_stage1_contrastive.lr=0.01"]`` → dict; values parsed as YAML."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise PipelineError(f"--set {item!r}: expected key=value")
        overrides[key.strip()] = yaml.safe_load(text) if text.strip() else ""
    return overrides


@dataclass
class PlannedNotebook:
    name: str
    source: Path
    output: Path
    parameters: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.parameters, sort_keys=True).encode()).hexdigest()[:16]


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
    """
    overrides = overrides or {}
    sections = load_profile(profile)
    defaults = {name: notebook_parameters(notebook_path(name)) for name in NOTEBOOKS}
    valid_names = sorted({p for params in defaults.values() for p in params})

    def apply(target: dict[str, dict], key: str, value: Any, origin: str) -> None:
        notebook, dot, name = key.rpartition(".")
        if dot:
            if notebook not in defaults:
                raise PipelineError(f"{origin} {key!r}: unknown notebook {notebook!r}; valid: {list(NOTEBOOKS)}")
            if name not in defaults[notebook]:
                raise PipelineError(
                    f"{origin} {key!r}: {notebook} has no parameter {name!r}; valid: {sorted(defaults[notebook])}"
                )
            target[notebook][name] = check_value(notebook, name, value, defaults[notebook][name])
            return
        owners = [nb for nb in NOTEBOOKS if key in defaults[nb]]
        if not owners:
            raise PipelineError(f"{origin} {key!r}: no notebook has this parameter; valid names: {valid_names}")
        for notebook in owners:
            target[notebook][key] = check_value(notebook, key, value, defaults[notebook][key])

    resolved: dict[str, dict[str, Any]] = {name: {} for name in NOTEBOOKS}
    for key, value in sections.get("common", {}).items():
        apply(resolved, key, value, "profile common")
    for notebook in NOTEBOOKS:
        for key, value in sections.get(notebook, {}).items():
            apply(resolved, f"{notebook}.{key}", value, "profile")
    for key, value in overrides.items():
        apply(resolved, key, value, "--set")

    out_dir = run_folder(run_name, runs_dir) / "notebooks"
    plan = []
    for name in notebooks:
        parameters = dict(resolved[name])
        for key, value in (("run_name", run_name), ("runs_dir", str(resolve_path(runs_dir))), ("interactive", False)):
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
        return NOTEBOOKS[NOTEBOOKS.index(find(start)):]
    return NOTEBOOKS


def kernel_name() -> str:
    """The kit's registered kernel when present (scripts/setup.sh installs it), else the current Python's."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "lgl-kit" if "lgl-kit" in KernelSpecManager().find_kernel_specs() else "python3"


def _failure_message(error: Exception, output: Path) -> str:
    import papermill.exceptions

    if isinstance(error, papermill.exceptions.PapermillExecutionError):
        return (
            f"cell {error.exec_count} failed with {error.ename}: {error.evalue}\n"
            f"{''.join(error.traceback[-3:]) if error.traceback else ''}\n"
            f"the executed notebook is saved for inspection at {output}"
        )
    return f"{type(error).__name__}: {error}\nthe partial notebook (if any) is at {output}"


def run_pipeline(
    profile: str | Path,
    run_name: str,
    overrides: dict[str, Any] | None = None,
    runs_dir: str = "runs",
    start: str | None = None,
    only: str | None = None,
    log_output: bool = False,
    force: bool = False,
    echo=print,
) -> dict:
    """Execute the selected notebooks in order; return ``pipeline.json``'s content.

    A notebook whose recorded parameters equal the planned ones and that finished is skipped unless
    ``force``; when one reruns, every later notebook reruns too (its inputs may have changed).
    """
    import papermill

    plan = plan_run(profile, run_name, overrides, runs_dir, select_notebooks(start, only))
    run_dir = run_folder(run_name, runs_dir)
    state_path = run_dir / "pipeline.json"
    state = read_json(state_path) if state_path.is_file() else {"run_name": run_name, "notebooks": {}}
    state["profile"] = str(profile)
    kernel = kernel_name()
    # Kernels inherit this: headless runs log one line per epoch instead of drawing progress widgets.
    os.environ.setdefault("LGL_PROGRESS", "0")
    upstream_reran = False
    for step in plan:
        record = state["notebooks"].get(step.name, {})
        if not force and not upstream_reran and record.get("status") == "done" and record.get("fingerprint") == step.fingerprint:
            echo(f"[{step.name}] already finished with the same parameters ({record['wall_seconds']:.0f} s) - skipped")
            continue
        upstream_reran = True
        echo(f"[{step.name}] running → {step.output}")
        step.output.parent.mkdir(parents=True, exist_ok=True)
        record = {"fingerprint": step.fingerprint, "parameters": step.parameters, "status": "running"}
        state["notebooks"][step.name] = record
        write_json(state_path, state)
        started = time.time()
        try:
            papermill.execute_notebook(
                str(step.source),
                str(step.output),
                parameters=step.parameters,
                kernel_name=kernel,
                cwd=str(project_root()),
                log_output=log_output,
                progress_bar=False,
            )
        except Exception as error:
            record.update(status="failed", wall_seconds=time.time() - started, error=str(error).splitlines()[-1][:500] if str(error) else type(error).__name__)
            write_json(state_path, state)
            raise PipelineError(f"[{step.name}] failed: {_failure_message(error, step.output)}") from None
        record.update(status="done", wall_seconds=time.time() - started, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(state_path, state)
        echo(f"[{step.name}] done in {record['wall_seconds']:.1f} s")
    return state


def _cmd_run(args) -> int:
    try:
        state = run_pipeline(
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
    total = sum(r.get("wall_seconds", 0.0) for r in state["notebooks"].values())
    print(f"run {args.run_name!r} finished: {run_folder(args.run_name, args.runs_dir)} ({total:.0f} s of notebook time)")
    return 0


def _cmd_report(args) -> int:
    from lgl_helpers.report import results_table

    path = run_folder(args.run_name, args.runs_dir) / "report.json"
    if not path.is_file():
        print(f"lgl-kit report: {path} does not exist; run notebook 05_compare first", file=sys.stderr)
        return 1
    report = read_json(path)
    print(results_table(report))
    print(f"\nfull report: {path.with_suffix('.md')}")
    return 0


def register_cli(subparsers) -> None:
    """Add the ``run`` and ``report`` subcommands to the ``lgl-kit`` parser."""
    run = subparsers.add_parser(
        "run",
        help="execute the notebooks headlessly with papermill",
        description="Execute notebooks 00→05 with papermill into runs/RUN/notebooks/, parameters from a profile plus --set.",
    )
    run.add_argument("--profile", default="demo", help="profile name in notebooks/params/ (ci, demo, full) or a YAML path")
    run.add_argument("--run-name", default="demo", help="folder under --runs-dir for every output")
    run.add_argument("--runs-dir", default="runs", help="where run folders live (default: runs/)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter of every notebook that has it, or NOTEBOOK.KEY=VALUE for one; repeatable")
    run.add_argument("--from", dest="start", metavar="NOTEBOOK", help="start at this notebook (e.g. 02 or 02_clustering_umap)")
    run.add_argument("--only", metavar="NOTEBOOK", help="run only this notebook")
    run.add_argument("--log-output", action="store_true", help="stream each notebook's output (one log line per epoch)")
    run.add_argument("--force", action="store_true", help="rerun notebooks even when finished with the same parameters")
    run.set_defaults(func=_cmd_run)

    report = subparsers.add_parser("report", help="print the results table of a finished run",
                                   description="Print the results table from runs/RUN/report.json.")
    report.add_argument("--run-name", default="demo", help="run folder name")
    report.add_argument("--runs-dir", default="runs", help="where run folders live")
    report.set_defaults(func=_cmd_report)
