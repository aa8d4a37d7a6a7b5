"""Time and peak memory of the centroid merge of over-clustering (lgl_helpers.clustering.merge) at VoxCeleb scale.

    python benchmarks/bench_merge.py                       # 50,000 x 192 -> 7,500, k-NN graphs of 16 and 32
    python benchmarks/bench_merge.py --n 5000 --k 750      # a quick look

The centroids are synthetic: ``--k`` random unit directions ("speakers"), each split into about
n / k noisy copies (what k-means does to a speaker when asked for more clusters than speakers),
so the merge has a right answer; the table gives its adjusted Rand index against it. Each
configuration runs in a fresh process, whose peak resident memory (ru_maxrss, the process's whole
footprint: Python, numpy, scikit-learn and faiss included) is reported beside the time. The exact
merge (a dense n x n float64 distance matrix: 20 GB at 50,000) is not run at that size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np


def synthetic_centroids(n: int, k: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 192) float32 unit centroids around k unit directions, and (n,) the direction of each."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(k, 192))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    truth = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    x = directions[truth] + noise * rng.normal(size=(n, 192)) / np.sqrt(192)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


def one_run(n: int, k: int, n_neighbors: int, noise: float) -> dict:
    import resource

    from sklearn.metrics import adjusted_rand_score

    from lgl_helpers.clustering.merge import merge_centroids

    x, truth = synthetic_centroids(n, k, noise)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tic = time.perf_counter()
    merged = merge_centroids(x, k, n_neighbors=n_neighbors)
    seconds = time.perf_counter() - tic
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "peak_rss_gib": peak / 2**20,
        "rss_before_gib": before / 2**20,
        "ari": float(adjusted_rand_score(truth, merged)),
        "n_merged": int(merged.max() + 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000, help="centroids of the over-clustering")
    parser.add_argument("--k", type=int, default=7_500, help="clusters after the merge")
    parser.add_argument("--neighbors", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--noise", type=float, default=0.5, help="spread of a speaker's centroids (unit-norm scale)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n, k, neighbors, noise = int(args.child[0]), int(args.child[1]), int(args.child[2]), float(args.child[3])
        print(json.dumps(one_run(n, k, neighbors, noise)))
        return
    print("| centroids | merged to | k-NN graph | seconds | peak RSS (GiB) | RSS before the merge (GiB) | ARI |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for neighbors in args.neighbors:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(args.n), str(args.k), str(neighbors), str(args.noise)],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {args.n:,} | {args.k:,} | {neighbors} | {r['seconds']:.1f} | {r['peak_rss_gib']:.2f} | "
            f"{r['rss_before_gib']:.2f} | {r['ari']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
