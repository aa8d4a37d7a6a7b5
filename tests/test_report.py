"""Notebook 05's report: every system's EER with its speaker-bootstrap interval, paired differences of
systems that scored the same trials, and why an interval or a comparison is absent."""

import json

import numpy as np
import pytest

from lgl_helpers.app import report
from lgl_helpers.core.metrics import TEST_SCORES, compute_eer, compute_min_dcf, write_trial_scores
from lgl_helpers.corpus.lists import Trial

N_SPEAKERS = 12


def _trials(n_speakers=N_SPEAKERS, per_speaker=10, seed=0):
    """Target trials within a speaker, non-targets across, VoxCeleb-style paths."""
    rng = np.random.default_rng(seed)
    trials = []
    for speaker in range(n_speakers):
        for utterance in range(per_speaker):
            a = f"id{speaker:05d}/s{utterance}/00001.wav"
            trials.append(Trial(1, a, f"id{speaker:05d}/t{utterance}/00002.wav"))
            other = (speaker + 1 + rng.integers(n_speakers - 1)) % n_speakers
            trials.append(Trial(0, a, f"id{other:05d}/u{utterance}/00001.wav"))
    return trials


def _scores(trials, separation, seed):
    rng = np.random.default_rng(seed)
    labels = np.array([t.label for t in trials])
    return rng.normal(size=len(trials)) + separation * labels


def _stage(run_dir, folder, trials, scores, **extra):
    """A stage folder as the stages write it: metrics.json naming test_scores.txt next to it."""
    stage_dir = run_dir / folder
    stage_dir.mkdir(parents=True)
    labels = np.array([t.label for t in trials])
    metrics = {
        "eer": compute_eer(scores, labels),
        "min_dcf": compute_min_dcf(scores, labels),
        "min_dcf_0.01": compute_min_dcf(scores, labels, p_target=0.01),
        "wall_seconds": 1.0,
        "test_scores": str(write_trial_scores(stage_dir / TEST_SCORES, trials, scores)),
        **extra,
    }
    (stage_dir / "metrics.json").write_text(json.dumps(metrics))
    return metrics


@pytest.fixture
def run_dir(tmp_path):
    """Stage I, baseline and LGL on the same trials (LGL's file in another line order); LGL clearly best."""
    run_dir = tmp_path / "run"
    trials = _trials()
    _stage(run_dir, "stage1", trials, _scores(trials, 1.0, 1), untrained_eer=45.0, best_epoch=3)
    _stage(run_dir, "stage2_baseline", trials, _scores(trials, 1.5, 2), iterations=[], evaluations=[])
    lgl = _scores(trials, 3.0, 3)
    _stage(run_dir, "stage2_lgl", trials[::-1], lgl[::-1], iterations=[], evaluations=[])
    return run_dir


def test_every_system_gets_an_interval_and_the_comparisons_are_paired(run_dir):
    summary = report.collect_report(run_dir, n_resamples=200)
    for key in ("stage1", "baseline", "lgl"):
        entry = summary[key]
        for metric in ("eer", "min_dcf", "min_dcf_0.01"):
            lo, hi = entry[f"{metric}_ci"]
            assert lo <= entry[metric] <= hi
        assert entry["n_trials"] == 2 * N_SPEAKERS * 10 and entry["n_speakers"] == N_SPEAKERS
    assert summary["stage1"]["untrained_eer"] == 45.0 and summary["stage1"]["best_epoch"] == 3  # kept keys
    assert summary["bootstrap"]["n_resamples"] == 200 and summary["bootstrap"]["confidence"] == 0.95
    pairs = {(c["system"], c["reference"]): c for c in summary["comparisons"]}
    assert set(pairs) == {("lgl", "baseline"), ("baseline", "stage1"), ("lgl", "stage1")}
    lgl_vs_stage1 = pairs[("lgl", "stage1")]
    assert lgl_vs_stage1["eer_diff"] == pytest.approx(summary["lgl"]["eer"] - summary["stage1"]["eer"])
    lo, hi = lgl_vs_stage1["eer_diff_ci"]
    assert lo <= lgl_vs_stage1["eer_diff"] <= hi < 0  # LGL errs clearly less
    assert report.collect_report(run_dir, n_resamples=200)["comparisons"] == summary["comparisons"]  # seeded


