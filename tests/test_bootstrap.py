"""Speaker-bootstrap intervals: hand-checked resamples, the point estimate inside its interval, narrower
intervals with more speakers, a system paired with itself, and bad input named."""

import time

import numpy as np
import pytest
from reference import reference_path

from lgl_helpers.core.bootstrap import (
    SpeakerBootstrap,
    bootstrap_metrics,
    paired_difference,
    percentile_interval,
    speaker_ids,
)
from lgl_helpers.core.metrics import compute_eer, compute_min_dcf, det_points

# Three speakers A, B, C: one target trial each, one non-target per pair. C's target scores below the
# A-C non-target, so the full list's EER is 1/3 (FNR = FPR = 1/3 between 0.4 and 0.3).
HAND_LABELS = np.array([1, 1, 1, 0, 0, 0])
HAND_SCORES = np.array([0.9, 0.8, 0.3, 0.1, 0.4, 0.2])  # AA, BB, CC, AB, AC, BC
HAND_A = np.array(["A", "B", "C", "A", "A", "B"])
HAND_B = np.array(["A", "B", "C", "B", "C", "C"])


def _synthetic(n_speakers, trials_per_speaker, seed, spread=1.0):
    """Target trials within and non-target trials across speakers; each speaker's targets shifted by a
    speaker effect, so that speakers (not trials) carry the variance."""
    rng = np.random.default_rng(seed)
    n = n_speakers * trials_per_speaker
    a = np.repeat(np.arange(n_speakers), trials_per_speaker)
    labels = rng.integers(0, 2, n)
    b = np.where(labels == 1, a, (a + rng.integers(1, n_speakers, n)) % n_speakers)
    effect = rng.normal(0.0, spread, n_speakers)
    scores = rng.normal(size=n) + labels * (2.0 + effect[a])
    names = np.array([f"id{i:05d}" for i in range(n_speakers)])
    return scores, labels, names[a], names[b]


def test_hand_checked_resamples():
    # speakers sort as A, B, C; the rows: all once, C left out, A left out, B left out, only A
    counts = np.array([[1, 1, 1], [2, 1, 0], [0, 1, 2], [1, 0, 2], [3, 0, 0]])
    boot = SpeakerBootstrap(HAND_LABELS, HAND_A, HAND_B, counts=counts)
    assert list(boot.speakers) == ["A", "B", "C"]
    values = boot.evaluate(HAND_SCORES).values
    # [1,1,1]: the list itself. [2,1,0] and [0,1,2]: the hard speaker C or the A-C trial is gone, so the rest
    # separates. [1,0,2]: AA (weight 1) > AC (2) > CC (2); the corners (FPR, FNR) are (0, 2/3), (1, 2/3),
    # (1, 0) and the closest, (1, 2/3), reads 100 %. [3,0,0]: no non-target is left: no EER.
    np.testing.assert_allclose(values["eer"][:4], [100 / 3, 0.0, 0.0, 100.0])
    assert np.isnan(values["eer"][4]) and np.isnan(values["min_dcf"][4])
    assert values["min_dcf"][0] == compute_min_dcf(HAND_SCORES, HAND_LABELS)
    assert values["min_dcf"][1] == 0.0 and values["min_dcf_0.01"][2] == 0.0
    summary = boot.intervals(boot.evaluate(HAND_SCORES))
    assert summary["n_degenerate"] == 1 and summary["n_speakers"] == 3 and summary["n_resamples"] == 5
    assert summary["eer"] == pytest.approx(100 / 3)


def _direct_weighted_eer(scores, labels, weights):
    """The EER of weighted trials read at the full list's ROC corners, one threshold at a time."""
    fpr, fnr = [], []
    for threshold in det_points(scores, labels)["thresholds"]:
        accepted = scores >= threshold
        fpr.append(weights[accepted & (labels == 0)].sum() / weights[labels == 0].sum())
        fnr.append(1.0 - weights[accepted & (labels == 1)].sum() / weights[labels == 1].sum())
    fpr, fnr = np.array(fpr), np.array(fnr)
    index = np.argmin(np.abs(fnr - fpr))
    return max(fpr[index], fnr[index]) * 100


