"""Which per-epoch files a run keeps (docs/method.md, "Files a run keeps"): the best, the last and every k-th.

Without a limit these files grow with every epoch: Stage I writes a checkpoint with both optimizer
states for every evaluated epoch (about 75 MB at C=512, 6 GB over 80 epochs), Stage II a per-sample
loss record for every epoch (about 15 MB on VoxCeleb2). The run's resume point, its best model and
whatever its state file points at are never removed; the stages decide which files those are.
"""

from __future__ import annotations

# Every 10th epoch: 8 of Stage I's 80 checkpoints and about 10 of Stage II's at most 100 loss records.
DEFAULT_KEEP_EVERY = 10


def keep_epoch(number: int, keep_every: int, *, protected: bool = False) -> bool:
    """Whether the per-epoch file of epoch ``number`` (1-based) stays.

    ``protected``: the caller's best / last / still-needed epoch, always kept. ``keep_every``: k ≥ 1
    keeps every epoch whose number is a multiple of k (1 keeps all); 0 keeps only the protected ones.
    """
    return protected or (keep_every > 0 and number % keep_every == 0)
