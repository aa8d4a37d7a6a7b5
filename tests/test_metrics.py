"""EER and minDCF against the reference implementation's numbers (ties included)."""

import json

import numpy as np
import pytest
from reference import reference_path

from lgl_helpers.core.metrics import (
    TrialScoreReader,
    compute_eer,
    compute_min_dcf,
    det_points,
    eer_and_min_dcf,
    match_trials,
    read_trial_scores,
    stable_argsort,
    write_trial_scores,
)
from lgl_helpers.corpus.lists import ListFormatError, Trial


@pytest.fixture(scope="module")
def reference_scores():
    arrays = np.load(reference_path("metrics.npz"))
    expected = json.loads(reference_path("metrics.json").read_text())
    return arrays, expected


@pytest.mark.parametrize("name", ["small", "vox1o_size"])
def test_metrics_equal_reference(reference_scores, name):
    arrays, expected = reference_scores
    scores, labels = arrays[f"{name}_scores"], arrays[f"{name}_labels"]
    assert compute_eer(scores, labels) == pytest.approx(expected[name]["eer_percent"], abs=1e-9)
    assert compute_min_dcf(scores, labels) == pytest.approx(expected[name]["min_dcf_p0.05"], abs=1e-9)
    assert compute_min_dcf(scores, labels, p_target=0.01) == pytest.approx(expected[name]["min_dcf_p0.01"], abs=1e-9)


def test_vox1o_size_set_has_ties(reference_scores):
    arrays, _ = reference_scores
    scores = arrays["vox1o_size_scores"]
    assert len(np.unique(scores)) < len(scores)


def test_separable_and_inverted_scores():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert compute_eer(scores, labels) == 0.0
    assert compute_min_dcf(scores, labels) == 0.0
    assert compute_eer(-scores, labels) == 100.0
    # Worst case: the best threshold accepts nothing → cost p_target·1 / c_def = 1.
    assert compute_min_dcf(-scores, labels) == pytest.approx(1.0)


def test_eer_of_known_overlap():
    # One target below one non-target out of four each: FNR = FPR = 25 % at the crossing.
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.65, 0.6, 0.7, 0.8, 0.9])
    assert compute_eer(scores, labels) == pytest.approx(25.0)


