"""faiss k-means on an inner-product index and the nearest-centroid assignment that gives pseudo labels.

Settings of the reference (TaoRuijie/Loss-Gated-Learning, ``Stage2/model.py``, ``cluster_network``):
``faiss.Clustering(192, n_cluster)`` with faiss's defaults — 25 iterations, seed 1234, at most 256
training points per centroid (1.5 M for 6,000 clusters, so all 1.09 M VoxCeleb2 utterances are used),
centroids not re-normalised (not spherical) — trained on a float32 ``GpuIndexFlatIP``; the same index
then gives every utterance its top-1 centroid. The kit keeps these defaults, runs on a CPU index when
faiss has no GPU support, and exposes the iterations, seed and points-per-centroid sampling: with
``max_points_per_centroid=64`` the 6,000 centroids are trained on a 384 k sample, and only the final
assignment touches every utterance, which keeps 1 M × 6,000 practical on a CPU (see
``benchmarks/bench_kmeans.py``).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from lgl_helpers.config import check_int, check_n_clusters

log = logging.getLogger(__name__)

# faiss's defaults, which the reference uses unchanged.
REFERENCE_N_ITER = 25
REFERENCE_SEED = 1234
REFERENCE_MAX_POINTS_PER_CENTROID = 256
# Rows further than this from unit norm are refused: the inner product is only a cosine on unit rows.
UNIT_NORM_TOLERANCE = 1e-3


def faiss_gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees a CUDA device."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_use_gpu(use_gpu: bool | str) -> bool:
    """``"auto"`` → whether faiss has a usable GPU; True (checked) or False as given."""
    if use_gpu == "auto":
        return faiss_gpu_available()
    if use_gpu is True:
        if not faiss_gpu_available():
            raise ValueError("use_gpu=True but faiss has no GPU support or sees no CUDA device; use 'auto' or False")
        return True
    if use_gpu is False:
        return False
    raise ValueError(f"use_gpu={use_gpu!r} must be 'auto', True or False")


def _ip_index(d: int, gpu: bool):
    """Exact inner-product index; on the GPU in float32 like the reference. Returns (index, resources)."""
    import faiss

    if not gpu:
        return faiss.IndexFlatIP(d), None
    resources = faiss.StandardGpuResources()
    config = faiss.GpuIndexFlatConfig()
    config.useFloat16 = False
    config.device = 0
    return faiss.GpuIndexFlatIP(resources, d, config), resources


def _check_emb(emb: np.ndarray, name: str = "emb") -> np.ndarray:
    """emb: (N, D) finite float32 rows of unit norm → C-contiguous float32 (faiss needs both)."""
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {emb.shape}")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if not np.isfinite(emb).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(emb, axis=1)
    worst = int(np.argmax(np.abs(norms - 1.0)))
    if abs(norms[worst] - 1.0) > UNIT_NORM_TOLERANCE:
        raise ValueError(f"{name} rows must be L2-normalised; row {worst} has norm {norms[worst]:.6f}")
    return emb


def assign_to_centroids(emb: np.ndarray, centroids: np.ndarray, *, use_gpu: bool | str = "auto") -> np.ndarray:
    """Nearest centroid by inner product, with an exact faiss ``IndexFlatIP``.

    emb: (N, D) float32 unit norm; centroids: (K, D) float32 (not necessarily unit norm, as in the
    reference). Returns (N,) int64 in [0, K).
    """
    emb = _check_emb(emb)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    if centroids.ndim != 2 or centroids.shape[1] != emb.shape[1] or centroids.shape[0] == 0:
        raise ValueError(f"centroids must be (K, {emb.shape[1]}), got shape {centroids.shape}")
    # The GPU resources must outlive the index, hence the named (unused) variable.
    index, _resources = _ip_index(emb.shape[1], resolve_use_gpu(use_gpu))
    index.add(centroids)
    _, nearest = index.search(emb, 1)
    return nearest[:, 0].astype(np.int64)


def kmeans_pseudo_labels(
    emb: np.ndarray,
    n_clusters: int,
    *,
    n_iter: int = REFERENCE_N_ITER,
    seed: int = REFERENCE_SEED,
    max_points_per_centroid: int = REFERENCE_MAX_POINTS_PER_CENTROID,
    use_gpu: bool | str = "auto",
    verbose: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """faiss k-means on an inner-product index, then each row's nearest centroid as its pseudo label.

    emb: (N, D) float32, rows of unit norm. Returns pseudo_labels (N,) int64 in [0, n_clusters) and
    centroids (n_clusters, D) float32. faiss trains on a random sample of
    ``min(N, n_clusters × max_points_per_centroid)`` rows (drawn with ``seed``) and runs all ``n_iter``
    iterations (no early stop); every row is assigned afterwards. ``use_gpu``: ``"auto"`` uses a GPU
    index when faiss has GPU support and sees CUDA. Raises ``ValueError`` before any work when
    ``n_clusters`` exceeds N (faiss would fail inside training).
    """
    import faiss

    emb_shape = np.shape(emb)
    check_n_clusters(n_clusters, emb_shape[0] if len(emb_shape) == 2 else None)
    check_int("n_iter", n_iter, 1)
    check_int("max_points_per_centroid", max_points_per_centroid, 1)
    emb = _check_emb(emb)
    n, d = emb.shape
    gpu = resolve_use_gpu(use_gpu)

    clustering = faiss.Clustering(d, int(n_clusters))
    clustering.niter = int(n_iter)
    clustering.seed = int(seed)
    clustering.max_points_per_centroid = int(max_points_per_centroid)
    # faiss uses min_points_per_centroid (39) only to print "please provide at least ... training points" on
    # stderr, outside the log; the points per centroid are in the log line below, so the raw warning is off.
    clustering.min_points_per_centroid = 1
    clustering.verbose = bool(verbose)
    index, _resources = _ip_index(d, gpu)
    start = time.perf_counter()
    clustering.train(emb, index)
    centroids = faiss.vector_to_array(clustering.centroids).reshape(int(n_clusters), d).astype(np.float32)
    pseudo_labels = assign_to_centroids(emb, centroids, use_gpu=gpu)
    stats = clustering.iteration_stats
    objective = stats.at(stats.size() - 1).obj if stats.size() else float("nan")
    log.info(
        "k-means: %d points → %d clusters (%s), %d iterations on %d sampled points, objective %.1f, %.1f s",
        n,
        n_clusters,
        "GPU" if gpu else "CPU",
        n_iter,
        min(n, n_clusters * max_points_per_centroid),
        objective,
        time.perf_counter() - start,
    )
    return pseudo_labels, centroids
