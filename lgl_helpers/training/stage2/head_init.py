"""The AAM-softmax head at the start of phase T: random (the reference) or the pseudo-label centroids.

Phase T classifies pseudo labels with a head whose rows are class directions. The reference draws
them at random (xavier-normal), so the first epochs go into finding directions the clustering has
already found: the mean Stage I embedding of each pseudo class. Starting the head there
(``head_init = "centroids"``) lets a short phase T reach the regime the loss gate needs, where a
sample's loss says how far it sits from its class's majority, sooner than a random head does.
"""

from __future__ import annotations

import numpy as np
import torch

HEAD_INITS = ("random", "centroids")


def class_centroids(emb: np.ndarray, labels: np.ndarray, n_clusters: int) -> tuple[torch.Tensor, np.ndarray]:
    """Unit-norm mean embedding per pseudo class.

    emb: (N, D) embeddings; labels: (N,) ints in [0, n_clusters). Returns (centroids (n_clusters, D)
    float32, empty (n_clusters,) bool): rows of empty classes are zero and flagged, for the caller
    to keep their random initialisation.
    """
    emb = np.asarray(emb, dtype=np.float64)
    labels = np.asarray(labels)
    if emb.ndim != 2 or labels.shape != (emb.shape[0],):
        raise ValueError(f"emb must be (N, D) and labels (N,), got {emb.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_clusters):
        raise ValueError(f"labels must lie in [0, {n_clusters}), got [{labels.min()}, {labels.max()}]")
    sums = np.zeros((n_clusters, emb.shape[1]))
    np.add.at(sums, labels, emb)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    empty = norms[:, 0] == 0
    centroids = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
    return torch.from_numpy(centroids.astype(np.float32)), empty


def init_head_from_centroids(head: torch.nn.Module, emb: np.ndarray, labels: np.ndarray) -> int:
    """Set ``head.weight`` (n_clusters, D) rows to the class centroids of ``emb``; empty classes keep theirs.

    Returns the number of rows set.
    """
    centroids, empty = class_centroids(emb, labels, head.weight.shape[0])
    with torch.no_grad():
        head.weight[~torch.from_numpy(empty)] = centroids[~torch.from_numpy(empty)]
    return int((~empty).sum())
