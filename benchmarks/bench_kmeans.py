"""Time the kit's faiss k-means (Stage II clustering) on random 192-d unit vectors.

Random unit vectors have no cluster structure, so this measures cost, not quality: faiss runs every
iteration (no early stop), and one iteration costs about (training points) × k × 192 multiply-adds.
``max_points_per_centroid`` caps the training sample at k × that value; every point is then assigned
once. Usage: ``python benchmarks/bench_kmeans.py [--sizes 100000 1000000] [--k 6000] [--n-iter 10]
[--max-points-per-centroid 64]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def random_unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) float32 rows uniform on the unit sphere."""
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--k", type=int, default=6000)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--n-iter", type=int, default=10)
    parser.add_argument("--max-points-per-centroid", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import faiss

    from lgl_helpers.clustering import kmeans

    gpu = kmeans.faiss_gpu_available()
    print(
        f"faiss {faiss.__version__}, {'GPU' if gpu else 'CPU'} index, {faiss.omp_get_max_threads()} threads, "
        f"{os.cpu_count()} cores; k={args.k}, d={args.dim}, n_iter={args.n_iter}, "
        f"max_points_per_centroid={args.max_points_per_centroid}"
    )
    header = (
        f"{'N':>9} {'k':>5} {'iters':>5} {'max ppc':>7} {'train pts':>9} {'pts/centroid':>12} "
        f"{'k-means s':>9} {'s/iter':>7} {'assign s':>8} {'non-empty':>9}"
    )
    rows = []
    for n in args.sizes:
        emb = random_unit_vectors(n, args.dim, args.seed)
        start = time.perf_counter()
        labels, centroids = kmeans.kmeans_pseudo_labels(
            emb, args.k, n_iter=args.n_iter, seed=args.seed, max_points_per_centroid=args.max_points_per_centroid
        )
        total = time.perf_counter() - start
        start = time.perf_counter()
        kmeans.assign_to_centroids(emb, centroids)
        assign = time.perf_counter() - start
        train_points = min(n, args.k * args.max_points_per_centroid)
        rows.append(
            f"{n:>9} {args.k:>5} {args.n_iter:>5} {args.max_points_per_centroid:>7} {train_points:>9} "
            f"{train_points / args.k:>12.1f} {total:>9.1f} {(total - assign) / args.n_iter:>7.2f} {assign:>8.1f} "
            f"{np.unique(labels).size:>9}"
        )
        print(header, *rows, sep="\n", flush=True)
        del emb
    print(
        "k-means s: train + assign all N (the kit's kmeans_pseudo_labels); s/iter: (k-means s − assign s) / iters;"
        " assign s: one exact IndexFlatIP search of all N against the k centroids."
    )


if __name__ == "__main__":
    main()
