"""Headless runs: a notebook's output streamed with --log-output, and an LGL run paused before its gate,
recorded as waiting in pipeline.json and resumed by the next run.

Notebook execution is replaced by a fake that writes the Stage II state the real notebook 04 would
leave, so the tests take a second; tests/test_browser.py sets such a gate in a real notebook.
"""

import json
import os
import sys

import papermill
import pytest

from lgl_helpers import files
from lgl_helpers.app import doctor, pipeline
from lgl_helpers.training import stage2


class _NoChecks:
    """Stands in for the run's preflight: the fake notebooks need no data."""

    def __init__(self, plan, echo=print):
        pass

    def before(self, name):
        pass


@pytest.fixture
def notebooks(monkeypatch, tmp_path):
    """Fake notebooks 04 and 05; ``notebooks.lgl_status`` is the status notebook 04 leaves its run in."""
    calls = []
    stage_dir = tmp_path / "r" / "stage2_lgl"

    def fake(source, output, **kwargs):
        name = os.path.basename(source).removesuffix(".ipynb")
        calls.append(name)
        fake.kwargs = kwargs
        if name == "04_stage2_lgl":
            state = {"format": stage2.STATE_FORMAT, "status": fake.lgl_status, "iteration": 1, "phase": "L"}
            files.write_json(stage_dir / "state.json", state)

    fake.lgl_status = "paused_before_gate"
    fake.calls, fake.stage_dir = calls, stage_dir
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    monkeypatch.setattr(doctor, "Preflight", _NoChecks)
    return fake


def test_a_run_paused_for_its_gate_waits_and_the_next_run_resumes_it(notebooks, tmp_path):
    echoed = []
    state = pipeline.run_pipeline("ci", "r", runs_dir=str(tmp_path), start="04", echo=echoed.append)
    record = state["notebooks"]["04_stage2_lgl"]
    assert record["status"] == "waiting_for_gate"
    assert record["waiting_for_gate"] == {"iteration": 1, "stage_dir": str(notebooks.stage_dir)}
    assert notebooks.calls == ["04_stage2_lgl"], "notebook 05 must not run while 04 waits for a gate"
    assert json.loads((tmp_path / "r" / "pipeline.json").read_text())["notebooks"]["04_stage2_lgl"] == record
    assert "waiting for a gate" in echoed[-1] and str(notebooks.stage_dir / "gate_overrides.json") in echoed[-1]
    assert f"`lgl-kit gate --run-name r --runs-dir {tmp_path} --iteration 1 --value G`" in echoed[-1]

    notebooks.lgl_status = "done"  # the gate is set; the rerun trains phase L to the end
    state = pipeline.run_pipeline("ci", "r", runs_dir=str(tmp_path), start="04", echo=echoed.append)
    assert notebooks.calls == ["04_stage2_lgl", "04_stage2_lgl", "05_compare"]
    assert [state["notebooks"][n]["status"] for n in ("04_stage2_lgl", "05_compare")] == ["done", "done"]
    assert "waiting_for_gate" not in state["notebooks"]["04_stage2_lgl"]


def test_log_output_streams_the_notebooks_stdout_and_stderr(notebooks, tmp_path):
    notebooks.lgl_status = "done"
    pipeline.run_pipeline("ci", "r", runs_dir=str(tmp_path), only="05", log_output=True, echo=lambda line: None)
    # Straight to the terminal as the kernel writes (papermill's log_output would need a configured logger).
    assert notebooks.kwargs["stdout_file"] is sys.stdout and notebooks.kwargs["stderr_file"] is sys.stderr
    assert not notebooks.kwargs.get("log_output")
    pipeline.run_pipeline("ci", "r", runs_dir=str(tmp_path), only="05", force=True, echo=lambda line: None)
    assert notebooks.kwargs["stdout_file"] is None
