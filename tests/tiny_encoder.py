"""A small kit encoder (C=16) for the reuse tests, and one checkpoint of each layout load_encoder accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch

from lgl_helpers.core.models import ECAPATDNN, save_encoder


def tiny_encoder(seed: int = 0) -> ECAPATDNN:
    """ECAPA-TDNN C=16 in eval mode, its BatchNorm statistics moved away from their defaults."""
    torch.manual_seed(seed)
    encoder = ECAPATDNN(16)
    with torch.no_grad():
        encoder.train()(torch.randn(4, 16000) * 0.1)
    return encoder.eval()


def write_checkpoints(folder: Path, encoder: ECAPATDNN, **extra) -> dict[str, Path]:
    """The same encoder as a kit checkpoint (with ``extra``), a reference-style ``Network.*`` dict with a loss
    head, the latter ``module.``-prefixed (DataParallel), and a bare state dict."""
    folder.mkdir(parents=True, exist_ok=True)
    state = encoder.state_dict()
    network = {f"Network.{k}": v for k, v in state.items()} | {"Loss.weight": torch.zeros(5, 192)}
    paths = {name: folder / f"{name}.model" for name in ("kit", "network", "module", "bare")}
    save_encoder(paths["kit"], encoder, extra)
    torch.save(network, paths["network"])
    torch.save({f"module.{k}": v for k, v in network.items()}, paths["module"])
    torch.save(state, paths["bare"])
    return paths


def write_noise(path: Path, seconds: float, sample_rate: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    """Seeded speech-band noise (a few tones plus white noise) as a 16-bit file; the format follows the suffix."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    wave = sum(0.2 * np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 3000, size=3))
    wave = np.stack([wave + 0.05 * rng.standard_normal(n) for _ in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, wave.astype(np.float32), sample_rate, subtype="PCM_16")
    return path
