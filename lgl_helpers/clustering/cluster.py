"""Stage II step 1 (METHOD.md): cluster the training utterances into pseudo speakers, and judge the result.

Every training utterance is embedded clean at full length (or its first ``max_seconds``) in
length-bucketed batches, L2-normalised and clustered with faiss k-means on an inner-product index;
each utterance's pseudo label is its nearest (largest inner product) centroid.

Settings of the reference (TaoRuijie/Loss-Gated-Learning, ``Stage2/model.py``, ``cluster_network``):
``faiss.Clustering(192, n_cluster)`` with faiss's defaults — 25 iterations, seed 1234, at most 256
training points per centroid (1.5 M for 6,000 clusters, so all 1.09 M VoxCeleb2 utterances are used),
centroids not re-normalised (not spherical) — trained on a float32 ``GpuIndexFlatIP``; the same index
then gives every utterance its top-1 centroid, and sklearn's ``normalized_mutual_info_score`` against the
true speakers is logged (times 100). The kit keeps these defaults, runs on a CPU index when faiss has no
GPU support, and exposes the iterations, seed and points-per-centroid sampling: with
``max_points_per_centroid=64`` the 6,000 centroids are trained on a 384 k sample, and only the final
assignment touches every utterance, which keeps 1 M × 6,000 practical on a CPU (see
``benchmarks/bench_kmeans.py``).

Files of one clustering, all written atomically into ``out_dir``:

- ``embeddings.npy``: emb (N, 192) float32, unit norm, in training-list order; ``embeddings.json`` records
  the encoder weights' SHA-1, the list's SHA-1, ``train_root`` and ``max_seconds``, so that a later call
  with the same inputs reuses the embeddings instead of embedding again.
- ``quality.json``: :func:`clustering_quality` plus the k-means settings.
- ``pseudo_labels.txt``: one ``<relative wav path> <cluster id>`` a line, in training-list order, cluster
  ids in ``[0, n_clusters)``. Written last, so its presence means the clustering finished.

The speaker ids of the training list are used here only to measure quality, never for training.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lgl_helpers.config import NotebookConfig, check_int, check_n_clusters, check_non_negative, check_positive
from lgl_helpers.corpus.lists import ListFormatError, TrainEntry, check_list, read_train_list
from lgl_helpers.runs import (
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_text,
    read_json,
    resolve_data_paths,
    resolve_path,
    run_folder,
    write_json,
)

log = logging.getLogger(__name__)

# faiss's defaults, which the reference uses unchanged.
REFERENCE_N_ITER = 25
REFERENCE_SEED = 1234
REFERENCE_MAX_POINTS_PER_CENTROID = 256
# A cluster "merges" speakers / a speaker is "split" only when at least this many utterances sit on
# each side, so that one stray utterance does not count as a merge or a split.
MIN_MEMBERS = 2
UNIT_NORM_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------------------------------
# k-means and assignment
# ---------------------------------------------------------------------------------------------------


def faiss_gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees a CUDA device."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _resolve_use_gpu(use_gpu: bool | str) -> bool:
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
    index, _resources = _ip_index(emb.shape[1], _resolve_use_gpu(use_gpu))
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
    gpu = _resolve_use_gpu(use_gpu)

    clustering = faiss.Clustering(d, int(n_clusters))
    clustering.niter = int(n_iter)
    clustering.seed = int(seed)
    clustering.max_points_per_centroid = int(max_points_per_centroid)
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
        n, n_clusters, "GPU" if gpu else "CPU", n_iter, min(n, n_clusters * max_points_per_centroid),
        objective, time.perf_counter() - start,
    )
    return pseudo_labels, centroids


# ---------------------------------------------------------------------------------------------------
# pseudo-label files
# ---------------------------------------------------------------------------------------------------


def _rel_paths(entries: Sequence[TrainEntry | str]) -> list[str]:
    return [e if isinstance(e, str) else e.path for e in entries]


def _check_labels(pseudo_labels: np.ndarray, n: int | None = None) -> np.ndarray:
    labels = np.asarray(pseudo_labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"pseudo_labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    if n is not None and labels.shape[0] != n:
        raise ValueError(f"pseudo_labels has {labels.shape[0]} entries, expected {n}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"pseudo_labels must be non-negative, found {labels.min()}")
    return labels.astype(np.int64)


def write_pseudo_labels(path: str | os.PathLike, entries: Sequence[TrainEntry | str], pseudo_labels: np.ndarray) -> Path:
    """Write ``<relative wav path> <cluster id>`` one a line, in ``entries`` order, atomically.

    entries: training-list entries (or their relative paths); pseudo_labels: (N,) non-negative ints.
    """
    paths = _rel_paths(entries)
    labels = _check_labels(pseudo_labels, len(paths))
    return atomic_write_text(path, "".join(f"{p} {int(c)}\n" for p, c in zip(paths, labels)))


def read_pseudo_labels(
    path: str | os.PathLike, entries: Sequence[TrainEntry | str], n_clusters: int | None = None
) -> np.ndarray:
    """Read a pseudo-label file written for ``entries``. Returns (N,) int64 in ``entries`` order.

    Line i must name entries[i]'s relative path; every entry must be present exactly once, and with
    ``n_clusters`` every id must be below it. Raises :class:`~lgl_helpers.corpus.lists.ListFormatError`
    naming ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise ListFormatError(f"{path}: pseudo-label file does not exist")
    expected = _rel_paths(entries)
    labels = np.empty(len(expected), dtype=np.int64)
    count = 0
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields_ = line.split()
            if not fields_:
                continue
            if len(fields_) != 2:
                raise ListFormatError(f"{path}:{number}: expected 2 fields '<relative wav path> <cluster id>', got {len(fields_)}")
            rel_path, label_text = fields_
            if count >= len(expected):
                raise ListFormatError(f"{path}:{number}: more lines than the {len(expected)} training-list entries")
            if rel_path != expected[count]:
                raise ListFormatError(
                    f"{path}:{number}: path {rel_path!r} does not match training-list entry {count + 1} {expected[count]!r}"
                )
            try:
                label = int(label_text)
            except ValueError:
                raise ListFormatError(f"{path}:{number}: cluster id {label_text!r} is not an integer") from None
            if label < 0 or (n_clusters is not None and label >= n_clusters):
                bound = f"[0, {n_clusters})" if n_clusters is not None else "non-negative"
                raise ListFormatError(f"{path}:{number}: cluster id {label} is not {bound}")
            labels[count] = label
            count += 1
    if count != len(expected):
        raise ListFormatError(
            f"{path}: has {count} labels but the training list has {len(expected)} entries "
            f"(first missing: {expected[count]!r})"
        )
    return labels


