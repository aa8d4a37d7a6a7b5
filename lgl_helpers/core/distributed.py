"""Data-parallel training with PyTorch's own engine: the process group torchrun sets up, and the
few collectives the stages need.

Every rank runs the same code on its shard of each batch and of each evaluation; the stages' decisions
(gate, stopping rule, clustering) are made from gathered, identical data, so all ranks take the same
path. Only rank 0 writes files: :mod:`lgl_helpers.files`' writers do nothing on other ranks, and a
rank that reads what rank 0 wrote waits at :func:`barrier` first. Without a process group (a notebook
kernel, one process) every function here is the identity and costs nothing.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# torchrun's environment; WORLD_SIZE > 1 means this process is one rank of a launched job.
_ENV_WORLD = "WORLD_SIZE"
_ENV_LOCAL_RANK = "LOCAL_RANK"
# On GPUs the small CPU collectives (counts, flags, gathered objects) go through gloo, the tensors through NCCL.
CUDA_BACKEND = "cpu:gloo,cuda:nccl"
# A rank that waits longer than this for the others fails instead of hanging a cluster job forever.
TIMEOUT = datetime.timedelta(minutes=float(os.environ.get("LGL_DIST_TIMEOUT_MINUTES", "30")))


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    # Looked up, not imported: the file writers ask this, and a process that never imported torch
    # (the report and list commands) has no process group and should not pay for the import.
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return sys.modules["torch.distributed"].get_world_size() if active() else 1


def rank() -> int:
    return sys.modules["torch.distributed"].get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and logs."""
    return rank() == 0


def launched() -> bool:
    """True when torchrun started this process as one of several ranks (its process group not yet made)."""
    return int(os.environ.get(_ENV_WORLD, "1")) > 1


def get_device(name: str = "auto"):
    """``"auto"`` → CUDA when available, else CPU; ``"cpu"``/``"cuda"``/``"cuda:1"`` as given."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was requested but CUDA is not available; use device='auto' or 'cpu'")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device={name!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'")
    return torch.device(name)


def init(device_name: str) -> torch.device:
    """Join torchrun's process group (when launched) and return this rank's device.

    NCCL on CUDA, gloo on CPUs; each rank uses GPU ``LOCAL_RANK``. ``device_name`` as in
    :func:`get_device` (``auto``, ``cpu``, ``cuda``).
    """
    import torch
    import torch.distributed as dist

    device = get_device(device_name)
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get(_ENV_LOCAL_RANK, "0")))
    if not active():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = CUDA_BACKEND if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
        log.info("rank %d of %d on %s", rank(), world_size(), device)
    return device


def shutdown() -> None:
    if active():
        sys.modules["torch.distributed"].destroy_process_group()


def barrier() -> None:
    if active():
        sys.modules["torch.distributed"].barrier()


def per_rank_batch(batch_size: int, name: str = "batch_size") -> int:
    """The batch each rank trains on so that the global batch is ``batch_size`` (the configured one)."""
    world = world_size()
    if batch_size % world:
        raise ValueError(f"{name}={batch_size} is not divisible by the {world} ranks: each rank takes an equal share")
    return batch_size // world


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(n, ...) on each rank → (world·n, ...) in rank order; gradients flow back to every rank's part."""
    if not active():
        return tensor
    import torch
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor), dim=0)


def all_reduce_sum(value: float | int) -> float:
    """The sum of a number over ranks (the same on every rank)."""
    if not active():
        return value
    import torch

    total = torch.tensor(float(value), dtype=torch.float64)
    sys.modules["torch.distributed"].all_reduce(total)
    return float(total)


def any_rank(flags: list[bool]) -> list[bool]:
    """Each flag OR-ed over ranks, in one collective (the same list on every rank)."""
    if not active():
        return [bool(flag) for flag in flags]
    import torch

    values = torch.tensor([float(bool(flag)) for flag in flags], dtype=torch.float64)
    dist = sys.modules["torch.distributed"]
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(value) for value in values.tolist()]


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (any picklable object), in rank order, on all ranks."""
    if not active():
        return [obj]
    parts = [None] * world_size()
    sys.modules["torch.distributed"].all_gather_object(parts, obj)
    return parts


def broadcast(obj):
    """Rank 0's ``obj`` on every rank (any picklable object)."""
    if not active():
        return obj
    box = [obj]
    sys.modules["torch.distributed"].broadcast_object_list(box, src=0)
    return box[0]


def shard(n_items: int) -> np.ndarray:
    """This rank's positions among ``n_items`` (interleaved: rank r takes r, r + world, ...)."""
    return np.arange(rank(), n_items, world_size())


def gather_shards(part: np.ndarray, n_items: int) -> np.ndarray:
    """Every rank's ``part`` (rows for :func:`shard`'s positions) put back in item order, on all ranks.

    part: (len(shard(n_items)), ...) → (n_items, ...).
    """
    if not active():
        return part
    parts = [None] * world_size()
    sys.modules["torch.distributed"].all_gather_object(parts, part)
    full = np.empty((n_items, *part.shape[1:]), dtype=part.dtype)
    for r, rows in enumerate(parts):
        full[r :: world_size()] = rows
    return full


def gather_concat(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every rank's arrays of per-item records (each (n_rank,)) concatenated in rank order, on all ranks."""
    if not active():
        return arrays
    parts = [None] * world_size()
    sys.modules["torch.distributed"].all_gather_object(parts, arrays)
    return {key: np.concatenate([part[key] for part in parts]) for key in arrays}


def wrap(module: torch.nn.Module, device: torch.device, sync_batchnorm: bool = False) -> torch.nn.Module:
    """``module`` under DistributedDataParallel (gradients averaged over ranks), or itself in one process.

    ``sync_batchnorm``: BatchNorm statistics over the global batch (CUDA only) instead of each rank's share.
    """
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("sync_batchnorm=True needs CUDA devices (torch's SyncBatchNorm); use False on CPUs")
        import torch

        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
