"""Spectrograms as the encoder sees them: the log-mel features of its own front end, one panel per wave.

Notebook 00 draws training utterances with it, notebook 01 (through ``stage1_figures.plot_views``) the clean
crops and augmented views of Stage I. The features come from :func:`lgl_helpers.core.models.mel_front_end`, so a figure shows
exactly the encoder's input, not a look-alike computed another way.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import torch
from matplotlib.figure import Figure

from lgl_helpers.core.audio import SAMPLE_RATE
from lgl_helpers.core.models import HOP_LENGTH, N_MELS, log_mel, mel_front_end

DYNAMIC_RANGE_DB = 60.0  # colour range shared by the panels of one figure


@lru_cache(maxsize=1)
def _front_end() -> torch.nn.Module:
    return mel_front_end().eval()


def encoder_features(wave: np.ndarray) -> np.ndarray:
    """(T,) audio at 16 kHz → (80, T // 160 + 1) float32 log-mel, each bin's mean over time removed."""
    with torch.no_grad():
        feats = log_mel(_front_end(), torch.as_tensor(np.asarray(wave, dtype=np.float32))[None])
    return feats[0].numpy()


def plot_spectrograms(waves: Mapping[str, np.ndarray], title: str | None = None) -> Figure:
    """One log-mel panel per named (T,) wave at 16 kHz, stacked, titled by its name, on one colour range."""
    names = list(waves)
    if not names:
        raise ValueError("no waves to plot")
    features = [encoder_features(waves[name]) for name in names]
    top = max(float(f.max()) for f in features)
    bottom = top - DYNAMIC_RANGE_DB / 10.0 * np.log(10.0)  # the features are natural-log power
    fig = Figure(figsize=(10, 2.2 * len(names) + (0.4 if title else 0.0)))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    frames_per_second = SAMPLE_RATE / HOP_LENGTH
    for ax, name, feats in zip(axes, names, features):
        ax.imshow(
            feats,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=bottom,
            vmax=top,
            extent=(0, feats.shape[1] / frames_per_second, 0, N_MELS),
        )
        ax.set(ylabel="mel bin", title=name)
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