# ---------------------------------------------------------------------------------------------------
# quality against true speakers
# ---------------------------------------------------------------------------------------------------


def _contingency(pseudo_labels: np.ndarray, speakers: Sequence) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse (n_label_ids, n_speakers) count matrix, speaker names, speaker codes (N,), labels (N,)."""
    from scipy.sparse import coo_matrix

    speakers = np.asarray(speakers)
    labels = _check_labels(pseudo_labels, len(speakers))
    if labels.size == 0:
        raise ValueError("pseudo_labels is empty")
    names, codes = np.unique(speakers, return_inverse=True)
    counts = coo_matrix(
        (np.ones(labels.size, dtype=np.int64), (labels, codes)), shape=(int(labels.max()) + 1, names.size)
    ).tocsr()
    counts.sum_duplicates()
    return counts, names, codes, labels


def _row_majority(counts) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a CSR count matrix: (max count, column of the max; the smallest column on ties)."""
    top = np.zeros(counts.shape[0], dtype=np.int64)
    arg = np.full(counts.shape[0], -1, dtype=np.int64)
    for row in range(counts.shape[0]):
        lo, hi = counts.indptr[row], counts.indptr[row + 1]
        if hi > lo:
            data, cols = counts.data[lo:hi], counts.indices[lo:hi]
            best = data.max()
            top[row] = best
            arg[row] = cols[data == best].min()
    return top, arg


