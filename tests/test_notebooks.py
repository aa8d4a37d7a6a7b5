"""The notebook ↔ package contract: parameters cells, config dataclasses, profiles, no committed outputs."""

import dataclasses
import json
import subprocess

import pytest

from lgl_helpers.app import notebook_defaults, planning
from lgl_helpers.app.data_checks import CONFIGS
from lgl_helpers.runs import project_root


def _config_fields(notebook):
    module_name, class_name = CONFIGS[notebook]
    module = __import__(module_name, fromlist=[class_name])
    return {f.name: f for f in dataclasses.fields(getattr(module, class_name))}


@pytest.mark.parametrize("notebook", planning.NOTEBOOKS)
def test_parameters_cell_matches_config_dataclass(notebook):
    parameters = planning.notebook_parameters(planning.notebook_path(notebook))
    fields = _config_fields(notebook)
    assert set(parameters) == set(fields), (
        f"{notebook}: only in notebook {sorted(set(parameters) - set(fields))}, "
        f"only in dataclass {sorted(set(fields) - set(parameters))}"
    )
    for name in planning.PIPELINE_PARAMETERS:
        assert name in parameters


@pytest.mark.parametrize("notebook", planning.NOTEBOOKS)
def test_notebooks_have_no_outputs(notebook):
    cells = json.loads(planning.notebook_path(notebook).read_text())["cells"]
    with_outputs = [
        i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not with_outputs, f"{notebook} has outputs in cells {with_outputs}; strip them before committing"


def test_every_tracked_notebook_is_in_the_pipeline():
    tracked = subprocess.run(
        ["git", "ls-files", "*.ipynb"], cwd=project_root(), capture_output=True, text=True
    ).stdout.split()
    names = {p.split("/")[-1].removesuffix(".ipynb") for p in tracked}
    assert names <= set(planning.NOTEBOOKS)


@pytest.mark.parametrize("profile", ["ci", "demo", "demo-long", "full"])
def test_profiles_validate_against_parameters_cells(profile):
    plan = planning.plan_run(profile, "profile-check")
    assert [step.name for step in plan] == list(planning.NOTEBOOKS)
    for step in plan:
        assert step.parameters["run_name"] == "profile-check"
        assert step.parameters["interactive"] is False


def test_full_profile_trains_the_methods_encoder():
    # A parameter a profile leaves out takes the notebook's default, which is the demo profile's (a
    # narrow CPU encoder): the full recipe must name the method's widths itself.
    stage1 = {step.name: step.parameters for step in planning.plan_run("full", "x")}["01_stage1_contrastive"]
    assert (stage1["channels"], stage1["mfa_channels"]) == (512, 1536)
    assert (stage1["frames"], stage1["batch_size"], stage1["epochs"]) == (180, 300, 80)


def test_unknown_set_name_lists_valid_names():
    with pytest.raises(
        planning.PipelineError, match=r"no notebook has this parameter; did you mean 'epochs'\? valid names: \[.*'seed'"
    ):
        planning.plan_run("ci", "x", {"epochz": 3})


def test_mistyped_set_value_names_parameter():
    with pytest.raises(planning.PipelineError, match="parameter 'seed' of 00_data_setup must be int"):
        planning.plan_run("ci", "x", planning.parse_overrides(["seed=abc"]))


def test_set_targets_one_notebook_and_int_is_accepted_for_float():
    plan = planning.plan_run("ci", "x", planning.parse_overrides(["01_stage1_contrastive.lr=1", "seed=7"]))
    by_name = {step.name: step.parameters for step in plan}
    assert by_name["01_stage1_contrastive"]["lr"] == 1.0 and isinstance(by_name["01_stage1_contrastive"]["lr"], float)
    assert all(params.get("seed", 7) == 7 for params in by_name.values())


def test_unknown_profile_lists_available():
    with pytest.raises(planning.PipelineError, match=r"available profiles: \[.*'ci'"):
        planning.plan_run("nope", "x")


def test_select_notebooks_by_prefix():
    assert planning.select_notebooks(start="02") == planning.NOTEBOOKS[2:]
    assert planning.select_notebooks(only="05_compare") == ("05_compare",)
    with pytest.raises(planning.PipelineError, match="unknown notebook"):
        planning.select_notebooks(only="09")


def test_notebook_defaults_are_the_demo_profile():
    differences = notebook_defaults.profile_differences()
    assert not differences, (
        "notebook defaults differ from notebooks/params/demo.yaml (stepping through the notebooks must train "
        "what `make demo` trains, in a run of its own); `python -m lgl_helpers.app.notebook_defaults` rewrites them:\n"
        + "\n".join(f"  {nb}: {name} = {old!r}, demo profile: {new!r}" for nb, name, old, new in differences)
    )


def test_rewriting_a_default_keeps_the_line_and_its_comment_column():
    source = 'run_name = "demo"      # folder\ngates = [1, 3]         # per iteration\nseed = 0\n'
    rewritten = notebook_defaults._replace_default(source, "gates", ["auto"])
    rewritten = notebook_defaults._replace_default(rewritten, "seed", 7)
    assert rewritten == 'run_name = "demo"      # folder\ngates = ["auto"]       # per iteration\nseed = 7\n'
    longer = notebook_defaults._replace_default(source, "run_name", "a-much-longer-name")
    assert longer.splitlines()[0] == 'run_name = "a-much-longer-name" # folder'


@pytest.mark.parametrize("notebook", planning.NOTEBOOKS)
def test_notebooks_use_the_kit_kernel_that_setup_registers(notebook):
    kernelspec = json.loads(planning.notebook_path(notebook).read_text())["metadata"]["kernelspec"]
    assert kernelspec["name"] == "lgl-kit", f"{notebook} uses kernel {kernelspec['name']!r}, not the kit's lgl-kit"
    assert "--name lgl-kit" in (project_root() / "scripts" / "setup.sh").read_text()
