"""Figures shared by the notebooks: training curves of an epoch history and spectrograms of augmented views.

Every function returns a matplotlib Figure and shows nothing; the notebook displays or saves it. The
figures are not registered with pyplot, so a notebook shows each exactly once (as a cell's value or
through a display handle that a training callback updates) and repeated redraws free their memory.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lgl_helpers.core.audio import SAMPLE_RATE


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
            axes[2].scatter([best["epoch"]], [best["eer"]], s=120, facecolors="none", edgecolors="black", label=f"best (epoch {best['epoch']})")
    axes[2].set_title("validation EER (%)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def log_spectrogram(wave: np.ndarray, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """Power spectrogram in dB of (T,) audio with a Hamming window. Returns (n_fft // 2 + 1, frames)."""
    wave = np.asarray(wave, dtype=np.float64)
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    n_frames = 1 + (len(wave) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    spectrum = np.fft.rfft(wave[index] * np.hamming(n_fft), axis=1)
    return (10 * np.log10(np.abs(spectrum) ** 2 + 1e-10)).T


def plot_spectrograms(
    waves: Mapping[str, np.ndarray], sample_rate: int = SAMPLE_RATE, title: str | None = None
) -> Figure:
    """One spectrogram panel per named (T,) wave, stacked, on a shared 60 dB colour range."""
    names = list(waves)
    if not names:
        raise ValueError("no waves to plot")
    specs = [log_spectrogram(waves[name]) for name in names]
    top = max(float(s.max()) for s in specs)
    fig = Figure(figsize=(8, 1.6 * len(names) + 0.6))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)
    for ax, name, spec, wave in zip(axes[:, 0], names, specs, (waves[n] for n in names)):
        duration = len(wave) / sample_rate
        image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=top - 60, vmax=top,
                          extent=(0, duration, 0, sample_rate / 2000))
        ax.set_ylabel(f"{name}\nkHz")
    axes[-1, 0].set_xlabel("seconds")
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", fraction=0.03)
    if title:
        fig.suptitle(title)
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
