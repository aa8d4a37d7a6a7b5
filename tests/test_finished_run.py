"""A finished run as a researcher uses it: every notebook opened on it shows its results and writes
nothing (the run's files hash the same before and after); a copy of the run in another runs folder
opens, resumes and reports the same; a run that does not exist is named in one line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from lgl_helpers import runs
from lgl_helpers.app import pipeline, planning
from lgl_helpers.files import read_json
from lgl_helpers.runs import project_root

pytestmark = [
    pytest.mark.slow,
    # papermill's parameterize validates its injected cell before it has an id
    pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning"),
]
# report.json fields that name where and when the report was made, not what it reports.
WHERE_AND_WHEN = {"run_dir", "environment", "timings", "wall_seconds", "call_seconds"}


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _execute(notebook: str, output: Path, **parameters) -> dict:
    """Execute ``notebook`` with papermill as a researcher would run it, only the given parameters set;
    returns the executed notebook's JSON."""
    import papermill

    papermill.execute_notebook(
        str(planning.notebook_path(notebook)),
        str(output),
        parameters={"interactive": False, **parameters},
        kernel_name=pipeline.kernel_name(),
        cwd=str(project_root()),
        progress_bar=False,
    )
    return json.loads(output.read_text())


def _outputs(executed: dict) -> list[dict]:
    return [out for cell in executed["cells"] if cell["cell_type"] == "code" for out in cell.get("outputs", [])]


def _text(executed: dict) -> str:
    parts = []
    for out in _outputs(executed):
        parts.append(out.get("text", "") if isinstance(out.get("text"), str) else "".join(out.get("text", [])))
        parts.append("".join(out.get("data", {}).get("text/plain", "")))
        parts.append("".join(out.get("data", {}).get("text/markdown", "")))
    return "\n".join(parts)


def _without(value, keys):
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


@pytest.fixture(scope="module")
def viewed(ci_run, tmp_path_factory):
    """Every notebook executed on the finished ci run with only its run_name and runs_dir set: the
    run's file hashes before and after, and the executed notebooks by name."""
    run_dir = ci_run[0]
    before = file_hashes(run_dir)
    out = tmp_path_factory.mktemp("viewed")
    executed = {
        name: _execute(name, out / f"{name}.ipynb", run_name=run_dir.name, runs_dir=str(run_dir.parent))
        for name in planning.NOTEBOOKS
    }
    return before, file_hashes(run_dir), executed


@pytest.mark.slow
def test_opening_each_notebook_on_a_finished_run_leaves_it_byte_identical(viewed):
    before, after, executed = viewed
    assert after == before, {
        "changed": sorted(k for k in before if k in after and before[k] != after[k]),
        "new": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
    }
    for name, notebook in executed.items():
        assert "viewing: " in _text(notebook), f"{name} does not say it is only viewing the finished run"


def test_every_figure_of_a_viewed_run_is_shown_as_an_image(viewed):
    _, _, executed = viewed
    # The figures each notebook draws from a finished run (ci profile: one spectrogram, no widgets).
    expected = {
        "00_data_setup": 2,
        "01_stage1_contrastive": 2,
        "02_clustering_umap": 3,
        "03_stage2_baseline": 3,
        "04_stage2_lgl": 6,
        "05_compare": 4,
    }
    for name, notebook in executed.items():
        images = [out for out in _outputs(notebook) if "image/png" in out.get("data", {})]
        bare = [
            out for out in _outputs(notebook) if "<Figure size" in "".join(out.get("data", {}).get("text/plain", ""))
        ]
        assert all("image/png" in out["data"] for out in bare), f"{name} printed a Figure's repr instead of showing it"
        assert len(images) >= expected[name], f"{name}: {len(images)} images, expected {expected[name]}"
        # retina: a PNG at twice the size it is shown at, so it is sharp on HiDPI screens
        assert all(out.get("metadata", {}).get("image/png", {}).get("width") for out in images), name


def test_viewed_report_shows_the_reports_numbers(viewed, ci_run):
    _, _, executed = viewed
    report = read_json(ci_run[0] / "report.json")
    text = _text(executed["05_compare"])
    for system in ("stage1", "baseline", "lgl"):
        assert f"{report[system]['eer']:.2f}" in text, f"the report's {system} EER is not shown"


