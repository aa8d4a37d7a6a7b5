"""Stopping rule, best epoch and automatic gate (the gate tuner: test_gate_tuner.py)."""

from pathlib import Path

import numpy as np
import pytest

from lgl_helpers.core import gate
from lgl_helpers.core.gate_evidence import gate_evidence

# --- stopping rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "eers, stop",
    [
        ([], False),
        ([5.0], False),
        ([5.0, 6.0, 7.0], False),  # three evaluations: fewer than 4, never stops
        ([1.0, 9.0, 9.0, 9.0], True),  # 4th evaluation: last 3 all worse than the best
        ([5.0, 6.0, 7.0, 8.0], True),
        ([5.0, 4.0, 6.0, 7.0], False),  # the best is inside the last 3
        ([5.0, 6.0, 5.0, 7.0], False),  # a tie with the best is not worse
        ([5.0, 6.0, 7.0, 5.0], False),  # tie at the very end
        ([5.0, 6.0, 7.0, 5.0, 6.0, 7.0], False),  # the tie at index 3 is still within the last 3
        ([5.0, 6.0, 7.0, 5.0, 6.0, 7.0, 8.0], True),  # now 6, 7, 8 are all worse than 5
        ([5.0, 5.0, 5.0, 5.0, 5.0], False),  # a flat curve never stops
        ([5.0, 5.0 + 1e-9, 5.0 + 1e-9, 5.0 + 1e-9], False),  # equal at 0.01 %: ties, as in the reference
        ([5.0, 5.01, 5.01, 5.01], True),  # 0.01 % worse is worse
        ([9.0, 8.0, 7.0, 6.0, 5.0, 4.0], False),  # still improving
    ],
)
def test_phase_should_stop(eers, stop):
    assert gate.phase_should_stop(eers) is stop


def test_phase_should_stop_min_evals_and_patience():
    # min_evals larger than the history holds the phase open even when the rule would fire.
    assert gate.phase_should_stop([1.0, 2.0, 3.0, 4.0], min_evals=5) is False
    assert gate.phase_should_stop([1.0, 2.0, 3.0, 4.0, 5.0], min_evals=5) is True
    # patience 1: one worse evaluation after the best suffices once min_evals is reached.
    assert gate.phase_should_stop([3.0, 2.0, 2.5, 2.6], patience=1) is True
    assert gate.phase_should_stop([3.0, 2.0, 2.5, 2.0], patience=1) is False
    # min_evals below patience + 1 cannot stop before an earlier best exists.
    assert gate.phase_should_stop([1.0, 2.0, 3.0], min_evals=1, patience=3) is False


def test_phase_should_stop_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        gate.phase_should_stop([1.0, float("nan"), 2.0, 3.0])
    with pytest.raises(ValueError, match="min_evals"):
        gate.phase_should_stop([1.0], min_evals=0)
    with pytest.raises(ValueError, match="patience"):
        gate.phase_should_stop([1.0], patience=0)


def test_best_index_prefers_earliest_tie():
    assert gate.best_index([5.0, 3.0, 4.0, 3.0]) == 1
    assert gate.best_index([2.0]) == 0
    with pytest.raises(ValueError):
        gate.best_index([])


def test_raw_comparison_is_available():
    near_tie = [5.0, 5.0 + 1e-9, 5.0 + 1e-9, 5.0 + 1e-9]
    assert gate.phase_should_stop(near_tie, decimals=None) is True  # strictly greater, however slightly
    assert gate.best_index([5.004, 4.996], decimals=None) == 1
    assert gate.best_index([5.004, 4.996]) == 0  # both 5.00 at 0.01 %: the earlier wins
    assert gate.comparable_eers([1.005, 2.675, 3.14159]) == [float(f"{e:.2f}") for e in (1.005, 2.675, 3.14159)]


def _reference_decision(eers):
    """The reference's phase decision (``Stage2/tools.py``, ``check_clustering``, baseline branch, verbatim
    logic): each EER is written to score.txt as ``"[E], %d epoch, EER %2.2f%%, minDCF %2.3f%%"`` and
    parsed back; returns (stop, best epoch) with epochs numbered from 1, best epoch None while training goes on."""
    lines = ["[C], 1 epoch, NMI 50.00"]
    # The reference's own %-format (tools.py, print_write), kept verbatim: it is what the rounding is.
    line_format = "[E], %d epoch, EER %2.2f%%, minDCF %2.3f%%"
    lines += [line_format % (i, e, 0.5) for i, e in enumerate(eers, start=1)]  # noqa: UP031
    epochs_t, eers_t = [], []
    for line in lines:
        if line.split(",")[0] == "[E]":
            epochs_t.append(int(line.split(",")[1].split()[0]))
            eers_t.append(float(line.split(",")[-2].split()[-1][:-1]))
    if len(eers_t) < 4:
        return False, None
    if eers_t[-1] > min(eers_t) and eers_t[-2] > min(eers_t) and eers_t[-3] > min(eers_t):
        return True, epochs_t[eers_t.index(min(eers_t))]
    return False, None