def majority_agreement(pseudo_labels: np.ndarray, speakers: Sequence) -> np.ndarray:
    """(N,) bool: True where an utterance's true speaker is its cluster's majority speaker.

    pseudo_labels: (N,) ints; speakers: (N,) speaker ids. On a tie the majority is the speaker id that
    sorts first. The mean of this mask equals :func:`clustering_quality`'s ``purity``.
    """
    counts, _, codes, labels = _contingency(pseudo_labels, speakers)
    _, majority = _row_majority(counts)
    return majority[labels] == codes


def clustering_quality(pseudo_labels: np.ndarray, speakers: Sequence, n_clusters: int | None = None) -> dict:
    """Pseudo labels against true speakers. pseudo_labels: (N,) ints; speakers: (N,) speaker ids.

    Returns a dict (fractions in [0, 1]):
    - ``nmi``: sklearn ``normalized_mutual_info_score`` (arithmetic mean; the reference logs it × 100);
    - ``purity``: fraction of utterances whose speaker is their cluster's majority speaker;
    - ``inverse_purity``: fraction of utterances in their speaker's most common cluster;
    - ``n_merging_clusters``: clusters holding at least ``MIN_MEMBERS`` (2) utterances of each of at least two speakers;
    - ``n_split_speakers``: speakers with at least 2 utterances in each of at least two clusters;
    - ``n_utterances``, ``n_speakers``, ``n_clusters`` (non-empty), ``n_empty_clusters`` (with ``n_clusters``
      given, ids in [0, n_clusters) that no utterance got), ``n_singleton_clusters``, and ``cluster_size``
      {min, median, mean, max} over non-empty clusters.
    """
    from sklearn.metrics import normalized_mutual_info_score

    counts, names, codes, labels = _contingency(pseudo_labels, speakers)
    if n_clusters is not None and labels.max() >= n_clusters:
        raise ValueError(f"pseudo label {labels.max()} is not below n_clusters={n_clusters}")
    n = labels.size
    cluster_sizes = np.asarray(counts.sum(axis=1)).ravel()
    nonempty = cluster_sizes[cluster_sizes > 0]
    cluster_top, _ = _row_majority(counts)
    speaker_top, _ = _row_majority(counts.T.tocsr())
    big = counts.multiply(counts >= MIN_MEMBERS).tocsr()
    big.eliminate_zeros()
    speakers_per_cluster = np.diff(big.indptr)
    clusters_per_speaker = np.diff(big.T.tocsr().indptr)
    quality = {
        "nmi": float(normalized_mutual_info_score(codes, labels)),
        "purity": float(cluster_top.sum() / n),
        "inverse_purity": float(speaker_top.sum() / n),
        "n_merging_clusters": int((speakers_per_cluster >= 2).sum()),
        "n_split_speakers": int((clusters_per_speaker >= 2).sum()),
        "n_utterances": int(n),
        "n_speakers": int(names.size),
        "n_clusters": int(nonempty.size),
        "n_empty_clusters": None if n_clusters is None else int(n_clusters - nonempty.size),
        "n_singleton_clusters": int((nonempty == 1).sum()),
        "cluster_size": {
            "min": int(nonempty.min()),
            "median": float(np.median(nonempty)),
            "mean": float(nonempty.mean()),
            "max": int(nonempty.max()),
        },
    }
    return quality


def cluster_summary(pseudo_labels: np.ndarray, speakers: Sequence) -> list[dict]:
    """One dict per non-empty cluster, in cluster-id order.

    Keys: ``cluster`` (id), ``size``, ``purity`` (majority speaker's share), ``majority_speaker``,
    ``n_speakers`` and ``speakers``: list of (speaker id, count), most frequent first.
    """
    counts, names, _, _ = _contingency(pseudo_labels, speakers)
    rows = []
    for cluster in range(counts.shape[0]):
        lo, hi = counts.indptr[cluster], counts.indptr[cluster + 1]
        if hi == lo:
            continue
        data, cols = counts.data[lo:hi], counts.indices[lo:hi]
        order = np.lexsort((cols, -data))
        members = [(str(names[cols[i]]), int(data[i])) for i in order]
        size = int(data.sum())
        rows.append({
            "cluster": cluster,
            "size": size,
            "purity": members[0][1] / size,
            "majority_speaker": members[0][0],
            "n_speakers": len(members),
            "speakers": members,
        })
    return rows