def test_resamples_equal_a_direct_weighted_computation():
    scores, labels, a, b = _synthetic(6, 30, seed=1)
    scores = np.round(scores, 1)  # ties
    counts = np.random.default_rng(1).multinomial(6, np.full(6, 1 / 6), size=40)
    boot = SpeakerBootstrap(labels, a, b, counts=counts)
    values = boot.evaluate(scores).values
    position = {name: j for j, name in enumerate(boot.speakers)}
    for row, draw in enumerate(counts):
        c_a, c_b = draw[[position[x] for x in a]], draw[[position[x] for x in b]]
        weights = np.where(labels == 1, c_a, c_a * c_b)
        if weights[labels == 1].sum() == 0 or weights[labels == 0].sum() == 0:
            assert np.isnan(values["eer"][row])
            continue
        assert values["eer"][row] == pytest.approx(_direct_weighted_eer(scores, labels, weights), abs=1e-9)
        # minDCF walks every trial: the list written out with each trial repeated by its weight gives it
        repeated_scores, repeated_labels = np.repeat(scores, weights), np.repeat(labels, weights)
        for metric, p_target in (("min_dcf", 0.05), ("min_dcf_0.01", 0.01)):
            expected = compute_min_dcf(repeated_scores, repeated_labels, p_target=p_target)
            assert values[metric][row] == pytest.approx(expected, abs=1e-9)


def test_counts_of_one_give_the_reference_numbers_ties_included():
    arrays = np.load(reference_path("metrics.npz"))
    for name in ("small", "vox1o_size"):
        scores, labels = arrays[f"{name}_scores"], arrays[f"{name}_labels"]
        rng = np.random.default_rng(0)
        a = rng.integers(0, 40, labels.size)
        b = np.where(labels == 1, a, (a + rng.integers(1, 40, labels.size)) % 40)
        boot = SpeakerBootstrap(labels, a.astype(str), b.astype(str), counts=np.ones((1, 40), dtype=int))
        values = boot.evaluate(scores).values
        assert values["eer"][0] == compute_eer(scores, labels)
        assert values["min_dcf"][0] == compute_min_dcf(scores, labels)
        assert values["min_dcf_0.01"][0] == compute_min_dcf(scores, labels, p_target=0.01)


def test_interval_contains_the_point_and_is_seeded():
    scores, labels, a, b = _synthetic(40, 50, seed=2)
    first = bootstrap_metrics(scores, labels, a, b, n_resamples=300, seed=5)
    for metric in ("eer", "min_dcf", "min_dcf_0.01"):
        lo, hi = first[f"{metric}_ci"]
        assert lo <= first[metric] <= hi and lo < hi
    assert first["eer"] == compute_eer(scores, labels)
    assert bootstrap_metrics(scores, labels, a, b, n_resamples=300, seed=5) == first
    assert bootstrap_metrics(scores, labels, a, b, n_resamples=300, seed=6)["eer_ci"] != first["eer_ci"]
    assert first["n_resamples"] == 300 and first["n_degenerate"] == 0 and first["confidence"] == 0.95


def test_interval_narrows_with_more_speakers():
    def width(n_speakers):
        scores, labels, a, b = _synthetic(n_speakers, 40, seed=3)
        lo, hi = bootstrap_metrics(scores, labels, a, b, n_resamples=300)["eer_ci"]
        return hi - lo

    few, many = width(10), width(160)
    assert many < few / 2, (few, many)


def test_speakers_widen_the_interval_beyond_a_trial_bootstrap():
    # The same trials with every trial its own "speaker pair" would be a trial bootstrap; with a strong
    # speaker effect, resampling speakers must give the wider interval.
    scores, labels, a, b = _synthetic(20, 100, seed=4, spread=1.5)
    by_speaker = bootstrap_metrics(scores, labels, a, b, n_resamples=300)["eer_ci"]
    rng = np.random.default_rng(0)
    trial_eers = []
    for _ in range(300):
        pick = rng.integers(0, labels.size, labels.size)
        trial_eers.append(compute_eer(scores[pick], labels[pick]))
    by_trial = percentile_interval(trial_eers)
    assert by_speaker[1] - by_speaker[0] > by_trial[1] - by_trial[0]