def test_det_points_shape_and_order():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(size=500) + labels
    points = det_points(scores, labels)
    assert set(points) == {"fpr", "fnr", "thresholds"}
    assert np.all(np.diff(points["fpr"]) >= 0) and np.all(np.diff(points["fnr"]) <= 0)
    assert points["fpr"][-1] == 1.0 and points["fnr"][-1] == 0.0


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="labels: need both target and non-target"):
        compute_eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="3 values but labels has 2"):
        compute_min_dcf([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="labels must be 0"):
        compute_eer([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match="NaN"):
        compute_min_dcf([np.nan, 0.2], [1, 0])
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf([0.1, 0.2], [1, 0], p_target=1.0)


TRIALS = [
    Trial(1, "id1/s/1.wav", "id1/t/2.wav"),
    Trial(0, "id1/s/1.wav", "id2/u/1.wav"),
    Trial(0, "id2/u/1.wav", "id3/v/1.wav"),
]


def test_trial_scores_round_trip_exactly(tmp_path):
    scores = np.array([0.123456789012345678, -0.5, 1e-17])
    path = write_trial_scores(tmp_path / "test_scores.txt", TRIALS, scores)
    assert path.read_text().splitlines()[1] == "-0.5 0 id1/s/1.wav id2/u/1.wav"
    trials, read_back = read_trial_scores(path)
    assert trials == TRIALS and np.array_equal(read_back, scores)
    assert [p.name for p in tmp_path.iterdir()] == ["test_scores.txt"]  # no temp file left over


def test_trial_scores_skip_blank_lines(tmp_path):
    path = tmp_path / "scores.txt"
    path.write_text("0.5 1 id1/a.wav id1/b.wav\n\n-0.25 0 id1/a.wav id2/b.wav\n")
    trials, scores = read_trial_scores(path)
    assert trials == [Trial(1, "id1/a.wav", "id1/b.wav"), Trial(0, "id1/a.wav", "id2/b.wav")]
    assert scores.tolist() == [0.5, -0.25]


def test_score_reader_reuses_the_trials_of_a_file_with_the_same_columns(tmp_path):
    read = TrialScoreReader()
    first = write_trial_scores(tmp_path / "raw.txt", TRIALS, [0.5, -0.5, 0.25])
    second = write_trial_scores(tmp_path / "asnorm.txt", TRIALS, [1.5, 2.0, -3.0])
    other = write_trial_scores(tmp_path / "other.txt", TRIALS[:2], [0.1, 0.2])
    trials, scores = read(first)
    again, scores_again = read(second)
    assert again is trials and scores_again.tolist() == [1.5, 2.0, -3.0]
    shorter, _ = read(other)
    assert shorter is not trials and shorter == TRIALS[:2]
    # Whatever the fast path skips, a bad file is still refused with its line.
    bad = tmp_path / "bad.txt"
    bad.write_text("0.5 1 id1/s/1.wav id1/t/2.wav\ninf 0 id1/s/1.wav id2/u/1.wav\n0.1 0 id2/u/1.wav id3/v/1.wav\n")
    with pytest.raises(ListFormatError, match=r"bad.txt:2: score 'inf' is not finite"):
        read(bad)
    bad.write_text("0.5 1 id1/s/1.wav id1/t/2.wav\n\n-0.5 0 id1/s/1.wav id2/u/1.wav\n0.1 0 id2/u/1.wav id3/v/1.wav\n")
    blank_trials, blank_scores = read(bad)
    assert blank_trials == TRIALS and blank_scores.tolist() == [0.5, -0.5, 0.1]
    with pytest.raises(ListFormatError, match=r"none.txt: score file does not exist"):
        read(tmp_path / "none.txt")


def test_trial_scores_refuse_bad_input(tmp_path):
    with pytest.raises(ValueError, match="scores has 2 values but trials has 3"):
        write_trial_scores(tmp_path / "s.txt", TRIALS, [0.1, 0.2])
    bad = tmp_path / "bad.txt"
    bad.write_text("0.5 1 id1/a.wav id1/b.wav\n0.2 2 id1/a.wav id2/b.wav\n")
    with pytest.raises(ListFormatError, match=r"bad.txt:2: trial label '2' is not 0 or 1"):
        read_trial_scores(bad)
    bad.write_text("high 1 id1/a.wav id1/b.wav\n")
    with pytest.raises(ListFormatError, match=r"bad.txt:1: score 'high' is not a number"):
        read_trial_scores(bad)
    bad.write_text("1 id1/a.wav id1/b.wav\n")
    with pytest.raises(ListFormatError, match=r"bad.txt:1: expected 4 fields"):
        read_trial_scores(bad)
    bad.write_text("0.5 1 id1/a.wav id1/b.wav\n\ninf 0 id1/a.wav id2/b.wav\n")  # the blank line counts
    with pytest.raises(ListFormatError, match=r"bad.txt:3: score 'inf' is not finite"):
        read_trial_scores(bad)
    bad.write_text("\n")
    with pytest.raises(ListFormatError, match=r"bad.txt: score file is empty"):
        read_trial_scores(bad)
    with pytest.raises(ListFormatError, match=r"none.txt: score file does not exist"):
        read_trial_scores(tmp_path / "none.txt")


def test_match_trials_ignores_order_but_not_multiplicity():
    shuffled = [TRIALS[2], TRIALS[0], TRIALS[1]]
    index = match_trials(TRIALS, shuffled)
    assert [shuffled[i] for i in index] == TRIALS
    assert list(match_trials(TRIALS, list(TRIALS))) == [0, 1, 2]
    assert match_trials(TRIALS, TRIALS[:2]) is None
    assert match_trials(TRIALS, [TRIALS[0], TRIALS[0], TRIALS[1]]) is None  # a repeated trial weighs twice
    relabelled = [Trial(0, TRIALS[0].path_a, TRIALS[0].path_b), *TRIALS[1:]]
    swapped = [Trial(1, TRIALS[0].path_b, TRIALS[0].path_a), *TRIALS[1:]]
    assert match_trials(TRIALS, relabelled) is None and match_trials(TRIALS, swapped) is None


def test_det_points_equal_scikit_learn_roc_bit_for_bit():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(3)
    labels = (rng.random(20_000) < 0.3).astype(np.int64)
    for scores in (np.round(rng.normal(size=labels.size) + labels, 2), rng.normal(size=labels.size)):  # ties, none
        fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=1)
        points = det_points(scores, labels)
        assert np.array_equal(points["fpr"], fpr) and np.array_equal(points["fnr"], 1.0 - tpr)
        assert np.array_equal(points["thresholds"], thresholds)


def test_eer_and_min_dcf_share_one_sort(reference_scores):
    arrays, expected = reference_scores
    scores, labels = arrays["vox1o_size_scores"], arrays["vox1o_size_labels"]
    eer, (dcf_05, dcf_01) = eer_and_min_dcf(scores, labels)
    assert eer == compute_eer(scores, labels)
    assert dcf_05 == compute_min_dcf(scores, labels) and dcf_01 == compute_min_dcf(scores, labels, p_target=0.01)
    with pytest.raises(ValueError, match="p_target"):
        eer_and_min_dcf(scores, labels, p_targets=(0.05, 1.0))


@pytest.mark.parametrize("decimals", [None, 6, 3])  # no ties, some, most
def test_stable_argsort_equals_numpy_stable_sort(decimals):
    x = np.random.default_rng(4).normal(size=50_000)
    if decimals is not None:
        x = np.round(x, decimals)
    assert np.array_equal(stable_argsort(x), np.argsort(x, kind="stable"))
    signed_zeros = np.array([0.0, -0.0, 1.0, 0.0, -0.0, -1.0])
    assert np.array_equal(stable_argsort(signed_zeros), np.argsort(signed_zeros, kind="stable"))
