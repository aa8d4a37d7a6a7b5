"""EER and minDCF against the reference implementation's numbers (ties included)."""

import json

import numpy as np
import pytest
from reference import reference_path

from lgl_helpers.core.metrics import compute_eer, compute_min_dcf, det_points


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
    with pytest.raises(ValueError, match="both target and non-target"):
        compute_eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="3 values but labels has 2"):
        compute_min_dcf([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="labels must be 0"):
        compute_eer([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match="NaN"):
        compute_min_dcf([np.nan, 0.2], [1, 0])
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf([0.1, 0.2], [1, 0], p_target=1.0)
