"""Per-sample losses from one clean pass over the training list: the ``gate_losses="clean"`` option of LGL.

The reference gates each sample on its loss in the training forward pass: a random 2-3 s crop under
random noise or reverberation. That loss mixes how wrong the pseudo label is with how hard the
draw was, so on a small corpus it ranks wrong labels poorly (ROC AUC about 0.67 on the embedded
corpus). A clean pass scores every utterance once, whole and without augmentation, in eval mode
with the model phase L starts from (the best T epoch's): the same AAM-softmax loss against the
same pseudo label, without the draw's noise. With this option the gate is chosen on, and applied
to, these losses: phase L trains on the samples whose clean loss is at most the gate, a set fixed
for the phase as the gate is.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lgl_helpers.core.embed import embed_files
from lgl_helpers.core.losses import AAMSoftmax

GATE_LOSSES = ("training", "clean")


def clean_pass_losses(*args, **kwargs) -> np.ndarray:
    """:func:`clean_pass`'s losses alone: (N,) float32."""
    return clean_pass(*args, **kwargs)[0]


@torch.no_grad()
def clean_pass(
    encoder: torch.nn.Module,
    head: AAMSoftmax,
    paths: list,
    labels: np.ndarray,
    *,
    lengths: list[int] | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Each utterance's AAM-softmax loss against its pseudo label, whole and unaugmented, in eval mode.

    paths: N wav files; labels: (N,) int pseudo labels in [0, head.n_classes); lengths: (N,)
    samples per file when known (grouping only, as in :func:`embed_files`). Returns the losses
    (N,) float32 and the clean embeddings (N, D) float32 they were computed from.
    Under torch.distributed each rank embeds a share and every rank gets all N losses.
    """
    labels = np.asarray(labels)
    if labels.shape != (len(paths),):
        raise ValueError(f"labels has shape {labels.shape} for {len(paths)} files")
    emb = embed_files(encoder, paths, device=device, lengths=lengths, show_progress=False, precision=precision)
    head_was_training = head.training
    head.eval()
    try:
        x = torch.from_numpy(emb).to(head.weight.device)
        y = torch.from_numpy(labels.astype(np.int64)).to(head.weight.device)
        losses = F.cross_entropy(head.logits(x, y), y, reduction="none")
    finally:
        head.train(head_was_training)
    return losses.float().cpu().numpy(), emb
