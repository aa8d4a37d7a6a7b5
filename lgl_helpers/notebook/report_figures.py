"""Figures of notebook 05 (the run report): test EER by system (with its interval), Stage II EER per
epoch, NMI per iteration, and the DET curves of every system on each evaluated list.

Each function takes the dict of :func:`lgl_helpers.app.report.collect_report` and returns a plain
matplotlib Figure (not registered with pyplot); the report saves them as PNGs, the notebook shows them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import DetCurveDisplay

from lgl_helpers.core.score_norm import METHOD_LABELS
from lgl_helpers.notebook.stage2_curves import stage1_line_label

SYSTEM_KEYS = ("stage1", "baseline", "lgl")
STAGE2_COLORS = (("baseline", "#dd8452"), ("lgl", "#55a868"))
SYSTEM_COLORS = {"stage1": "#4c72b0", "baseline": "#dd8452", "lgl": "#55a868"}
SYSTEM_NAMES = {"stage1": "Stage I", "baseline": "baseline", "lgl": "LGL"}
DET_STYLES = {"raw": "-", "asnorm": "--"}  # mean subtraction is in the tables, not drawn: the plot stays legible


def plot_eer_by_system(report: dict[str, Any]) -> Figure:
    """Bar chart of the test EER of each system that ran, with its bootstrap interval (``eer_ci``) where
    the report has one."""
    labels, values, intervals = [], [], []
    stage1 = report.get("stage1")
    if stage1 and stage1.get("untrained_eer") is not None:
        labels.append("untrained")
        values.append(stage1["untrained_eer"])
        intervals.append(None)
    for key in SYSTEM_KEYS:
        if report.get(key) and report[key].get("eer") is not None:
            labels.append(key)
            values.append(report[key]["eer"])
            intervals.append(report[key].get("eer_ci"))
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.bar(labels, values, color=["#999999", "#4c72b0", "#dd8452", "#55a868"][-len(values) :])
    with_ci = [i for i, interval in enumerate(intervals) if interval is not None]
    if with_ci:
        # yerr: (2, n) distances below and above each bar's EER
        below = [values[i] - intervals[i][0] for i in with_ci]
        above = [intervals[i][1] - values[i] for i in with_ci]
        ax.errorbar(with_ci, [values[i] for i in with_ci], yerr=[below, above], fmt="none", ecolor="black", capsize=4)
    for i, value in enumerate(values):
        # the value above the bar, or above its interval's whisker
        top = value if intervals[i] is None else intervals[i][1]
        ax.annotate(f"{value:.1f}", (i, top), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom")
    ax.margins(y=0.15)
    confidence = (report.get("bootstrap") or {}).get("confidence")
    ax.set_ylabel("EER (%)")
    ax.set_title(f"Test EER by system ({confidence * 100:g} % CI)" if with_ci and confidence else "Test EER by system")
    fig.tight_layout()
    return fig


# Baseline wide and pale underneath, LGL narrow on top: LGL's phase T repeats the baseline's epochs
# (same seed, same clustering), and drawn alike the first curve would hide under the second.
_STAGE2_STYLES = {"baseline": {"linewidth": 5.0, "alpha": 0.45, "zorder": 2}, "lgl": {"linewidth": 1.4, "zorder": 3}}


def plot_stage2_curves(report: dict[str, Any]) -> Figure:
    """Validation EER per Stage II epoch (run order) for baseline and LGL: one line per phase of an
    iteration, phase T circles and phase L squares, a vertical line where each phase L starts, and
    Stage I's EER on the same validation trials dotted."""
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.subplots()
    for key, color in STAGE2_COLORS:
        evaluations = (report.get(key) or {}).get("evaluations", [])
        if not evaluations:
            continue
        steps = np.arange(1, len(evaluations) + 1)
        eers = np.array([e["eer"] for e in evaluations], dtype=float)
        segments = [(e["iteration"], e.get("phase", "T")) for e in evaluations]
        for n, segment in enumerate(dict.fromkeys(segments)):
            mask = np.array([s == segment for s in segments])
            ax.plot(
                steps[mask], eers[mask], color=color, label=SYSTEM_NAMES[key] if n == 0 else None, **_STAGE2_STYLES[key]
            )
        for phase, marker in (("T", "o"), ("L", "s")):
            mask = np.array([s[1] == phase for s in segments])
            if mask.any():
                ax.scatter(
                    steps[mask],
                    eers[mask],
                    marker=marker,
                    s=16 if key == "lgl" else 36,
                    color=color,
                    zorder=_STAGE2_STYLES[key]["zorder"],
                    alpha=_STAGE2_STYLES[key].get("alpha", 1.0),
                )
        for step, (previous, current) in enumerate(zip(segments, segments[1:]), start=1):
            if current[0] != previous[0]:
                ax.axvline(step + 0.5, color="black", alpha=0.4, linestyle="--", linewidth=0.8)
            elif current[1] == "L" and previous[1] != "L":
                ax.axvline(step + 0.5, color=color, linestyle="-.", linewidth=1.0)
                ax.annotate(
                    f"phase L starts (it {current[0]})",
                    (step + 0.6, 0.98),
                    xycoords=("data", "axes fraction"),
                    va="top",
                    fontsize=7,
                    color=color,
                )
    val_eer = (report.get("stage1") or {}).get("val_eer")
    if val_eer is not None:
        ax.axhline(val_eer, color=SYSTEM_COLORS["stage1"], linestyle=":", label=stage1_line_label(val_eer))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Stage II epoch (run order; dashed lines separate iterations)")
    ax.set_ylabel("validation EER (%)")
    ax.set_title("Stage II validation EER (circles: phase T, squares: phase L)", fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # nothing ran: no empty legend
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def plot_nmi(report: dict[str, Any]) -> Figure:
    """NMI of the pseudo labels per clustering iteration, for each Stage II mode."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for key, color in STAGE2_COLORS:
        points = [c for c in report["clustering"] if c["mode"] == key and c["nmi"] is not None]
        if points:
            ax.plot([p["iteration"] for p in points], [p["nmi"] for p in points], marker="o", color=color, label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("NMI")
    if ax.get_legend_handles_labels()[0]:  # nothing ran: no empty legend
        ax.legend()
    fig.tight_layout()
    return fig


def plot_det(report: dict[str, Any]) -> Figure:
    """DET curves (probit axes, scikit-learn's :class:`~sklearn.metrics.DetCurveDisplay`): one panel per
    evaluated list, every system on it, raw scores solid and AS-norm dashed; the diagonal marks
    FPR = FNR, where each curve crosses it at its EER."""
    det = (report.get("eval") or {}).get("det") or {}
    names = list(det) or ["no lists"]
    fig = Figure(figsize=(4.2 * len(names), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        curves = det.get(name, {})
        for key in SYSTEM_KEYS:
            for variant, style in DET_STYLES.items():
                points = curves.get(key, {}).get(variant)
                if points is None:
                    continue
                label = SYSTEM_NAMES[key] + ("" if variant == "raw" else f", {METHOD_LABELS[variant]}")
                display = DetCurveDisplay(fpr=np.asarray(points["fpr"]), fnr=np.asarray(points["fnr"]))
                display.plot(ax=ax, name=label, color=SYSTEM_COLORS[key], linestyle=style)
        ax.plot([-3, 3], [-3, 3], color="#999999", linewidth=0.8, linestyle=":")
        ax.set(xlabel="false accept rate", ylabel="false reject rate", title=f"DET: {name}")
        if not curves:
            ax.text(0, 0, "no per-trial scores of several lists", ha="center", va="center")
        elif ax.get_legend() is not None:
            ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig


def report_figures(report: dict[str, Any]) -> dict[str, Figure]:
    """The report's figures by file stem: ``det``, ``eer_by_system``, ``nmi_per_iteration``, ``stage2_eer``."""
    return {
        "eer_by_system": plot_eer_by_system(report),
        "nmi_per_iteration": plot_nmi(report),
        "stage2_eer": plot_stage2_curves(report),
        "det": plot_det(report),
    }
