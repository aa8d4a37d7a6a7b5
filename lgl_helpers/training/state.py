"""Training state shared by Stage I and Stage II: checkpoints, RNG states and the resume policy.

A training checkpoint is a kit checkpoint (:func:`lgl_helpers.core.models.save_encoder`, written
atomically) whose extra keys hold what a resumed run needs: optimizer states, the epoch, the RNG
states of Python, NumPy, torch and every CUDA device, and the parameters the run was started with.
Resuming restores all of them, so a resumed run draws the same crops, augmentations and dropout
masks as one that was never interrupted, on the CPU and on a GPU.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from lgl_helpers.core.losses import AAMSoftmax
from lgl_helpers.core.models import ECAPATDNN, encoder_like, load_weights, save_encoder

log = logging.getLogger(__name__)


def capture_rng() -> dict:
    """The RNG states of Python, NumPy, torch (CPU) and, when CUDA is available, of every CUDA device.

    NumPy's MT19937 state is stored as tensors and plain numbers so that the checkpoint loads with
    ``weights_only=True``.
    """
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Set the RNGs from :func:`capture_rng`'s dict; the CUDA states only where CUDA is available now."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def module_state(module: torch.nn.Module) -> dict:
    """A CPU copy of ``module``'s state dict (safe to save while training continues on the GPU)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_checkpoint(path: str | Path, encoder: ECAPATDNN, extra: dict) -> Path:
    """Write a training checkpoint atomically: the encoder plus ``extra`` and the current RNG states."""
    return save_encoder(path, encoder, {**extra, "rng": capture_rng()})


def load_checkpoint(path: str | Path) -> dict:
    """A kit checkpoint's dict, on the CPU (``weights_only``: plain values and tensors only)."""
    return load_weights(path)


def encoder_and_head(checkpoint: dict, n_clusters: int) -> tuple[ECAPATDNN, AAMSoftmax]:
    """The encoder (its saved width C) and the AAM-softmax head (weight (n_clusters, 192)) of a Stage II checkpoint."""
    encoder = encoder_like(checkpoint)
    encoder.load_state_dict(checkpoint["encoder"])
    head = AAMSoftmax(n_clusters)
    head.load_state_dict(checkpoint["head"])
    return encoder, head


def check_resume(where: str | Path, saved: Mapping, now: Mapping, fixed: Iterable[str], allow_changed: bool) -> None:
    """The resume policy of both stages: a run continues only with the parameters that define its results so far.

    ``saved`` / ``now``: the parameters the run was started with and those of this call; ``fixed``:
    the names that must agree. A difference is an error naming every changed parameter, unless
    ``allow_changed`` (the config's ``allow_changed_params``), which continues with a warning: the
    results then mix the two settings.
    """
    changed = {k: (saved.get(k), now.get(k)) for k in fixed if saved.get(k) != now.get(k)}
    if not changed:
        return
    shown = ", ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in changed.items())
    if allow_changed:
        log.warning("%s: resuming with changed parameters (allow_changed_params=True): %s", where, shown)
        return
    raise ValueError(
        f"{where}: the run was started with other values of {shown}; use the same values, another run_name, "
        "resume=False to start over, or allow_changed_params=True to continue anyway"
    )
