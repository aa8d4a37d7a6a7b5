"""The gate tuner of notebook 04: how many samples a gate keeps and how reliable their pseudo labels are.

:class:`GateTuner` holds the state and the callback logic, free of widgets (testable without a
browser); :func:`plot_loss_histogram` draws the losses with the gate as a line;
:func:`build_gate_widget` wraps both in ipywidgets; :func:`stage2_gate_tuner` starts a tuner on a
Stage II run at the gate its next phase L would use.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lgl_helpers.config import check_gate
from lgl_helpers.core.gate import auto_gate, check_losses
from lgl_helpers.training.stage2 import (
    LGLConfig,
    latest_epoch_losses,
    next_gate_iteration,
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

    def text(self) -> str:
        parts = [
            f"gate {self.gate:.3f}: {self.n_selected}/{self.n_total} selected ({100 * self.fraction_selected:.1f} %)"
        ]
        if self.precision_selected is not None or self.precision_rejected is not None:
            parts.append(
                f"pseudo-label precision selected {_percent(self.precision_selected)}, "
                f"rejected {_percent(self.precision_rejected)}"
            )
        return "; ".join(parts)


class GateTuner:
    """The gate tuner's state and callback logic, free of widgets.

    per_sample_loss: (N,) one epoch's losses. reliable: optional (N,) bool, True where the sample's
    pseudo label equals the majority true speaker of its cluster (analysis only). ``gate``: the
    starting value: the one training would use (:func:`stage2_gate_tuner` resolves it).
    """

    def __init__(self, per_sample_loss, reliable=None, *, gate: float):
        self.per_sample_loss = check_losses(per_sample_loss)
        if reliable is not None:
            reliable = np.asarray(reliable).ravel()
            if reliable.shape != self.per_sample_loss.shape:
                raise ValueError(
                    f"reliable has shape {reliable.shape}, per_sample_loss has {self.per_sample_loss.shape}"
                )
            reliable = reliable.astype(bool)
        self.reliable = reliable
        self.gate = check_gate(gate)
        self.applied: list[float] = []

    def slider_range(self) -> tuple[float, float, float]:
        """(min, max, step) for a slider: 0 to just beyond the largest loss, 400 steps."""
        top = float(self.per_sample_loss.max()) * 1.02 + 1e-6
        top = max(top, self.gate)
        return 0.0, top, top / 400

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
        return plot_loss_histogram(self.per_sample_loss, gate=self.gate, reliable=self.reliable, title=title)


def plot_loss_histogram(
    per_sample_loss, gate: float | None = None, reliable=None, bins: int = 80, ax=None, title: str | None = None
) -> Figure:
    """Histogram of one epoch's per-sample losses with a vertical line at ``gate``.

    per_sample_loss: (N,). reliable: optional (N,) bool; when given, the bars are stacked into
    reliable / unreliable pseudo labels. Returns the matplotlib Figure (not displayed).
    """
    losses = check_losses(per_sample_loss)
    if ax is None:
        fig = Figure(figsize=(7, 3.6))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    top = float(losses.max())
    edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
    if reliable is None:
        ax.hist(losses, bins=edges, color="tab:blue", alpha=0.8, label="samples")
    else:
        reliable = np.asarray(reliable, dtype=bool).ravel()
        ax.hist(
            [losses[reliable], losses[~reliable]],
            bins=edges,
            stacked=True,
            color=["tab:green", "tab:red"],
            alpha=0.8,
            label=["pseudo label = cluster majority", "pseudo label ≠ majority"],
        )
    if gate is not None:
        kept = float((losses <= gate).mean())
        ax.axvline(
            gate, color="black", linestyle="--", linewidth=1.5, label=f"gate {gate:.2f} keeps {100 * kept:.1f} %"
        )
    ax.set_xlabel("per-sample AAM-softmax loss")
    ax.set_ylabel("samples")
    ax.set_title(title or "per-sample loss histogram")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    """PNG bytes of a Figure (for an ipywidgets Image, which needs no display call to update)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def build_gate_widget(tuner: GateTuner, on_apply: Callable[[float], object], title: str | None = None):
    """ipywidgets box: histogram image, gate slider, readout, and an "apply" button.

    Moving the slider calls :meth:`GateTuner.set_gate` and redraws; the button calls
    :meth:`GateTuner.apply` with ``on_apply`` and shows its return value. Returns the VBox;
    its children are (image, slider, readout, button, status) for callers and tests.
    """
    import ipywidgets as widgets

    low, high, step = tuner.slider_range()
    image = widgets.Image(value=figure_png(tuner.figure(title)), format="png")
    slider = widgets.FloatSlider(
        value=tuner.gate,
        min=low,
        max=high,
        step=step,
        description="gate",
        continuous_update=False,
        readout_format=".3f",
        layout=widgets.Layout(width="600px"),
    )
    readout = widgets.HTML(value=tuner.summary().text())
    button = widgets.Button(description="use this gate", button_style="primary")
    status = widgets.HTML(value="")

    def on_slide(change):
        readout.value = tuner.set_gate(change["new"]).text()
        image.value = figure_png(tuner.figure(title))

    def on_click(_button):
        result = tuner.apply(on_apply)
        status.value = f"applied gate {tuner.gate:.3f}" + (f": {result}" if result is not None else "")

    slider.observe(on_slide, names="value")
    button.on_click(on_click)
    return widgets.VBox([image, slider, readout, button, status])


def stage2_gate_tuner(stage_dir: str | Path, config: LGLConfig) -> tuple[GateTuner, str]:
    """A :class:`GateTuner` on the latest epoch's per-sample losses of a Stage II run, and a figure title.

    The starting gate is the one the next pending phase L will use
    (:func:`lgl_helpers.training.stage2.resolve_gate`, the engine's rule and seed; ``"auto"`` on the
    latest epoch's losses); with no pending phase L, the latest epoch's gate, else the automatic gate.
    """
    latest = latest_epoch_losses(stage_dir)
    if latest is None:
        raise ValueError(f"{stage_dir}: no Stage II epoch has been trained yet; run the training cell first")
    target = next_gate_iteration(read_state(stage_dir))
    if target is not None:
        start, _ = resolve_gate(stage_dir, config, target, lambda: latest["per_sample_loss"])
    elif latest["gate"] is not None:
        start = float(latest["gate"])
    else:
        start = auto_gate(latest["per_sample_loss"], seed=config.seed)
    tuner = GateTuner(latest["per_sample_loss"], latest.get("reliable"), gate=start)
    title = f"iteration {latest['iteration']}, phase {latest['phase']}, epoch {latest['epoch']}" + (
        f" → gate for iteration {target}" if target is not None else ""
    )
    return tuner, title
