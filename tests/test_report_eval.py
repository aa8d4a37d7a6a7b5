"""The report on several trial lists: systems × lists with intervals, raw vs normalised with paired
differences, DET curves (lgl_helpers/app/report_eval.py, report.md, the DET figure)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_report import _scores, _trials

from lgl_helpers.app import report, report_eval
from lgl_helpers.core.metrics import TEST_SCORES, compute_eer, write_trial_scores
from lgl_helpers.notebook import report_figures


def _stage(run_dir, folder, lists, separation):
    """A stage folder with test_scores.txt and metrics.json's ``eval``: per list raw scores and an
    AS-norm variant that separates the classes better (``separation`` + 2)."""
    stage_dir = run_dir / folder
    stage_dir.mkdir(parents=True)
    records = {}
    for k, (name, trials) in enumerate(lists.items()):
        labels = np.array([t.label for t in trials])
        files, metrics = {}, {}
        for variant, extra in (("raw", 0.0), ("mean", 0.0), ("asnorm", 2.0)):
            scores = _scores(trials, separation + extra, seed=10 * k + len(variant))
            path = write_trial_scores(stage_dir / "eval" / name / f"scores_{variant}.txt", trials, scores)
            files[variant], metrics[variant] = str(path), {"eer": compute_eer(scores, labels)}
        records[name] = {"trials": f"{name}.txt", "n_trials": len(trials), "scores": files, "metrics": metrics}
    first = next(iter(lists.values()))
    test = _scores(first, separation, 0)
    test_scores = write_trial_scores(stage_dir / TEST_SCORES, first, test)
    cohort = {"cohort": "train", "n_utterances": 50, "n_members": 50, "top_n": 10}
    evaluation = {"lists": records, "score_norm": cohort, "n_files_embedded": 10, "seconds": 1.0}
    test_eer = compute_eer(test, [t.label for t in first])
    metrics = {
        "eer": test_eer,
        "min_dcf": 0.5,
        "min_dcf_0.01": 0.6,
        "test_scores": str(test_scores),
        "eval": evaluation,
    }
    (stage_dir / "metrics.json").write_text(json.dumps(metrics | {"iterations": [], "evaluations": []}))


@pytest.fixture
def run_dir(tmp_path):
    run_dir = tmp_path / "run"
    lists = {"O": _trials(seed=0), "H": _trials(seed=1)}
    _stage(run_dir, "stage1", lists, 1.0)
    _stage(run_dir, "stage2_lgl", {"H": lists["H"][::-1], "O": lists["O"]}, 2.0)  # other order: matched
    return run_dir


def test_every_system_gets_each_list_with_intervals_and_normalised_differences(run_dir):
    evaluation = report_eval.collect_eval(run_dir, report.SYSTEMS, n_resamples=200)
    assert evaluation["lists"] == ["O", "H"] and not evaluation["notes"]
    for key in ("stage1", "lgl"):
        for name in ("O", "H"):
            variants = evaluation["results"][key][name]
            assert set(variants) == {"raw", "mean", "asnorm"}
            lo, hi = variants["raw"]["eer_ci"]
            assert lo <= variants["raw"]["eer"] <= hi
            # AS-norm separates better here: a negative paired difference whose interval excludes 0
            asnorm = variants["asnorm"]
            assert asnorm["eer_diff"] == pytest.approx(asnorm["eer"] - variants["raw"]["eer"])
            assert asnorm["eer_diff_ci"][1] < 0
    det = evaluation["det"]["H"]["lgl"]["raw"]
    assert len(det["fpr"]) == len(det["fnr"]) and 2 < len(det["fpr"]) < 400
    assert det["fpr"][0] == 0.0 and det["fnr"][-1] == 0.0  # the curve's two ends are kept


def test_the_report_shows_systems_by_lists_and_raw_by_normalised(run_dir):
    _, md_path = report.write_report(run_dir, n_resamples=100, lists=["H", "O"])
    text = md_path.read_text()
    assert "| system | H EER (%) [95 % CI] | H minDCF 0.05 | H minDCF 0.01 | O EER (%) [95 % CI] |" in text
    table = text.split("## Score normalisation without labels")[1]
    assert table.count("| Stage I (contrastive + AAT) |") == 2 and table.count("| Stage II LGL |") == 2
    assert "Cohorts (no speaker labels): Stage I (contrastive + AAT): 50 training utterances, top 10" in table
    assert (run_dir / "figures" / "det.png").is_file()


def test_a_list_no_stage_scored_and_other_trials_are_explained(run_dir, tmp_path):
    evaluation = report_eval.collect_eval(run_dir, report.SYSTEMS, ["O", "Vox1-E"], n_resamples=50)
    assert evaluation["lists"] == ["O", "Vox1-E"]
    assert any("list Vox1-E: no stage of this run scored it" in note for note in evaluation["notes"])
    other = tmp_path / "other"
    _stage(other, "stage1", {"O": _trials(seed=0)}, 1.0)
    _stage(other, "stage2_baseline", {"O": _trials(seed=5)}, 1.0)
    evaluation = report_eval.collect_eval(other, report.SYSTEMS, n_resamples=50)
    assert "baseline" not in evaluation["results"]
    assert any("Stage II baseline (no gate), O: scored other trials" in note for note in evaluation["notes"])


def test_the_det_figure_draws_every_system_on_probit_axes(run_dir):
    summary = report.collect_report(run_dir, n_resamples=50)
    fig = report_figures.plot_det(summary)
    assert [ax.get_title() for ax in fig.axes] == ["DET: O", "DET: H"]
    labels = [line.get_label() for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert labels == ["Stage I", "Stage I, AS-norm", "LGL", "LGL, AS-norm"]
    assert fig.axes[0].get_xticklabels()[3].get_text() == "20%"  # probit ticks: 0.1 %, 1 %, 5 %, 20 %, ...
    empty = report_figures.plot_det({})
    assert empty.axes[0].texts[0].get_text() == "no per-trial scores of several lists"
