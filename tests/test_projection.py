"""The UMAP fit without its fixed costs: the same distances and the same coordinates as plain umap."""

import numpy as np
import umap
import umap.umap_ as umap_module
from sklearn.metrics import pairwise_distances
from umap.distances import cosine

from lgl_helpers.notebook import projection


def test_pairwise_cosine_is_sklearn_with_umaps_metric_bit_for_bit():
    x = np.random.default_rng(3).normal(size=(40, 16)).astype(np.float32)
    x[5] = 0.0  # a zero row takes cosine's special cases
    ours = projection.pairwise_cosine(x)
    theirs = pairwise_distances(x, metric=cosine)
    assert ours.dtype == theirs.dtype == np.float32
    assert np.array_equal(ours, theirs)


def test_umap_projection_equals_a_plain_umap_fit():
    emb = np.random.default_rng(4).normal(size=(80, 12)).astype(np.float32)
    index, xy = projection.umap_projection(emb, sample=80, seed=0)
    plain = umap.UMAP(n_components=2, n_neighbors=15, metric="cosine", random_state=0, n_jobs=1)
    assert np.array_equal(xy, plain.fit_transform(emb[index]).astype(np.float32))


def test_exact_distances_hand_other_calls_to_sklearn_and_restore_it():
    x = np.random.default_rng(5).normal(size=(6, 3))
    sklearn_pairwise = umap_module.pairwise_distances
    with projection.exact_small_data_distances():
        assert umap_module.pairwise_distances is not sklearn_pairwise
        assert np.array_equal(umap_module.pairwise_distances(x, metric="euclidean"), sklearn_pairwise(x))
    assert umap_module.pairwise_distances is sklearn_pairwise


def test_compilation_cache_is_enabled_once_per_function():
    projection.cache_umap_compilation()
    assert projection.cache_umap_compilation() == 0  # every function of the fit caches already
