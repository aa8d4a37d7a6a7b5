"""Where a run's time goes: part times that add up over resumes, notebook sections from papermill's cell durations."""

import json

import pytest

from lgl_helpers import timings


def _cell(kind, source, duration=None):
    cell = {"cell_type": kind, "source": source, "metadata": {}}
    if duration is not None:
        cell["metadata"]["papermill"] = {"duration": duration}
    return cell


def _notebook(path, cells):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": cells, "metadata": {}}))
    return path


def test_part_times_add_up_and_continue_from_saved_seconds():
    times = timings.PartTimes({"training": 2.0})
    times.add("training", 1.5)
    times.add("validation", 0.25)
    with pytest.raises(RuntimeError), times.part("checkpoints"):
        raise RuntimeError("a failing part is still timed")
    assert times.seconds["training"] == 3.5 and times.seconds["validation"] == 0.25
    assert times.seconds["checkpoints"] >= 0.0


def test_notebook_sections_sum_cells_under_their_heading(tmp_path):
    path = _notebook(
        tmp_path / "nb.ipynb",
        [
            _cell("markdown", "# Title", 0.01),
            _cell("code", "import x", 2.0),
            _cell("code", ["cfg = 1\n", "run = 2"], 0.5),
            _cell("markdown", ["## 1. Train\n", "text"], 0.0),
            _cell("code", "train()", 10.0),
            _cell("code", "plot()", 1.0),
            _cell("markdown", "## 2. Save", 0.0),
            _cell("code", "save()", 0.25),
        ],
    )
    assert timings.notebook_sections(path) == {"setup": 2.51, "1. Train": 11.0, "2. Save": 0.25}
    assert timings.notebook_sections(tmp_path / "missing.ipynb") is None
    untimed = _notebook(tmp_path / "by_hand.ipynb", [_cell("code", "x = 1")])
    assert timings.notebook_sections(untimed) is None


def test_notebook_timings_and_their_line(tmp_path):
    _notebook(
        tmp_path / "notebooks" / "01_stage1_contrastive.ipynb",
        [_cell("code", "import x", 3.0), _cell("markdown", "## 2. Train", 0.0), _cell("code", "t()", 90.0)],
    )
    _notebook(
        tmp_path / "notebooks" / "02_clustering_umap.ipynb",
        [_cell("markdown", "## 7. UMAP of a sample: labels (left)", 0.0), _cell("code", "umap()", 14.0)],
    )
    pipeline = {
        "notebooks": {
            "00_data_setup": {"status": "done", "wall_seconds": 12.0},
            "01_stage1_contrastive": {"status": "done", "wall_seconds": 100.0},
            "02_clustering_umap": {"status": "done", "wall_seconds": 20.0},
        }
    }
    parts = {"01_stage1_contrastive": {"training": 70.0, "validation": 15.0, "final_evaluation": 5.0}}
    report = timings.notebook_timings(tmp_path, pipeline, parts)
    assert report["00_data_setup"] == {"seconds": 12.0, "kernel_start": None, "sections": None, "parts": None}
    stage1 = report["01_stage1_contrastive"]
    assert stage1["kernel_start"] == pytest.approx(7.0) and stage1["parts"] == parts["01_stage1_contrastive"]
    line = timings.summary_line(report)
    assert line == (
        "Time: 132 s of notebooks; 00 12 s; 01 100 s (training 70, validation 15, start 10); "
        "02 20 s (7. UMAP of a sample 14, start 6)"
    )
