"""How good pseudo labels are, measured against the true speakers (for reports only, never for training).

NMI, purity and inverse purity, merged and split speakers, cluster sizes, per-cluster summaries and
the most impure clusters, and an untrained encoder's quality as a baseline (:class:`UntrainedBaseline`,
written by :func:`write_quality`); :func:`majority_agreement` tells Stage II which pseudo labels are right,
for the gate tuner's precision figures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lgl_helpers.clustering.pseudo_labels import check_labels
from lgl_helpers.files import write_json

# A cluster "merges" speakers / a speaker is "split" only when at least this many utterances sit on
# each side, so that one stray utterance does not count as a merge or a split.
MIN_MEMBERS = 2


def _contingency(pseudo_labels: np.ndarray, speakers: Sequence) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse (n_label_ids, n_speakers) count matrix, speaker names, speaker codes (N,), labels (N,)."""
    from scipy.sparse import coo_matrix

    speakers = np.asarray(speakers)
    labels = check_labels(pseudo_labels, len(speakers))
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
    - ``n_utterances``, ``n_speakers``, ``n_nonempty_clusters``, ``n_empty_clusters`` (with ``n_clusters``
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
        "n_nonempty_clusters": int(nonempty.size),
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
        rows.append(
            {
                "cluster": cluster,
                "size": size,
                "purity": members[0][1] / size,
                "majority_speaker": members[0][0],
                "n_speakers": len(members),
                "speakers": members,
            }
        )
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


@dataclass
class UntrainedBaseline:
    """An untrained encoder's clustering quality next to the trained encoder's, on the same utterances and k.

    index: (S,) int64, the compared utterances' sorted positions in the training list of ``n_total``
    (S = ``n_total``: every utterance); ``n_clusters``: k of both clusterings; ``seed``: the sample's
    seed (None for every utterance); ``trained`` / ``untrained``: :func:`clustering_quality` dicts on
    those S utterances.
    """

    index: np.ndarray
    n_total: int
    n_clusters: int
    seed: int | None
    trained: dict
    untrained: dict

    @property
    def on_sample(self) -> bool:
        return self.index.size < self.n_total


def write_quality(out_dir: str | os.PathLike, quality: dict, untrained: UntrainedBaseline | None = None) -> Path:
    """Write ``out_dir/quality.json``: ``quality`` (the trained encoder on every utterance) plus the baseline.

    ``untrained_nmi`` / ``untrained_purity``: the untrained encoder's, both null when ``untrained`` is
    None (comparison skipped). On a sample also ``untrained_sample``: ``n_utterances`` (S), ``n_total``,
    ``n_clusters`` (its k), ``seed``, and ``trained_nmi`` / ``trained_purity`` of the trained encoder on
    the same S utterances with the same k, the figures the untrained ones compare with.
    """
    record = dict(quality)
    record["untrained_nmi"] = None if untrained is None else untrained.untrained["nmi"]
    record["untrained_purity"] = None if untrained is None else untrained.untrained["purity"]
    if untrained is not None and untrained.on_sample:
        record["untrained_sample"] = {
            "n_utterances": int(untrained.index.size),
            "n_total": untrained.n_total,
            "n_clusters": untrained.n_clusters,
            "seed": untrained.seed,
            "trained_nmi": untrained.trained["nmi"],
            "trained_purity": untrained.trained["purity"],
        }
    return write_json(Path(out_dir) / "quality.json", record)


def describe_untrained(record: dict) -> str:
    """The untrained-encoder baseline of a ``quality.json`` record (:func:`write_quality`) in a phrase:
    ``untrained encoder 0.4221``, its NMI on a sample next to the trained encoder's on it, or skipped."""
    if "untrained_nmi" not in record:
        return "no untrained-encoder comparison recorded"
    if record["untrained_nmi"] is None:
        return "untrained-encoder comparison skipped"
    sample = record.get("untrained_sample")
    if sample is None:
        return f"untrained encoder {record['untrained_nmi']:.4f}"
    return (
        f"untrained encoder {record['untrained_nmi']:.4f} against trained {sample['trained_nmi']:.4f} "
        f"on a sample of {sample['n_utterances']} utterances, k = {sample['n_clusters']}"
    )
