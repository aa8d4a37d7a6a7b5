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
    # the words and units of the gate evidence table and the report
    assert summary.text() == "gate 1.0000: 4/8 kept (50.0 %); reliable among kept 75.0 %, among dropped 25.0 %"

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
    assert 0.0 <= low < step and high > 2.5 and step > 0
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
    assert "kept" in readout.value

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


def test_the_slider_can_sit_on_the_gate_the_run_uses():
    # 2.8722 is no multiple of the slider's round step: the grid is laid through it instead.
    losses, reliable = _bimodal(300, 100, seed=3)
    tuner = gate_tuner.GateTuner(losses, reliable, gate=2.8722)
    low, high, step = tuner.slider_range()
    assert step in (0.01, 0.02, 0.05) and 0.0 <= low < step
    assert (2.8722 - low) / step == pytest.approx(round((2.8722 - low) / step), abs=1e-9)
    assert tuner.on_grid(2.8722) == 2.8722 and tuner.on_grid(2.8722 + 0.4 * step) == 2.8722
    assert tuner.on_grid(2.8722 + 0.6 * step) == pytest.approx(2.8722 + step)
    assert tuner.on_grid(99.0) == high and tuner.on_grid(-1.0) == low
    box = gate_tuner.build_gate_widget(tuner, on_apply=None)
    _, slider, readout, _, _ = box.children
    assert slider.value == 2.8722 and readout.value.startswith("gate 2.8722:")
    # The readout at the run's gate is the gate evidence table's row: the same losses, the same gate.
    kept = losses <= 2.8722
    assert f"({100 * kept.mean():.1f} %)" in readout.value
    assert f"reliable among kept {100 * reliable[kept].mean():.1f} %" in readout.value
    # A starting gate above every loss widens the range to include it.
    assert gate_tuner.GateTuner([0.5, 1.0], gate=40.0).slider_range()[1] >= 40.0


def test_the_axis_ends_past_the_bulk_of_the_losses_not_at_the_largest():
    # 99 % of the losses below 9, a few up to 16: the axis must not leave half the track empty.
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.exponential(1.5, 990).clip(max=8.9), np.linspace(10.0, 16.35, 10)])
    top = gate_tuner.loss_axis_top(losses, gate=2.0)
    assert np.quantile(losses, 0.99) < top < 13.0
    ax = gate_tuner.plot_loss_histogram(losses, gate=2.0).axes[0]
    assert ax.get_xlim()[1] == pytest.approx(top)
    assert sum(patch.get_height() for patch in ax.patches) == pytest.approx(losses.size)  # the tail in the last bar
    assert "last bar:" in ax.get_xlabel() and "above" in ax.get_xlabel()
    assert gate_tuner.GateTuner(losses, gate=2.0).slider_range()[1] == pytest.approx(top, abs=0.05)


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
    scale = drawing.SCALE  # the PNG is drawn at twice the size it is shown at (HiDPI)
    from PIL import Image

    assert Image.open(io.BytesIO(drawing.png(3.0))).size == (630 * scale, 324 * scale)
    low, high, _ = tuner.slider_range()
    left, right = drawing.axes_span_px()
    for gate in (1.0, 6.5, 10.0):
        expected = left + (gate - low) / (high - low) * (right - left)
        assert abs(_gate_column(drawing.png(gate), left * scale, right * scale) / scale - expected) <= 1.5
    # Redrawing only the line leaves no trace of the earlier lines: the same picture as a new drawing's.
    again = gate_tuner.TunerFigure(gate_tuner.GateTuner(losses, reliable, gate=3.0), "t")
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
    slider.value = 3.0 + 20 * slider.step
    gate = 3.0 + 20 * slider.step
    assert readout.value.startswith(f"gate {gate:.4f}:")
    button.click()
    assert status.value == f"gate {gate:.3f} will be used"  # the message as the callback wrote it, nothing prefixed


def test_widget_without_a_pending_phase_l_disables_the_button_and_says_why():
    tuner = gate_tuner.GateTuner([0.5, 1.5, 2.5], gate=2.0)
    note = "This run has no phase L left to train"
    box = gate_tuner.build_gate_widget(tuner, on_apply=None, note=note)
    _, slider, readout, button, status = box.children
    assert button.disabled and button.tooltip == note and status.value == note
    slider.value = 1.0
    assert readout.value.startswith("gate ") and ": 1/3 kept" in readout.value  # exploring still works


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
