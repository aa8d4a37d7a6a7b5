"""One rank of the distributed tests (tests/test_distributed.py launches it under torchrun, gloo).

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT_DIR CORPUS

It runs every case in one launch (a launch costs more than the cases); each rank writes
``OUT_DIR/<case>_rank<r>.json`` (and ``.pt`` tensors) for the test to compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from lgl_helpers.core import distributed
from lgl_helpers.core.data import Stage2Dataset, make_loader
from lgl_helpers.core.losses import AAMSoftmax, ContrastiveLoss
from lgl_helpers.core.models import ECAPATDNN
from lgl_helpers.corpus.lists import read_train_list
from lgl_helpers.training.executor import EncoderWithHead, stage2_epoch

GLOBAL_BATCH = 8


def contrastive_case(out_dir: Path) -> None:
    """This rank's share of a fixed global batch of embeddings: its loss and the gradients of its share."""
    features = torch.randn(GLOBAL_BATCH, 2, 192, generator=torch.Generator().manual_seed(0))
    share = GLOBAL_BATCH // distributed.world_size()
    local = features[distributed.rank() * share : (distributed.rank() + 1) * share].clone().requires_grad_(True)
    loss_fn = ContrastiveLoss()
    loss, _ = loss_fn(local)
    loss.backward()
    mean_loss = distributed.all_reduce_sum(float(loss)) / distributed.world_size()
    rank = distributed.rank()
    torch.save({"grad": local.grad, "w_grad": loss_fn.w.grad}, out_dir / f"contrastive_rank{rank}.pt")
    (out_dir / f"contrastive_rank{rank}.json").write_text(json.dumps({"mean_loss": mean_loss}))


def gate_case(out_dir: Path, corpus: Path, gate_here: float, case: str) -> None:
    """A Stage II epoch where this rank's gate is ``gate_here``: the weights after it, the epoch's counts and
    the largest change of a parameter."""
    entries = read_train_list(corpus / "lists" / "train_list.txt")
    labels = torch.randint(0, 8, (len(entries),), generator=torch.Generator().manual_seed(1)).numpy()
    dataset = Stage2Dataset(entries, corpus / "train", labels, 30, None, seed=0, check_files=False)
    loader = make_loader(dataset, GLOBAL_BATCH, 0, 0, "cpu")
    loader.sampler.set_epoch(1)
    torch.manual_seed(0)
    model = EncoderWithHead(ECAPATDNN(16, 64), AAMSoftmax(8))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    ddp = distributed.wrap(model, torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    stats, arrays = stage2_epoch(ddp, optimizer, loader, gate_here, torch.device("cpu"), "gate test")
    params = dict(model.named_parameters())
    changed = max(float((params[k].detach() - v).abs().max()) for k, v in before.items())
    rank = distributed.rank()
    # Parameters only: BatchNorm's running statistics are each rank's own after the last batch (DDP
    # broadcasts rank 0's at the start of every forward pass).
    torch.save({k: v.detach() for k, v in params.items()}, out_dir / f"{case}_rank{rank}.pt")
    record = {**stats, "n_batches": len(loader), "n_records": len(arrays["index"]), "max_change": changed}
    (out_dir / f"{case}_rank{rank}.json").write_text(json.dumps(record))


def main() -> None:
    out_dir, corpus = Path(sys.argv[1]), Path(sys.argv[2])
    distributed.init("cpu")
    try:
        contrastive_case(out_dir)
        # Rank 0 keeps every sample (phase T's gate), rank 1 none: its whole share is above the gate.
        gate_case(out_dir, corpus, float("inf") if distributed.rank() == 0 else 0.0, "gate_one_rank_empty")
        gate_case(out_dir, corpus, 0.0, "gate_all_empty")
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
