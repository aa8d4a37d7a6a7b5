"""The headless pipeline: all six notebooks on the `ci` profile, asserted on the report they produce."""

import json
import os
import shutil

import pytest

from lgl_helpers.app import kernel_config, pipeline, planning
from lgl_helpers.files import read_json

# Learned-number thresholds, each well inside the worst of 3 training seeds (0-2) measured with
# `python benchmarks/ci_margins.py --seeds 0 1 2` (docs/install.md, "Tests"). The ci corpus has 200 trials, so one
# EER point is one trial: Stage II vs Stage I ranged from -5 to +9 points over those seeds and is not asserted.
STAGE1_GAIN_POINTS = 3.0  # Stage I EER below the untrained encoder's; measured 11-16 points
STAGE2_GAIN_POINTS = 3.0  # both Stage II systems below the untrained encoder; measured 7-18 points
NMI_GAIN = 0.03  # Stage I pseudo labels above an untrained encoder's NMI; measured 0.067-0.085
# Stage II training loss, first to last T-phase epoch; measured 3.43-3.93 (the head starts at the centroids)
T_LOSS_DROP = 2.0
# Fields of report.json that may differ between two runs with the same seed.
RUN_SPECIFIC = {"run_name", "run_dir", "wall_seconds", "timings", "figures"}


def _t_phase_losses(run_dir, mode):
    history = read_json(run_dir / f"stage2_{mode}" / "state.json")["history"]
    return [record["loss"] for record in history if record["phase"] == "T"]


def _without_run_specific(value):
    if isinstance(value, dict):
        return {k: _without_run_specific(v) for k, v in value.items() if k not in RUN_SPECIFIC}
    if isinstance(value, list):
        return [_without_run_specific(v) for v in value]
    return value


