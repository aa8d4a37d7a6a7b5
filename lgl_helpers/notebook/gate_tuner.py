"""The gate tuner of notebook 04: how many samples a gate keeps and how reliable their pseudo labels are.

:class:`GateTuner` holds the state and the callback logic, free of widgets (testable without a
browser); :func:`plot_loss_histogram` draws the losses with the gate as a line; :class:`TunerFigure`
redraws only that line when the gate moves; :func:`build_gate_widget` wraps them in ipywidgets;
:func:`stage2_gate_tuner` starts a tuner on a Stage II run at the gate its next phase L would use and
:func:`button_state` says whether a gate set now reaches a training.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image  # a dependency of matplotlib

from lgl_helpers.config import check_gate
from lgl_helpers.core.gate import auto_gate, check_losses
from lgl_helpers.training.stage2 import (
    LGLConfig,
    gate_losses_record,
    latest_epoch_losses,
    next_gate_iteration,
    read_epoch_losses,
    read_state,
    resolve_gate,
)


def _percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.1f} %"


@dataclass(frozen=True)
class GateSummary:
    """What a gate does to one epoch's samples.

    ``precision_*`` are the fractions of pseudo labels that agree with their cluster's majority
    speaker among the kept / dropped samples (None without speaker ids or when the group is empty).
    """

    gate: float
    n_total: int
    n_selected: int
    precision_selected: float | None
    precision_rejected: float | None

    @property
    def fraction_selected(self) -> float:
        return self.n_selected / self.n_total

    def warning(self) -> str | None:
        """A sentence when the gate keeps less reliable labels than it drops (LGL then removes the wrong ones)."""
        if self.precision_selected is None or self.precision_rejected is None:
            return None
        if self.precision_selected >= self.precision_rejected:
            return None
        return (
            f"the kept pseudo labels are less reliable than the dropped ones ({_percent(self.precision_selected)} "
            f"vs {_percent(self.precision_rejected)}): at this epoch a low loss does not mark a reliable label"
        )

    def text(self) -> str:
        """The readout, in the words of the gate evidence table and the report (kept / dropped, reliable, %)."""
        parts = [f"gate {self.gate:.4f}: {self.n_selected}/{self.n_total} kept ({100 * self.fraction_selected:.1f} %)"]
        if self.precision_selected is not None or self.precision_rejected is not None:
            parts.append(
                f"reliable among kept {_percent(self.precision_selected)}, "
                f"among dropped {_percent(self.precision_rejected)}"
            )
        warning = self.warning()
        if warning:
            parts.append(f"warning: {warning}")
        return "; ".join(parts)


def _nice_step(span: float, n_steps: int = 400) -> float:
    """The smallest 1, 2 or 5 × 10^k that is at least ``span / n_steps``."""
    raw = max(span / n_steps, 1e-9)
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


def loss_axis_top(losses: np.ndarray, gate: float | None = None) -> float:
    """The right end of a loss histogram's x axis: past the bulk of the losses (115 % of the 99th
    percentile), not the largest one, whose long tail would leave most of the axis empty; always
    beyond ``gate``. Losses above it are counted in the last bar."""
    largest = float(losses.max()) * 1.02 + 1e-6
    top = min(largest, max(float(np.quantile(losses, 0.99)) * 1.15, 1e-3))
    return max(top, 1.05 * gate + 1e-6) if gate is not None else top


class GateTuner:
    """The gate tuner's state and callback logic, free of widgets.

    per_sample_loss: (N,) one epoch's losses. reliable: optional (N,) bool, True where the sample's
    pseudo label equals the majority true speaker of its cluster (analysis only). ``gate``: the
    starting value: the one training used or will use (:func:`stage2_gate_tuner` resolves it); the
    slider's grid passes through it exactly and the figures mark it, named by ``gate_label``.
    """

    def __init__(self, per_sample_loss, reliable=None, *, gate: float, gate_label: str = "the run's gate"):
        self.per_sample_loss = check_losses(per_sample_loss)
        if reliable is not None:
            reliable = np.asarray(reliable).ravel()
            if reliable.shape != self.per_sample_loss.shape:
                raise ValueError(
                    f"reliable has shape {reliable.shape}, per_sample_loss has {self.per_sample_loss.shape}"
                )
            reliable = reliable.astype(bool)
        self.reliable = reliable
        self.gate = self.start = check_gate(gate)
        self.gate_label = gate_label
        self.applied: list[float] = []

    def slider_range(self) -> tuple[float, float, float]:
        """(min, max, step) for a slider: about 400 steps of a round size from just above 0 to
        :func:`loss_axis_top`, laid so that the starting gate is one of them (a slider snaps to
        min + k × step: it could otherwise not show the gate the run uses); the histogram's x axis
        spans the same range."""
        step = _nice_step(loss_axis_top(self.per_sample_loss, self.start))
        low = self.start - math.floor(self.start / step + 1e-9) * step  # in [0, step)
        top = loss_axis_top(self.per_sample_loss, self.start)
        return low, low + math.ceil((top - low) / step - 1e-9) * step, step

    def on_grid(self, gate: float) -> float:
        """``gate`` moved to the slider's nearest step, within its range; the starting gate exactly."""
        low, high, step = self.slider_range()
        moved = min(high, max(low, low + round((gate - low) / step) * step))
        return self.start if abs(moved - self.start) < 1e-6 * step else moved

    def summary(self, gate: float | None = None) -> GateSummary:
        gate = self.gate if gate is None else float(gate)
        selected = self.per_sample_loss <= gate
        precision_selected = precision_rejected = None
        if self.reliable is not None:
            if selected.any():
                precision_selected = float(self.reliable[selected].mean())
            if (~selected).any():
                precision_rejected = float(self.reliable[~selected].mean())
        return GateSummary(gate, int(selected.size), int(selected.sum()), precision_selected, precision_rejected)

    def set_gate(self, gate: float) -> GateSummary:
        """Slider callback: move the gate and return the new readout."""
        self.gate = check_gate(gate)
        return self.summary()

    def apply(self, on_apply: Callable[[float], object]) -> object:
        """Button callback: hand the current gate to ``on_apply`` (e.g. write the engine's gate override)."""
        self.applied.append(self.gate)
        return on_apply(self.gate)

    def figure(self, title: str | None = None) -> Figure:
        """The static histogram at the current gate, on the slider's x range (what the widget shows),
        with the run's gate marked when the current one differs."""
        low, high, _ = self.slider_range()
        fig = plot_loss_histogram(
            self.per_sample_loss, gate=self.gate, reliable=self.reliable, title=title, xlim=(low, high)
        )
        if abs(self.gate - self.start) > 1e-12:
            ax = fig.axes[0]
            _mark_run_gate(ax, self.start, self.gate_label)
            ax.legend(loc="upper right", fontsize=8)
        return fig


