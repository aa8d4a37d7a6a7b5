"""Figures of notebook 00 (data set-up): durations of the training list and spectrograms of its utterances."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lgl_helpers.core.audio import read_wav
from lgl_helpers.corpus import lists
from lgl_helpers.notebook.spectrograms import plot_spectrograms


def plot_durations(entries: list[lists.TrainEntry]) -> Figure:
    """Histograms of utterance durations and of utterances per speaker."""
    durations = np.array([e.duration for e in entries])
    per_speaker = np.unique([e.speaker for e in entries], return_counts=True)[1]
    fig = Figure(figsize=(10, 3.2))
    ax_dur, ax_spk = fig.subplots(1, 2)
    ax_dur.hist(durations, bins=min(60, max(5, len(entries) // 10)), color="tab:blue")
    ax_dur.set(
        xlabel="duration (s)", ylabel="utterances", title=f"{len(entries)} utterances, {durations.sum() / 3600:.2f} h"
    )
    ax_spk.hist(per_speaker, bins=min(40, max(5, len(per_speaker) // 4)), color="tab:orange")
    ax_spk.set(xlabel="utterances per speaker", ylabel="speakers", title=f"{len(per_speaker)} speakers")
    fig.tight_layout()
    return fig


def pick_examples(entries: list[lists.TrainEntry], n: int, seed: int = 0) -> list[lists.TrainEntry]:
    """``n`` entries of distinct speakers where possible, drawn by ``seed``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(entries))
    picked, speakers = [], set()
    for index in order:
        if entries[index].speaker not in speakers:
            picked.append(entries[index])
            speakers.add(entries[index].speaker)
        if len(picked) == n:
            return picked
    return picked + [entries[i] for i in order if entries[i] not in picked][: n - len(picked)]


def plot_examples(root: str | os.PathLike, entries: list[lists.TrainEntry], n: int = 3, seed: int = 0) -> Figure:
    """Log-mel spectrograms (as the encoder sees them) of ``n`` training utterances drawn by ``seed``, one titled panel each."""
    examples = pick_examples(entries, n, seed)
    return plot_spectrograms(
        {f"{entry.path} ({entry.duration:.2f} s)": read_wav(Path(root) / entry.path) for entry in examples}
    )


def spectrogram_browser(root: str | os.PathLike, entries: list[lists.TrainEntry]):
    """An ipywidgets browser: choose a speaker and one of its utterances, see its log-mel spectrogram."""
    import ipywidgets

    by_speaker: dict[str, list[lists.TrainEntry]] = {}
    for entry in entries:
        by_speaker.setdefault(entry.speaker, []).append(entry)
    speaker = ipywidgets.Dropdown(options=sorted(by_speaker), description="speaker")
    utterance = ipywidgets.IntSlider(min=0, max=len(by_speaker[speaker.value]) - 1, description="utterance")

    def follow(change):
        utterance.max = len(by_speaker[change["new"]]) - 1

    speaker.observe(follow, names="value")

    def draw(speaker, utterance):
        chosen = by_speaker[speaker][min(utterance, len(by_speaker[speaker]) - 1)]
        return plot_examples(root, [chosen], n=1)

    return ipywidgets.interactive(draw, speaker=speaker, utterance=utterance)