@pytest.mark.slow
def test_ci_pipeline_report_shows_each_stage_learning(ci_run):
    run_dir, _, state, _ = ci_run
    assert all(record["status"] == "done" for record in state["notebooks"].values())
    assert sorted(state["notebooks"]) == sorted(planning.NOTEBOOKS)
    report = read_json(run_dir / "report.json")
    stage1, baseline, lgl = report["stage1"], report["baseline"], report["lgl"]
    untrained = stage1["untrained_eer"]
    assert 0.0 <= stage1["eer"] < untrained - STAGE1_GAIN_POINTS, "Stage I must beat the untrained encoder"
    for system in (baseline, lgl):
        assert system["eer"] < untrained - STAGE2_GAIN_POINTS, "Stage II must beat the untrained encoder"
    for mode in ("baseline", "lgl"):
        losses = _t_phase_losses(run_dir, mode)
        assert losses[0] - losses[-1] > T_LOSS_DROP, f"{mode}: the T-phase training loss must fall: {losses}"
    stage1_clustering = next(c for c in report["clustering"] if c["mode"] == "stage1")
    assert stage1_clustering["nmi"] > stage1_clustering["untrained_nmi"] + NMI_GAIN
    iterations = [c for c in report["clustering"] if c["mode"] == "lgl"]
    assert [c["iteration"] for c in iterations] == [1]
    assert all(0.0 < c["nmi"] <= 1.0 for c in report["clustering"])
    assert [g["gate"] for g in report["gates"]] == [3.0]
    assert set(report["timings"]) >= set(planning.NOTEBOOKS[:-1])
    for name in ("eer_by_system", "nmi_per_iteration", "stage2_eer"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 1000
    markdown = (run_dir / "report.md").read_text()
    assert f"| Stage I (contrastive + AAT) | {stage1['eer']:.2f} |" in markdown
    for name in planning.NOTEBOOKS:
        executed = json.loads((run_dir / "notebooks" / f"{name}.ipynb").read_text())
        assert any(cell.get("outputs") for cell in executed["cells"] if cell["cell_type"] == "code")


@pytest.mark.slow
def test_rerun_skips_finished_notebooks_and_resumes_the_interrupted_one(ci_run):
    run_dir, overrides, _, _ = ci_run
    # Simulate an interruption during notebook 05: its record says "running".
    state_path = run_dir / "pipeline.json"
    state = read_json(state_path)
    state["notebooks"]["05_compare"]["status"] = "running"
    state_path.write_text(json.dumps(state))
    (run_dir / "report.json").unlink()
    messages = []
    state = pipeline.run_pipeline("ci", "ci", overrides, runs_dir=str(run_dir.parent), echo=messages.append)
    skipped = [m for m in messages if "skipped" in m]
    assert len(skipped) == 5 and all(name in " ".join(skipped) for name in planning.NOTEBOOKS[:-1])
    assert state["notebooks"]["05_compare"]["status"] == "done"
    assert (run_dir / "report.json").is_file()


@pytest.mark.slow
def test_changed_parameter_reruns_from_that_notebook(ci_run):
    run_dir, overrides, _, _ = ci_run
    messages = []
    pipeline.run_pipeline("ci", "ci", overrides, runs_dir=str(run_dir.parent), only="05", echo=messages.append)
    assert any("05_compare" in m and "skipped" in m for m in messages)
    plan = planning.plan_run("ci", "ci", {**overrides, "02_clustering_umap.n_impure": 3}, runs_dir=str(run_dir.parent))
    recorded = read_json(run_dir / "pipeline.json")["notebooks"]
    changed = [step.name for step in plan if recorded[step.name]["fingerprint"] != step.fingerprint]
    assert changed == ["02_clustering_umap"]


@pytest.mark.slow
def test_same_seed_twice_gives_the_same_report(ci_run):
    # From notebook 02 on, on the first run's lists and Stage I model (hard links): Stage I's own
    # determinism is pinned by its resume tests (tests/test_stage1.py, tests/test_step_checkpoints.py).
    run_dir, overrides, _, _ = ci_run
    again = run_dir.parent / "ci_again"
    again.mkdir()
    for name in ("lists", "stage1"):
        shutil.copytree(run_dir / name, again / name, copy_function=os.link)
    for name in ("data.json", "data_summary.json"):
        os.link(run_dir / name, again / name)
    pipeline.run_pipeline("ci", "ci_again", overrides, runs_dir=str(run_dir.parent), start="02", echo=lambda _: None)
    first = read_json(run_dir / "report.json")
    second = read_json(again / "report.json")
    assert _without_run_specific(second) == _without_run_specific(first)
    assert second["run_name"] == "ci_again"
    assert set(second["timings"]) == set(first["timings"]) - set(planning.NOTEBOOKS[:2])


@pytest.mark.slow
def test_failing_notebook_stops_with_cell_error_and_saved_notebook(tmp_path, capfd):
    overrides = {"00_data_setup.train_root": str(tmp_path / "missing"), "00_data_setup.make_toy": False}
    with pytest.raises(planning.PipelineError) as error:
        pipeline.run_pipeline("ci", "broken", overrides, runs_dir=str(tmp_path), only="00", echo=lambda _: None)
    message = str(error.value)
    assert "[00_data_setup] failed" in message and "missing" in message and "\x1b" not in message
    err = capfd.readouterr().err  # the kernel writes to the inherited stderr file descriptor
    # Only the kit's own filtered records are asserted on: a loaded machine may add unrelated kernel lines.
    assert kernel_config.TCP_WARNING not in err and kernel_config.HANDLER_ERROR not in err
    saved = tmp_path / "broken" / "notebooks" / "00_data_setup.ipynb"
    assert saved.is_file() and str(saved) in message
    assert read_json(tmp_path / "broken" / "pipeline.json")["notebooks"]["00_data_setup"]["status"] == "failed"


def test_unknown_set_name_fails_before_any_notebook_runs(tmp_path):
    with pytest.raises(planning.PipelineError, match="no notebook has this parameter"):
        pipeline.run_pipeline("ci", "typo", {"chanels": 64}, runs_dir=str(tmp_path), echo=lambda _: None)
    assert not (tmp_path / "typo").exists()