def _gate_label(losses: np.ndarray, gate: float) -> str:
    return f"gate {gate:.4f} keeps {100 * float((losses <= gate).mean()):.1f} %"


def _mark_run_gate(ax, gate: float, label: str) -> None:
    """A dotted purple line at the gate the run uses (the dashed black one is the tuner's)."""
    ax.axvline(gate, color="tab:purple", linestyle=":", linewidth=1.6, label=f"{label} {gate:.4f}")


def _draw_histogram(ax, losses: np.ndarray, reliable, bins: int, xlim, title: str | None) -> None:
    """The bars of :func:`plot_loss_histogram` on ``ax``, labelled for its legend; losses beyond the x
    range are counted in its last bar (and the axis label says how many)."""
    low, top = (0.0, loss_axis_top(losses)) if xlim is None else (0.0, float(xlim[1]))
    edges = np.linspace(low, top if top > 0 else 1.0, bins + 1)
    beyond = int((losses > edges[-1]).sum())
    shown = np.minimum(losses, edges[-1])  # the tail in the last bar: every sample stays counted
    if reliable is None:
        ax.hist(shown, bins=edges, color="tab:blue", alpha=0.8, label="samples")
    else:
        reliable = np.asarray(reliable, dtype=bool).ravel()
        ax.hist(
            [shown[reliable], shown[~reliable]],
            bins=edges,
            stacked=True,
            color=["tab:green", "tab:red"],
            alpha=0.8,
            label=["reliable: pseudo label = cluster majority", "unreliable: pseudo label ≠ majority"],
        )
    ax.set_xlim(*(xlim if xlim is not None else (low, edges[-1])))
    tail = f" (last bar: {beyond} loss{'es' if beyond > 1 else ''} above {edges[-1]:.2f})" if beyond else ""
    ax.set_xlabel(f"per-sample AAM-softmax loss{tail}")
    ax.set_ylabel("samples")
    ax.set_title(title or "per-sample loss histogram")


