"""Notebook 03 / 04 figures and table of a Stage II run (plain matplotlib ``Figure`` objects, no pyplot).

Inputs are the run's ``state.json`` / ``metrics.json`` contents: ``history`` = ``state["history"]``,
``iterations`` = ``metrics["iterations"]`` or ``state["iterations"]``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lgl_helpers.notebook.stage2_curves import stage1_line_label


def plot_eer_per_epoch(history: list[dict], stage1_val_eer: float | None = None, ax=None) -> Figure:
    """Validation EER of every Stage II epoch in run order; T and L phases marked, iterations separated.

    history: ``state["history"]``; ``stage1_val_eer``: Stage I's EER on the same validation trials
    (dotted). Returns the matplotlib Figure (not displayed).
    """
    if ax is None:
        fig = Figure(figsize=(8, 3.6))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    steps = np.arange(1, len(history) + 1)
    eers = np.array([rec["eer"] for rec in history], dtype=float)
    # One line per phase of an iteration: phase L restarts from the best T epoch, not from the last one.
    segment = [(rec["iteration"], rec["phase"]) for rec in history]
    for key in dict.fromkeys(segment):
        mask = np.array([s == key for s in segment], dtype=bool)
        ax.plot(steps[mask], eers[mask], color="0.6", linewidth=1)
    for phase, marker, color in (("T", "o", "tab:blue"), ("L", "s", "tab:green")):
        mask = np.array([rec["phase"] == phase for rec in history], dtype=bool)
        if mask.any():
            ax.scatter(
                steps[mask],
                eers[mask],
                marker=marker,
                color=color,
                s=22,
                zorder=3,
                label="phase T (all samples)" if phase == "T" else "phase L (gated)",
            )
    for i in range(1, len(history)):
        if history[i]["iteration"] != history[i - 1]["iteration"]:
            ax.axvline(i + 0.5, color="black", linestyle="--", linewidth=0.8, alpha=0.6)
    for i, rec in enumerate(history):
        if i == 0 or rec["iteration"] != history[i - 1]["iteration"]:
            ax.annotate(
                f"it {rec['iteration']}", (i + 1, 1.0), xycoords=("data", "axes fraction"), va="top", fontsize=8
            )
    if stage1_val_eer is not None:
        ax.axhline(stage1_val_eer, color="tab:red", linestyle=":", label=stage1_line_label(stage1_val_eer))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Stage II epoch (run order; dashed lines separate iterations)")
    ax.set_ylabel("validation EER (%)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_nmi_per_iteration(iterations: list[dict], ax=None) -> Figure:
    """NMI of each iteration's pseudo labels (iterations: ``metrics["iterations"]`` or ``state["iterations"]``)."""
    if ax is None:
        fig = Figure(figsize=(4.5, 3.2))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    points = [(it["iteration"], it["nmi"]) for it in iterations if it.get("nmi") is not None]
    if points:
        ax.plot(*zip(*points), marker="o")
    ax.set_xlabel("iteration")
    ax.set_ylabel("NMI of pseudo labels")
    ax.set_xticks([it["iteration"] for it in iterations])
    fig.tight_layout()
    return fig


