"""Figures of notebook 01 (Stage I): training curves of an epoch history (contrastive + AAT or DINO) and
spectrograms of augmented views or crops.

Every function returns a matplotlib Figure and shows nothing; the notebook displays or saves it. The
figures are not registered with pyplot, so a notebook shows each exactly once (as a cell's value or
through a display handle that a training callback updates) and repeated redraws free their memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lgl_helpers.notebook.spectrograms import plot_spectrograms


def plot_training_curves(history: Sequence[Mapping], title: str = "Stage I training") -> Figure:
    """Loss, accuracies and validation EER per epoch.

    ``history``: records with ``epoch`` and, for trained epochs, ``loss``, ``contrastive_loss``,
    ``aat_loss``, ``top1``, ``disc_acc``; evaluated epochs (epoch 0 = untrained encoder) have ``eer``.
    Missing keys are skipped, so an empty or partial history draws empty axes.
    """
    fig = Figure(figsize=(12, 3.2))
    axes = fig.subplots(1, 3)
    trained = [r for r in history if r.get("epoch", 0) > 0]
    epochs = [r["epoch"] for r in trained]
    for key, label in (("loss", "total"), ("contrastive_loss", "contrastive"), ("aat_loss", "AAT CE (encoder side)")):
        values = [r.get(key) for r in trained]
        if epochs and all(v is not None for v in values):
            axes[0].plot(epochs, values, marker=".", label=label)
    axes[0].set_title("training loss")
    for key, label in (("top1", "contrastive top-1"), ("disc_acc", "AAT discriminator acc.")):
        values = [r.get(key) for r in trained]
        if epochs and all(v is not None for v in values):
            axes[1].plot(epochs, values, marker=".", label=label)
    axes[1].set_title("accuracy (%)")
    axes[1].axhline(50, color="grey", linewidth=0.8, linestyle=":")
    _plot_eer(axes[2], history)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _plot_eer(ax, history: Sequence[Mapping]) -> None:
    """Validation EER per evaluated epoch, the untrained encoder dashed, the best epoch circled."""
    evaluated = [r for r in history if r.get("eer") is not None]
    if evaluated:
        ax.plot([r["epoch"] for r in evaluated], [r["eer"] for r in evaluated], marker="o", color="#c44e52")
        untrained = [r for r in evaluated if r["epoch"] == 0]
        if untrained:
            ax.axhline(untrained[0]["eer"], color="grey", linestyle="--", linewidth=0.8, label="untrained")
        best = min((r for r in evaluated if r["epoch"] > 0), key=lambda r: r["eer"], default=None)
        if best is not None:
            ax.scatter(
                [best["epoch"]],
                [best["eer"]],
                s=120,
                facecolors="none",
                edgecolors="black",
                label=f"best (epoch {best['epoch']})",
            )
    ax.set_title("validation EER (%)")


def plot_dino_curves(history: Sequence[Mapping], out_dim: int, title: str = "Stage I training (DINO)") -> Figure:
    """DINO's curves per epoch: loss; teacher entropy (per utterance and of the batch mean) against
    log(out_dim) and the collapse thresholds; centre norm; the teacher's validation EER.

    ``history``: records of :func:`lgl_helpers.training.stage1.train_stage1` with ``stage1_method="dino"``.
    """
    from lgl_helpers.training.stage1.dino import ONE_DIMENSION_FRACTION, UNIFORM_FRACTION

    fig = Figure(figsize=(15, 3.2))
    axes = fig.subplots(1, 4)
    trained = [r for r in history if r.get("epoch", 0) > 0 and r.get("loss") is not None]
    epochs = [r["epoch"] for r in trained]
    if epochs:
        axes[0].plot(epochs, [r["loss"] for r in trained], marker=".", label="DINO cross-entropy")
        for key, label in (
            ("teacher_entropy", "teacher, per utterance"),
            ("teacher_mean_entropy", "teacher, batch mean"),
            ("student_entropy", "student, per crop"),
        ):
            axes[1].plot(epochs, [r[key] for r in trained], marker=".", label=label)
        axes[2].plot(epochs, [r["center_norm"] for r in trained], marker=".", color="#8172b2")
    log_k = math.log(out_dim)
    axes[1].axhline(log_k, color="grey", linewidth=0.8, label=f"log(out_dim) = {log_k:.1f}")
    axes[1].axhline(
        UNIFORM_FRACTION * log_k, color="#c44e52", linewidth=0.8, linestyle=":", label="collapse thresholds"
    )
    axes[1].axhline(ONE_DIMENSION_FRACTION * log_k, color="#c44e52", linewidth=0.8, linestyle=":")
    axes[0].set_title("training loss")
    axes[1].set_title("entropy (nats)")
    axes[2].set_title("centre norm")
    _plot_eer(axes[3], history)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_crops(preview: Mapping, item: int = 0) -> Figure:
    """Spectrograms of one item of :func:`lgl_helpers.training.stage1.preview_crops`: its global, then its local crops."""
    waves = {}
    captions = preview["captions"][item]
    n_global = preview["global"].shape[1]
    for c in range(n_global):
        waves[f"global {c}: {captions[c]}"] = preview["global"][item, c]
    for c in range(preview["local"].shape[1]):
        waves[f"local {c}: {captions[n_global + c]}"] = preview["local"][item, c]
    return plot_spectrograms(waves, title="DINO crops of one utterance (each augmented alone)")


def plot_views(preview: Mapping, item: int = 0) -> Figure:
    """Spectrograms of one item of :func:`lgl_helpers.training.stage1.preview_views`: clean crops, then views A, S, P."""
    waves = {
        "crop 0 (clean)": preview["crop0"][item],
        "crop 1 (clean)": preview["crop1"][item],
        "A = crop 0, aug a": preview["A"][item],
        "S = crop 1, aug a": preview["S"][item],
        "P = crop 1, aug b": preview["P"][item],
    }
    return plot_spectrograms(waves, title=preview["captions"][item])