def plot_loss_histogram(
    per_sample_loss,
    gate: float | None = None,
    reliable=None,
    bins: int = 80,
    ax=None,
    title: str | None = None,
    xlim: tuple[float, float] | None = None,
    mixture: dict | None = None,
    other_gate: tuple[str, float] | None = None,
) -> Figure:
    """Histogram of one epoch's per-sample losses with a vertical line at ``gate``.

    per_sample_loss: (N,). reliable: optional (N,) bool; when given, the bars are stacked into
    reliable / unreliable pseudo labels. ``xlim``: the x range (default: 0 to the largest loss).
    ``mixture``: a GMM gate's components on the log losses (``{"weights", "means", "stds"}``), drawn
    as their densities on the loss axis in samples per bin; ``other_gate``: (name, value) of a second
    threshold drawn dotted (e.g. the valley rule's beside the GMM's). Returns the matplotlib Figure
    (not displayed).
    """
    losses = check_losses(per_sample_loss)
    if xlim is None and gate is not None:
        xlim = (0.0, loss_axis_top(losses, gate))
    if ax is None:
        fig = Figure(figsize=(7, 3.6))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    _draw_histogram(ax, losses, reliable, bins, xlim, title)
    if mixture is not None:
        top = float(losses.max()) if xlim is None else float(xlim[1])
        x = np.linspace(top / 2000, top, 800)
        scale = losses.size * top / bins  # a density in samples per bin of the histogram
        for k, colour in enumerate(("darkgreen", "darkred")):
            w, m, sd = (mixture[key][k] for key in ("weights", "means", "stds"))
            # A Gaussian on log loss is a log-normal density on the loss.
            density = w * np.exp(-0.5 * ((np.log(x) - m) / sd) ** 2) / (x * sd * np.sqrt(2 * np.pi))
            ax.plot(x, scale * density, color=colour, linewidth=1.2, label=f"GMM component {k + 1} (weight {w:.2f})")
    if gate is not None:
        ax.axvline(gate, color="black", linestyle="--", linewidth=1.5, label=_gate_label(losses, gate))
    if other_gate is not None:
        ax.axvline(
            other_gate[1], color="grey", linestyle=":", linewidth=1.5, label=f"{other_gate[0]} {other_gate[1]:.2f}"
        )
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    """PNG bytes of a Figure (for an ipywidgets Image, which needs no display call to update)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


class TunerFigure:
    """The widget's histogram: drawn once, then only the gate line and the legend are redrawn.

    Blitting them onto the saved bars takes ~30 ms where a new figure takes ~300 ms, so the image
    keeps up with the slider. The layout is fixed (no tight_layout), so the axes stay where
    :meth:`axes_span_px` says and the slider can be placed under them.
    """

    # Shown as a 630 × 324 px image, drawn at SCALE times that so that it is sharp on HiDPI screens.
    WIDTH_IN, HEIGHT_IN, DPI, SCALE = 7.0, 3.6, 90, 2
    MARGINS = {"left": 0.09, "right": 0.98, "bottom": 0.15, "top": 0.91}

    def __init__(self, tuner: GateTuner, title: str | None = None, bins: int = 80):
        self.losses = tuner.per_sample_loss
        low, high, _ = tuner.slider_range()
        self.fig = Figure(figsize=(self.WIDTH_IN, self.HEIGHT_IN), dpi=self.DPI * self.SCALE)
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_subplot(1, 1, 1)
        self.fig.subplots_adjust(**self.MARGINS)
        _draw_histogram(self.ax, self.losses, tuner.reliable, bins, (low, high), title)
        _mark_run_gate(self.ax, tuner.start, tuner.gate_label)
        handles, labels = self.ax.get_legend_handles_labels()
        self.line = self.ax.axvline(tuner.gate, color="black", linestyle="--", linewidth=1.5, animated=True)
        self.legend = self.ax.legend(
            handles=[*handles, self.line], labels=[*labels, "gate"], loc="upper right", fontsize=8
        )
        self.legend.set_animated(True)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)

    @property
    def size_px(self) -> tuple[int, int]:
        """(width, height) the image is shown at, in CSS pixels (the PNG has SCALE times as many)."""
        width, height = self.canvas.get_width_height()
        return round(width / self.SCALE), round(height / self.SCALE)

    def axes_span_px(self) -> tuple[float, float]:
        """Left and right edge of the axes, in CSS pixels from the image's left edge: where the x
        range's ends (the slider's min and max) are drawn."""
        box = self.ax.get_position()
        width = self.size_px[0]
        return box.x0 * width, box.x1 * width

    def png(self, gate: float) -> bytes:
        """The histogram with the gate line at ``gate``, as PNG bytes."""
        self.canvas.restore_region(self.background)
        self.line.set_xdata([gate, gate])
        self.legend.get_texts()[-1].set_text(_gate_label(self.losses, gate))
        self.ax.draw_artist(self.line)
        self.ax.draw_artist(self.legend)
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(self.canvas.buffer_rgba())).save(buffer, format="png", compress_level=1)
        return buffer.getvalue()


# ipywidgets 8's horizontal slider without a description, measured in JupyterLab 4 (tests/test_browser.py
# checks it): its track starts this many pixels right of the widget's left edge and ends this many
# pixels left of its right edge (the readout box and the margins around it).
_SLIDER_TRACK_LEFT_PX = 4
_SLIDER_TRACK_RIGHT_PX = 84


def build_gate_widget(
    tuner: GateTuner, on_apply: Callable[[float], object] | None, title: str | None = None, note: str = ""
):
    """ipywidgets box: histogram image, gate slider, readout, an "apply" button and its status line.

    Moving the slider calls :meth:`GateTuner.set_gate`, redraws the gate line and updates the readout;
    the button calls :meth:`GateTuner.apply` with ``on_apply`` and shows the message it returns.
    ``on_apply=None``: nothing can take a gate now, the button is disabled. ``note``: what the button
    does (or why it is disabled), shown until it is pressed. The tuner's gate is moved to the nearest
    step of the slider first (the run's gate is one of its steps). Returns the VBox; its children are
    (image, slider, readout, button, status) for callers and tests.
    """
    import ipywidgets as widgets

    low, high, step = tuner.slider_range()
    # The browser snaps a slider's value to its grid and sends it back; snapping here first keeps the
    # readout, the image and a pressed button on the value the slider shows.
    tuner.set_gate(tuner.on_grid(tuner.gate))
    drawing = TunerFigure(tuner, title)
    width, height = drawing.size_px
    left, right = drawing.axes_span_px()
    # Shown at its own size: stretched to the cell it would push the button below the fold and
    # no longer line up with the slider.
    image = widgets.Image(
        value=drawing.png(tuner.gate), format="png", layout=widgets.Layout(width=f"{width}px", height=f"{height}px")
    )
    slider = widgets.FloatSlider(
        value=tuner.gate,
        min=low,
        max=high,
        step=step,
        description="",
        continuous_update=True,  # the frontend sends the next value only once the kernel is idle again
        readout_format=".4f",
        layout=widgets.Layout(
            width=f"{right - left + _SLIDER_TRACK_LEFT_PX + _SLIDER_TRACK_RIGHT_PX:.0f}px",
            margin=f"0 0 0 {left - _SLIDER_TRACK_LEFT_PX:.0f}px",
        ),
    )
    text_layout = widgets.Layout(max_width=f"{width + _SLIDER_TRACK_RIGHT_PX}px")  # lines as wide as the figure
    readout = widgets.HTML(value=_readout_html(tuner.summary()), layout=text_layout)
    button = widgets.Button(
        description="use this gate",
        button_style="primary",
        disabled=on_apply is None,
        tooltip=note if on_apply is None else "make the slider's value the gate of the next phase L",
    )
    status = widgets.HTML(value=note, layout=text_layout)

    def on_slide(change):
        summary = tuner.set_gate(tuner.on_grid(change["new"]))
        # Image before readout: both then change on screen together.
        image.value = drawing.png(summary.gate)
        readout.value = _readout_html(summary)

    def on_click(_button):
        status.value = str(tuner.apply(on_apply))

    slider.observe(on_slide, names="value")
    if on_apply is not None:
        button.on_click(on_click)
    return widgets.VBox([image, slider, readout, button, status])


def _readout_html(summary: GateSummary) -> str:
    warning = summary.warning()
    head = summary.text().split("; warning: ")[0]
    return head + (f'<br><b style="color:#b00">warning:</b> {warning}' if warning else "")


def button_state(state: dict) -> tuple[bool, str]:
    """Whether a gate chosen now reaches a training of this Stage II run (``state.json``'s content),
    and the sentence that says so under the button."""
    target = next_gate_iteration(state)
    if target is None:
        return False, (
            "This run has no phase L left to train, so the tuner only shows what a gate would have kept. "
            "To choose a gate before phase L trains, start a run with pause_before_gate = True."
        )
    if state.get("status") == "paused_before_gate" and state["phase"] == "L" and state["iteration"] == target:
        return True, (
            f"The run is paused before phase L of iteration {target}: "
            '"use this gate" makes the slider\'s value its gate; then run the training cell again.'
        )
    return True, (
        f'"use this gate" sets the gate of phase L of iteration {target}, which has not started yet. '
        "A training that is running does not wait for it unless pause_before_gate = True."
    )


def stage2_gate_tuner(stage_dir: str | Path, config: LGLConfig) -> tuple[GateTuner, str]:
    """A :class:`GateTuner` on a Stage II run's per-sample losses, and a figure title.

    When phase T of the iteration whose gate is pending has finished, the losses are those its gate
    is chosen from (its best T epoch, :func:`lgl_helpers.training.stage2.gate_losses_record`); after
    a phase L gated on a clean pass (``gate_losses="clean"``), that pass's losses, by which it kept
    its samples; otherwise the latest epoch's. The starting gate is the one the next pending phase L
    will use (:func:`lgl_helpers.training.stage2.resolve_gate`, the engine's rule and seed); with no
    pending phase L, the shown epoch's gate, else the automatic gate.
    """
    latest = latest_epoch_losses(stage_dir)
    if latest is None:
        raise ValueError(f"{stage_dir}: no Stage II epoch has been trained yet; run the training cell first")
    state = read_state(stage_dir)
    target = next_gate_iteration(state)
    record, gate = None, None
    if target is not None and state["phase"] == "L" and state["iteration"] == target:
        record = gate_losses_record(state, target)
    elif latest["phase"] == "L":
        chosen_on = gate_losses_record(state, latest["iteration"])
        if chosen_on["losses_source"] == "clean":  # phase L kept its samples by these, not its own losses
            record, gate = chosen_on, latest["gate"]
    if record is not None:
        latest = read_epoch_losses(Path(stage_dir) / record["losses"])
        latest.update({key: record[key] for key in ("iteration", "phase", "epoch")}, gate=gate)
    if target is not None:
        start, _ = resolve_gate(stage_dir, config, target, lambda: latest["per_sample_loss"])
    elif latest["gate"] is not None:
        start = float(latest["gate"])
    else:
        start = auto_gate(latest["per_sample_loss"], seed=config.seed)
    label = f"gate phase L of iteration {target} will use" if target is not None else "gate phase L used"
    tuner = GateTuner(latest["per_sample_loss"], latest.get("reliable"), gate=start, gate_label=label)
    clean = record is not None and record["losses_source"] == "clean"
    title = f"iteration {latest['iteration']}, phase {latest['phase']}, epoch {latest['epoch']}"
    title += (" (clean pass)" if clean else "") + (f" → gate for iteration {target}" if target is not None else "")
    return tuner, title