def most_impure_clusters(
    pseudo_labels: np.ndarray, speakers: Sequence, n: int = 10, min_size: int = MIN_MEMBERS
) -> list[dict]:
    """The ``n`` clusters of at least ``min_size`` utterances with the lowest purity (larger first on ties).

    Rows as in :func:`cluster_summary`.
    """
    rows = [row for row in cluster_summary(pseudo_labels, speakers) if row["size"] >= min_size]
    rows.sort(key=lambda row: (row["purity"], -row["size"], row["cluster"]))
    return rows[:n]


def format_cluster_table(rows: Sequence[dict], max_speakers: int = 6) -> str:
    """Plain-text table of :func:`cluster_summary` rows: id, size, purity and member speakers (count)."""
    lines = [f"{'cluster':>7}  {'size':>5}  {'purity':>6}  {'speakers':>8}  members (speaker×utterances)"]
    for row in rows:
        members = ", ".join(f"{spk}×{count}" for spk, count in row["speakers"][:max_speakers])
        if row["n_speakers"] > max_speakers:
            members += f", … {row['n_speakers'] - max_speakers} more"
        lines.append(f"{row['cluster']:>7}  {row['size']:>5}  {row['purity']:>6.2f}  {row['n_speakers']:>8}  {members}")
    return "\n".join(lines)


_QUALITY_ROWS = (
    ("nmi", "NMI", "{:.4f}"),
    ("purity", "purity", "{:.4f}"),
    ("inverse_purity", "inverse purity", "{:.4f}"),
    ("n_clusters", "non-empty clusters", "{}"),
    ("n_speakers", "true speakers", "{}"),
    ("n_merging_clusters", f"clusters merging speakers (≥{MIN_MEMBERS} utt. each)", "{}"),
    ("n_split_speakers", f"speakers split over clusters (≥{MIN_MEMBERS} utt. each)", "{}"),
    ("n_singleton_clusters", "singleton clusters", "{}"),
    ("n_empty_clusters", "empty clusters", "{}"),
)


