"""The gate tuner of notebook 04 (readouts, widget callbacks, histogram), without a browser."""

import numpy as np
import pytest

from lgl_helpers.notebook import gate_tuner


def _bimodal(n_low, n_high, seed=0):
    rng = np.random.default_rng(seed)
    low = rng.exponential(0.4, n_low)  # reliable pseudo labels: losses piled up near zero
    high = rng.normal(9.0, 1.5, n_high).clip(min=0)  # unreliable ones: a broad high-loss mode
    return np.concatenate([low, high]), np.concatenate([np.ones(n_low, bool), np.zeros(n_high, bool)])


def test_gate_tuner_readouts():
    losses = np.array([0.1, 0.2, 0.3, 4.0, 5.0, 6.0, 0.4, 7.0])
    reliable = np.array([1, 1, 1, 0, 0, 1, 0, 0], bool)
    tuner = gate_tuner.GateTuner(losses, reliable, gate=1.0)
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
    tuner = gate_tuner.GateTuner([0.5, 1.5, 2.5], gate=2.0)
    summary = tuner.summary()
    assert summary.precision_selected is None and summary.n_selected == 2
    assert "precision" not in summary.text()
    low, high, step = tuner.slider_range()
    assert low == 0.0 and high > 2.5 and step > 0
    with pytest.raises(ValueError, match="shape"):
        gate_tuner.GateTuner([0.5, 1.5], reliable=[True], gate=1.0)


def test_gate_widget_callbacks_without_browser():
    losses, reliable = _bimodal(300, 100, seed=1)
    tuner = gate_tuner.GateTuner(losses, reliable, gate=3.0)
    applied = []
    box = gate_tuner.build_gate_widget(tuner, on_apply=lambda g: applied.append(g) or f"gate {g:.2f} saved")
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
    fig = gate_tuner.plot_loss_histogram(losses, gate=2.5, reliable=reliable)
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if list(line.get_xdata()) == [2.5, 2.5]]
    assert len(lines) == 1
    assert sum(patch.get_height() for patch in ax.patches) == pytest.approx(250)
    assert gate_tuner.figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
