"""Weight averaging for Stage II: an exponential moving average (EMA) of the encoder's weights.

On a small corpus the validation EER of consecutive epochs swings by points, so the stopping rule
and the best epoch follow noise. With ``ema_decay`` d > 0 every optimizer step updates
``avg ← d·avg + (1 − d)·weights`` (BatchNorm statistics too), and the average is what an epoch
evaluates, saves as its model and hands on (clustering, phase L's start, ``best.model``); training
itself continues on the raw weights, saved beside it for resuming. ``ema_decay = 0`` is the
reference: the raw weights are the model. PyTorch's :class:`torch.optim.swa_utils.AveragedModel`
does the averaging.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lgl_helpers.core.models import ECAPATDNN


class EncoderAverage:
    """The EMA of a training encoder, or a pass-through when ``decay`` is 0."""

    def __init__(self, encoder: ECAPATDNN, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay={decay} must be in [0, 1)")
        self.encoder = encoder
        self.average = (
            AveragedModel(encoder, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) if decay else None
        )

    def update(self) -> None:
        """After an optimizer step: fold the current weights into the average (the first copies them)."""
        if self.average is not None:
            self.average.update_parameters(self.encoder)

    @property
    def model(self) -> ECAPATDNN:
        """The encoder an epoch evaluates and saves: the average, or the training encoder itself."""
        return self.encoder if self.average is None else self.average.module

    def state(self) -> dict:
        """What a checkpoint needs besides ``model``'s weights to resume: the raw weights and the average's count."""
        if self.average is None:
            return {}
        raw = {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}
        return {"train_encoder": raw, "ema_n_averaged": int(self.average.n_averaged)}

    def restore(self, checkpoint: dict) -> None:
        """Resume from a checkpoint of this phase: its ``encoder`` is the average, ``train_encoder`` the raw weights."""
        if self.average is None:
            return
        if "train_encoder" not in checkpoint:
            raise ValueError("the checkpoint has no 'train_encoder': it was written with ema_decay = 0")
        self.average.module.load_state_dict(checkpoint["encoder"])
        self.average.n_averaged.fill_(int(checkpoint["ema_n_averaged"]))
        self.encoder.load_state_dict(checkpoint["train_encoder"])

    def to(self, device: torch.device) -> EncoderAverage:
        if self.average is not None:
            self.average.to(device)
        return self
