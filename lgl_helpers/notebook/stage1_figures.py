"""Figures of notebook 01 (Stage I): training curves of an epoch history and spectrograms of augmented views.

Every function returns a matplotlib Figure and shows nothing; the notebook displays or saves it. The
figures are not registered with pyplot, so a notebook shows each exactly once (as a cell's value or
through a display handle that a training callback updates) and repeated redraws free their memory.
"""

from __future__ import annotations

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
    evaluated = [r for r in history if r.get("eer") is not None]
    if evaluated:
        axes[2].plot([r["epoch"] for r in evaluated], [r["eer"] for r in evaluated], marker="o", color="#c44e52")
        untrained = [r for r in evaluated if r["epoch"] == 0]
        if untrained:
            axes[2].axhline(untrained[0]["eer"], color="grey", linestyle="--", linewidth=0.8, label="untrained")
        best = min((r for r in evaluated if r["epoch"] > 0), key=lambda r: r["eer"], default=None)
        if best is not None:
            axes[2].scatter(
                [best["epoch"]],
                [best["eer"]],
                s=120,
                facecolors="none",
                edgecolors="black",
                label=f"best (epoch {best['epoch']})",
            )
    axes[2].set_title("validation EER (%)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


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
