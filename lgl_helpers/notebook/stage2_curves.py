"""Training curves of a Stage II run, redrawn after every epoch while notebooks 03 and 04 train.

Like notebook 01's Stage I curves: training loss, accuracy and validation EER per epoch; in LGL mode
also the gate and the fraction of samples it keeps. Epochs are in run order (iteration by iteration,
phase T then L; dashed lines separate iterations). The Figure is not registered with pyplot, so a
display handle can replace it after every epoch without piling figures up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def stage1_line_label(stage1_val_eer: float) -> str:
    """The legend of the dotted Stage I line: validation against validation, never the test EER."""
    return f"Stage I, same validation trials ({stage1_val_eer:.2f} %)"


_PHASES = (("T", "o", "tab:blue", "phase T (all samples)"), ("L", "s", "tab:green", "phase L (gated)"))


def _run_order(ax, history: Sequence[dict], values: Sequence[float | None], label_phases: bool) -> None:
    """``values`` (one per history record, None = not measured) against the run-order epoch, one line
    per phase of an iteration (phase L restarts from the best T epoch), T and L marked."""
    steps = np.arange(1, len(history) + 1)
    y = np.array([np.nan if v is None else v for v in values], dtype=float)
    segment = [(rec["iteration"], rec["phase"]) for rec in history]
    for key in dict.fromkeys(segment):
        mask = np.array([s == key for s in segment], dtype=bool)
        ax.plot(steps[mask], y[mask], color="0.6", linewidth=1)
    for phase, marker, color, label in _PHASES:
        mask = np.array([rec["phase"] == phase for rec in history], dtype=bool)
        if mask.any():
            ax.scatter(
                steps[mask], y[mask], marker=marker, color=color, s=18, zorder=3, label=label if label_phases else None
            )
    for i in range(1, len(history)):
        if history[i]["iteration"] != history[i - 1]["iteration"]:
            ax.axvline(i + 0.5, color="black", linestyle="--", linewidth=0.8, alpha=0.6)


def plot_training_curves(
    history: Sequence[dict], mode: str, stage1_val_eer: float | None = None, title: str | None = None
) -> Figure:
    """Loss, accuracy and validation EER per Stage II epoch; for ``mode == "lgl"`` also the kept fraction and gate.

    ``history``: ``state["history"]`` (records with ``iteration``, ``phase``, ``epoch``, ``loss``,
    ``accuracy``, ``eer``, ``fraction_selected``, ``gate``); empty draws empty axes (before the first
    epoch). ``stage1_val_eer``: the Stage I model's EER on the same validation trials, drawn dotted. Returns the Figure (not displayed).
    """
    lgl = mode == "lgl"
    fig = Figure(figsize=(11, 6.0) if lgl else (12, 3.2))
    axes = list(fig.subplots(2, 2).ravel() if lgl else fig.subplots(1, 3))
    _run_order(axes[0], history, [r["loss"] for r in history], label_phases=True)
    axes[0].set_title("training loss (AAM-softmax, kept samples)")
    _run_order(axes[1], history, [r["accuracy"] for r in history], label_phases=False)
    axes[1].set_title("training accuracy on pseudo labels (%)")
    _run_order(axes[2], history, [r["eer"] for r in history], label_phases=False)
    axes[2].set_title("validation EER (%)")
    if history:
        best = int(np.argmin([r["eer"] for r in history]))
        axes[2].scatter(
            [best + 1],
            [history[best]["eer"]],
            s=120,
            facecolors="none",
            edgecolors="black",
            label=f"best: it {history[best]['iteration']} {history[best]['phase']} epoch {history[best]['epoch']}",
        )
    if stage1_val_eer is not None:
        axes[2].axhline(stage1_val_eer, color="tab:red", linestyle=":", label=stage1_line_label(stage1_val_eer))
    if lgl:
        kept = axes[3]
        _run_order(kept, history, [100 * r["fraction_selected"] for r in history], label_phases=False)
        kept.set_title("kept by the gate (%), gate (right axis)")
        kept.set_ylim(0, 105)
        gated = [(i + 1, r["gate"]) for i, r in enumerate(history) if r["gate"] is not None]
        if gated:
            gate_ax = kept.twinx()
            gate_ax.plot(*zip(*gated), color="black", linestyle="none", marker="_", markersize=12, label="gate")
            gate_ax.set_ylabel("gate")
            gate_ax.set_ylim(bottom=0)
            gate_ax.legend(fontsize=8, loc="lower right")
    for ax in axes:
        ax.set_xlabel("Stage II epoch (run order)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if history:
        last = history[-1]
        gate = (
            "" if last["gate"] is None else f", gate {last['gate']:.3f} keeps {100 * last['fraction_selected']:.1f} %"
        )
        status = f"latest: iteration {last['iteration']}, phase {last['phase']}, epoch {last['epoch']}{gate}"
    else:
        status = "waiting for the first epoch"
    fig.suptitle(f"{title or f'Stage II {mode}'} · {status}")
    fig.tight_layout()
    return fig
