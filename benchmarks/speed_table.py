"""The kit's speed table: Stage II train step (fp32, bf16), data loader with workers, embedding, faiss k-means.

Prints one markdown table. The defaults are the GPU sizes (C=512, batch 400 × 3 s, 1 M × 192 to 6,000
clusters); ``--small`` gives sizes a 2-core CPU finishes in a few minutes. The loader and the
embedding read the toy corpus (or any VoxCeleb-laid-out one).

Usage:
    python benchmarks/speed_table.py runs/toy --small
    python benchmarks/speed_table.py /data/vox --batch 400 --kmeans-points 1000000 --kmeans-k 6000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from lgl_helpers.core import augment, data, embed, models
from lgl_helpers.core.distributed import get_device
from lgl_helpers.core.losses import AAMSoftmax
from lgl_helpers.corpus import lists
from lgl_helpers.training.executor import EncoderWithHead


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", help="folder with train/, test/, lists/, musan_split/, rirs/")
    ap.add_argument("--small", action="store_true", help="CPU sizes: batch 8, 1 step, 60 files, 20k × 192 to 200")
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--batch", type=int, default=400)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8])
    ap.add_argument("--loader-batches", type=int, default=20)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--kmeans-points", type=int, default=1_000_000)
    ap.add_argument("--kmeans-k", type=int, default=6000)
    a = ap.parse_args()
    if a.small:
        a.batch, a.steps, a.workers, a.loader_batches, a.files = 8, 1, [0, 2], 8, 60
        a.kmeans_points, a.kmeans_k = 20_000, 200
    return a


def _train_step(a, device: torch.device, precision: str) -> float:
    """Samples/s of Stage II steps (forward under the precision's autocast, backward, Adam)."""
    torch.manual_seed(0)
    model = EncoderWithHead(models.ECAPATDNN(a.channels), AAMSoftmax(1000)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    wave = torch.randn(a.batch, augment.segment_samples(300), device=device)
    labels = torch.randint(0, 1000, (a.batch,), device=device)
    for step in range(a.steps + 1):
        if step == 1:  # the first step builds kernels and allocator pools
            start = _sync(device)
        with embed.autocast_context(precision, device):
            out = model(wave, labels, float("inf"))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    return a.steps * a.batch / (_sync(device) - start)


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _loader(a, corpus: Path, workers: int) -> float:
    """Samples/s of Stage II batches (3 s crops + recipes, augmentation applied on the CPU)."""
    entries = lists.read_train_list(corpus / "lists" / "train_list.txt")
    sources = augment.AugmentSources.from_roots(corpus / "musan_split", corpus / "rirs")
    ds = data.Stage2Dataset(entries, corpus / "train", np.zeros(len(entries), dtype=np.int64), sources=sources)
    batch = 32
    loader = data.make_loader(ds, batch, workers, seed=0, device="cpu")
    loader.sampler.set_epoch(0)
    it = iter(loader)
    data.stage2_inputs(next(it), "cpu")  # workers started, first batches in flight
    start = time.perf_counter()
    for _ in range(a.loader_batches):
        data.stage2_inputs(next(it), "cpu")
    return a.loader_batches * batch / (time.perf_counter() - start)


def _embedding(a, corpus: Path, device: torch.device) -> tuple[float, int]:
    pairs = lists.read_trials(corpus / "lists" / "trials.txt")
    files = sorted({t.path_a for t in pairs} | {t.path_b for t in pairs})[: a.files]
    model = models.ECAPATDNN(a.channels)
    start = time.perf_counter()
    embed.embed_files(model, [corpus / "test" / f for f in files], device=device, show_progress=False)
    return len(files) / (time.perf_counter() - start), len(files)


def _kmeans(a) -> float:
    from lgl_helpers.clustering import kmeans

    x = np.random.default_rng(0).standard_normal((a.kmeans_points, 192), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    start = time.perf_counter()
    kmeans.kmeans_pseudo_labels(x, a.kmeans_k, seed=0)
    return time.perf_counter() - start


def main() -> None:
    a = _args()
    corpus = Path(a.corpus)
    device = get_device("auto")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}, C={a.channels}\n\n| measure | value |\n|---|---|")
    for precision in embed.PRECISIONS:
        rate = _train_step(a, device, precision)
        print(f"| Stage II train step, {a.batch} × 3 s, {precision} | {rate:.1f} samples/s |", flush=True)
    for workers in a.workers:
        rate = _loader(a, corpus, workers)
        print(f"| Stage II loader + augmentation, {workers} workers | {rate:.0f} samples/s |", flush=True)
    rate, n = _embedding(a, corpus, device)
    print(f"| test embedding, full length, {n} files | {rate:.1f} files/s |", flush=True)
    seconds = _kmeans(a)
    print(f"| faiss k-means, {a.kmeans_points:,} × 192 to {a.kmeans_k:,} clusters | {seconds:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
