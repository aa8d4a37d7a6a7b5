"""Headless pipeline: the notebooks 00 → 05 executed with papermill into ``runs/<run>/notebooks/``.

The plan (which notebooks, with which checked parameters) comes from :mod:`lgl_helpers.app.planning`.
``runs/<run>/pipeline.json`` records, per notebook, the parameters it ran with and whether it
finished, so rerunning a run skips finished notebooks and resumes the interrupted one. A run holds its
folder's lock (:func:`lgl_helpers.run_lock.hold_run_folder`) from start to end, so a second ``lgl-kit run``
of the same run name stops at once naming the first one's pid, and each record is written into the
pipeline.json as it is on disk (read, changed, written), never from a copy read at the start. An LGL run
with ``pause_before_gate`` that stopped before a phase L is recorded as ``"waiting_for_gate"`` and
ends the pipeline there; once the gate is set (``lgl-kit gate`` or notebook 04's tuner writes
``gate_overrides.json``), rerunning the same command continues it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lgl_helpers.app.gate_cli import gate_command
from lgl_helpers.app.planning import PipelineError, PlannedNotebook, notebook_parameters, plan_run, select_notebooks
from lgl_helpers.files import read_json_object, remove_stale_temp_files, write_json
from lgl_helpers.run_lock import RunFolderBusy, hold_run_folder
from lgl_helpers.runs import project_root, run_folder, writable_problem

# 128 + SIGINT: the status a shell reports for a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130
INTERRUPTED_MESSAGE = "interrupted — rerun the same command to resume"


def kernel_name() -> str:
    """The kit's registered kernel when present (scripts/setup.sh installs it), else the current Python's."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "lgl-kit" if "lgl-kit" in KernelSpecManager().find_kernel_specs() else "python3"


# Kernel configuration that drops two noise records of ipykernel from stderr (the file says which).
KERNEL_CONFIG = Path(__file__).with_name("kernel_config.py")

# CSI sequences (colours, cursor moves), OSC sequences (titles, links) and two-character escapes.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (IPython colours the tracebacks papermill hands back)."""
    return _ANSI_ESCAPE.sub("", text)


def _failure_message(error: Exception, output: Path) -> str:
    import papermill.exceptions

    if isinstance(error, papermill.exceptions.PapermillExecutionError):
        return strip_ansi(
            f"cell {error.exec_count} failed with {error.ename}: {error.evalue}\n"
            f"{''.join(error.traceback[-3:]) if error.traceback else ''}\n"
            f"the executed notebook is saved for inspection at {output}"
        )
    return strip_ansi(f"{type(error).__name__}: {error}\nthe partial notebook (if any) is at {output}")


ERROR_CHARS = 500  # of a failed notebook's error in pipeline.json


def failure_summary(error: Exception) -> str:
    """The ``error`` pipeline.json keeps of a failed notebook: the exception's type and the first line of its
    message, where the kit names the file and the cause (its last line may be a library's URL or advice)."""
    import papermill.exceptions

    if isinstance(error, papermill.exceptions.PapermillExecutionError):
        name, message = error.ename, strip_ansi(str(error.evalue))
    else:
        name, message = type(error).__name__, strip_ansi(str(error))
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return f"{name}: {first}"[:ERROR_CHARS] if first else name


def _require_writable(folder: Path) -> None:
    problem = writable_problem(folder)
    if problem is not None:
        raise PipelineError(f"run folder {folder} cannot be written: {problem}; choose another --runs-dir")
    folder.mkdir(parents=True, exist_ok=True)


def _record(state_path: Path, name: str, record: dict, profile: str) -> dict:
    """Write notebook ``name``'s ``record`` into pipeline.json as it is now on disk; return the new content.

    Read, changed and written under the run folder's lock: the records of other notebooks, written by
    another run since this one started, stay as they are.
    """
    state = read_json_object(state_path, "pipeline.json") or {"run_name": state_path.parent.name, "notebooks": {}}
    state["profile"] = profile
    state.setdefault("notebooks", {})[name] = record
    write_json(state_path, state)
    return state


# Seconds a signalled kernel gets to write its checkpoint and stop (a batch and one checkpoint; SLURM
# waits KillWait, 30 s by default, or what --signal asked for) before it is shut down.
KERNEL_GRACE_S = 25.0