def test_stopping_rule_and_best_epoch_match_the_reference_on_near_ties():
    rng = np.random.default_rng(0)
    differs_raw = 0
    for _ in range(3000):
        # EER curves that wander by a few thousandths of a percent: rounding to 0.01 decides often.
        eers = list(5.0 + np.cumsum(rng.choice([-0.004, -0.001, 0.0, 0.002, 0.003, 0.006], size=rng.integers(1, 9))))
        for n in range(1, len(eers) + 1):
            stop, best_epoch = _reference_decision(eers[:n])
            assert gate.phase_should_stop(eers[:n]) is stop, eers[:n]
            if stop:
                assert gate.best_index(eers[:n]) + 1 == best_epoch, eers[:n]
            differs_raw += gate.phase_should_stop(eers[:n], decimals=None) is not stop
    assert differs_raw > 100  # the raw comparison really decides otherwise on such curves


# --- automatic gate ----------------------------------------------------------------------------


def _bimodal(n_low, n_high, seed=0):
    rng = np.random.default_rng(seed)
    low = rng.exponential(0.4, n_low)  # reliable pseudo labels: losses piled up near zero
    high = rng.normal(9.0, 1.5, n_high).clip(min=0)  # unreliable ones: a broad high-loss mode
    return np.concatenate([low, high]), np.concatenate([np.ones(n_low, bool), np.zeros(n_high, bool)])


def _valley(losses, lo=1.0, hi=8.0):
    """Location of the histogram minimum between the two modes (smoothed), the target of the gate."""
    counts, edges = np.histogram(losses, bins=120, range=(0, losses.max()))
    smooth = np.convolve(counts, np.ones(5) / 5, mode="same")
    centres = 0.5 * (edges[:-1] + edges[1:])
    inside = (centres > lo) & (centres < hi)
    return centres[inside][np.argmin(smooth[inside])]


def test_auto_gate_finds_the_valley_of_a_bimodal_sample():
    losses, reliable = _bimodal(7000, 3000)
    g = gate.auto_gate(losses)
    counts, edges = np.histogram(losses, bins=60, range=(0, losses.max()))
    density_at_gate = counts[np.searchsorted(edges, g) - 1]
    assert 2.0 < g < 6.5
    assert density_at_gate < 0.05 * counts.max()
    # Almost all reliable samples pass and almost all unreliable ones are dropped.
    assert (losses[reliable] <= g).mean() > 0.98
    assert (losses[~reliable] > g).mean() > 0.97
    assert abs(g - _valley(losses)) < 1.0


def test_auto_gate_tracks_the_mixture_weights():
    # With more unreliable labels the boundary moves towards the reliable peak, never past it.
    g_clean = gate.auto_gate(_bimodal(9000, 1000)[0])
    g_noisy = gate.auto_gate(_bimodal(3000, 7000)[0])
    assert 1.0 < g_noisy < g_clean < 7.0


def test_auto_gate_finds_a_shallow_valley_below_a_dominant_high_mode():
    # Few reliable labels early in training: a small low-loss peak and a large, broad high-loss mode.
    rng = np.random.default_rng(3)
    losses = np.concatenate([rng.normal(1.0, 0.5, 300).clip(min=0), rng.normal(7.0, 2.0, 700).clip(min=0)])
    g = gate.auto_gate(losses)
    assert 1.5 < g < 3.5
    assert abs(g - _valley(losses, lo=1.2, hi=6.0)) < 1.0


def test_auto_gate_ignores_a_bump_in_the_far_tail_of_a_spike_and_tail_histogram():
    # Fitted labels pile up near 0, the rest decay in a long tail, with a few stragglers far out: no
    # second mode, so the gate is Otsu's threshold and not a "valley" before the last straggler.
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.exponential(0.2, 300), rng.exponential(4.0, 900), [24.0, 25.5, 27.0]])
    assert gate.auto_gate(losses) == pytest.approx(gate.otsu_threshold(losses))
    assert gate.auto_gate(losses) < 12.0


