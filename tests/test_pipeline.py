"""The headless pipeline: all six notebooks on the `ci` profile, asserted on the report they produce."""

import json

import pytest

from lgl_helpers.app import pipeline, planning
from lgl_helpers.runs import read_json


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    overrides = {"00_data_setup.toy_root": str(runs_dir / "toy_small")}
    messages = []
    state = pipeline.run_pipeline("ci", "ci", overrides, runs_dir=str(runs_dir), echo=messages.append)
    return runs_dir / "ci", overrides, state, messages


@pytest.mark.slow
def test_ci_pipeline_report_shows_each_stage_improving(ci_run):
    run_dir, _, state, _ = ci_run
    assert all(record["status"] == "done" for record in state["notebooks"].values())
    assert sorted(state["notebooks"]) == sorted(planning.NOTEBOOKS)
    report = read_json(run_dir / "report.json")
    stage1, baseline, lgl = report["stage1"], report["baseline"], report["lgl"]
    assert 0.0 <= stage1["eer"] < stage1["untrained_eer"], "Stage I must beat the untrained encoder"
    assert baseline["eer"] < stage1["untrained_eer"] and lgl["eer"] < stage1["untrained_eer"]
    assert min(baseline["eer"], lgl["eer"]) < stage1["eer"], "Stage II must improve on Stage I"
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


def test_failing_notebook_stops_with_cell_error_and_saved_notebook(tmp_path):
    overrides = {"00_data_setup.train_root": str(tmp_path / "missing"), "00_data_setup.make_toy": False}
    with pytest.raises(planning.PipelineError) as error:
        pipeline.run_pipeline("ci", "broken", overrides, runs_dir=str(tmp_path), only="00", echo=lambda _: None)
    message = str(error.value)
    assert "[00_data_setup] failed" in message and "missing" in message
    saved = tmp_path / "broken" / "notebooks" / "00_data_setup.ipynb"
    assert saved.is_file() and str(saved) in message
    assert read_json(tmp_path / "broken" / "pipeline.json")["notebooks"]["00_data_setup"]["status"] == "failed"


def test_unknown_set_name_fails_before_any_notebook_runs(tmp_path):
    with pytest.raises(planning.PipelineError, match="no notebook has this parameter"):
        pipeline.run_pipeline("ci", "typo", {"chanels": 64}, runs_dir=str(tmp_path), echo=lambda _: None)
    assert not (tmp_path / "typo").exists()
