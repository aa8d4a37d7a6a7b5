"""Over-clustering, then merging: k-means centroids merged by agglomerative clustering down to the target.

Miara et al. (Interspeech 2024) cluster VoxCeleb2 with k-means into 50,000 clusters and merge the
centroids into 7,500 with agglomerative clustering; a small cluster of one speaker is easier to get
right than a large one, and merging joins the pieces of a speaker that k-means split. Here the
centroids are merged with average linkage on the cosine distance (scikit-learn's
``AgglomerativeClustering``). Exact average linkage needs every pairwise distance, a dense
K × K matrix (50,000² float64 = 20 GB); instead the merge is restricted to a symmetric k-nearest-
neighbour graph of the centroids (faiss, exact inner-product search in blocks), which holds
O(K × n_neighbors) distances. With ``n_neighbors >= K - 1`` the graph is complete and the merge is
exact average linkage (scipy's ``linkage(method="average", metric="cosine")`` cut at the target).
``benchmarks/bench_merge.py`` measures time and peak memory at 50,000 → 7,500.
"""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MERGE_NEIGHBORS = 16  # k of the connectivity graph (benchmarks/bench_merge.py: exact groups at 50,000 -> 7,500)
SEARCH_BLOCK = 4096  # centroids searched at a time, so the (block, K) similarities stay small


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise ValueError("centroids must have non-zero rows to be compared by cosine")
    return x / norms


def knn_edges(x: np.ndarray, n_neighbors: int) -> dict[tuple[int, int], float]:
    """Cosine distances of each unit row of ``x`` (K, D) to its ``n_neighbors`` nearest, as ``{(i, j): d}``
    with i < j (the graph made symmetric). Exact search on a faiss ``IndexFlatIP`` in blocks."""
    import faiss

    k = min(int(n_neighbors) + 1, x.shape[0])  # +1: each row finds itself first
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    edges: dict[tuple[int, int], float] = {}
    for start in range(0, x.shape[0], SEARCH_BLOCK):
        sims, neighbours = index.search(x[start : start + SEARCH_BLOCK], k)
        for row, (sim_row, nbr_row) in enumerate(zip(sims, neighbours, strict=True), start=start):
            for sim, j in zip(sim_row.tolist(), nbr_row.tolist(), strict=True):
                if j != row and j >= 0:
                    edges[(min(row, j), max(row, j))] = 1.0 - sim
    return edges


def _average_linkage(x: np.ndarray, sizes: np.ndarray, n_clusters: int, n_neighbors: int) -> np.ndarray:
    """Average linkage on the k-NN graph of ``x`` (K, D) unit rows of weight ``sizes`` (K,), until
    ``n_clusters`` groups remain or the graph has no edge left. Returns (K,) the root row of each row's group.

    A merge of i and j sets the distance of the union to each neighbour c by the Lance-Williams rule
    of average linkage, ``(n_i d(i, c) + n_j d(j, c)) / (n_i + n_j)``, where c neighbours both; the one
    known distance where c neighbours one of them. On a complete graph this is exact average linkage.
    """
    import heapq

    n = x.shape[0]
    neighbours: list[dict[int, float]] = [{} for _ in range(n)]
    for (i, j), d in knn_edges(x, n_neighbors).items():
        neighbours[i][j] = neighbours[j][i] = d
    sizes = sizes.astype(np.float64).tolist()
    version = [0] * n
    parent = list(range(n))
    heap = [(d, i, j, 0, 0) for i in range(n) for j, d in neighbours[i].items() if i < j]
    heapq.heapify(heap)
    groups = n
    while groups > n_clusters and heap:
        _, i, j, vi, vj = heapq.heappop(heap)
        if vi != version[i] or vj != version[j]:
            continue  # an entry from before i or j took part in a merge
        ni, nj = sizes[i], sizes[j]
        merged = {}
        for c in set(neighbours[i]) | set(neighbours[j]):
            if c in (i, j):
                continue
            di, dj = neighbours[i].get(c), neighbours[j].get(c)
            merged[c] = di if dj is None else dj if di is None else (ni * di + nj * dj) / (ni + nj)
            neighbours[c].pop(j, None)
            neighbours[c][i] = merged[c]
        neighbours[i], neighbours[j] = merged, {}
        sizes[i] = ni + nj
        version[i] += 1
        version[j] = -1  # j is gone
        parent[j] = i
        groups -= 1
        for c, d in merged.items():
            a, b = (i, c) if i < c else (c, i)
            heapq.heappush(heap, (d, a, b, version[a], version[b]))
    roots = np.array(parent)
    while True:  # path halving by array: every row points at its group's root
        nxt = roots[roots]
        if np.array_equal(nxt, roots):
            return roots
        roots = nxt


def merge_centroids(centroids: np.ndarray, n_clusters: int, n_neighbors: int = DEFAULT_MERGE_NEIGHBORS) -> np.ndarray:
    """Average-linkage (cosine) merge of ``centroids`` into ``n_clusters`` groups, on a k-NN graph.

    centroids: (K, D) with K >= n_clusters. Returns (K,) int64 in [0, n_clusters): each centroid's
    merged cluster, numbered by first appearance. ``n_neighbors``: k of the graph (``>= K - 1``:
    complete, exact average linkage). Memory is O(K × n_neighbors). Where the graph runs out of
    edges before ``n_clusters`` (separate components), the remaining groups' mean directions get a
    new k-NN graph and merging continues on it.
    """
    k_over = int(centroids.shape[0])
    if not 1 <= n_clusters <= k_over:
        raise ValueError(f"cannot merge {k_over} centroids into n_clusters={n_clusters}")
    x = _unit(centroids)
    tic = time.perf_counter()
    group = np.arange(k_over)
    points, sizes, rounds = x, np.ones(k_over), 0
    while points.shape[0] > n_clusters:
        roots = _average_linkage(points, sizes, n_clusters, n_neighbors)
        ids, local = np.unique(roots, return_inverse=True)
        group = local[group]
        sums = np.zeros((ids.size, x.shape[1]), dtype=np.float64)
        np.add.at(sums, group, x.astype(np.float64))
        points, sizes = _unit(sums), np.bincount(group).astype(np.float64)
        rounds += 1
    # Numbered by first appearance, so that the result does not depend on the merge order.
    _, first, inverse = np.unique(group, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    log.info(
        "merged %d centroids into %d clusters (average linkage, cosine, %d-NN graph, %d round(s)) in %.1f s",
        k_over,
        n_clusters,
        n_neighbors,
        rounds,
        time.perf_counter() - tic,
    )
    return order[inverse].astype(np.int64)


def merged_centroids(emb: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """(n_clusters, D) float32 mean of each merged cluster's embeddings (not re-normalised, as k-means')."""
    sums = np.zeros((n_clusters, emb.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, emb)
    counts = np.bincount(labels, minlength=n_clusters)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)
