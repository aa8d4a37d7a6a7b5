"""What makes a run repeatable: the one place a seed is applied, and the machine and package versions
recorded next to every run's parameters.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA): the single place where a run's seed is applied."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def environment_info() -> dict:
    """Machine and package versions recorded next to every run's parameters."""
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "numpy": np.__version__,
    }
    for module, distributions in RECORDED_PACKAGES.items():
        info[module] = _installed_version(distributions)
    return info


# Recorded name: the pip distributions that install it. Read from the installed metadata: importing the
# packages for their __version__ took about 6 s at every stage start (umap loads numba, papermill jsonschema).
RECORDED_PACKAGES = {
    "torchaudio": ("torchaudio",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss"),
    "sklearn": ("scikit-learn",),
    "umap": ("umap-learn",),
    "soundfile": ("soundfile",),
    "papermill": ("papermill",),
}


def _installed_version(distributions: tuple[str, ...]) -> str | None:
    """The version of the first of ``distributions`` that is installed; None (recorded, not fatal) if none is."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