def format_quality(columns: dict[str, dict]) -> str:
    """Plain-text table of :func:`clustering_quality` dicts side by side, e.g. ``{"Stage I": q1, "untrained": q0}``."""
    names = list(columns)
    width = max(len(label) for _, label, _ in _QUALITY_ROWS)
    lines = [" " * width + "".join(f"  {name:>12}" for name in names)]
    for key, label, fmt in _QUALITY_ROWS + (("cluster_size", "cluster size min/median/max", None),):
        cells = []
        for name in names:
            value = columns[name].get(key)
            if value is None:
                cells.append("–")
            elif key == "cluster_size":
                cells.append(f"{value['min']}/{value['median']:g}/{value['max']}")
            else:
                cells.append(fmt.format(value))
        lines.append(f"{label:<{width}}" + "".join(f"  {cell:>12}" for cell in cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------


def plot_cluster_sizes(pseudo_labels: np.ndarray, speakers: Sequence | None = None, n_clusters: int | None = None):
    """Histogram of utterances per cluster (empty clusters count as size 0 when ``n_clusters`` is given).

    With ``speakers`` (N,), the utterances-per-speaker histogram is drawn over it for comparison.
    Returns a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    labels = _check_labels(pseudo_labels)
    sizes = np.bincount(labels, minlength=n_clusters or 0)
    if n_clusters is None:
        sizes = sizes[sizes > 0]
    per_speaker = None if speakers is None else np.unique(np.asarray(speakers), return_counts=True)[1]
    top = max(int(sizes.max()), 0 if per_speaker is None else int(per_speaker.max()))
    edges = np.histogram_bin_edges(np.arange(top + 2) - 0.5, bins=min(60, top + 1))
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(sizes, bins=edges, color="tab:blue", alpha=0.75, label=f"clusters ({sizes.size})")
    if per_speaker is not None:
        ax.hist(per_speaker, bins=edges, histtype="step", color="black", linewidth=1.5,
                label=f"true speakers ({per_speaker.size})")
    ax.axvline(labels.size / max(int((sizes > 0).sum()), 1), color="tab:red", linestyle="--", linewidth=1,
               label="mean cluster size")
    ax.set_xlabel("utterances")
    ax.set_ylabel("count")
    ax.set_title("cluster-size distribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_purity_vs_size(pseudo_labels: np.ndarray, speakers: Sequence):
    """Scatter of each non-empty cluster's purity against its size (log x). Returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    rows = cluster_summary(pseudo_labels, speakers)
    size = np.array([row["size"] for row in rows])
    purity = np.array([row["purity"] for row in rows])
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size.size)  # separates clusters of equal size
    ax.scatter(size * np.exp(jitter * 0.2), purity, s=12, alpha=0.6, color="tab:blue", edgecolors="none")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("cluster size (utterances, log scale)")
    ax.set_ylabel("purity (majority speaker's share)")
    ax.set_title(f"purity per cluster ({size.size} clusters; size-weighted mean {np.average(purity, weights=size):.3f})")
    fig.tight_layout()
    return fig


def umap_projection(emb: np.ndarray, *, sample: int, seed: int = 0, n_neighbors: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """UMAP (cosine metric) of a random sample of rows, so a million-utterance run stays interactive.

    emb: (N, D). Returns sample indices (S,) int64, sorted, and coordinates (S, 2) float32, with
    S = min(sample, N). The sample and the layout are fixed by ``seed``.
    """
    import umap

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
    return index, reducer.fit_transform(emb[index]).astype(np.float32)


def _colour_codes(values: np.ndarray) -> np.ndarray:
    _, codes = np.unique(values, return_inverse=True)
    return codes % 20


def plot_umap(xy: np.ndarray, pseudo_labels: np.ndarray, speakers: Sequence, highlight_cluster: int | None = None):
    """Two UMAP panels of the same points: coloured by pseudo label (left) and by true speaker (right).

    xy: (S, 2) from :func:`umap_projection`; pseudo_labels, speakers: (S,) for the same sample. Colours
    cycle through 20 hues, so with many clusters equal colours can mean different clusters.
    ``highlight_cluster`` circles that cluster's members in both panels. Returns a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    xy = np.asarray(xy)
    labels = _check_labels(pseudo_labels, xy.shape[0])
    speakers = np.asarray(speakers)
    if speakers.shape != (xy.shape[0],):
        raise ValueError(f"speakers has shape {speakers.shape}, expected ({xy.shape[0]},)")
    fig = Figure(figsize=(11, 4.8))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    panels = (
        (axes[0], _colour_codes(labels), f"by pseudo label ({np.unique(labels).size} clusters)"),
        (axes[1], _colour_codes(speakers), f"by true speaker ({np.unique(speakers).size} speakers)"),
    )
    members = labels == highlight_cluster if highlight_cluster is not None else None
    for ax, colour, title in panels:
        ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="tab20", vmin=0, vmax=19, s=6, alpha=0.8, edgecolors="none")
        if members is not None and members.any():
            ax.scatter(xy[members, 0], xy[members, 1], s=40, facecolors="none", edgecolors="black", linewidths=1.2,
                       label=f"cluster {highlight_cluster} ({int(members.sum())} in sample)")
            ax.legend(loc="best", fontsize=8)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"UMAP of {xy.shape[0]} sampled utterances")
    fig.tight_layout()
    return fig


def save_figures(figures: dict[str, Any], folder: str | os.PathLike, dpi: int = 110) -> dict[str, Path]:
    """Save ``{name: Figure}`` as ``folder/<name>.png`` atomically; returns name → path."""
    paths = {}
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        paths[name] = atomic_write_bytes(Path(folder) / f"{name}.png", buffer.getvalue())
    return paths


# ---------------------------------------------------------------------------------------------------
# embed + cluster + write (one clustering pass of Stage II)
# ---------------------------------------------------------------------------------------------------


@dataclass
class ClusteringResult:
    """One clustering pass. pseudo_labels: (N,) int64; emb: (N, 192) float32; centroids: (K, 192) float32."""

    pseudo_labels: np.ndarray
    emb: np.ndarray
    centroids: np.ndarray
    quality: dict
    out_dir: Path
    reused_embeddings: bool


def encoder_fingerprint(model) -> str:
    """SHA-1 of an encoder's state dict (names, dtypes, shapes and bytes): equal weights, equal fingerprint."""
    import torch

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _list_fingerprint(rel_paths: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(rel_paths).encode()).hexdigest()


def _load_matching_embeddings(out_dir: Path, meta: dict) -> np.ndarray | None:
    emb_path, meta_path = out_dir / "embeddings.npy", out_dir / "embeddings.json"
    if not (emb_path.is_file() and meta_path.is_file()):
        return None
    saved = read_json(meta_path)
    differing = [key for key in meta if saved.get(key) != meta[key]]
    if differing:
        log.info("saved embeddings in %s differ in %s; embedding again", out_dir, ", ".join(differing))
        return None
    emb = np.load(emb_path, allow_pickle=False)
    if emb.ndim != 2 or emb.shape[0] != meta["n_utterances"]:
        log.info("saved embeddings in %s have shape %s; embedding again", out_dir, emb.shape)
        return None
    return emb


def cluster_utterances(
    encoder,
    entries: Sequence[TrainEntry],
    train_root: str | os.PathLike,
    n_clusters: int,
    out_dir: str | os.PathLike,
    *,
    n_iter: int = REFERENCE_N_ITER,
    seed: int = REFERENCE_SEED,
    max_points_per_centroid: int = REFERENCE_MAX_POINTS_PER_CENTROID,
    max_seconds: float | None = None,
    batch_seconds: float | None = None,
    device: str | None = None,
    use_gpu: bool | str = "auto",
    reuse_embeddings: bool = True,
    show_progress: bool = True,
) -> ClusteringResult:
    """One clustering pass: embed every entry, k-means, assign, write ``out_dir`` files (module docstring).

    encoder: an ECAPA-TDNN module or a checkpoint path (any layout ``models.load_encoder`` reads).
    entries: the training list; ``train_root`` / entry.path is each wav. ``max_seconds`` None = full
    length; ``batch_seconds`` None = the embedder's default budget of padded audio per batch.
    Embeddings already in ``out_dir`` are reused when the encoder weights, list, root and
    ``max_seconds`` match (``reuse_embeddings``). Raises ``ValueError`` before embedding when
    ``n_clusters`` exceeds the number of entries.
    """
    from lgl_helpers.core import models
    from lgl_helpers.core.embed import embed_files

    check_n_clusters(n_clusters, len(entries))
    out_dir, train_root = Path(out_dir), Path(train_root)
    checkpoint = None
    if isinstance(encoder, (str, os.PathLike)):
        checkpoint = str(encoder)
        encoder = models.load_encoder(encoder)
    rel_paths = _rel_paths(entries)
    meta = {
        "encoder_sha1": encoder_fingerprint(encoder),
        "list_sha1": _list_fingerprint(rel_paths),
        "train_root": str(train_root),
        "max_seconds": max_seconds,
        "n_utterances": len(rel_paths),
    }
    emb = _load_matching_embeddings(out_dir, meta) if reuse_embeddings else None
    reused = emb is not None
    if reused:
        log.info("reusing %d embeddings from %s", emb.shape[0], out_dir / "embeddings.npy")
    else:
        start = time.perf_counter()
        kwargs = {} if batch_seconds is None else {"batch_seconds": batch_seconds}
        emb = embed_files(
            encoder, [train_root / p for p in rel_paths], device=device, max_seconds=max_seconds,
            show_progress=show_progress, **kwargs,
        )
        log.info("embedded %d utterances in %.1f s", emb.shape[0], time.perf_counter() - start)
        atomic_save_npy(out_dir / "embeddings.npy", emb)
        write_json(out_dir / "embeddings.json", {**meta, "checkpoint": checkpoint})
    # Renormalising is idempotent and guards against embeddings saved by an older embedder.
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    pseudo_labels, centroids = kmeans_pseudo_labels(
        emb, n_clusters, n_iter=n_iter, seed=seed, max_points_per_centroid=max_points_per_centroid, use_gpu=use_gpu
    )
    quality = clustering_quality(pseudo_labels, [e.speaker for e in entries], n_clusters)
    quality["kmeans"] = {
        "n_clusters": int(n_clusters),
        "n_iter": int(n_iter),
        "seed": int(seed),
        "max_points_per_centroid": int(max_points_per_centroid),
        "n_training_points": int(min(len(rel_paths), n_clusters * max_points_per_centroid)),
        "index": "IndexFlatIP (GPU)" if _resolve_use_gpu(use_gpu) else "IndexFlatIP (CPU)",
    }
    quality["checkpoint"] = checkpoint
    quality["max_seconds"] = max_seconds
    write_json(out_dir / "quality.json", quality)
    write_pseudo_labels(out_dir / "pseudo_labels.txt", rel_paths, pseudo_labels)
    log.info(
        "clustering: NMI %.4f, purity %.4f, inverse purity %.4f, %d non-empty clusters → %s",
        quality["nmi"], quality["purity"], quality["inverse_purity"], quality["n_clusters"], out_dir,
    )
    return ClusteringResult(pseudo_labels, emb, centroids, quality, out_dir, reused)


# ---------------------------------------------------------------------------------------------------
# notebook 02
# ---------------------------------------------------------------------------------------------------


@dataclass
class ClusteringConfig(NotebookConfig):
    """Parameters of notebook 02_clustering_umap (field names equal its parameters cell)."""

    run_name: str = "demo"
    runs_dir: str = "runs"
    checkpoint: str = ""
    train_list: str = ""
    train_root: str = ""
    n_clusters: int = 40
    n_iter: int = REFERENCE_N_ITER
    max_points_per_centroid: int = REFERENCE_MAX_POINTS_PER_CENTROID
    max_seconds: float = 0.0
    batch_seconds: float = 240.0
    umap_sample: int = 2000
    highlight_cluster: int = -1
    n_impure: int = 8
    device: str = "auto"
    seed: int = 0
    interactive: bool = True

    def validate(self) -> None:
        check_n_clusters(self.n_clusters)
        check_int("n_iter", self.n_iter, 1)
        check_int("max_points_per_centroid", self.max_points_per_centroid, 1)
        check_non_negative("max_seconds", self.max_seconds, "0 (full length) or positive")
        check_positive("batch_seconds", self.batch_seconds)
        check_int("umap_sample", self.umap_sample, 5)
        check_int("highlight_cluster", self.highlight_cluster, -1, "a cluster id or -1 (the most impure cluster)")
        check_int("n_impure", self.n_impure, 0)

    @property
    def use_gpu(self) -> bool | str:
        """faiss follows ``device``: a CPU run stays on the CPU, otherwise a GPU index when faiss has one."""
        return False if self.device == "cpu" else "auto"


@dataclass
class ClusteringInputs:
    """Resolved locations of one notebook-02 run. entries: the training list in file order."""

    run_dir: Path
    out_dir: Path
    checkpoint: Path
    train_list: Path
    train_root: Path
    entries: list[TrainEntry]

    @property
    def speakers(self) -> np.ndarray:
        """(N,) true speaker ids in list order (for quality figures only)."""
        return np.array([e.speaker for e in self.entries])


def check_inputs(cfg: ClusteringConfig, paths: dict, *, audio: bool = True) -> list[TrainEntry]:
    """The checks of notebook 02's training data that need no encoder; returns the list's entries.

    ``paths`` as from :func:`lgl_helpers.runs.resolve_data_paths`. The list and its root must be set and
    exist, the list be well formed and hold at least ``n_clusters`` utterances; with ``audio`` every
    listed wav must also be usable (:func:`lgl_helpers.corpus.lists.check_list`, header reads, problems as
    ``file:line``), so a bad file is refused before any embedding. ``lgl-kit doctor`` calls this with
    ``audio=False``. Raises ValueError / FileNotFoundError naming the parameter, file or line.
    """
    run_dir = run_folder(cfg.run_name, cfg.runs_dir)
    for name in ("train_list", "train_root"):
        if paths[name] is None:
            raise ValueError(f"{name} is empty and {run_dir / 'data.json'} does not give it; run notebook 00 or set {name}")
        if not paths[name].exists():
            raise FileNotFoundError(f"{name}={getattr(cfg, name)!r}: {paths[name]} does not exist")
    entries = read_train_list(paths["train_list"])
    check_n_clusters(cfg.n_clusters, len(entries), source=str(paths["train_list"]))
    if audio:
        check_list(paths["train_list"], paths["train_root"], "train")
    return entries


def resolve_inputs(cfg: ClusteringConfig) -> ClusteringInputs:
    """Run folder, checkpoint (``""`` = ``runs/<run>/stage1/best.model``), training list and root
    (``""`` = from ``runs/<run>/data.json``), checked by :func:`check_inputs`; a missing one raises
    naming its parameter."""
    run_dir = run_folder(cfg.run_name, cfg.runs_dir)
    data = resolve_data_paths(run_dir, train_list=cfg.train_list, train_root=cfg.train_root)
    checkpoint = resolve_path(cfg.checkpoint) or run_dir / "stage1" / "best.model"
    if not checkpoint.is_file():
        hint = "set checkpoint" if cfg.checkpoint else "run notebook 01 first or set checkpoint"
        raise FileNotFoundError(f"checkpoint={cfg.checkpoint!r}: {checkpoint} does not exist ({hint})")
    entries = check_inputs(cfg, data)
    return ClusteringInputs(run_dir, run_dir / "clustering", checkpoint, data["train_list"], data["train_root"], entries)


def cluster_from_config(
    cfg: ClusteringConfig, inputs: ClusteringInputs, encoder=None, out_dir: str | os.PathLike | None = None
) -> ClusteringResult:
    """:func:`cluster_utterances` with the notebook's settings; ``encoder`` None = ``inputs.checkpoint``,
    ``out_dir`` None = ``inputs.out_dir``."""
    return cluster_utterances(
        inputs.checkpoint if encoder is None else encoder,
        inputs.entries,
        inputs.train_root,
        cfg.n_clusters,
        inputs.out_dir if out_dir is None else out_dir,
        n_iter=cfg.n_iter,
        seed=cfg.seed,
        max_points_per_centroid=cfg.max_points_per_centroid,
        max_seconds=cfg.max_seconds or None,
        batch_seconds=cfg.batch_seconds,
        device=cfg.device,
        use_gpu=cfg.use_gpu,
    )


def untrained_encoder(checkpoint: str | os.PathLike, seed: int):
    """A freshly initialised ECAPA-TDNN with the checkpoint's C, seeded like a training run's start (eval mode)."""
    from lgl_helpers.core import models
    from lgl_helpers.runs import seed_everything

    channels = models.load_encoder(checkpoint).channels
    seed_everything(seed)
    return models.ECAPATDNN(channels).eval()


def write_quality(out_dir: str | os.PathLike, quality: dict, untrained_quality: dict | None = None) -> Path:
    """Write ``out_dir/quality.json``: ``quality`` plus ``untrained_nmi`` / ``untrained_purity`` when given."""
    record = dict(quality)
    if untrained_quality is not None:
        record["untrained_nmi"] = untrained_quality["nmi"]
        record["untrained_purity"] = untrained_quality["purity"]
    return write_json(Path(out_dir) / "quality.json", record)