def test_auto_gate_on_the_losses_of_a_toy_phase_t_keeps_the_reliable_labels():
    # A best T epoch of a demo-sized run on the default toy corpus (1,200 utterances, 81 % of the
    # pseudo labels reliable): the rule must keep a clearly more reliable set than it drops.
    record = np.load(Path(__file__).parent / "data" / "toy_phase_t_losses.npz")
    losses, reliable = record["per_sample_loss"], record["reliable"]
    evidence = gate_evidence(losses, reliable, gate.auto_gate(losses))
    assert 0.5 < evidence["fraction_kept"] < 0.9
    assert evidence["kept_reliable"] - evidence["dropped_reliable"] > 0.15


def test_auto_gate_without_valley_falls_back_to_otsu():
    losses = np.random.default_rng(0).normal(5.0, 1.0, 2000)
    assert gate.auto_gate(losses) == pytest.approx(gate.otsu_threshold(losses))


def test_otsu_fallback_and_degenerate_input():
    values = np.concatenate([np.full(50, 1.0), np.full(50, 5.0)])
    assert 1.0 <= gate.otsu_threshold(values) < 5.0
    assert gate.auto_gate(np.full(10, 2.5)) == 2.5
    with pytest.raises(ValueError, match="non-finite"):
        gate.auto_gate([1.0, np.nan])
    with pytest.raises(ValueError, match="empty"):
        gate.auto_gate([])


# --- gate tuner (widget logic without a browser) -----------------------------------------------


# --- the GMM gate ---------------------------------------------------------------------------------


def _log_normal_mixture(seed=0):
    """80 % reliable labels at log-loss N(log 0.05, 0.6), 20 % unreliable at N(log 5, 0.4)."""
    rng = np.random.default_rng(seed)
    low = np.exp(rng.normal(np.log(0.05), 0.6, 8000))
    high = np.exp(rng.normal(np.log(5.0), 0.4, 2000))
    return np.concatenate([low, high])


def test_gmm_gate_on_a_bimodal_sample_is_the_equal_posterior_point_of_the_true_mixture():
    losses = _log_normal_mixture()
    choice = gate.gmm_gate(losses)
    assert choice.rule == "gmm" and choice.reason is None
    true_crossing = gate._equal_posterior([0.8, 0.2], [np.log(0.05), np.log(5.0)], [0.6, 0.4])
    # The fitted mixture's crossing, within 0.1 in log loss of the true one (10,000 samples).
    assert np.log(choice.gate) == pytest.approx(true_crossing, abs=0.1)
    assert (losses <= choice.gate).mean() == pytest.approx(0.8, abs=0.005)
    np.testing.assert_allclose(choice.mixture["weights"], [0.8, 0.2], atol=0.01)
    np.testing.assert_allclose(choice.mixture["means"], np.log([0.05, 5.0]), atol=0.03)


def test_equal_posterior_of_two_equal_components_is_their_midpoint():
    assert gate._equal_posterior([0.5, 0.5], [0.0, 2.0], [1.0, 1.0]) == pytest.approx(1.0)
    assert gate._equal_posterior([0.5, 0.5], [0.0, 2.0], [1.0, 1.0]) < gate._equal_posterior(
        [0.8, 0.2], [0.0, 2.0], [1.0, 1.0]
    )


def test_gmm_gate_on_a_unimodal_sample_falls_back_to_the_valley_rule_and_says_why(caplog):
    losses = np.exp(np.random.default_rng(1).normal(0.0, 1.0, 5000))
    with caplog.at_level("WARNING"):
        choice = gate.gmm_gate(losses, seed=3)
    assert choice.rule in ("valley", "otsu") and "Ashman" in choice.reason
    gate_value, rule = gate.valley_gate(losses, seed=3)
    assert (choice.gate, choice.rule) == (gate_value, rule)
    assert "no two separated modes" in caplog.text


def test_gmm_gate_on_too_few_distinct_losses_falls_back_without_a_fit():
    choice = gate.gmm_gate([0.0, 1.0, 1.0, 0.0, 2.0])
    assert choice.mixture is None and "3 distinct" in choice.reason
    assert choice.gate == pytest.approx(gate.auto_gate([0.0, 1.0, 1.0, 0.0, 2.0]))