def test_absent_scores_and_other_trial_lists_are_explained(tmp_path):
    run_dir = tmp_path / "run"
    trials = _trials()
    _stage(run_dir, "stage1", trials, _scores(trials, 1.0, 1))
    (run_dir / "stage1" / TEST_SCORES).unlink()
    other = _trials(seed=5)
    _stage(run_dir, "stage2_baseline", trials, _scores(trials, 1.5, 2))
    _stage(run_dir, "stage2_lgl", other, _scores(other, 3.0, 3))
    summary = report.collect_report(run_dir, n_resamples=50)
    assert summary["stage1"]["eer_ci"] is None and "test_scores.txt does not exist" in summary["stage1"]["ci_note"]
    assert summary["baseline"]["eer_ci"] is not None and summary["lgl"]["eer_ci"] is not None
    absent = {(c["system"], c["reference"]): c.get("absent") for c in summary["comparisons"]}
    assert "scored different trial lists" in absent[("lgl", "baseline")]
    assert absent[("baseline", "stage1")].startswith("stage1: ") and "does not exist" in absent[("baseline", "stage1")]


def test_a_stage_that_has_not_run_leaves_its_comparisons_absent(tmp_path):
    run_dir = tmp_path / "run"
    trials = _trials()
    _stage(run_dir, "stage1", trials, _scores(trials, 1.0, 1))
    summary = report.collect_report(run_dir, n_resamples=50)
    assert summary["baseline"] is None and summary["stage1"]["eer_ci"] is not None
    assert all("has not run" in c["absent"] for c in summary["comparisons"])


def test_metrics_without_test_scores_say_so(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "stage1").mkdir(parents=True)
    (run_dir / "stage1" / "metrics.json").write_text(json.dumps({"eer": 20.0, "min_dcf": 0.9, "min_dcf_0.01": 1.0}))
    summary = report.collect_report(run_dir, n_resamples=50)
    assert summary["stage1"]["eer"] == 20.0 and summary["stage1"]["eer_ci"] is None
    assert "names no test_scores" in summary["stage1"]["ci_note"]


def test_report_markdown_shows_intervals_and_differences(run_dir):
    summary, md_path = report.write_report(run_dir, n_resamples=100, seed=3)
    markdown = md_path.read_text()
    stage1 = summary["stage1"]
    lo, hi = stage1["eer_ci"]
    # the EER cell is unchanged (existing readers match it); the interval has a column of its own
    assert f"| Stage I (contrastive + AAT) | {stage1['eer']:.2f} | [{lo:.2f}, {hi:.2f}] |" in markdown
    assert "| system | EER (%) | EER 95 % CI |" in markdown
    assert "## Paired differences (test trials)" in markdown and "| LGL − baseline | " in markdown
    assert "An interval that contains 0 is no evidence of a difference." in markdown
    assert "100 resamples, seed 3" in markdown
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved["lgl"]["eer_ci"] == summary["lgl"]["eer_ci"] and len(saved["comparisons"]) == 3
    assert report.comparisons_table(summary) in report.results_table(summary)  # what `lgl-kit report` prints


def test_results_table_of_an_older_report_json():
    # report.json written before intervals: no eer_ci, no comparisons, no bootstrap
    table = report.results_table({"stage1": {"eer": 19.0, "min_dcf": 0.8, "min_dcf_0.01": 0.9}})
    assert "| Stage I (contrastive + AAT) | 19.00 | – | 0.800 | 0.900 |" in table
    assert "Paired" not in table


def test_config_checks_the_bootstrap_parameters():
    with pytest.raises(ValueError, match="CompareConfig.bootstrap_resamples=0 must be an integer >= 1"):
        report.CompareConfig(bootstrap_resamples=0)
    with pytest.raises(ValueError, match="CompareConfig.bootstrap_seed=-1"):
        report.CompareConfig(bootstrap_seed=-1)