class KernelStop:
    """SIGTERM while a notebook runs (a scheduler ending the job, ``kill``) is forwarded to its kernel.

    The kernel lives in a session of its own, so it would not see the signal, and killing the runner
    at once would leave it training on, orphaned. Forwarded, the signal reaches the stage's handler
    (:mod:`lgl_helpers.training.step_checkpoints`): the stage writes a mid-epoch checkpoint and stops,
    the cell fails and papermill shuts the kernel down. A kernel still running ``grace_s`` later, a
    second SIGTERM, or SIGTERM before any kernel started raises KeyboardInterrupt in the runner, which
    shuts the kernel down too. ``kernel_manager_class`` is what papermill starts kernels with, so
    that their process ids are known (``pids``).
    """

    def __init__(self, grace_s: float = KERNEL_GRACE_S):
        from jupyter_client.manager import AsyncKernelManager

        self.grace_s = grace_s
        self.pids: list[int] = []
        self.forwarded = False
        self._timer: threading.Timer | None = None
        pids = self.pids  # the class below appends to it

        class TrackedKernelManager(AsyncKernelManager):
            started_pids = pids  # every kernel it starts adds its process id here

            async def start_kernel(self, **kwargs):
                await super().start_kernel(**kwargs)
                self.started_pids.append(self.provisioner.pid)

        self.kernel_manager_class = TrackedKernelManager

    def _on_sigterm(self, signum, frame) -> None:
        if self.forwarded or not self.pids:
            raise KeyboardInterrupt(f"signal {signum}")
        self.forwarded = True
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):  # a kernel that has exited already
                os.kill(pid, signal.SIGTERM)
        # A real SIGINT to the main thread (Ctrl-C's path) interrupts the wait papermill is blocked in.
        main = threading.main_thread().ident
        self._timer = threading.Timer(self.grace_s, signal.pthread_kill, (main, signal.SIGINT))
        self._timer.daemon = True
        self._timer.start()

    @contextlib.contextmanager
    def handling_sigterm(self):
        """While active, SIGTERM goes to the kernel (main thread only: signal handlers can be installed nowhere else)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        # A job started in the background by a non-interactive shell inherits SIGINT ignored, which
        # would make the grace timer's SIGINT a no-op: Ctrl-C's KeyboardInterrupt is needed here.
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            signal.signal(signal.SIGINT, previous_int if previous_int is not None else signal.SIG_DFL)
            if self._timer is not None:
                self._timer.cancel()


def waiting_gate(step: PlannedNotebook) -> dict | None:
    """For notebook 04: ``{"iteration", "stage_dir"}`` of the phase L its paused run waits to get a gate for, else None."""
    if step.name != "04_stage2_lgl":
        return None
    from lgl_helpers.training import stage2

    config = stage2.LGLConfig.from_parameters({**notebook_parameters(step.source), **step.parameters})
    stage_dir = stage2.stage_folder(config)
    state = stage2.read_state(stage_dir)
    if state is None or state["status"] != "paused_before_gate":
        return None
    return {"iteration": state["iteration"], "stage_dir": str(stage_dir)}


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
    Ctrl-C or SIGTERM during a notebook records it as "interrupted" (rerun like a failed one) and
    re-raises KeyboardInterrupt; SIGTERM is first forwarded to the kernel, whose training stage writes
    a checkpoint and stops (:class:`KernelStop`). A notebook whose run paused for a gate (:func:`waiting_gate`) is
    recorded as "waiting_for_gate" with that gate's iteration and stage folder, and the later
    notebooks do not run; a rerun resumes it. An unwritable run folder raises PipelineError before any notebook runs.
    """
    import papermill

    plan = plan_run(profile, run_name, overrides, runs_dir, select_notebooks(start, only))
    run_dir = run_folder(run_name, runs_dir)
    _require_writable(run_dir)
    try:
        with hold_run_folder(run_dir, f"lgl-kit run --profile {profile}"):
            return _run_plan(plan, run_dir, profile, run_name, runs_dir, log_output, force, echo, papermill)
    except RunFolderBusy as error:
        raise PipelineError(str(error)) from None