def plot_selection_precision(history: list[dict], ax=None) -> Figure:
    """Per gated epoch: the share of reliable pseudo labels among the kept and among the dropped samples (%).

    A working gate keeps mostly reliable labels (upper curve) and drops mostly unreliable ones.
    """
    if ax is None:
        fig = Figure(figsize=(6, 3.2))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    gated = [rec for rec in history if rec["phase"] == "L" and rec.get("precision_selected") is not None]
    labels = [f"{rec['iteration']}.{rec['epoch']}" for rec in gated]
    x = np.arange(len(gated))
    ax.plot(x, [100 * rec["precision_selected"] for rec in gated], marker="o", label="reliable among kept")
    ax.plot(
        x,
        [np.nan if rec["precision_rejected"] is None else 100 * rec["precision_rejected"] for rec in gated],
        marker="x",
        label="reliable among dropped",
    )
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_xlabel("iteration.epoch of phase L")
    ax.set_ylabel("reliable pseudo labels (%)")
    ax.set_ylim(0, 102)
    ax.set_title("per gated epoch: the samples its gate kept and dropped", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def iteration_table(metrics: dict) -> str:
    """Markdown table: one row per iteration with NMI, gate, best T / L EER and epochs, then the test result."""

    def fmt(value, digits=2):
        return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    rows = [
        "| iteration | C | NMI | gate | best T EER (%) | best L EER (%) | epochs | skipped batches |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for it in metrics["iterations"]:
        gate = "–" if it["gate"] is None else f"{it['gate']:.2f} ({it['gate_source']})"
        rows.append(
            f"| {it['iteration']} | {it['channels']} | {fmt(it['nmi'], 3)} | {gate} | {fmt(it['best_T_eer'])} | "
            f"{fmt(it['best_L_eer'])} | {it['epochs']} | {it['skipped_batches']} |"
        )
    best = metrics["best"]
    rows += [
        "",
        f"Best model: iteration {best['iteration']}, phase {best['phase']}, epoch {best['epoch']} "
        f"(validation EER {best['val_eer']:.2f} %). Test trials: EER {metrics['eer']:.2f} %, "
        f"minDCF(0.05) {metrics['min_dcf']:.4f}, minDCF(0.01) {metrics['min_dcf_0.01']:.4f}"
        + ("" if metrics.get("stage1_eer") is None else f"; Stage I EER {metrics['stage1_eer']:.2f} %."),
    ]
    return "\n".join(rows)


def gate_evidence_table(entries: list[dict]) -> str:
    """Markdown table of ``metrics["gate_evidence"]``: per gated iteration, what its gate keeps and how reliable
    the kept and dropped pseudo labels are, on the losses the gate was chosen from."""

    def pct(value):
        return "–" if value is None else f"{100 * value:.1f}"

    rows = [
        "| iteration | gate (source) | losses of T epoch | kept (%) | reliable among kept (%) | "
        "reliable among dropped (%) | kept − dropped (points) | AUC of −loss |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in entries:
        kept, dropped = entry["kept_reliable"], entry["dropped_reliable"]
        gap = "–" if kept is None or dropped is None else f"{100 * (kept - dropped):.1f}"
        auc = "–" if entry["auc_reliable"] is None else f"{entry['auc_reliable']:.3f}"
        # gate_rule: the rule that placed it; an older run's evidence has none.
        rule = entry.get("gate_rule")
        source = entry["gate_source"] if rule in (None, "fixed") else f"{entry['gate_source']}: {rule}"
        rows.append(
            f"| {entry['iteration']} | {entry['gate']:.3f} ({source}) | {entry['losses_epoch']}"
            f"{' (clean pass)' if entry.get('losses_source') == 'clean' else ''} | "
            f"{pct(entry['fraction_kept'])} | {pct(kept)} | {pct(dropped)} | {gap} | {auc} |"
        )
    return "\n".join(rows)


def label_correction_table(entries: list[dict]) -> str:
    """Markdown table of ``metrics["label_correction"]``: per iteration, how many rejected samples were
    relabelled, how many of them to a reliable label, and the reliable share of phase L's training set
    before (the gate's kept samples) and after (plus the relabelled ones)."""

    def pct(value):
        return "–" if value is None else f"{100 * value:.1f}"

    rows = [
        "| iteration | confidence / temperature (predictor) | relabelled (changed) | relabelled to a reliable label (%) "
        "| training set reliable before → after (%) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in entries:
        rows.append(
            f"| {e['iteration']} | {e['confidence']:g} / {e['temperature']:g} ({e['predictor']}) | "
            f"{e['corrected']} ({e['changed']}) | {pct(e['corrected_accuracy'])} | "
            f"{pct(e['reliable_before'])} → {pct(e['reliable_after'])} |"
        )
    return "\n".join(rows)