@pytest.mark.slow
def test_a_copied_run_opens_resumes_and_reports_the_same(ci_run, tmp_path):
    run_dir, overrides, _, _ = ci_run
    copy = tmp_path / "elsewhere" / run_dir.name
    shutil.copytree(run_dir, copy, symlinks=True)
    # What the kit reads back names no path in the folder the run was made in (the log-like records of
    # where a clustering's model or reused files came from may).
    read_back = [copy / "data.json", copy / "data_summary.json", *copy.glob("*/metrics.json")]
    for path in read_back:
        assert str(run_dir) not in path.read_text(), f"{path.relative_to(copy)} names the original run folder"
    for path in copy.glob("stage2_*/state.json"):
        assert str(run_dir) not in json.dumps(read_json(path)["params"]), f"{path.relative_to(copy)}: params"
    # Opens: every notebook shows the copy without writing into it.
    before = file_hashes(copy)
    for name in planning.NOTEBOOKS:
        _execute(name, tmp_path / f"{name}.ipynb", run_name=copy.name, runs_dir=str(copy.parent))
    assert file_hashes(copy) == before
    # Resumes: the pipeline finds every notebook finished with the same parameters, and Stage I and
    # Stage II LGL computed again pass their resume checks and give the same test EER.
    messages = []
    pipeline.run_pipeline("ci", copy.name, overrides, runs_dir=str(copy.parent), echo=messages.append)
    assert sum("skipped" in m for m in messages) == len(planning.NOTEBOOKS), messages
    for notebook, stage in (("01", "stage1"), ("04", "stage2_lgl")):
        pipeline.run_pipeline(
            "ci", copy.name, overrides, runs_dir=str(copy.parent), only=notebook, force=True, echo=lambda _: None
        )
        assert read_json(copy / stage / "metrics.json")["eer"] == read_json(run_dir / stage / "metrics.json")["eer"]
    # Reports the same: the copy's report, collected again, equals the original's.
    pipeline.run_pipeline(
        "ci", copy.name, overrides, runs_dir=str(copy.parent), only="05", force=True, echo=lambda _: None
    )
    original, copied = read_json(run_dir / "report.json"), read_json(copy / "report.json")
    assert _without(copied, WHERE_AND_WHEN) == _without(original, WHERE_AND_WHEN)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", ["02_clustering_umap", "03_stage2_baseline", "05_compare"])
def test_a_missing_run_is_named_in_one_line(notebook, tmp_path):
    import papermill.exceptions

    (tmp_path / "runs" / "other").mkdir(parents=True)
    (tmp_path / "runs" / "other" / "data.json").write_text("{}")
    with pytest.raises(papermill.exceptions.PapermillExecutionError) as error:
        _execute(notebook, tmp_path / "out.ipynb", run_name="lab", runs_dir=str(tmp_path / "runs"))
    assert error.value.ename == "RunNotFoundError"
    assert "run_name='lab': no run folder" in error.value.evalue and "runs there: other" in error.value.evalue


def test_require_run_names_what_is_missing(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(runs.RunNotFoundError, match=r"a/stage1/best.model does not exist; run notebook 01"):
        runs.require_run("a", str(tmp_path), needs="stage1/best.model", made_by="notebook 01")
    assert runs.require_run("a", str(tmp_path), needs=".") == tmp_path / "a"


def test_paths_inside_a_run_are_stored_relative_to_it(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    assert runs.relative_to_run(run_dir / "lists" / "train_list.txt", run_dir) == "lists/train_list.txt"
    assert runs.relative_to_run(tmp_path / "corpus" / "train", run_dir) == str(tmp_path / "corpus" / "train")
    assert runs.relative_to_run("", run_dir) == ""
    assert (
        runs.path_in_run("lists/train_list.txt", tmp_path / "moved") == tmp_path / "moved" / "lists" / "train_list.txt"
    )
    assert runs.path_in_run(str(tmp_path / "corpus"), run_dir) == tmp_path / "corpus"
    assert runs.path_in_run("", run_dir) is None
    # A run recorded with absolute paths inside it (earlier kits) compares equal to the relative form.
    old = {"train_list": str(run_dir / "lists" / "train_list.txt"), "train_root": str(tmp_path / "corpus"), "seed": 0}
    assert runs.stored_paths(old, ("train_list", "train_root", "trials"), run_dir) == {
        "train_list": "lists/train_list.txt",
        "train_root": str(tmp_path / "corpus"),
        "seed": 0,
    }
