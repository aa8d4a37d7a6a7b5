"""The UMAP fit of notebook 02 without its fixed costs, with the same coordinates to the last bit.

Two costs of a first UMAP fit in a fresh kernel are not the projection itself:

- numba compiles umap's functions in every process (about 13-15 s on 2 cores): umap-learn does not ask
  numba to cache them, so :func:`cache_umap_compilation` does, and ``make setup`` fills the cache once
  (:func:`warm_up`); a later process loads the machine code instead of compiling it.
- below 4096 points umap computes all pairwise distances with sklearn's ``pairwise_distances`` and its
  numba metric as a Python callable, one call per pair (2 million calls for 2000 points).
  :func:`pairwise_cosine` computes the same matrix in one numba loop over umap's own ``cosine``, the
  same float arithmetic in the same order, and :func:`exact_small_data_distances` lets the fit use it.
"""

from __future__ import annotations

import contextlib
import importlib

import numba
import numpy as np
import umap.umap_ as umap_module
from umap.distances import cosine

# umap's modules whose numba functions a fit calls (the others are for transforms, sparse input or plots).
UMAP_MODULES = ("umap.umap_", "umap.layouts", "umap.spectral", "umap.utils", "umap.distances")


def cache_umap_compilation() -> int:
    """Turn on numba's on-disk cache for every jitted function of :data:`UMAP_MODULES`; returns how many.

    The cache lives in umap's ``__pycache__`` (numba falls back to a per-user folder when that is not
    writable) and is keyed by the source file and the argument types, so it is the same machine code.
    """
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    enabled = 0
    for name in UMAP_MODULES:
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, CPUDispatcher) and isinstance(value._cache, NullCache):
                value.enable_caching()
                enabled += 1
    return enabled


@numba.njit(cache=True)
def _pairwise_cosine(x):  # pragma: no cover - compiled by numba
    n = x.shape[0]
    out = np.zeros((n, n), dtype=x.dtype)
    for i in range(n):
        for j in range(i + 1, n):
            distance = cosine(x[i], x[j])
            out[i, j] = distance
            out[j, i] = distance
        out[i, i] = cosine(x[i], x[i])
    return out


def pairwise_cosine(x: np.ndarray) -> np.ndarray:
    """x: (N, D) float32 → (N, N) float32 cosine distances, bit for bit sklearn's
    ``pairwise_distances(x, metric=umap.distances.cosine)`` (the upper triangle, mirrored, then the
    diagonal, each cast from umap's float64 result to x's dtype), in one compiled loop."""
    return _pairwise_cosine(np.ascontiguousarray(x))


@contextlib.contextmanager
def exact_small_data_distances():
    """While active, umap's small-data path gets its cosine distance matrix from :func:`pairwise_cosine`.

    umap calls the ``pairwise_distances`` its module imported from sklearn; this swaps that name for
    one that answers the dense cosine case and hands every other call to sklearn unchanged.
    """
    sklearn_pairwise = umap_module.pairwise_distances

    def pairwise_distances(x, y=None, metric="euclidean", **kwds):
        if y is None and metric is cosine and not kwds and isinstance(x, np.ndarray) and x.dtype == np.float32:
            return pairwise_cosine(x)
        return sklearn_pairwise(x, y, metric=metric, **kwds)

    umap_module.pairwise_distances = pairwise_distances
    try:
        yield
    finally:
        umap_module.pairwise_distances = sklearn_pairwise


def umap_projection(
    emb: np.ndarray, *, sample: int, seed: int = 0, n_neighbors: int = 15
) -> tuple[np.ndarray, np.ndarray]:
    """UMAP (cosine metric) of a random sample of rows, so a million-utterance run stays interactive.

    emb: (N, D). Returns sample indices (S,) int64, sorted, and coordinates (S, 2) float32, with
    S = min(sample, N). The sample and the layout are fixed by ``seed``.
    """
    import umap

    cache_umap_compilation()
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"emb must be (N, D), got shape {emb.shape}")
    size = min(int(sample), emb.shape[0])
    if size < 5:
        raise ValueError(f"sample={sample} (with N={emb.shape[0]}) leaves {size} points; UMAP needs at least 5")
    index = np.sort(np.random.default_rng(seed).choice(emb.shape[0], size=size, replace=False)).astype(np.int64)
    # A seeded UMAP is single-threaded anyway; saying so avoids umap's warning about it.
    reducer = umap.UMAP(
        n_components=2, n_neighbors=min(n_neighbors, size - 1), metric="cosine", random_state=seed, n_jobs=1
    )
    with exact_small_data_distances():
        xy = reducer.fit_transform(emb[index])
    return index, xy.astype(np.float32)


def warm_up() -> None:
    """Fit a small UMAP once so that numba's cache holds every function a fit compiles (``make setup``)."""
    emb = np.random.default_rng(0).normal(size=(300, 192)).astype(np.float32)
    umap_projection(emb, sample=300, seed=0)


if __name__ == "__main__":
    warm_up()
