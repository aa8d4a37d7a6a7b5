"""`lgl-kit gate`, and a run paused before its gate as `lgl-kit run` and `lgl-kit report` show it.

Most tests write the Stage II ``state.json`` a paused LGL run leaves; the last one pauses a real tiny
LGL run through `lgl-kit run`, sets its gate with `lgl-kit gate` and lets the next `lgl-kit run` finish it.
"""

import json
import os

import papermill
import pytest
import torch

from lgl_helpers import files
from lgl_helpers.app import cli, doctor, report
from lgl_helpers.app.planning import notebook_parameters
from lgl_helpers.core.models import ECAPATDNN, save_encoder
from lgl_helpers.training import stage2


def _lgl_state(runs_dir, status="paused_before_gate", phase="L", iteration=1, max_iterations=2):
    stage_dir = runs_dir / "r" / "stage2_lgl"
    state = {
        "format": stage2.STATE_FORMAT,
        "mode": "lgl",
        "status": status,
        "iteration": iteration,
        "phase": phase,
        "gate": None,
        "params": {"max_iterations": max_iterations},
    }
    files.write_json(stage_dir / "state.json", state)
    return stage_dir


def _gate(runs_dir, *args):
    return cli.main(["gate", "--run-name", "r", "--runs-dir", str(runs_dir), *args])


def test_gate_is_written_for_the_paused_iteration(tmp_path, capsys):
    stage_dir = _lgl_state(tmp_path)
    assert _gate(tmp_path, "--iteration", "1", "--value", "5") == 0
    assert json.loads((stage_dir / "gate_overrides.json").read_text()) == {"1": 5.0}
    out = capsys.readouterr().out
    assert "gate 5.000 set for phase L of iteration 1" in out and "rerun `lgl-kit run`" in out
    assert _gate(tmp_path, "--iteration", "1", "--value", "4.5") == 0
    assert "(replaces 5.000)" in capsys.readouterr().out
    assert stage2.read_gate_overrides(stage_dir) == {1: 4.5}


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["--iteration", "1", "--value", "5"], "--run-name 'r': no run folder"),
        ("run folder only", ["--iteration", "1", "--value", "5"], "run 'r' has no LGL stage: "),
        ("paused", ["--iteration", "2", "--value", "5"], "--iteration 2: run 'r' waits for the gate of iteration 1"),
        ("in phase T", ["--iteration", "2", "--value", "5"], "takes the next gate in iteration 1"),
        ("done", ["--iteration", "1", "--value", "5"], "has no phase L left to take a gate"),
        ("paused", ["--iteration", "1", "--value", "0"], "--value 0: a gate is a positive, finite"),
        ("paused", ["--iteration", "1", "--value", "-2"], "--value -2: a gate is a positive"),
        ("paused", ["--iteration", "1", "--value", "nan"], "--value nan: "),
        ("paused", ["--iteration", "1", "--value", "inf"], "--value inf: "),
    ],
)
def test_gate_refuses_with_one_line(tmp_path, capsys, setup, args, message):
    if setup == "run folder only":
        (tmp_path / "r").mkdir()
    elif setup == "paused":
        _lgl_state(tmp_path)
    elif setup == "in phase T":
        _lgl_state(tmp_path, status="running", phase="T")
    elif setup == "done":
        _lgl_state(tmp_path, status="done", phase="done")
    assert _gate(tmp_path, *args) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("lgl-kit gate: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "stage2_lgl" / "gate_overrides.json").exists()


def test_report_says_the_run_waits_for_a_gate_and_then_that_it_is_set(tmp_path, capsys):
    _lgl_state(tmp_path)
    files.write_json(tmp_path / "r" / "pipeline.json", {"notebooks": {"03_stage2_baseline": {"status": "interrupted"}}})
    assert cli.main(["report", "--run-name", "r", "--runs-dir", str(tmp_path)]) == 1  # no report.json yet
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("LGL is waiting for the gate of phase L of iteration 1: set it with ")
    assert f"`lgl-kit gate --run-name r --runs-dir {tmp_path} --iteration 1 --value G`" in out[0]
    assert out[1] == "notebook 03_stage2_baseline interrupted: rerun `lgl-kit run` with the same options"

    _gate(tmp_path, "--iteration", "1", "--value", "5")
    lines = report.run_status_lines(tmp_path / "r", str(tmp_path))
    assert lines[0].startswith("LGL is paused before phase L of iteration 1, its gate 5.000 set in ")
    _lgl_state(tmp_path, status="running")  # resumed: nothing waits any more
    assert report.run_status_lines(tmp_path / "r", str(tmp_path)) == [lines[1]]


class _NoChecks:
    def __init__(self, plan, echo=print):
        pass

    def before(self, name):
        pass


@pytest.mark.slow
def test_a_paused_pipeline_run_resumes_with_the_gate_set_by_lgl_kit_gate(tiny_corpus, tmp_path, monkeypatch, capsys):
    """Notebook 04's training call (``stage2.run_stage2``) stands in for the notebook; everything else is real."""

    def execute(source, output, parameters, **kwargs):
        assert os.path.basename(source) == "04_stage2_lgl.ipynb"
        stage2.run_stage2(stage2.LGLConfig.from_parameters({**notebook_parameters(source), **parameters}))

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(doctor, "Preflight", _NoChecks)
    torch.manual_seed(0)
    save_encoder(tmp_path / "stage1.model", ECAPATDNN(16).eval())
    settings = {
        "init_model": tmp_path / "stage1.model",
        "train_list": tiny_corpus / "lists" / "train_list.txt",
        "train_root": tiny_corpus / "train",
        "test_root": tiny_corpus / "test",
        "trials": tiny_corpus / "lists" / "trials.txt",
        "n_clusters": 8,
        "cluster_n_iter": 5,
        "frames": 40,
        "batch_size": 16,
        "max_epochs_per_phase": 2,
        "pause_before_gate": "true",
    }
    run = ["run", "--profile", "ci", "--run-name", "r", "--runs-dir", str(tmp_path), "--only", "04"]
    for name, value in settings.items():
        run += ["--set", f"{name}={value}"]

    assert cli.main(run) == 0
    out = capsys.readouterr().out
    assert "waiting for a gate" in out and "finished" not in out
    assert "run 'r' is paused: 04_stage2_lgl waits for the gate of iteration 1" in out
    pipeline_state = files.read_json(tmp_path / "r" / "pipeline.json")
    assert pipeline_state["notebooks"]["04_stage2_lgl"]["status"] == "waiting_for_gate"

    assert _gate(tmp_path, "--iteration", "1", "--value", "7.5") == 0
    assert cli.main(run) == 0
    assert "run 'r' finished: " in capsys.readouterr().out
    state = stage2.read_state(tmp_path / "r" / "stage2_lgl")
    assert state["status"] == "done" and state["iterations"][0]["gate_source"] == "override"
    assert {record["gate"] for record in state["history"] if record["phase"] == "L"} == {7.5}
    assert files.read_json(tmp_path / "r" / "pipeline.json")["notebooks"]["04_stage2_lgl"]["status"] == "done"
