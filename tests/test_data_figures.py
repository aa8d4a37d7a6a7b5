"""Notebook 00's figures: durations, spectrograms of training utterances, the spectrogram browser."""

from __future__ import annotations

from matplotlib.figure import Figure

from lgl_helpers.core.audio import read_wav
from lgl_helpers.corpus.lists import read_train_list
from lgl_helpers.notebook import data_figures
from lgl_helpers.notebook.spectrograms import encoder_features


def test_figures_and_widget(tiny_corpus):
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    figure = data_figures.plot_durations(entries)
    assert isinstance(figure, Figure) and len(figure.axes) == 2
    spectrograms = data_figures.plot_examples(tiny_corpus / "train", entries, n=3, seed=0)
    assert isinstance(spectrograms, Figure) and len(spectrograms.axes) == 3
    titles = [ax.get_title().split(" ")[0] for ax in spectrograms.axes]
    assert len({t.split("/")[0] for t in titles}) == 3  # three different speakers
    assert titles == [
        ax.get_title().split(" ")[0]
        for ax in data_figures.plot_examples(tiny_corpus / "train", entries, n=3, seed=0).axes
    ]
    mel = encoder_features(read_wav(tiny_corpus / "train" / entries[0].path))
    assert mel.shape[0] == 80 and abs(mel.mean()) < 1e-3
    widget = data_figures.spectrogram_browser(tiny_corpus / "train", entries)
    assert [child.description for child in widget.children[:2]] == ["speaker", "utterance"]
