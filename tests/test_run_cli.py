"""`lgl-kit run` and `lists check` as a careful user meets them: parameters, failures, interruptions.

Notebook execution is replaced by a fake ``papermill.execute_notebook`` except in one test, which
runs notebook 00 for real (a failing cell, seconds) to see what reaches stderr.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import papermill
import papermill.exceptions
import pytest
import zmq

from lgl_helpers import runs
from lgl_helpers.app import cli, kernel_config, pipeline, planning
from lgl_helpers.files import read_json

INTERRUPTED_LINE = "lgl-kit run: interrupted — rerun the same command to resume\n"


def _run_args(runs_dir, *extra: str) -> list[str]:
    """`lgl-kit run` of notebook 00 on the ci profile, its toy corpus inside ``runs_dir``."""
    return [
        "run",
        "--profile",
        "ci",
        "--run-name",
        "r",
        "--runs-dir",
        str(runs_dir),
        "--only",
        "00",
        "--set",
        f"00_data_setup.toy_root={runs_dir / 'toy'}",
        *extra,
    ]


@pytest.fixture
def executed(monkeypatch):
    """Replaces notebook execution; ``executed.calls`` lists the notebooks run, ``executed.effect`` acts for each."""
    record = SimpleNamespace(calls=[], effect=lambda: None)

    def fake(source, output, **kwargs):
        record.calls.append(os.path.basename(source))
        record.effect()

    monkeypatch.setattr(papermill, "execute_notebook", fake)
    return record


# --- parameters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, option",
    [
        ("runs_dir", "--runs-dir"),
        ("run_name", "--run-name"),
        ("01_stage1_contrastive.runs_dir", "--runs-dir"),
        ("interactive", "interactive=False"),
    ],
)
def test_pipeline_parameters_are_refused_in_set(key, option):
    with pytest.raises(planning.PipelineError) as error:
        planning.plan_run("ci", "x", planning.parse_overrides([f"{key}=/elsewhere"]))
    message = str(error.value)
    assert message.startswith(f"--set {key!r}: ") and "set by the pipeline" in message and option in message
    assert "\n" not in message


def test_pipeline_parameters_are_refused_in_a_profile(tmp_path):
    profile = tmp_path / "mine.yaml"
    profile.write_text("common:\n  runs_dir: /elsewhere\n")
    with pytest.raises(planning.PipelineError, match=rf"{profile} common: 'runs_dir': .*--runs-dir"):
        planning.plan_run(str(profile), "x")
    profile.write_text("05_compare:\n  run_name: other\n")
    with pytest.raises(planning.PipelineError, match=rf"{profile} '05_compare.run_name': .*--run-name"):
        planning.plan_run(str(profile), "x")


def test_cli_refuses_set_runs_dir_before_writing_anything(tmp_path, capsys, executed):
    assert cli.main(_run_args(tmp_path / "runs", "--set", f"runs_dir={tmp_path / 'elsewhere'}")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--runs-dir" in err
    assert executed.calls == [] and not (tmp_path / "runs").exists() and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    "text, value",
    [
        ("1e-3", 0.001),
        ("1E-3", 0.001),
        (".5", 0.5),
        ("-2.5e+2", -250.0),
        ("010", 10),
        ("-007", -7),
        ("100_000", 100000),
        ("0x1f", 31),
        ("true", True),
        ("False", False),
        ("null", None),
        ("None", None),
        ("[1, 2]", [1, 2]),
        ("[1e-3, 2]", [0.001, 2]),
        ("auto", "auto"),
        ("'010'", "010"),
        ('"a b"', "a b"),
        ("yes", "yes"),
        ("1:30", "1:30"),
        ("2024-01-01", "2024-01-01"),
        ("", ""),
    ],
)
def test_set_values_are_read_as_a_user_writes_them(text, value):
    parsed = planning.parse_overrides([f"x={text}"])["x"]
    assert parsed == value and type(parsed) is type(value)


def test_set_values_reach_the_notebooks_with_their_types():
    plan = planning.plan_run("ci", "x", planning.parse_overrides(["lr=1e-3", "epochs=010", "gates=[1e-3, 2]"]))
    stage1 = {step.name: step.parameters for step in plan}["01_stage1_contrastive"]
    lgl = {step.name: step.parameters for step in plan}["04_stage2_lgl"]
    assert stage1["lr"] == 0.001 and isinstance(stage1["lr"], float) and stage1["epochs"] == 10
    assert lgl["gates"] == [0.001, 2]


@pytest.mark.parametrize(
    "item, expected",
    [
        ("gates=[1, 2", r"--set gates: '\[1, 2' is not a valid value \(.*expected ',' or '\]'"),
        ("01_stage1_contrastive.lr={a: 1", r"--set 01_stage1_contrastive.lr: '\{a: 1' is not a valid value"),
        ("augment=yes", r"parameter 'augment' of 01_stage1_contrastive must be bool .*got 'yes'"),
    ],
)
def test_malformed_set_values_are_one_line_errors_naming_the_parameter(item, expected):
    with pytest.raises(planning.PipelineError, match=expected) as error:
        planning.plan_run("ci", "x", planning.parse_overrides([item]))
    assert "\n" not in str(error.value)


def test_profile_scalars_follow_the_same_rules(tmp_path):
    profile = tmp_path / "mine.yaml"
    profile.write_text("01_stage1_contrastive:\n  lr: 1e-3\n  epochs: 010\n")
    stage1 = {s.name: s.parameters for s in planning.plan_run(str(profile), "x")}["01_stage1_contrastive"]
    assert stage1["lr"] == 0.001 and isinstance(stage1["lr"], float) and stage1["epochs"] == 10
    profile.write_text("common:\n  seed: 1\n04_stage2_lgl:\n  gates: [1, 2\n")
    with pytest.raises(planning.PipelineError, match=rf"^{profile}:4: not valid YAML \(") as error:
        planning.plan_run(str(profile), "x")
    assert "\n" not in str(error.value)


def test_notebooks_03_and_04_have_no_mode_switch():
    # Each Stage II notebook does one job into its own folder: 03 the baseline, 04 LGL; no parameter switches them.
    with pytest.raises(planning.PipelineError, match=r"--set 'mode': no notebook has this parameter"):
        planning.plan_run("ci", "x", {"mode": "lgl"})
    with pytest.raises(
        planning.PipelineError, match=r"'03_stage2_baseline\.mode': 03_stage2_baseline has no parameter 'mode'"
    ):
        planning.plan_run("ci", "x", {"03_stage2_baseline.mode": "lgl"})
    with pytest.raises(
        planning.PipelineError, match=r"'03_stage2_baseline\.gates': 03_stage2_baseline has no parameter 'gates'"
    ):
        planning.plan_run("ci", "x", {"03_stage2_baseline.gates": [3]})


def test_unwritable_runs_folder_fails_before_any_notebook(tmp_path, capsys, executed):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    runs_dir = blocker / "runs"
    with pytest.raises(
        planning.PipelineError,
        match=rf"run folder {runs_dir / 'r'} cannot be written: {blocker} is not a folder.*--runs-dir",
    ):
        pipeline.run_pipeline(
            "ci",
            "r",
            {"00_data_setup.toy_root": str(tmp_path / "toy")},
            runs_dir=str(runs_dir),
            only="00",
            echo=lambda _: None,
        )
    assert cli.main(_run_args(runs_dir)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(runs_dir) in err and "Traceback" not in err
    assert executed.calls == []


def test_cli_turns_system_and_unexpected_errors_into_one_line(tmp_path, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "/mnt/runs/r/pipeline.json")

    monkeypatch.setattr(pipeline, "run_pipeline", read_only)
    assert cli.main(_run_args(tmp_path)) == 1
    assert capsys.readouterr().err == "lgl-kit run: error: Read-only file system: /mnt/runs/r/pipeline.json\n"
    assert cli.main(["-v", *_run_args(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.endswith(
        "Read-only file system: /mnt/runs/r/pipeline.json\n"
    )

    def bug(*args, **kwargs):
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr(pipeline, "run_pipeline", bug)
    assert cli.main(_run_args(tmp_path)) == 1
    assert capsys.readouterr().err == (
        "lgl-kit run: error: RuntimeError: something unforeseen (lgl-kit -v ... prints the traceback)\n"
    )


def test_cell_error_message_carries_no_ansi_codes(tmp_path, executed):
    def failing_cell():
        raise papermill.exceptions.PapermillExecutionError(
            3,
            5,
            "paths = setup()",
            "FileNotFoundError",
            "\x1b[31mtrain_root='/nope'\x1b[39m does not exist",
            ["\x1b[36mCell\x1b[39m \x1b[32mIn[5], line 1\x1b[39m\n", "\x1b[1;31mFileNotFoundError\x1b[0m: nope\n"],
        )

    executed.effect = failing_cell
    with pytest.raises(planning.PipelineError) as error:
        pipeline.run_pipeline(
            "ci",
            "r",
            {"00_data_setup.toy_root": str(tmp_path / "toy")},
            runs_dir=str(tmp_path),
            only="00",
            echo=lambda _: None,
        )
    message = str(error.value)
    assert (
        "\x1b" not in message and "cell 5 failed with FileNotFoundError: train_root='/nope' does not exist" in message
    )
    assert "Cell In[5], line 1" in message
    record = read_json(tmp_path / "r" / "pipeline.json")["notebooks"]["00_data_setup"]
    assert record["status"] == "failed" and "\x1b" not in record["error"]


def _record(message: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("IPKernelApp", logging.WARNING, __file__, 1, message, None, exc_info)


def test_kernel_noise_filter_drops_only_its_two_records(monkeypatch):
    noise = kernel_config.KernelNoiseFilter()
    tcp = _record(kernel_config.TCP_WARNING + " All communication ... is sent in plain text")
    try:
        raise zmq.ZMQError(errno.ENOTSOCK)
    except zmq.ZMQError:
        closed = _record(kernel_config.HANDLER_ERROR, sys.exc_info())
    assert noise.filter(tcp) and noise.filter(closed)  # outside a kernel nothing is dropped

    kernel = SimpleNamespace(_shutdown_message=None)
    app = SimpleNamespace(ip="127.0.0.1", kernel=kernel)
    monkeypatch.setattr(kernel_config, "_kernel_app", lambda: app)
    assert not noise.filter(tcp)
    assert noise.filter(closed), "a handler error of a kernel that was not asked to shut down is kept"
    kernel._shutdown_message = {"msg_type": "shutdown_reply"}
    assert not noise.filter(closed)
    assert noise.filter(_record(kernel_config.HANDLER_ERROR, (ValueError, ValueError("bug"), None)))
    assert noise.filter(_record("Parent appears to have exited, shutting down."))
    app.ip = "10.1.2.3"
    assert noise.filter(tcp), "a kernel reachable from other machines still warns"


# --- interruptions -----------------------------------------------------------------------------------


def test_ctrl_c_marks_the_notebook_interrupted_and_a_rerun_resumes_it(tmp_path, capsys, executed):
    runs_dir = tmp_path / "runs"

    def ctrl_c():
        raise KeyboardInterrupt

    executed.effect = ctrl_c
    assert cli.main(_run_args(runs_dir)) == pipeline.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == INTERRUPTED_LINE
    record = read_json(runs_dir / "r" / "pipeline.json")["notebooks"]["00_data_setup"]
    assert record["status"] == "interrupted"

    executed.effect = lambda: None
    assert cli.main(_run_args(runs_dir)) == 0
    assert executed.calls == ["00_data_setup.ipynb"] * 2, "the interrupted notebook runs again"
    assert read_json(runs_dir / "r" / "pipeline.json")["notebooks"]["00_data_setup"]["status"] == "done"
    assert cli.main(_run_args(runs_dir)) == 0 and len(executed.calls) == 2, "a finished one is skipped"


def test_sigterm_takes_the_same_path_as_ctrl_c(tmp_path, executed):
    previous = signal.getsignal(signal.SIGTERM)

    def terminated():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler interrupts this
        pytest.fail("SIGTERM did not interrupt the notebook")

    executed.effect = terminated
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(
            "ci",
            "r",
            {"00_data_setup.toy_root": str(tmp_path / "toy")},
            runs_dir=str(tmp_path),
            only="00",
            echo=lambda _: None,
        )
    assert read_json(tmp_path / "r" / "pipeline.json")["notebooks"]["00_data_setup"]["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is previous


# --- temp files of killed writes ---------------------------------------------------------------------


def _killed_write(path) -> None:
    """An atomic write whose process dies (like kill -9) after writing part of the data."""
    code = (
        "import os, sys; from lgl_helpers import files; "
        "files._atomic_write(sys.argv[1], lambda h: (h.write(b'partial'), h.flush(), os._exit(9)), 'wb')"
    )
    assert subprocess.run([sys.executable, "-c", code, str(path)]).returncode == 9


def test_stage_start_removes_temp_files_of_killed_writes_only(tmp_path):
    stage = tmp_path / "stage1"
    _killed_write(stage / "checkpoints" / "last.model")
    left = [p.name for p in (stage / "checkpoints").iterdir()]
    assert len(left) == 1 and left[0].startswith(".last.model.") and left[0].endswith(".tmp")
    kept = [
        stage / "notes.tmp",
        stage / ".hidden.tmp",
        stage / ".last.model.tmp",
        stage / ".a.model.ABCDEFGH.tmp",
        stage / "checkpoints" / "last.model",
        stage / ".cache.k3j9x0qa.tmp" / "inside",
    ]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not the kit's temp file")
    runs.open_run(stage, {"seed": 0}, "stage1")
    assert not [p for p in (stage / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert all(path.is_file() for path in kept)
    assert (stage / "stage1_params.json").is_file()


def test_pipeline_start_removes_temp_files_in_the_run_folder(tmp_path, executed):
    stale = tmp_path / "r" / ".pipeline.json.abc_1234.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("{")
    pipeline.run_pipeline(
        "ci",
        "r",
        {"00_data_setup.toy_root": str(tmp_path / "toy")},
        runs_dir=str(tmp_path),
        only="00",
        echo=lambda _: None,
    )
    assert not stale.exists() and read_json(tmp_path / "r" / "pipeline.json")["notebooks"]["00_data_setup"]