def _run_plan(
    plan, run_dir: Path, profile, run_name: str, runs_dir: str, log_output: bool, force: bool, echo, papermill
) -> dict:
    """:func:`run_pipeline`'s loop, run holding the run folder's lock."""
    from lgl_helpers.app.doctor import Preflight

    # A doomed run stops here, not hours later: environment, configuration and the data that exists.
    preflight = Preflight(plan, echo)
    remove_stale_temp_files(run_dir)  # left by a run killed mid-write; this run holds the folder, so none is in flight
    state_path = run_dir / "pipeline.json"
    state = read_json_object(state_path, "pipeline.json") or {"run_name": run_name, "notebooks": {}}
    profile = str(profile)
    kernel = kernel_name()
    # Kernels inherit this: headless runs log one line per epoch instead of drawing progress widgets.
    os.environ.setdefault("LGL_PROGRESS", "0")
    upstream_reran = False
    for step in plan:
        preflight.before(step.name)  # the data checks deferred until notebook 00 has created the data
        record = state["notebooks"].get(step.name, {})
        if (
            not force
            and not upstream_reran
            and record.get("status") == "done"
            and record.get("fingerprint") == step.fingerprint
        ):
            echo(f"[{step.name}] already finished with the same parameters ({record['wall_seconds']:.0f} s) - skipped")
            continue
        upstream_reran = True
        echo(f"[{step.name}] running → {step.output}")
        step.output.parent.mkdir(parents=True, exist_ok=True)
        record = {"fingerprint": step.fingerprint, "parameters": step.parameters, "status": "running"}
        state = _record(state_path, step.name, record, profile)
        started = time.time()
        stop = KernelStop()
        try:
            with stop.handling_sigterm():
                papermill.execute_notebook(
                    str(step.source),
                    str(step.output),
                    parameters=step.parameters,
                    kernel_name=kernel,
                    cwd=str(project_root()),
                    # Streamed as the kernel writes it: papermill's own log_output goes through a logger
                    # nobody configures at INFO, which would drop the notebooks' stdout (the epoch lines).
                    stdout_file=sys.stdout if log_output else None,
                    stderr_file=sys.stderr if log_output else None,
                    progress_bar=False,
                    extra_arguments=[f"--IPKernelApp.extra_config_file={KERNEL_CONFIG}"],
                    kernel_manager_class=stop.kernel_manager_class,
                )
        except KeyboardInterrupt:
            # papermill has shut the kernel down; anything but "done" reruns (and the notebook resumes) next time
            record.update(status="interrupted", wall_seconds=time.time() - started)
            _record(state_path, step.name, record, profile)
            raise
        except Exception as error:
            if stop.forwarded:
                # The kernel stopped on the forwarded SIGTERM (its stage checkpointed): an interruption, not a failure.
                record.update(status="interrupted", wall_seconds=time.time() - started)
                _record(state_path, step.name, record, profile)
                raise KeyboardInterrupt("SIGTERM") from None
            record.update(status="failed", wall_seconds=time.time() - started, error=failure_summary(error))
            _record(state_path, step.name, record, profile)
            raise PipelineError(f"[{step.name}] failed: {_failure_message(error, step.output)}") from None
        waiting = waiting_gate(step)
        if waiting is not None:
            record.update(status="waiting_for_gate", wall_seconds=time.time() - started, waiting_for_gate=waiting)
            state = _record(state_path, step.name, record, profile)
            echo(
                f"[{step.name}] waiting for a gate: the run paused before phase L of iteration {waiting['iteration']}. "
                f"Set it with `{gate_command(run_name, runs_dir, waiting['iteration'])}`, with notebook 04's gate tuner "
                f"(run_name = {run_name!r}: run its setup cell and section 2) or in "
                f"{Path(waiting['stage_dir']) / 'gate_overrides.json'}, then rerun this command to continue"
            )
            return state
        record.update(status="done", wall_seconds=time.time() - started, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        state = _record(state_path, step.name, record, profile)
        echo(f"[{step.name}] done in {record['wall_seconds']:.1f} s")
        if stop.forwarded:
            raise KeyboardInterrupt("SIGTERM")  # the notebook finished as the signal came: the next one does not start
    return state


def outcome_line(state: dict, run_name: str, runs_dir: str = "runs") -> str:
    """The last line of ``lgl-kit run``: the run folder and its notebook time, and whether the run
    finished or is paused because a notebook waits for a gate."""
    total = sum(record.get("wall_seconds", 0.0) for record in state["notebooks"].values())
    folder = run_folder(run_name, runs_dir)
    waiting = [(name, r) for name, r in state["notebooks"].items() if r.get("status") == "waiting_for_gate"]
    if not waiting:
        return f"run {run_name!r} finished: {folder} ({total:.0f} s of notebook time)"
    name, record = waiting[0]
    return (
        f"run {run_name!r} is paused: {name} waits for the gate of iteration "
        f"{record['waiting_for_gate']['iteration']} ({folder}, {total:.0f} s of notebook time so far)"
    )
