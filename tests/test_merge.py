"""Over-clustering then merging: the centroid merge against scipy's exact average linkage, and in a clustering."""

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from lgl_helpers.clustering import cluster, merge
from lgl_helpers.clustering.quality import clustering_quality
from lgl_helpers.corpus.lists import read_train_list


def _same_partition(a, b):
    """Equal up to renaming the clusters."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _scipy_average(x, k):
    return fcluster(linkage(x, method="average", metric="cosine"), k, criterion="maxclust")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_merge_equals_scipys_average_linkage(seed):
    x = np.random.default_rng(seed).normal(size=(60, 8)).astype(np.float32)
    for k in (2, 7, 20):
        merged = merge.merge_centroids(x, k, n_neighbors=59)
        assert merged.min() == 0 and merged.max() == k - 1
        assert _same_partition(merged, _scipy_average(x, k))


def test_graph_merge_equals_scipys_on_separated_groups():
    # 12 groups of 10 centroids around random directions: a 6-NN graph keeps every group connected inside.
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(12, 16))
    x = (np.repeat(centres, 10, axis=0) + 0.05 * rng.normal(size=(120, 16))).astype(np.float32)
    merged = merge.merge_centroids(x, 12, n_neighbors=6)
    assert _same_partition(merged, _scipy_average(x, 12))
    assert _same_partition(merged, np.repeat(np.arange(12), 10))


def test_knn_edges_are_each_rows_nearest_by_cosine():
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    edges = merge.knn_edges(x, 5)
    distance = 1.0 - x @ x.T
    np.fill_diagonal(distance, np.inf)
    for row in range(50):
        for j in np.argsort(distance[row])[:5]:
            assert edges[(min(row, j), max(row, j))] == pytest.approx(distance[row, j], abs=1e-5)
    assert all(i < j for i, j in edges)


def test_separate_components_are_merged_on_to_the_target():
    # Three tight pairs far apart: a 1-NN graph joins only each pair; merging must continue past that.
    x = np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0], [0.01, 1, 0], [0, 0, 1], [0, 0.01, 1]], dtype=np.float32)
    merged = merge.merge_centroids(x, 2, n_neighbors=1)
    assert merged.max() == 1 and merged[0] == merged[1] and merged[2] == merged[3] and merged[4] == merged[5]


def test_merge_refuses_a_target_above_the_centroids():
    with pytest.raises(ValueError, match="n_clusters=5"):
        merge.merge_centroids(np.eye(3, dtype=np.float32), 5)


def test_clustering_with_over_clustering_merges_to_n_clusters(tiny_corpus, tmp_path):
    import torch
    from test_stage2 import ECAPATDNN

    torch.manual_seed(0)
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    encoder = ECAPATDNN(16).eval()
    k = 4
    plain = cluster.cluster_utterances(
        encoder, entries, tiny_corpus / "train", k, tmp_path / "plain", n_iter=5, show_progress=False
    )
    over = cluster.cluster_utterances(
        encoder,
        entries,
        tiny_corpus / "train",
        k,
        tmp_path / "over",
        n_iter=5,
        show_progress=False,
        n_clusters_over=2 * k,
        reuse_from=[tmp_path / "plain"],
    )
    assert over.reused_from is None and over.reused_embeddings  # other settings: embeddings reused, k-means rerun
    assert sorted(set(over.pseudo_labels.tolist())) == list(range(k))
    assert over.centroids.shape == (k, over.emb.shape[1])
    assert over.quality["over"]["n_nonempty_clusters"] <= 2 * k
    assert over.quality["kmeans"]["merge"]["n_clusters_over"] == 2 * k
    assert "merge" not in plain.quality["kmeans"]
    # Each merged cluster is a union of over-clusters, and the labels' quality is reported for them.
    over_centroids = np.load(tmp_path / "over" / "over_centroids.npy")
    assert over_centroids.shape == (2 * k, over.emb.shape[1])
    expected = clustering_quality(over.pseudo_labels, [e.speaker for e in entries], k)
    assert over.quality["nmi"] == pytest.approx(expected["nmi"])
    with pytest.raises(ValueError, match="n_clusters_over=3 must be 0"):
        cluster.cluster_utterances(encoder, entries, tiny_corpus / "train", k, tmp_path / "x", n_clusters_over=3)


def test_notebook_02_shows_the_clusters_before_the_merge_beside_the_merged_ones():
    from lgl_helpers.notebook import clustering_view

    speakers = np.array(["a"] * 4 + ["b"] * 4)
    over = clustering_quality(np.array([0, 0, 1, 1, 2, 2, 3, 3]), speakers, 4)
    merged = clustering_quality(np.array([0, 0, 0, 0, 1, 1, 1, 1]), speakers, 2) | {"over": over}
    columns = clustering_view.quality_columns(merged, None)
    assert list(columns) == ["k-means, 4 (before merge)", "trained", "untrained"]
    assert columns["k-means, 4 (before merge)"] is over and "over" not in columns["trained"]
    table = clustering_view.format_quality(columns)
    assert "before merge" in table.splitlines()[0]
