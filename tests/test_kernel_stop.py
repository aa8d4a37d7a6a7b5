"""`lgl-kit run` on SIGTERM: the signal goes on to the notebook's kernel (whose stage checkpoints and
stops), the kernel is shut down rather than orphaned, and the notebook is recorded as interrupted."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import papermill
import pytest

from lgl_helpers.app import pipeline
from lgl_helpers.files import read_json

# A process standing in for a kernel: says "ready", then exits with status 7 on SIGTERM (or ignores it).
_CHILD = (
    "import signal, sys, time; "
    "signal.signal(signal.SIGTERM, {handler}); print('ready', flush=True); time.sleep(30); sys.exit(1)"
)


def _child(handler: str = "lambda *args: sys.exit(7)") -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(handler=handler)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    return child


def test_sigterm_is_forwarded_to_the_kernel_and_the_notebook_is_recorded_interrupted(tmp_path, monkeypatch):
    previous = signal.getsignal(signal.SIGTERM)
    children = []

    def fake(source, output, **kwargs):
        # What papermill does with the kit's kernel manager: the started kernel's pid is known.
        child = _child()
        children.append(child)
        kwargs["kernel_manager_class"].started_pids.append(child.pid)
        os.kill(os.getpid(), signal.SIGTERM)
        child.wait(timeout=20)
        raise RuntimeError("cell 3 failed with TrainingStopped")  # as papermill reports the stopped cell

    monkeypatch.setattr(papermill, "execute_notebook", fake)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(
            "ci",
            "r",
            {"00_data_setup.toy_root": str(tmp_path / "toy")},
            runs_dir=str(tmp_path),
            only="00",
            echo=lambda _: None,
        )
    assert children[0].returncode == 7, "the kernel got the SIGTERM"
    assert read_json(tmp_path / "r" / "pipeline.json")["notebooks"]["00_data_setup"]["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is previous


# "ignored": how a job started with `&` by a non-interactive shell (a batch script) inherits SIGINT.
@pytest.mark.parametrize("sigint", [signal.default_int_handler, signal.SIG_IGN], ids=["default", "ignored"])
def test_a_kernel_that_does_not_stop_is_shut_down_after_the_grace_time(sigint):
    child = _child("signal.SIG_IGN")
    stop = pipeline.KernelStop(grace_s=0.5)
    previous_int = signal.signal(signal.SIGINT, sigint)
    try:
        tic = time.perf_counter()
        with pytest.raises(KeyboardInterrupt), stop.handling_sigterm():
            stop.pids.append(child.pid)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(20)  # the grace timer interrupts this
        assert stop.forwarded and time.perf_counter() - tic < 10
        assert child.poll() is None, "the kernel ignored SIGTERM; papermill's shutdown is what ends it"
        assert signal.getsignal(signal.SIGINT) is sigint
    finally:
        signal.signal(signal.SIGINT, previous_int)
        child.kill()
        child.wait()


def test_a_real_kernel_gets_the_signal_and_is_shut_down(tmp_path):
    """papermill with the tracked kernel manager: the kernel's handler runs, its cell fails, the kernel is gone."""
    ready, marker = tmp_path / "ready", tmp_path / "stopped"
    code = (
        "import pathlib, signal, time\n"
        "def stop(signum, frame):\n"
        f"    pathlib.Path({str(marker)!r}).write_text('checkpoint written')\n"
        "    raise SystemExit('SIGTERM: checkpoint written, rerun to resume')\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"pathlib.Path({str(ready)!r}).write_text('ready')\n"
        "time.sleep(60)\n"
    )
    notebook = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": "train", "metadata": {}, "outputs": [], "source": code}
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    source = tmp_path / "train.ipynb"
    source.write_text(json.dumps(notebook))

    def signal_when_ready():
        deadline = time.monotonic() + 50
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    stop = pipeline.KernelStop()
    threading.Thread(target=signal_when_ready, daemon=True).start()
    with pytest.raises(papermill.PapermillExecutionError, match="SIGTERM: checkpoint written"), stop.handling_sigterm():
        papermill.execute_notebook(
            str(source),
            str(tmp_path / "out.ipynb"),
            kernel_name=pipeline.kernel_name(),
            progress_bar=False,
            kernel_manager_class=stop.kernel_manager_class,
        )
    assert stop.forwarded and marker.read_text() == "checkpoint written"
    (pid,) = stop.pids
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # shut down and reaped, not orphaned
