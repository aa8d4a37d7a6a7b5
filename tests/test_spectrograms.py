"""Spectrogram figures: the encoder's own features, one titled panel per wave."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from lgl_helpers.core.models import ECAPATDNN
from lgl_helpers.notebook import stage1_figures
from lgl_helpers.notebook.spectrograms import encoder_features, plot_spectrograms


def test_features_are_the_encoders_input():
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    with torch.no_grad():
        expected = ECAPATDNN(channels=8)._log_mel(torch.from_numpy(wave)[None])[0].numpy()
    features = encoder_features(wave)
    assert features.shape == (80, 101)
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-5)
    assert np.abs(features.mean(axis=1)).max() < 1e-4


def test_one_titled_panel_per_wave():
    rng = np.random.default_rng(1)
    waves = {"clean": rng.standard_normal(8000) * 0.1, "noisy": rng.standard_normal(12000) * 0.3}
    fig = plot_spectrograms(waves, title="two")
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["clean", "noisy"]
    with pytest.raises(ValueError, match="no waves"):
        plot_spectrograms({})


def test_views_of_a_stage1_preview():
    rng = np.random.default_rng(2)
    preview = {key: [rng.standard_normal(4000) * 0.1] for key in ("crop0", "crop1", "A", "S", "P")}
    preview["captions"] = ["utterance 0"]
    fig = stage1_figures.plot_views(preview)
    assert len(fig.axes) == 5 and fig.axes[2].get_title() == "A = crop 0, aug a"
