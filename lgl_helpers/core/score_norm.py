"""Score normalisation without speaker labels (docs/method.md, "Evaluation"): mean-embedding subtraction
and adaptive symmetric score normalisation (AS-norm, top-N) against a cohort built without true labels.

* **Mean subtraction**: the mean embedding of a sample of training utterances is subtracted from
  every test embedding, which is then L2-normalised again before the cosine (wespeaker's
  ``cal_mean``). It removes the direction all embeddings share, e.g. the training data's channel.
* **AS-norm** (Matějka et al., "Analysis of score normalization in multilingual speaker recognition",
  Interspeech 2017): each file's cosine scores against the cohort give the mean ``mu`` and standard
  deviation ``sigma`` of its ``top_n`` highest ones, and a trial (a, b) with raw score s scores
  ``((s - mu_a) / sigma_a + (s - mu_b) / sigma_b) / 2``. A file close to many cohort voices (a
  "hub") has a high ``mu`` and is scored down.

wespeaker builds its AS-norm cohort from per-speaker mean embeddings of the labelled training set; a
self-supervised system may not use those labels. The cohort here is either a seeded sample of
training-utterance embeddings (``"train"``) or the centroids of that sample's pseudo labels from the
last clustering (``"centroids"``, Stage II), both embedded by the model being evaluated.
"""

from __future__ import annotations

import numpy as np

from lgl_helpers.config import check, check_choice, check_int

COHORT_KINDS = ("none", "train", "centroids")  # "none": raw scores only
METHODS = ("raw", "mean", "asnorm")  # score variants, in the order the report shows them
METHOD_LABELS = {"raw": "raw cosine", "mean": "mean subtracted", "asnorm": "AS-norm"}
MIN_TOP_N = 2  # a standard deviation needs two scores


def check_norm_parameters(
    owner: str, cohort: str, cohort_size: int, top_n: int, kinds: tuple[str, ...] = COHORT_KINDS
) -> None:
    """The rules of the ``norm_cohort``, ``norm_cohort_size`` and ``norm_top_n`` parameters of ``owner``
    (a config class name): a kind of ``kinds``, a size ≥ 0 (0 = every training utterance) and
    ``MIN_TOP_N`` ≤ top_n ≤ size. ValueError naming the parameter."""
    check_choice(f"{owner}.norm_cohort", cohort, kinds)
    check_int(f"{owner}.norm_cohort_size", cohort_size, 0, "an integer >= 0 (0 = every training utterance)")
    check_int(f"{owner}.norm_top_n", top_n, MIN_TOP_N, f"an integer >= {MIN_TOP_N} (AS-norm takes a std of the top N)")
    check(
        f"{owner}.norm_top_n",
        top_n,
        cohort_size == 0 or top_n <= cohort_size,
        f"at most norm_cohort_size={cohort_size} (the top N of the cohort scores)",
    )


def sample_cohort(n_items: int, size: int, seed: int) -> np.ndarray:
    """(K,) sorted indices of ``size`` of ``n_items`` items drawn without replacement with ``seed``;
    all of them when ``size`` is 0 or at least ``n_items`` (a small corpus has a small cohort)."""
    if size == 0 or size >= n_items:
        return np.arange(n_items)
    return np.sort(np.random.default_rng(seed).choice(n_items, size=size, replace=False))


def l2_normalise(emb: np.ndarray) -> np.ndarray:
    """emb: (N, D) → (N, D) float32, rows of unit length (a zero row stays zero)."""
    emb = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, np.finfo(np.float32).tiny)


def subtract_mean(emb: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """emb: (N, D), mean: (D,) → (N, D) float32: ``emb - mean``, L2-normalised."""
    return l2_normalise(np.asarray(emb, dtype=np.float32) - np.asarray(mean, dtype=np.float32))


def pseudo_label_centroids(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """emb: (N, D) L2-normalised, labels: (N,) pseudo labels → (K, D) float32 L2-normalised centroids,
    one per distinct label, in increasing label order."""
    labels = np.asarray(labels)
    if labels.shape != (len(emb),):
        raise ValueError(f"labels has shape {labels.shape} but emb has {len(emb)} rows")
    distinct, codes = np.unique(labels, return_inverse=True)
    sums = np.zeros((distinct.size, emb.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, emb)
    return l2_normalise(sums)


def cohort_stats(emb: np.ndarray, cohort: np.ndarray, top_n: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (ddof 0) of each row's ``top_n`` highest cosine scores against the cohort.

    emb: (N, D) and cohort: (K, D), both L2-normalised; ``MIN_TOP_N`` ≤ top_n ≤ K. Returns (N,), (N,)
    float64. Rows are scored ``chunk`` at a time, so memory is chunk × K.
    """
    if not MIN_TOP_N <= top_n <= len(cohort):
        raise ValueError(f"norm_top_n={top_n} must lie in [{MIN_TOP_N}, {len(cohort)}] (the cohort's size)")
    mean = np.empty(len(emb), dtype=np.float64)
    std = np.empty(len(emb), dtype=np.float64)
    cohort = np.asarray(cohort, dtype=np.float64)
    for start in range(0, len(emb), chunk):
        scores = np.asarray(emb[start : start + chunk], dtype=np.float64) @ cohort.T  # (chunk, K)
        top = np.partition(scores, len(cohort) - top_n, axis=1)[:, len(cohort) - top_n :]
        mean[start : start + chunk] = top.mean(axis=1)
        std[start : start + chunk] = top.std(axis=1)
    return mean, std


def asnorm(scores, index_a, index_b, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """AS-norm of raw trial scores. scores, index_a, index_b: (M,), the rows of each trial's two files in
    ``mean`` and ``std`` (N,) of :func:`cohort_stats` → (M,) float64.

    A file whose top cohort scores are all equal (std 0) would divide by zero; its std is floored at
    1e-6, so such a trial gets a large but finite score.
    """
    scores = np.asarray(scores, dtype=np.float64)
    std = np.maximum(np.asarray(std, dtype=np.float64), 1e-6)
    return 0.5 * ((scores - mean[index_a]) / std[index_a] + (scores - mean[index_b]) / std[index_b])
