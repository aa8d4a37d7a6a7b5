"""One rank of the DINO distributed test (tests/test_dino_ddp.py launches it under torchrun, gloo).

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_dino_worker.py OUT_DIR

This rank's share of a fixed global batch of student and teacher logits: its DINO loss, the gradient of
its student rows and the centre after one update, in ``OUT_DIR/dino_rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from lgl_helpers.core import distributed
from lgl_helpers.training.stage1.dino import DinoLoss

GLOBAL_BATCH, N_GLOBAL, N_CROPS, OUT_DIM = 8, 2, 3, 16


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Student (N_CROPS·B, K) and teacher (N_GLOBAL·B, K) logits of the global batch, crop by crop."""
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(N_CROPS * GLOBAL_BATCH, OUT_DIM, generator=generator)
    teacher = torch.randn(N_GLOBAL * GLOBAL_BATCH, OUT_DIM, generator=generator)
    return student, teacher


def rank_rows(n_crops: int, rank: int, world: int) -> torch.Tensor:
    """Rows of rank ``rank``'s share in a crop-by-crop matrix: its slice of every crop's block."""
    share = GLOBAL_BATCH // world
    return torch.cat([torch.arange(share) + c * GLOBAL_BATCH + rank * share for c in range(n_crops)])


def main() -> None:
    out_dir = Path(sys.argv[1])
    distributed.init("cpu")
    try:
        rank, world = distributed.rank(), distributed.world_size()
        student, teacher = global_batch()
        local = student[rank_rows(N_CROPS, rank, world)].clone().requires_grad_(True)
        loss_fn = DinoLoss(OUT_DIM, student_temp=0.1, center_momentum=0.9)
        loss_fn.center.fill_(0.1)
        loss, _ = loss_fn(local, teacher[rank_rows(N_GLOBAL, rank, world)], N_GLOBAL, teacher_temp=0.04)
        loss.backward()
        loss_fn.update_center(teacher[rank_rows(N_GLOBAL, rank, world)])
        mean_loss = distributed.all_reduce_sum(float(loss)) / world
        torch.save(
            {"mean_loss": mean_loss, "grad": local.grad, "center": loss_fn.center}, out_dir / f"dino_rank{rank}.pt"
        )
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
