"""Stopping rule, best epoch, automatic gate and the gate tuner's callback logic (no browser)."""

import numpy as np
import pytest

from lgl_helpers.core import gate


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
        ([5.0, 5.0 + 1e-9, 5.0 + 1e-9, 5.0 + 1e-9], True),  # strictly greater, however slightly
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

def test_gate_tuner_readouts():
    losses = np.array([0.1, 0.2, 0.3, 4.0, 5.0, 6.0, 0.4, 7.0])
    reliable = np.array([1, 1, 1, 0, 0, 1, 0, 0], bool)
    tuner = gate.GateTuner(losses, reliable, gate=1.0)
    summary = tuner.summary()
    assert (summary.n_selected, summary.n_total) == (4, 8)
    assert summary.fraction_selected == pytest.approx(0.5)
    assert summary.precision_selected == pytest.approx(3 / 4)
    assert summary.precision_rejected == pytest.approx(1 / 4)
    assert "4/8 selected (50.0 %)" in summary.text() and "selected 75.0 %" in summary.text()

    # The gate is inclusive (loss <= gate), as in the loss.
    moved = tuner.set_gate(5.0)
    assert tuner.gate == 5.0 and moved.n_selected == 6
    assert moved.precision_rejected == pytest.approx(1 / 2)
    everything = tuner.set_gate(100.0)
    assert everything.precision_rejected is None and everything.precision_selected == pytest.approx(4 / 8)
    with pytest.raises(ValueError, match="gate"):
        tuner.set_gate(-1.0)

    applied = []
    assert tuner.apply(lambda g: applied.append(g) or "written") == "written"
    assert applied == [100.0] and tuner.applied == [100.0]


def test_gate_tuner_without_speaker_ids_and_bad_shapes():
    tuner = gate.GateTuner([0.5, 1.5, 2.5], gate=2.0)
    summary = tuner.summary()
    assert summary.precision_selected is None and summary.n_selected == 2
    assert "precision" not in summary.text()
    low, high, step = tuner.slider_range()
    assert low == 0.0 and high > 2.5 and step > 0
    with pytest.raises(ValueError, match="shape"):
        gate.GateTuner([0.5, 1.5], reliable=[True])


def test_gate_widget_callbacks_without_browser():
    losses, reliable = _bimodal(300, 100, seed=1)
    tuner = gate.GateTuner(losses, reliable, gate=3.0)
    applied = []
    box = gate.build_gate_widget(tuner, on_apply=lambda g: applied.append(g) or f"gate {g:.2f} saved")
    image, slider, readout, button, status = box.children
    first_png = image.value
    assert slider.value == pytest.approx(3.0)
    assert "selected" in readout.value

    slider.value = 0.5
    assert tuner.gate == pytest.approx(0.5, abs=slider.step)
    assert readout.value == tuner.summary().text()
    assert image.value != first_png  # the histogram was redrawn with the new gate line

    button.click()
    assert applied == [pytest.approx(tuner.gate)]
    assert "saved" in status.value


def test_histogram_figure_draws_gate_line():
    losses, reliable = _bimodal(200, 50)
    fig = gate.plot_loss_histogram(losses, gate=2.5, reliable=reliable)
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if list(line.get_xdata()) == [2.5, 2.5]]
    assert len(lines) == 1
    assert sum(patch.get_height() for patch in ax.patches) == pytest.approx(250)
    assert gate.figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
