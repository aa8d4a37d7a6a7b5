"""Clustering (Stage II step 1): faiss k-means, pseudo-label files, quality metrics, figures, notebook-02 helpers."""

import json

import numpy as np
import pytest
from corpus_params import tiny_data_params
from matplotlib.figure import Figure
from sklearn.metrics import normalized_mutual_info_score

from lgl_helpers.clustering import cluster, kmeans, pseudo_labels, quality
from lgl_helpers.core import embed, models
from lgl_helpers.corpus.lists import ListFormatError, TrainEntry, read_train_list
from lgl_helpers.files import write_json
from lgl_helpers.notebook import clustering_view, projection
from lgl_helpers.reproducibility import seed_everything
from lgl_helpers.training import stage2
from lgl_helpers.training.stage1 import Stage1Config, train_stage1

# Tiny Stage I run for the NMI comparison: 36 steps on clean views (one to three minutes on two CPU cores).
# Measured on the tiny corpus: mean NMI 0.58 after it against 0.44 untrained. With augmented views the
# same 36 steps are too few to move the NMI (0.46).
STAGE1_CHANNELS, STAGE1_FRAMES, STAGE1_BATCH, STAGE1_EPOCHS = 32, 50, 16, 12
# Mean-NMI gain over the untrained encoder: 0.142-0.243 over training seeds 0-4 (`benchmarks/ci_margins.py --unit`).
NMI_MARGIN = 0.07


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(n_per_cluster, n_clusters, dim=32, spread=0.15, seed=0):
    """Unit vectors around ``n_clusters`` random directions. Returns emb (N, dim) and true labels (N,)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((n_clusters, dim)))
    truth = np.repeat(np.arange(n_clusters), n_per_cluster)
    emb = unit(centres[truth] + spread * rng.standard_normal((truth.size, dim)))
    return emb, truth


# --- k-means and assignment ------------------------------------------------------------------------


def test_faiss_assignment_equals_brute_force_for_the_same_centroids():
    rng = np.random.default_rng(1)
    emb = unit(rng.standard_normal((700, 48)))
    centroids = rng.standard_normal((37, 48)).astype(np.float32) * rng.uniform(0.3, 1.0, (37, 1)).astype(np.float32)
    faiss_labels = kmeans.assign_to_centroids(emb, centroids, use_gpu=False)
    brute = np.argmax(emb.astype(np.float64) @ centroids.astype(np.float64).T, axis=1)
    assert faiss_labels.dtype == np.int64
    np.testing.assert_array_equal(faiss_labels, brute)


def test_kmeans_labels_are_the_nearest_returned_centroid():
    emb, _ = blobs(40, 12, seed=2)
    labels, centroids = kmeans.kmeans_pseudo_labels(emb, 12, n_iter=10, seed=3, use_gpu=False)
    assert labels.shape == (emb.shape[0],) and centroids.shape == (12, emb.shape[1])
    np.testing.assert_array_equal(labels, np.argmax(emb.astype(np.float64) @ centroids.T.astype(np.float64), axis=1))


def test_kmeans_defaults_are_the_references_faiss_defaults():
    import faiss

    # The reference (Stage2/model.py, cluster_network) builds faiss.Clustering(d, n_cluster) and changes nothing.
    defaults = faiss.Clustering(192, 10)
    assert (defaults.seed, defaults.niter, defaults.max_points_per_centroid, defaults.spherical) == (
        kmeans.REFERENCE_SEED,
        kmeans.REFERENCE_N_ITER,
        kmeans.REFERENCE_MAX_POINTS_PER_CENTROID,
        False,
    )
    assert cluster.ClusteringConfig().cluster_seed == stage2.BaselineConfig().cluster_seed == kmeans.REFERENCE_SEED
    # The reference's calls verbatim, on a CPU index: the kit's defaults give the same labels.
    emb, _ = blobs(60, 9, seed=8)
    clus = faiss.Clustering(emb.shape[1], 12)
    index = faiss.IndexFlatIP(emb.shape[1])
    clus.train(emb, index)
    reference = np.array([int(i[0]) for i in index.search(emb, 1)[1]])
    labels, _ = kmeans.kmeans_pseudo_labels(emb, 12, use_gpu=False)
    np.testing.assert_array_equal(labels, reference)


def test_kmeans_groups_nearby_points_and_is_deterministic():
    # Twice as many clusters as blobs: random initialisation (the reference's) may then split a blob,
    # but a centroid between two blobs does not survive, so every cluster stays inside one blob.
    emb, truth = blobs(30, 8, seed=4)
    labels, _ = kmeans.kmeans_pseudo_labels(emb, 16, n_iter=20, seed=5, use_gpu=False)
    assert quality.clustering_quality(labels, truth)["purity"] > 0.98
    again, _ = kmeans.kmeans_pseudo_labels(emb, 16, n_iter=20, seed=5, use_gpu=False)
    np.testing.assert_array_equal(labels, again)


def test_points_per_centroid_sampling_still_assigns_every_point():
    emb, truth = blobs(250, 6, seed=6)  # 1500 points, trained on 12 × 20 = 240 of them
    labels, _ = kmeans.kmeans_pseudo_labels(emb, 12, n_iter=15, seed=0, max_points_per_centroid=20, use_gpu=False)
    assert labels.shape == (1500,)
    assert quality.clustering_quality(labels, truth)["purity"] > 0.98


def test_n_clusters_above_n_is_an_error_before_any_work():
    not_normalised = np.ones((10, 4), dtype=np.float32)  # would fail the later norm check
    with pytest.raises(ValueError, match=r"n_clusters=11 is larger than the number of utterances N=10"):
        kmeans.kmeans_pseudo_labels(not_normalised, 11)


def test_cluster_utterances_checks_n_clusters_before_loading_the_encoder(tmp_path):
    entries = [TrainEntry("s1", f"s1/v/{i}.wav", 1.0) for i in range(3)]
    with pytest.raises(ValueError, match=r"n_clusters=4 is larger than the number of utterances N=3"):
        cluster.cluster_utterances(tmp_path / "missing.model", entries, tmp_path, 4, tmp_path / "out")


@pytest.mark.parametrize(
    "emb, message",
    [
        (np.full((5, 3), 2.0, dtype=np.float32), "must be L2-normalised; row 0 has norm"),
        (np.zeros((5,), dtype=np.float32), r"must be a non-empty \(N, D\) array"),
        (np.full((5, 3), np.nan, dtype=np.float32), "NaN or infinite"),
    ],
)
def test_bad_embeddings_are_rejected(emb, message):
    with pytest.raises(ValueError, match=message):
        kmeans.kmeans_pseudo_labels(emb, 2, use_gpu=False)


def test_bad_kmeans_parameters_name_the_parameter():
    emb, _ = blobs(5, 2)
    with pytest.raises(ValueError, match="n_iter=0"):
        kmeans.kmeans_pseudo_labels(emb, 2, n_iter=0)
    with pytest.raises(ValueError, match="max_points_per_centroid=0"):
        kmeans.kmeans_pseudo_labels(emb, 2, max_points_per_centroid=0)
    with pytest.raises(ValueError, match=r"n_clusters=0"):
        kmeans.kmeans_pseudo_labels(emb, 0)
    with pytest.raises(ValueError, match=r"use_gpu='yes'"):
        kmeans.kmeans_pseudo_labels(emb, 2, use_gpu="yes")


def test_use_gpu_true_without_faiss_gpu_is_a_clear_error():
    if kmeans.faiss_gpu_available():
        pytest.skip("faiss sees a GPU here")
    emb, _ = blobs(5, 2)
    with pytest.raises(ValueError, match="use_gpu=True but faiss has no GPU support"):
        kmeans.kmeans_pseudo_labels(emb, 2, use_gpu=True)


# --- pseudo-label files ----------------------------------------------------------------------------


def make_entries(n=4):
    return [TrainEntry(f"id{i % 2}", f"id{i % 2}/vid/{i:05d}.wav", 2.0) for i in range(n)]


def test_pseudo_label_file_round_trip_and_format(tmp_path):
    entries = make_entries()
    path = pseudo_labels.write_pseudo_labels(tmp_path / "pseudo_labels.txt", entries, np.array([3, 0, 3, 1]))
    assert path.read_text() == "id0/vid/00000.wav 3\nid1/vid/00001.wav 0\nid0/vid/00002.wav 3\nid1/vid/00003.wav 1\n"
    labels = pseudo_labels.read_pseudo_labels(path, entries, n_clusters=4)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [3, 0, 3, 1])
    np.testing.assert_array_equal(pseudo_labels.read_pseudo_labels(path, [e.path for e in entries]), [3, 0, 3, 1])


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "id0/vid/00000.wav 3\nid0/vid/00002.wav 0\n",
            r"pseudo_labels.txt:2: path 'id0/vid/00002.wav' does not match training-list entry 2 'id1/vid/00001.wav'",
        ),
        ("id0/vid/00000.wav 3\nid1/vid/00001.wav\n", r"pseudo_labels.txt:2: expected 2 fields"),
        ("id0/vid/00000.wav x\n", r"pseudo_labels.txt:1: cluster id 'x' is not an integer"),
        ("id0/vid/00000.wav -1\n", r"pseudo_labels.txt:1: cluster id -1 is not \[0, 4\)"),
        ("id0/vid/00000.wav 0\nid1/vid/00001.wav 4\n", r"pseudo_labels.txt:2: cluster id 4 is not \[0, 4\)"),
        (
            "id0/vid/00000.wav 0\nid1/vid/00001.wav 0\n",
            r"pseudo_labels.txt: has 2 labels but the training list has 4 entries \(first missing: 'id0/vid/00002.wav'\)",
        ),
        ("".join(f"id{i % 2}/vid/{i:05d}.wav 0\n" for i in range(5)), r"pseudo_labels.txt:5: more lines than the 4"),
    ],
)
def test_bad_pseudo_label_files_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "pseudo_labels.txt"
    path.write_text(text)
    with pytest.raises(ListFormatError, match=message):
        pseudo_labels.read_pseudo_labels(path, make_entries(), n_clusters=4)


def test_missing_pseudo_label_file(tmp_path):
    with pytest.raises(ListFormatError, match="pseudo-label file does not exist"):
        pseudo_labels.read_pseudo_labels(tmp_path / "nope.txt", make_entries())


def test_write_pseudo_labels_checks_length(tmp_path):
    with pytest.raises(ValueError, match="pseudo_labels has 3 entries, expected 4"):
        pseudo_labels.write_pseudo_labels(tmp_path / "p.txt", make_entries(), np.array([0, 1, 2]))


# --- quality -----------------------------------------------------------------------------------------

# Cluster 0: a×2 b×1; 1: b×2; 2: c×2 d×2 (tie → c); 3: e×1; 4: x×2; 5: x×2 (x is split); ids 6, 7 empty.
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 5, 5])
SPEAKERS = ["a", "a", "b", "b", "b", "c", "c", "d", "d", "e", "x", "x", "x", "x"]


def test_clustering_quality_on_a_hand_counted_example():
    q = quality.clustering_quality(LABELS, SPEAKERS, n_clusters=8)
    assert q["nmi"] == pytest.approx(normalized_mutual_info_score(SPEAKERS, LABELS))
    assert q["purity"] == pytest.approx(11 / 14)  # 2 + 2 + 2 + 1 + 2 + 2
    assert q["inverse_purity"] == pytest.approx(11 / 14)  # a 2, b 2, c 2, d 2, e 1, x 2
    assert q["n_merging_clusters"] == 1  # only cluster 2 has two speakers with ≥ 2 utterances each
    assert q["n_split_speakers"] == 1  # x; b has only one utterance in cluster 0
    assert (q["n_utterances"], q["n_speakers"], q["n_nonempty_clusters"]) == (14, 6, 6)
    assert (q["n_empty_clusters"], q["n_singleton_clusters"]) == (2, 1)
    assert q["cluster_size"] == {"min": 1, "median": 2.0, "mean": pytest.approx(14 / 6), "max": 4}
    json.dumps(q)  # plain types only


def test_perfect_clustering_scores_one():
    q = quality.clustering_quality(np.array([5, 5, 2, 2, 9]), ["p", "p", "q", "q", "r"])
    assert q["nmi"] == pytest.approx(1.0) and q["purity"] == 1.0 and q["inverse_purity"] == 1.0
    assert q["n_merging_clusters"] == 0 and q["n_split_speakers"] == 0 and q["n_empty_clusters"] is None


def test_majority_agreement_marks_minority_members_and_its_mean_is_purity():
    agree = quality.majority_agreement(LABELS, SPEAKERS)
    expected = [1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1]
    np.testing.assert_array_equal(agree, np.array(expected, dtype=bool))
    assert agree.mean() == pytest.approx(quality.clustering_quality(LABELS, SPEAKERS)["purity"])


def test_quality_input_checks():
    with pytest.raises(ValueError, match="pseudo_labels has 3 entries, expected 2"):
        quality.clustering_quality(np.array([0, 1, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="1-D integer array"):
        quality.clustering_quality(np.array([0.5, 1.0]), ["a", "b"])
    with pytest.raises(ValueError, match="pseudo label 5 is not below n_clusters=3"):
        quality.clustering_quality(np.array([0, 5]), ["a", "b"], n_clusters=3)


def test_cluster_summary_and_most_impure_clusters():
    rows = quality.cluster_summary(LABELS, SPEAKERS)
    assert [r["cluster"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert rows[2] == {
        "cluster": 2,
        "size": 4,
        "purity": 0.5,
        "majority_speaker": "c",
        "n_speakers": 2,
        "speakers": [("c", 2), ("d", 2)],
    }
    impure = quality.most_impure_clusters(LABELS, SPEAKERS, n=2)
    assert [(r["cluster"], r["purity"]) for r in impure] == [(2, 0.5), (0, pytest.approx(2 / 3))]
    table = clustering_view.format_cluster_table(impure, max_speakers=1)
    assert "c×2, … 1 more" in table and table.count("\n") == 2


def test_format_quality_puts_runs_side_by_side():
    text = clustering_view.format_quality(
        {
            "Stage I": quality.clustering_quality(LABELS, SPEAKERS, 8),
            "untrained": quality.clustering_quality(np.zeros(14, dtype=int), SPEAKERS),
        }
    )
    nmi_line = next(line for line in text.splitlines() if line.startswith("NMI"))
    assert nmi_line.split()[1:] == [f"{normalized_mutual_info_score(SPEAKERS, LABELS):.4f}", "0.0000"]
    assert "1/2/4" in text


# --- figures -----------------------------------------------------------------------------------------


def test_cluster_size_histogram_counts_every_cluster():
    fig = clustering_view.plot_cluster_sizes(LABELS, SPEAKERS, n_clusters=8)
    assert isinstance(fig, Figure)
    bars = fig.axes[0].containers[0]
    assert sum(bar.get_height() for bar in bars) == 8  # six non-empty clusters + two empty ones
    # the true speakers on their own axis: a corpus of equal speakers (one tall bar) flattens nothing
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "true speakers"
    assert fig.axes[0].get_ylim()[1] < 1.2 * max(bar.get_height() for bar in bars)


def test_purity_scatter_has_one_point_per_cluster():
    fig = clustering_view.plot_purity_vs_size(LABELS, SPEAKERS)
    offsets = fig.axes[0].collections[0].get_offsets()
    assert len(offsets) == 6
    fig.canvas.draw()  # no minor-tick labels on the log axis: they overlap on a short range
    assert not [t for t in fig.axes[0].xaxis.get_minorticklabels() if t.get_text()]
    np.testing.assert_allclose(sorted(offsets[:, 1]), sorted([2 / 3, 1, 0.5, 1, 1, 1]))


def test_umap_projection_keeps_speakers_apart_and_plots_two_panels(tmp_path):
    emb, truth = blobs(25, 4, dim=24, spread=0.1, seed=7)
    index, xy = projection.umap_projection(emb, sample=60, seed=0)
    assert index.shape == (60,) and xy.shape == (60, 2) and np.all(np.diff(index) > 0)
    distance = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(60) * 1e9
    nearest = distance.argmin(axis=1)
    assert (truth[index][nearest] == truth[index]).mean() > 0.95
    fig = clustering_view.plot_umap(
        xy, truth[index], np.array([f"s{t}" for t in truth[index]]), highlight_cluster=int(truth[index][0])
    )
    assert len(fig.axes) == 2
    # all points, the highlighted cluster's rings, and its points again on top in their own colours
    assert len(fig.axes[0].collections) == 3
    paths = clustering_view.save_figures({"umap": fig}, tmp_path / "figures")
    assert paths["umap"].read_bytes()[:4] == b"\x89PNG"


def test_umap_needs_a_few_points():
    with pytest.raises(ValueError, match="sample=3"):
        projection.umap_projection(np.eye(10, dtype=np.float32), sample=3)


# --- notebook-02 configuration --------------------------------------------------------------------------


def test_config_rejects_bad_values_naming_the_parameter():
    with pytest.raises(ValueError, match="n_clusters=0"):
        cluster.ClusteringConfig(n_clusters=0)
    with pytest.raises(ValueError, match="umap_sample=2"):
        cluster.ClusteringConfig(umap_sample=2)
    assert cluster.ClusteringConfig(device="cpu").use_gpu is False
    assert "n_clusters" in cluster.ClusteringConfig.field_names()


def test_resolve_inputs_reports_missing_checkpoint_and_list(tmp_path):
    (tmp_path / "r").mkdir()  # a run folder without a Stage I model (a missing run is its own error)
    cfg = cluster.ClusteringConfig(run_name="r", runs_dir=str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match=r"run_name='r': .*r/stage1/best.model does not exist; run notebooks 00 and 01"
    ):
        cluster.resolve_inputs(cfg)
    checkpoint = tmp_path / "c.model"
    checkpoint.write_bytes(b"x")
    cfg = cluster.ClusteringConfig(run_name="r", runs_dir=str(tmp_path), init_model=str(checkpoint))
    with pytest.raises(ValueError, match="train_list is empty and .*data.json does not give it"):
        cluster.resolve_inputs(cfg)


def test_resolve_inputs_takes_data_paths_from_data_json(tiny_corpus, tmp_path):
    run_dir = tmp_path / "r"
    write_json(
        run_dir / "data.json",
        {"train_list": str(tiny_corpus / "lists" / "train_list.txt"), "train_root": str(tiny_corpus / "train")},
    )
    (run_dir / "stage1").mkdir()
    (run_dir / "stage1" / "best.model").write_bytes(b"x")
    n = len(read_train_list(tiny_corpus / "lists" / "train_list.txt"))
    inputs = cluster.resolve_inputs(cluster.ClusteringConfig(run_name="r", runs_dir=str(tmp_path), n_clusters=n))
    assert inputs.init_model == run_dir / "stage1" / "best.model" and inputs.out_dir == run_dir / "clustering"
    assert inputs.train_root == tiny_corpus / "train" and len(inputs.entries) == inputs.speakers.size == n
    with pytest.raises(ValueError, match=rf"n_clusters={n + 1} is larger than the number of utterances N={n}"):
        cluster.resolve_inputs(cluster.ClusteringConfig(run_name="r", runs_dir=str(tmp_path), n_clusters=n + 1))


# --- embedding and clustering the toy corpus ----------------------------------------------------------


@pytest.fixture(scope="module")
def toy_entries(tiny_corpus):
    return read_train_list(tiny_corpus / "lists" / "train_list.txt")


def test_cluster_utterances_writes_its_files_and_reuses_matching_embeddings(
    tiny_corpus, toy_entries, tmp_path, monkeypatch
):
    calls = []

    def counting_embed_files(*args, **kwargs):
        calls.append(kwargs["max_seconds"])
        return real_embed_files(*args, **kwargs)

    real_embed_files = embed.embed_files
    monkeypatch.setattr(embed, "embed_files", counting_embed_files)
    seed_everything(0)
    model = models.ECAPATDNN(16).eval()
    root, out = tiny_corpus / "train", tmp_path / "iter_01"
    speakers = [e.speaker for e in toy_entries]

    first = cluster.cluster_utterances(model, toy_entries, root, 5, out, seed=0, batch_seconds=20, show_progress=False)
    assert calls == [None] and not first.reused_embeddings
    emb = np.load(out / "embeddings.npy")
    assert emb.shape == (len(toy_entries), 192)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(
        pseudo_labels.read_pseudo_labels(out / "pseudo_labels.txt", toy_entries, 5), first.pseudo_labels
    )
    quality = json.loads((out / "quality.json").read_text())
    assert quality["nmi"] == pytest.approx(normalized_mutual_info_score(speakers, first.pseudo_labels))
    assert quality["n_utterances"] == len(toy_entries) and quality["n_speakers"] == len(set(speakers))
    assert quality["kmeans"] == {
        "n_clusters": 5,
        "n_iter": 25,
        "seed": 0,
        "max_points_per_centroid": 256,
        "n_training_points": len(toy_entries),
        "index": "IndexFlatIP (CPU)",
    }

    # The same weights given as a checkpoint file reuse the embeddings; another max_seconds does not.
    checkpoint = models.save_encoder(tmp_path / "encoder.model", model)
    second = cluster.cluster_utterances(checkpoint, toy_entries, root, 5, out, seed=0, show_progress=False)
    assert calls == [None] and second.reused_embeddings and second.quality["checkpoint"] == str(checkpoint)
    np.testing.assert_array_equal(second.pseudo_labels, first.pseudo_labels)
    third = cluster.cluster_utterances(model, toy_entries, root, 5, out, seed=0, max_seconds=0.6, show_progress=False)
    assert calls == [None, 0.6] and not third.reused_embeddings
    assert json.loads((out / "embeddings.json").read_text())["max_seconds"] == 0.6


def test_a_matching_clustering_elsewhere_in_the_run_is_reused_whole(tiny_corpus, toy_entries, tmp_path, monkeypatch):
    seed_everything(0)
    model = models.ECAPATDNN(16).eval()
    root, run = tiny_corpus / "train", tmp_path / "run"
    first = cluster.cluster_utterances(model, toy_entries, root, 5, run / "clustering", show_progress=False)
    assert first.reused_from is None and cluster.clustering_folders(run) == [run / "clustering"]

    def forbidden(*args, **kwargs):
        raise AssertionError("work done twice")

    # Notebook 03's iteration 1: same encoder, list and k-means settings → nothing is embedded or clustered.
    monkeypatch.setattr(embed, "embed_files", forbidden)
    monkeypatch.setattr(cluster, "kmeans_pseudo_labels", forbidden)
    out = run / "stage2_baseline" / "iter_01"
    second = cluster.cluster_utterances(
        model, toy_entries, root, 5, out, reuse_from=cluster.clustering_folders(run), show_progress=False
    )
    assert second.reused_embeddings and second.reused_from == run / "clustering" and second.out_dir == out
    np.testing.assert_array_equal(second.pseudo_labels, first.pseudo_labels)
    np.testing.assert_array_equal(second.centroids, first.centroids)
    for name in ("embeddings.npy", "centroids.npy", "pseudo_labels.txt"):
        assert (out / name).stat().st_ino == (run / "clustering" / name).stat().st_ino  # hard links, no copies
    saved = json.loads((out / "quality.json").read_text())
    assert saved["reused_from"] == str(run / "clustering") and saved["nmi"] == first.quality["nmi"]
    assert cluster.clustering_folders(run) == [run / "clustering", out]

    # Another k-means seed: the embeddings are still reused, k-means runs.
    monkeypatch.setattr(cluster, "kmeans_pseudo_labels", kmeans.kmeans_pseudo_labels)
    other = cluster.cluster_utterances(
        model, toy_entries, root, 5, run / "other", seed=7, reuse_from=[run / "clustering"], show_progress=False
    )
    assert other.reused_embeddings and other.reused_from is None and other.quality["kmeans"]["seed"] == 7
    assert (run / "other" / "embeddings.npy").stat().st_ino == (run / "clustering" / "embeddings.npy").stat().st_ino

    # Other weights match nothing: they are embedded.
    with pytest.raises(AssertionError, match="work done twice"):
        cluster.cluster_utterances(
            models.ECAPATDNN(16).eval(), toy_entries, root, 5, run / "x", reuse_from=[run / "clustering"]
        )


def test_clustering_batches_by_the_listed_durations_without_reading_headers(
    tiny_corpus, toy_entries, tmp_path, monkeypatch, caplog
):
    seed_everything(0)
    model = models.ECAPATDNN(16).eval()
    root = tiny_corpus / "train"
    reference = embed.embed_files(model, [root / e.path for e in toy_entries], batch_seconds=6, show_progress=False)

    def no_header_reads(path, *args, **kwargs):
        raise AssertionError(f"header of {path} read")

    monkeypatch.setattr(embed, "check_wav", no_header_reads)
    # Three durations are wrong (as in a stale list): those files are embedded at their real length all the same.
    wrong = [TrainEntry(e.speaker, e.path, e.duration * (3 if i < 3 else 1)) for i, e in enumerate(toy_entries)]
    with caplog.at_level("WARNING", logger="lgl_helpers.core.embed"):
        result = cluster.cluster_utterances(
            model, wrong, root, 5, tmp_path / "c", batch_seconds=6, reuse=False, show_progress=False
        )
    np.testing.assert_allclose(result.emb, reference, atol=1e-5)
    assert "3 file(s) are not as long as given" in caplog.text


@pytest.mark.slow
def test_stage1_encoder_gives_clearly_better_pseudo_labels_than_an_untrained_one(
    tiny_corpus, toy_entries, tmp_path, training_seed
):
    config = Stage1Config(
        run_name="nmi",
        runs_dir=str(tmp_path),
        **tiny_data_params(tiny_corpus),
        channels=STAGE1_CHANNELS,
        frames=STAGE1_FRAMES,
        batch_size=STAGE1_BATCH,
        epochs=STAGE1_EPOCHS,
        test_interval=STAGE1_EPOCHS,
        augment=False,
        workers=0,
        device="cpu",
        seed=training_seed,
    )
    train_stage1(config)
    checkpoint = tmp_path / "nmi" / "stage1" / "best.model"
    root, n_speakers = tiny_corpus / "train", len({e.speaker for e in toy_entries})
    trained = cluster.cluster_utterances(
        checkpoint, toy_entries, root, n_speakers, tmp_path / "trained", seed=0, show_progress=False
    )
    untrained = cluster.cluster_utterances(
        cluster.untrained_encoder(checkpoint, seed=training_seed),
        toy_entries,
        root,
        n_speakers,
        tmp_path / "untrained",
        seed=0,
        show_progress=False,
    )
    # k-means from random starts varies; compare the mean NMI over several seeds on the same embeddings.
    speakers = [e.speaker for e in toy_entries]

    def mean_nmi(emb):
        return np.mean(
            [
                quality.clustering_quality(kmeans.kmeans_pseudo_labels(emb, n_speakers, seed=s)[0], speakers)["nmi"]
                for s in range(5)
            ]
        )

    nmi_trained, nmi_untrained = mean_nmi(trained.emb), mean_nmi(untrained.emb)
    print(f"MARGIN stage1_nmi_gain {nmi_trained - nmi_untrained:.3f}")
    assert nmi_trained > nmi_untrained + NMI_MARGIN


# --- notebook 02's untrained-encoder baseline ---------------------------------------------------------


def test_untrained_sample_k_scales_with_the_sample_and_bad_values_name_the_parameter(tiny_corpus, tmp_path):
    assert cluster.sample_n_clusters(6000, 20000, 1_092_009) == 110  # the full profile on VoxCeleb2
    assert cluster.sample_n_clusters(8, 20, 48) == 3 and cluster.sample_n_clusters(8, 2, 48) == 2  # at least 2
    index = cluster.sample_index(48, 20, seed=0)
    assert index.dtype == np.int64 and np.unique(index).size == 20 and np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(cluster.sample_index(48, 20, seed=0), index)
    for bad in (-2, 1, 2.5):
        with pytest.raises(ValueError, match=rf"untrained_sample={bad}.*must be -1 \(every utterance\), 0"):
            cluster.ClusteringConfig(untrained_sample=bad)
    checkpoint = tmp_path / "c.model"
    checkpoint.write_bytes(b"x")
    too_many = cluster.ClusteringConfig(
        run_name="r",
        runs_dir=str(tmp_path),
        init_model=str(checkpoint),
        train_list=str(tiny_corpus / "lists" / "train_list.txt"),
        train_root=str(tiny_corpus / "train"),
        untrained_sample=49,
    )
    with pytest.raises(ValueError, match=r"untrained_sample=49 is larger than the number of utterances N=48"):
        cluster.resolve_inputs(too_many)


@pytest.fixture(scope="module")
def trained_clustering(tiny_corpus, toy_entries, tmp_path_factory):
    """(checkpoint, result): an encoder initialised exactly as the untrained baseline of seed 0 (C=16),
    clustered over the whole tiny list with k = 8; equal weights make both sides of a comparison equal."""
    folder = tmp_path_factory.mktemp("trained")
    seed_everything(0)
    checkpoint = models.save_encoder(folder / "encoder.model", models.ECAPATDNN(16))
    result = cluster.cluster_utterances(
        checkpoint, toy_entries, tiny_corpus / "train", 8, folder / "clustering", seed=0, show_progress=False
    )
    return checkpoint, result


def _notebook02(tiny_corpus, toy_entries, tmp_path, checkpoint, untrained_sample):
    cfg = cluster.ClusteringConfig(n_clusters=8, cluster_seed=0, untrained_sample=untrained_sample, device="cpu")
    run_dir = tmp_path / "run"
    inputs = cluster.ClusteringInputs(
        run_dir,
        run_dir / "clustering",
        checkpoint,
        tiny_corpus / "lists" / "train_list.txt",
        tiny_corpus / "train",
        toy_entries,
    )
    return cfg, inputs


def test_untrained_baseline_on_every_utterance_is_todays_second_pass(
    tiny_corpus, toy_entries, tmp_path, trained_clustering
):
    checkpoint, result = trained_clustering
    cfg, inputs = _notebook02(tiny_corpus, toy_entries, tmp_path, checkpoint, -1)
    baseline = cluster.compare_untrained(cfg, inputs, result)
    # Notebook 02 before untrained_sample: the untrained encoder over the whole list, into clustering/untrained.
    before = cluster.cluster_utterances(
        cluster.untrained_encoder(checkpoint, 0),
        toy_entries,
        inputs.train_root,
        8,
        tmp_path / "before",
        seed=0,
        use_gpu=False,
        show_progress=False,
    )
    assert not baseline.on_sample and baseline.n_clusters == 8 and baseline.trained is result.quality
    assert baseline.untrained["nmi"] == before.quality["nmi"]
    np.testing.assert_array_equal(
        pseudo_labels.read_pseudo_labels(inputs.out_dir / "untrained" / "pseudo_labels.txt", toy_entries),
        before.pseudo_labels,
    )
    saved = json.loads(quality.write_quality(inputs.out_dir, result.quality, baseline).read_text())
    assert set(saved) == set(result.quality) | {"untrained_nmi", "untrained_purity"}  # the keys written before
    assert (saved["untrained_nmi"], saved["untrained_purity"]) == (before.quality["nmi"], before.quality["purity"])
    assert quality.describe_untrained(saved) == f"untrained encoder {before.quality['nmi']:.4f}"


def test_untrained_baseline_on_a_sample_compares_the_same_utterances_with_the_same_k(
    tiny_corpus, toy_entries, tmp_path, trained_clustering, monkeypatch
):
    checkpoint, result = trained_clustering
    embedded = []

    def counting_embed_files(encoder, paths, **kwargs):
        embedded.append(list(paths))
        return real_embed_files(encoder, paths, **kwargs)

    real_embed_files = embed.embed_files
    monkeypatch.setattr(embed, "embed_files", counting_embed_files)
    cfg, inputs = _notebook02(tiny_corpus, toy_entries, tmp_path, checkpoint, 20)
    baseline = cluster.compare_untrained(cfg, inputs, result)

    index = cluster.sample_index(48, 20, seed=cfg.seed)
    sample = [toy_entries[i] for i in index]
    np.testing.assert_array_equal(baseline.index, index)
    assert baseline.on_sample and baseline.n_clusters == 3  # round(8 × 20 / 48)
    assert embedded == [[inputs.train_root / e.path for e in sample]]  # only the sample; the trained side reused
    labels = pseudo_labels.read_pseudo_labels(inputs.out_dir / "untrained" / "pseudo_labels.txt", sample, 3)
    assert baseline.untrained["n_utterances"] == baseline.trained["n_utterances"] == 20
    assert baseline.untrained["nmi"] == pytest.approx(normalized_mutual_info_score([e.speaker for e in sample], labels))
    # Equal weights on both sides: the same utterances and k give the same clustering, hence the same figures.
    assert baseline.trained["nmi"] == pytest.approx(baseline.untrained["nmi"])
    assert baseline.trained["purity"] == pytest.approx(baseline.untrained["purity"])

    saved = json.loads(quality.write_quality(inputs.out_dir, result.quality, baseline).read_text())
    assert saved["nmi"] == result.quality["nmi"] and saved["untrained_nmi"] == baseline.untrained["nmi"]
    assert saved["untrained_sample"] == {
        "n_utterances": 20,
        "n_total": 48,
        "n_clusters": 3,
        "seed": 0,
        "trained_nmi": baseline.trained["nmi"],
        "trained_purity": baseline.trained["purity"],
    }
    assert quality.describe_untrained(saved) == (
        f"untrained encoder {baseline.untrained['nmi']:.4f} against trained {baseline.trained['nmi']:.4f} "
        "on a sample of 20 utterances, k = 3"
    )
    table = clustering_view.format_quality(clustering_view.quality_columns(result.quality, baseline))
    assert table.splitlines()[0].split() == ["trained", "trained,", "sample", "untrained,", "sample"]
    assert table.splitlines()[1].split() == ["utterances", "48", "20", "20"]


def test_untrained_sample_zero_skips_the_comparison_and_the_report_still_builds(
    tiny_corpus, toy_entries, tmp_path, trained_clustering
):
    from lgl_helpers.app import report

    checkpoint, result = trained_clustering
    cfg, inputs = _notebook02(tiny_corpus, toy_entries, tmp_path, checkpoint, 0)
    assert cluster.compare_untrained(cfg, inputs, result) is None
    assert not (inputs.out_dir / "untrained").exists()
    saved = json.loads(quality.write_quality(inputs.out_dir, result.quality, None).read_text())
    assert saved["untrained_nmi"] is None and saved["untrained_purity"] is None and "untrained_sample" not in saved
    assert quality.describe_untrained(saved) == "untrained-encoder comparison skipped"
    table = clustering_view.format_quality(clustering_view.quality_columns(result.quality, None))
    assert table.splitlines()[1].split() == ["utterances", "48", "skipped"]
    summary, md_path = report.write_report(inputs.run_dir, n_resamples=10)
    assert summary["clustering"][0] == {
        "mode": "stage1",
        "iteration": 0,
        "nmi": result.quality["nmi"],
        "untrained_nmi": None,
        "untrained_sample": None,
    }
    assert md_path.is_file()
