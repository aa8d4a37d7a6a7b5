"""Timing of the evaluation path: EER + minDCF on Vox1-H-sized random trials, and batched vs one-by-one embedding.

Usage:
    python benchmarks/bench_metrics_embed.py                      # 200 synthetic 2-8 s wavs, C=512
    python benchmarks/bench_metrics_embed.py --files trials.txt --root /data/vox1/wav --n-files 500
``--files`` takes any list whose fields ending in ``.wav`` are paths (trial list, training list, one path a line).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lgl_helpers.core.audio import wav_info, write_wav
from lgl_helpers.core.distributed import get_device
from lgl_helpers.core.embed import embed_files
from lgl_helpers.core.metrics import compute_eer, compute_min_dcf
from lgl_helpers.core.models import ECAPATDNN


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_metrics(n_trials: int, repeats: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    labels = (rng.random(n_trials) < 0.5).astype(np.int64)
    # Scores rounded to 4 decimals, so that ties occur as with real cosine scores.
    scores = np.round(rng.normal(size=n_trials) + 1.5 * labels, 4)
    eer_s = _best_of(lambda: compute_eer(scores, labels), repeats)
    dcf_s = _best_of(lambda: compute_min_dcf(scores, labels), repeats)
    all_s = _best_of(
        lambda: (compute_eer(scores, labels), compute_min_dcf(scores, labels), compute_min_dcf(scores, labels, 0.01)),
        repeats,
    )
    return [
        (f"compute_eer, {n_trials:,} trials", f"{eer_s:.3f} s"),
        (f"compute_min_dcf (p 0.05), {n_trials:,} trials", f"{dcf_s:.3f} s"),
        ("EER + minDCF 0.05 + minDCF 0.01", f"{all_s:.3f} s"),
    ]


def synthetic_files(folder: Path, n_files: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_files):
        n = int(rng.uniform(2.0, 8.0) * 16000)
        t = np.arange(n) / 16000
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.05 * rng.standard_normal(n)
        paths.append(write_wav(folder / f"utt{i:04d}.wav", wave.astype(np.float32)))
    return paths


def listed_files(list_path: Path, root: Path | None, n_files: int) -> list[Path]:
    seen: dict[str, None] = {}
    for line in list_path.read_text().splitlines():
        for field in line.split():
            if field.endswith(".wav"):
                seen.setdefault(field, None)
    paths = [Path(p) if root is None else root / p for p in seen]
    return paths[:n_files]


def bench_embed(paths: list[Path], channels: int, device: torch.device, batch_seconds: float) -> list[tuple[str, str]]:
    torch.manual_seed(0)
    model = ECAPATDNN(channels).eval()
    audio_s = sum(wav_info(p).duration for p in paths)
    embed_files(model, paths[:4], device=device, show_progress=False)  # warm-up (allocator, kernels)
    start = time.perf_counter()
    batched = embed_files(model, paths, device=device, batch_seconds=batch_seconds, show_progress=False)
    batched_s = time.perf_counter() - start
    # Batch shapes repeat from the second pass on (per-epoch evaluation): cuDNN/cuFFT plans are cached.
    start = time.perf_counter()
    embed_files(model, paths, device=device, batch_seconds=batch_seconds, show_progress=False)
    again_s = time.perf_counter() - start
    start = time.perf_counter()
    # A budget below the shortest file puts every file in a batch of its own: the reference's loop.
    single = embed_files(model, paths, device=device, batch_seconds=0.01, show_progress=False)
    single_s = time.perf_counter() - start
    return [
        (f"embed {len(paths)} files ({audio_s:.0f} s audio), C={channels}, {device}", ""),
        (f"  batched (batch_seconds={batch_seconds:g})", f"{batched_s:.2f} s ({len(paths) / batched_s:.1f} files/s)"),
        ("  batched, second pass", f"{again_s:.2f} s ({len(paths) / again_s:.1f} files/s)"),
        ("  one by one", f"{single_s:.2f} s ({len(paths) / single_s:.1f} files/s)"),
        ("  speed-up", f"{single_s / batched_s:.2f}x"),
        ("  max |batched - one by one| (L2-normalised)", f"{np.abs(batched - single).max():.2e}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-trials", type=int, default=550_000, help="random trials for the metric timing")
    parser.add_argument("--repeats", type=int, default=3, help="metric timings: best of this many runs")
    parser.add_argument("--files", type=Path, default=None, help="list of wav paths (default: synthetic files)")
    parser.add_argument("--root", type=Path, default=None, help="folder the listed paths are relative to")
    parser.add_argument("--n-files", type=int, default=200, help="files to embed")
    parser.add_argument("--channels", type=int, default=512, help="ECAPA-TDNN C")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch-seconds", type=float, default=240.0, help="padded audio per batch")
    args = parser.parse_args()

    rows = bench_metrics(args.n_trials, args.repeats)
    device = get_device(args.device)
    if args.files is not None:
        paths = listed_files(args.files, args.root, args.n_files)
        rows += bench_embed(paths, args.channels, device, args.batch_seconds)
    else:
        with tempfile.TemporaryDirectory() as folder:
            paths = synthetic_files(Path(folder), args.n_files)
            rows += bench_embed(paths, args.channels, device, args.batch_seconds)
    width = max(len(name) for name, _ in rows)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'what':<{width}}  time")
    print(f"{'-' * width}  {'-' * 28}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
