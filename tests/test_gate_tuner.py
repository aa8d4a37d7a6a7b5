"""The gate tuner of notebook 04 (readouts, widget callbacks, histogram), without a browser."""

import io

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


def test_slider_steps_are_round_so_typed_values_stay_as_typed():
    tuner = gate_tuner.GateTuner([0.5, 3.0, 12.6], gate=3.0)
    low, high, step = tuner.slider_range()
    assert (low, step) == (0.0, 0.05) and high >= 12.6 * 1.02
    assert (5.0 / step) == pytest.approx(round(5.0 / step)) and (high / step) == pytest.approx(round(high / step))
    assert tuner.on_grid(5.0000000001) == 5.0 and tuner.on_grid(3.02) == 3.0 and tuner.on_grid(99.0) == high
    # A starting gate above every loss widens the range to include it.
    assert gate_tuner.GateTuner([0.5, 1.0], gate=40.0).slider_range()[1] >= 40.0


def test_readout_warns_when_the_gate_keeps_less_reliable_labels_than_it_drops():
    losses = np.array([0.1, 0.2, 0.3, 4.0, 5.0, 6.0])
    tuner = gate_tuner.GateTuner(losses, np.array([0, 0, 1, 1, 1, 1], bool), gate=1.0)
    summary = tuner.summary()
    assert summary.precision_selected < summary.precision_rejected
    assert "less reliable than the dropped ones (33.3 % vs 100.0 %)" in summary.text()
    assert gate_tuner.GateTuner(losses, np.array([1, 1, 1, 0, 0, 1], bool), gate=1.0).summary().warning() is None


def _gate_column(png: bytes, left: float, right: float) -> int:
    """The image column holding the most black pixels between the axes' spines: the dashed gate line."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    black = (rgb.sum(axis=2) < 100).sum(axis=0)
    inner = np.arange(black.size)[int(left) + 3 : int(right) - 3]
    return int(inner[np.argmax(black[inner])])


def test_widget_figure_keeps_its_size_and_redraws_the_gate_line_where_the_slider_puts_it():
    losses, reliable = _bimodal(300, 100, seed=2)
    tuner = gate_tuner.GateTuner(losses, reliable, gate=3.0)
    drawing = gate_tuner.TunerFigure(tuner, "t")
    assert drawing.size_px == (630, 324)
    low, high, _ = tuner.slider_range()
    left, right = drawing.axes_span_px()
    for gate in (1.0, 6.5, 10.0):
        expected = left + (gate - low) / (high - low) * (right - left)
        assert abs(_gate_column(drawing.png(gate), left, right) - expected) <= 1.5
    # Redrawing only the line gives the same picture as drawing the figure anew at that gate.
    again = gate_tuner.TunerFigure(gate_tuner.GateTuner(losses, reliable, gate=6.5), "t")
    assert drawing.png(6.5) == again.png(6.5)


def test_widget_layout_follows_the_figure_and_the_status_is_the_callbacks_message():
    losses, reliable = _bimodal(300, 100, seed=1)
    tuner = gate_tuner.GateTuner(losses, reliable, gate=3.0)
    box = gate_tuner.build_gate_widget(tuner, on_apply=lambda g: f"gate {g:.3f} will be used", note="paused")
    image, slider, readout, button, status = box.children
    assert (image.layout.width, image.layout.height) == ("630px", "324px")  # never stretched to the cell
    left, right = gate_tuner.TunerFigure(tuner).axes_span_px()
    assert slider.layout.margin == f"0 0 0 {left - gate_tuner._SLIDER_TRACK_LEFT_PX:.0f}px"
    assert slider.readout and slider.continuous_update and slider.description == ""
    assert status.value == "paused" and not button.disabled
    slider.value = 5.0
    assert readout.value.startswith("gate 5.000:")
    button.click()
    assert status.value == "gate 5.000 will be used"  # the message as the callback wrote it, nothing prefixed


def test_widget_without_a_pending_phase_l_disables_the_button_and_says_why():
    tuner = gate_tuner.GateTuner([0.5, 1.5, 2.5], gate=2.0)
    note = "This run has no phase L left to train"
    box = gate_tuner.build_gate_widget(tuner, on_apply=None, note=note)
    _, slider, readout, button, status = box.children
    assert button.disabled and button.tooltip == note and status.value == note
    slider.value = 1.0
    assert readout.value.startswith("gate 1.000: 1/3 selected")  # exploring still works


def _state(**changes):
    state = {
        "mode": "lgl",
        "status": "running",
        "iteration": 1,
        "phase": "T",
        "gate": None,
        "params": {"max_iterations": 2},
    }
    return {**state, **changes}


@pytest.mark.parametrize(
    "state, pending, words",
    [
        (_state(status="paused_before_gate", phase="L"), True, "paused before phase L of iteration 1"),
        (_state(), True, "phase L of iteration 1, which has not started"),
        (_state(phase="L", gate=3.0), True, "phase L of iteration 2"),
        (_state(phase="done", status="done"), False, "no phase L left"),
        (_state(phase="L", gate=3.0, iteration=2), False, "pause_before_gate = True"),
    ],
)
def test_button_state_says_whether_a_gate_reaches_a_training(state, pending, words):
    can_apply, note = gate_tuner.button_state(state)
    assert can_apply is pending and words in note
