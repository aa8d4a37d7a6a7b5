"""Label-free score normalisation against a hand-computed example (lgl_helpers/core/score_norm.py).

Files e0 = (1, 0), e1 = (0, 1); cohort c0 = (1, 0), c1 = (0, 1), c2 = (0.6, 0.8); top 2.
- e0's cohort scores (1, 0, 0.6): top 2 = (1, 0.6), mean 0.8, std 0.2.
- e1's cohort scores (0, 1, 0.8): top 2 = (1, 0.8), mean 0.9, std 0.1.
- AS-norm of (e0, e1), raw 0: ((0 - 0.8) / 0.2 + (0 - 0.9) / 0.1) / 2 = (-4 - 9) / 2 = -6.5;
  of (e0, e0), raw 1: ((1 - 0.8) / 0.2) = 1.
- Cohort mean (8/15, 3/5): e0 - mean ∝ (7, -9), e1 - mean ∝ (-8, 6), cosine -110 / (10 √130) = -11 / √130.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lgl_helpers.core import score_norm

EMB = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
COHORT = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)


def test_cohort_stats_are_the_mean_and_std_of_the_top_n():
    mean, std = score_norm.cohort_stats(EMB, COHORT, top_n=2)
    np.testing.assert_allclose(mean, [0.8, 0.9], atol=1e-7)
    np.testing.assert_allclose(std, [0.2, 0.1], atol=1e-7)


def test_asnorm_of_the_hand_computed_trials():
    mean, std = score_norm.cohort_stats(EMB, COHORT, top_n=2)
    out = score_norm.asnorm([0.0, 1.0], np.array([0, 0]), np.array([1, 0]), mean, std)
    np.testing.assert_allclose(out, [-6.5, 1.0], atol=1e-6)


def test_mean_subtraction_of_the_hand_computed_pair():
    shifted = score_norm.subtract_mean(EMB, COHORT.mean(axis=0))
    np.testing.assert_allclose(np.linalg.norm(shifted, axis=1), 1.0, atol=1e-6)
    assert float(shifted[0] @ shifted[1]) == pytest.approx(-11 / math.sqrt(130), abs=1e-6)


def test_chunks_do_not_change_the_stats():
    rng = np.random.default_rng(0)
    emb = score_norm.l2_normalise(rng.normal(size=(37, 8)))
    cohort = score_norm.l2_normalise(rng.normal(size=(11, 8)))
    whole = score_norm.cohort_stats(emb, cohort, 5)
    chunked = score_norm.cohort_stats(emb, cohort, 5, chunk=4)
    np.testing.assert_allclose(whole, chunked)


def test_centroids_average_each_pseudo_label_and_normalise():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    centroids = score_norm.pseudo_label_centroids(emb, np.array([5, 2, 5]))
    # label 2: (0, 1); label 5: (1.6, 0.8) / |.| = (2, 1) / √5
    np.testing.assert_allclose(centroids, [[0.0, 1.0], [2 / math.sqrt(5), 1 / math.sqrt(5)]], atol=1e-6)


def test_sample_cohort_is_seeded_sorted_and_at_most_the_list():
    first = score_norm.sample_cohort(100, 10, seed=3)
    assert np.array_equal(first, score_norm.sample_cohort(100, 10, seed=3))
    assert np.all(np.diff(first) > 0) and first.size == 10
    assert np.array_equal(score_norm.sample_cohort(4, 0, seed=0), np.arange(4))
    assert np.array_equal(score_norm.sample_cohort(4, 5, seed=0), np.arange(4))


@pytest.mark.parametrize(
    ("cohort", "size", "top_n", "message"),
    [
        ("speakers", 10, 2, r"Cfg.norm_cohort='speakers' must be one of \['none', 'train', 'centroids'\]"),
        ("train", -1, 2, r"Cfg.norm_cohort_size=-1 must be an integer >= 0"),
        ("train", 10, 1, r"Cfg.norm_top_n=1 must be an integer >= 2"),
        ("train", 10, 11, r"Cfg.norm_top_n=11 must be at most norm_cohort_size=10"),
    ],
)
def test_bad_parameters_are_one_line_errors_naming_them(cohort, size, top_n, message):
    with pytest.raises(ValueError, match=message):
        score_norm.check_norm_parameters("Cfg", cohort, size, top_n)


def test_top_n_beyond_the_cohort_is_refused():
    with pytest.raises(ValueError, match=r"norm_top_n=4 must lie in \[2, 3\]"):
        score_norm.cohort_stats(EMB, COHORT, top_n=4)
