"""The kit on a CUDA device: RNG states, TF32 and bf16, NCCL with SyncBatchNorm, the faiss GPU index.

Every test here is marked ``cuda`` and skips without a CUDA device; ``benchmarks/gpu_check.py`` runs
them (``pytest -m cuda tests/test_cuda.py``) on the GPU machine.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from lgl_helpers.core import distributed
from lgl_helpers.core.embed import autocast_context, embed_files
from lgl_helpers.core.losses import AAMSoftmax
from lgl_helpers.core.models import ECAPATDNN
from lgl_helpers.training.executor import EncoderWithHead, enable_tf32
from lgl_helpers.training.state import capture_rng, restore_rng

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def tf32_flags():
    """The TF32 flags as they were before the test, restored after it."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def test_cuda_rng_restore_is_bitwise():
    torch.cuda.manual_seed_all(3)
    torch.randn(5, device="cuda")  # the states captured mid-stream, not at a seed
    state = capture_rng()
    assert "cuda" in state and len(state["cuda"]) == torch.cuda.device_count()
    first = (torch.randn(1000, device="cuda"), torch.rand(7, device="cuda"), torch.randn(3))
    torch.randn(123, device="cuda")  # moves the generators on
    restore_rng(state)
    again = (torch.randn(1000, device="cuda"), torch.rand(7, device="cuda"), torch.randn(3))
    for a, b in zip(first, again):
        assert torch.equal(a, b)


def test_cuda_rng_survives_a_checkpoint(tmp_path):
    from lgl_helpers.training.state import load_checkpoint, save_checkpoint

    torch.cuda.manual_seed_all(11)
    path = save_checkpoint(tmp_path / "x.model", ECAPATDNN(8, 32), {"epoch": 1})
    expected = torch.randn(64, device="cuda")
    torch.randn(9, device="cuda")
    restore_rng(load_checkpoint(path)["rng"])
    assert torch.equal(torch.randn(64, device="cuda"), expected)


def test_training_turns_tf32_on_and_embedding_turns_it_off(tiny_corpus, tf32_flags):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    enable_tf32(torch.device("cuda"))
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    torch.manual_seed(0)
    model = ECAPATDNN(16, 64).eval()
    paths = sorted((tiny_corpus / "test").rglob("*.wav"))[:6]
    on_cpu = embed_files(model, paths, device="cpu", show_progress=False)
    on_gpu = embed_files(model, paths, device="cuda", show_progress=False)
    # float32 on the GPU (TF32 off inside embed_files) agrees with the CPU to float32 rounding
    assert np.abs(on_gpu - on_cpu).max() < 1e-4
    # and the training's TF32 settings are back afterwards
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_tf32_forward_stays_close_to_fp32(tf32_flags):
    torch.manual_seed(0)
    model = ECAPATDNN(32, 128).cuda().eval()
    wave = torch.randn(4, 32000, device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        exact = model(wave)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    with torch.no_grad():
        tf32 = model(wave)
    cosine = torch.nn.functional.cosine_similarity(exact, tf32)
    assert cosine.min() > 0.999


def test_bf16_step_keeps_float32_parameters_and_head():
    torch.manual_seed(0)
    model = EncoderWithHead(ECAPATDNN(32, 128), AAMSoftmax(10)).cuda().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    wave = torch.randn(8, 16000, device="cuda")
    labels = torch.randint(0, 10, (8,), device="cuda")
    with autocast_context("bf16", torch.device("cuda")):
        output = model(wave, labels, float("inf"))
    assert output.loss.dtype == torch.float32  # the margin's cosines stay outside autocast
    optimizer.zero_grad()
    output.loss.backward()
    optimizer.step()
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    with torch.no_grad():
        exact = model.encoder.eval()(wave)
        with autocast_context("bf16", torch.device("cuda")):
            half = model.encoder(wave).float()
    assert torch.nn.functional.cosine_similarity(exact, half).min() > 0.98


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_rank_nccl_group_and_sync_batchnorm(monkeypatch):
    import torch.distributed as dist

    dist.init_process_group(
        distributed.CUDA_BACKEND, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        on_gpu = torch.ones(3, device="cuda")
        dist.all_reduce(on_gpu)  # through NCCL
        on_cpu = torch.ones(3)
        dist.all_reduce(on_cpu)  # through gloo
        assert torch.equal(on_gpu.cpu(), on_cpu)
        # The kit's wrap as in a launched run (one rank here): SyncBatchNorm under DDP on NCCL
        monkeypatch.setattr(distributed, "active", lambda: True)
        torch.manual_seed(0)
        plain = ECAPATDNN(16, 64).cuda().train()
        wrapped = distributed.wrap(ECAPATDNN(16, 64).cuda().train(), torch.device("cuda", 0), sync_batchnorm=True)
        wrapped.module.load_state_dict(plain.state_dict())
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in wrapped.modules())
        wave = torch.randn(4, 16000, device="cuda")
        out = wrapped(wave)
        out.sum().backward()
        # one rank: the global batch is the local one, so the statistics and outputs are plain BatchNorm's
        assert torch.allclose(out, plain(wave), atol=1e-4)
    finally:
        dist.destroy_process_group()


def test_faiss_gpu_index_matches_cpu():
    pytest.importorskip("faiss")
    from lgl_helpers.clustering.kmeans import assign_to_centroids, faiss_gpu_available, kmeans_pseudo_labels

    if not faiss_gpu_available():
        pytest.skip("the installed faiss has no GPU support (faiss-cpu)")
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((2000, 192), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels, centroids = kmeans_pseudo_labels(emb, 20, n_iter=5, use_gpu=True)
    assert labels.shape == (2000,) and np.unique(labels).size == 20
    on_cpu = assign_to_centroids(emb, centroids, use_gpu=False)
    assert (on_cpu == labels).mean() > 0.999  # float32 ties aside, the same nearest centroid