def test_paired_difference_of_a_system_with_itself_is_exactly_zero():
    scores, labels, a, b = _synthetic(30, 40, seed=5)
    same = paired_difference(scores, scores.copy(), labels, a, b)
    for metric in ("eer", "min_dcf", "min_dcf_0.01"):
        assert same[f"{metric}_diff"] == 0.0 and same[f"{metric}_diff_ci"] == [0.0, 0.0]


def test_paired_difference_sees_a_better_system():
    scores, labels, a, b = _synthetic(30, 60, seed=6)
    better = scores + 1.0 * labels  # targets pushed up: fewer errors
    diff = paired_difference(better, scores, labels, a, b)
    assert diff["eer_diff"] == compute_eer(better, labels) - compute_eer(scores, labels) < 0
    lo, hi = diff["eer_diff_ci"]
    assert lo <= diff["eer_diff"] <= hi < 0
    # pairing removes the shared speaker variance: narrower than either system's own interval
    own = bootstrap_metrics(scores, labels, a, b)["eer_ci"]
    assert hi - lo < own[1] - own[0]


def test_resamples_of_another_bootstrap_are_refused():
    scores, labels, a, b = _synthetic(10, 20, seed=7)
    first, second = SpeakerBootstrap(labels, a, b, n_resamples=20), SpeakerBootstrap(labels, a, b, n_resamples=20)
    with pytest.raises(ValueError, match="reference was evaluated by another SpeakerBootstrap"):
        first.paired(first.evaluate(scores), second.evaluate(scores))


def test_speaker_ids_are_the_first_path_component():
    assert list(speaker_ids(["id10001/abc/00001.wav", "id10270/x/2.wav"])) == ["id10001", "id10270"]
    with pytest.raises(ValueError, match=r"paths\[1\] = 'loose.wav': no speaker folder"):
        speaker_ids(["id1/s/1.wav", "loose.wav"])


def test_bad_input_names_the_argument():
    labels, a, b = HAND_LABELS, HAND_A, HAND_B
    with pytest.raises(ValueError, match="speakers_b has 5 values but labels has 6"):
        SpeakerBootstrap(labels, a, b[:5])
    with pytest.raises(ValueError, match="scores has 5 values but labels has 6"):
        bootstrap_metrics(HAND_SCORES[:5], labels, a, b)
    with pytest.raises(ValueError, match="reference_scores has 4 values but labels has 6"):
        paired_difference(HAND_SCORES, HAND_SCORES[:4], labels, a, b)
    with pytest.raises(ValueError, match="labels must be 0 .* got 2 at index 1"):
        SpeakerBootstrap([1, 2, 1, 0, 0, 0], a, b)
    with pytest.raises(ValueError, match="labels: need both target and non-target trials"):
        SpeakerBootstrap([1, 1, 1], a[:3], b[:3])
    with pytest.raises(ValueError, match="trial 4: label 1 but speakers_a 'A' and speakers_b 'B'"):
        SpeakerBootstrap([1, 1, 1, 1, 0, 0], a, b)
    with pytest.raises(ValueError, match="scores contain NaN"):
        bootstrap_metrics([np.nan, 0.8, 0.3, 0.1, 0.4, 0.2], labels, a, b)
    with pytest.raises(ValueError, match="n_resamples=0"):
        SpeakerBootstrap(labels, a, b, n_resamples=0)
    with pytest.raises(ValueError, match="confidence=1.5"):
        bootstrap_metrics(HAND_SCORES, labels, a, b, n_resamples=10, confidence=1.5)
    only_a = SpeakerBootstrap(labels, a, b, counts=[[3, 0, 0]])
    with pytest.raises(ValueError, match="too few speakers"):
        only_a.intervals(only_a.evaluate(HAND_SCORES))


def test_fifty_thousand_trials_are_fast():
    # A generous bound for a shared CI machine; one core takes 0.1-0.5 s (module docstring).
    scores, labels, a, b = _synthetic(40, 1250, seed=8)
    boot = SpeakerBootstrap(labels, a, b)
    tic = time.perf_counter()
    boot.evaluate(scores)
    assert time.perf_counter() - tic < 5.0
