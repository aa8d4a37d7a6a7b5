"""``lgl-kit doctor`` and the preflight of ``lgl-kit run``: the problems that would doom a run, found in seconds.

Each check is one line, ``ok`` or ``error``; an error names the package, parameter or path and the fix.

The checks live in :mod:`~lgl_helpers.app.environment` (torch/torchaudio pair, faiss, CUDA) and
:mod:`~lgl_helpers.app.data_checks` (each notebook's configuration, free disk, the data it reads).

Data that notebook 00 creates (the toy corpus, a list built from ``train_root``) does not exist yet when
a run starts: those checks are *pending*, and :class:`Preflight` repeats the data checks right after
notebook 00, before the next notebook starts.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Sequence
from typing import Any

from lgl_helpers.app.checks import DATA_SETUP, TRAINING, Check
from lgl_helpers.app.data_checks import configuration_checks, data_checks, disk_check, planned_values
from lgl_helpers.app.environment import Importer, environment_checks
from lgl_helpers.app.planning import PipelineError, PlannedNotebook
from lgl_helpers.runs import run_folder, writable_problem


def diagnose(
    steps: Sequence[PlannedNotebook],
    *,
    environment: bool = True,
    data: bool = True,
    import_module: Importer = importlib.import_module,
    version_of: Callable[[str], str] = importlib.metadata.version,
) -> list[Check]:
    """Every check of the planned ``steps`` (from :func:`lgl_helpers.app.planning.plan_run`), in report order."""
    values = planned_values(steps)
    checks = environment_checks(values, import_module, version_of) if environment else []
    if any(not check.ok and check.name in ("torch", "torchaudio") for check in checks):
        # Every config module imports torch: nothing further can be checked until it imports.
        return checks + [
            Check("configuration", False, "not checked: it needs torch and torchaudio to import (see above)")
        ]
    configs, config_checks = configuration_checks(values)
    checks += config_checks
    first = next(iter(values.values()))  # every notebook has the pipeline's run_name and runs_dir
    run_dir = run_folder(first["run_name"], first["runs_dir"])
    checks.append(runs_folder_check(run_dir))
    disk = disk_check(configs, run_dir)
    checks += [disk] if disk else []
    return checks + (data_checks(values, configs, run_dir) if data else [])


def runs_folder_check(run_dir) -> Check:
    """Whether the run folder can be written, by the test ``lgl-kit run`` applies before its first notebook."""
    problem = writable_problem(run_dir)
    if problem is None:
        return Check("run folder", True, f"{run_dir} can be written")
    return Check("run folder", False, f"{run_dir} cannot be written: {problem}; choose another --runs-dir")


class Preflight:
    """The doctor inside ``lgl-kit run``: stops the run with :class:`~lgl_helpers.app.PipelineError`,
    one line per problem, before the notebook that would fail.

    Created before the first notebook, it checks the environment, every planned notebook's configuration
    and, when the plan holds a training notebook (01-04), the data as far as it exists. When notebook 00
    creates data (the toy corpus, a built list), :meth:`before` repeats the data checks once 00 has run.
    A plan of 00 or 05 alone gets no data checks: 00 validates its own inputs, 05 only reads results.
    """

    def __init__(self, plan: Sequence[PlannedNotebook], echo: Callable[[str], Any] = print):
        self.plan = list(plan)
        self.echo = echo
        self.deferred = self._run(self.plan, environment=True, when="before the first notebook")

    def before(self, name: str) -> None:
        """Call before running notebook ``name``: runs the deferred data checks once notebook 00 is behind."""
        if self.deferred and name != DATA_SETUP:
            self.deferred = False
            self._run([s for s in self.plan if s.name != DATA_SETUP], environment=False, when=f"after {DATA_SETUP}")

    def _run(self, steps: list[PlannedNotebook], environment: bool, when: str) -> bool:
        """Run the checks; raise on any error, else return whether some wait for notebook 00's data."""
        checks = diagnose(steps, environment=environment, data=any(s.name in TRAINING for s in steps))
        errors = [check.line() for check in checks if not check.ok]
        if errors:
            raise PipelineError(
                f"preflight {when} found {len(errors)} problem(s) (`lgl-kit doctor` with the same options lists "
                "every check):\n" + "\n".join(errors)
            )
        pending = any(check.pending for check in checks)
        self.echo(
            f"[preflight] {when}: {len(checks)} checks ok"
            + (f"; the data checks run again once {DATA_SETUP} has created the data" if pending else "")
        )
        return pending
