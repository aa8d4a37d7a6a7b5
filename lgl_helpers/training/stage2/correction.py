"""Label correction instead of rejection (DLG-LC, Han et al., Interspeech 2022; Miara et al., Interspeech 2024).

After phase L's gate is chosen on the clean pass, a rejected sample whose clean-pass prediction is
confident is relabelled to its predicted cluster and trained on in phase L; the other rejected
samples stay out. The prediction of sample i is ``softmax(cos(e_i, c_k) / temperature)`` over the
clusters k, ``e_i`` its clean-pass embedding and ``c_k`` one of two predictors:

- ``"head"``: the rows of the classifier of the model phase L starts from (the best T epoch);
- ``"kept_centroids"``: the mean clean embedding of the samples the gate keeps in cluster k, i.e.
  prototypes built from the labels the gate trusts (a cluster with no kept sample has none).

The relabelled samples and their new labels are written per iteration to
``iter_XX/T/corrected_labels.npz`` before the state names them, so a resumed phase L trains on the
same set. True speakers are used only to measure the correction (:func:`correction_evidence`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

PREDICTORS = ("head", "kept_centroids")
DEFAULT_PREDICTOR = "kept_centroids"
CORRECTED_LABELS = "corrected_labels.npz"


def check_label_correction(value, name: str = "label_correction") -> dict | None:
    """``None`` or ``{"confidence": c in (0, 1], "temperature": t > 0, "predictor": one of PREDICTORS}``
    (predictor optional, default ``DEFAULT_PREDICTOR``); returns the completed mapping."""
    if value is None:
        return None
    rule = (
        "None or a mapping {'confidence': a number in (0, 1], 'temperature': a number > 0"
        f", 'predictor': one of {PREDICTORS} (optional)}}"
    )
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}={value!r} must be {rule}")
    unknown = sorted(set(value) - {"confidence", "temperature", "predictor"})
    if unknown or not {"confidence", "temperature"} <= set(value):
        raise ValueError(f"{name}={dict(value)!r} must be {rule}")
    confidence, temperature = value["confidence"], value["temperature"]
    predictor = value.get("predictor", DEFAULT_PREDICTOR)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (confidence, temperature))
    if not numbers or not 0 < confidence <= 1 or not temperature > 0 or predictor not in PREDICTORS:
        raise ValueError(f"{name}={dict(value)!r} must be {rule}")
    return {"confidence": float(confidence), "temperature": float(temperature), "predictor": predictor}


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def kept_centroids(emb: np.ndarray, labels: np.ndarray, keep: np.ndarray, n_clusters: int) -> np.ndarray:
    """(n_clusters, D) unit mean embedding of the kept samples of each cluster; a row of zeros where none is kept.

    emb: (N, D); labels: (N,) in [0, n_clusters); keep: (N,) bool.
    """
    sums = np.zeros((n_clusters, emb.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[keep], emb[keep].astype(np.float64))
    return _unit(sums)


def sharpened_predictions(emb: np.ndarray, prototypes: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Argmax cluster and its probability under ``softmax(cos(emb, prototypes) / temperature)``.

    emb: (N, D); prototypes: (K, D), a zero row never predicted. Returns (N,) int64 and (N,) float64.
    """
    cos = _unit(emb.astype(np.float64)) @ _unit(prototypes.astype(np.float64)).T
    cos[:, ~np.any(prototypes != 0, axis=1)] = -np.inf
    logits = cos / temperature
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs.argmax(axis=1).astype(np.int64), probs.max(axis=1)


def correct_labels(
    emb: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    n_clusters: int,
    *,
    confidence: float,
    temperature: float,
    predictor: str = DEFAULT_PREDICTOR,
    head_weight: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The rejected samples whose sharpened prediction reaches ``confidence``, and their new labels.

    emb: (N, D) clean-pass embeddings; labels: (N,) pseudo labels; keep: (N,) bool, the gate's kept
    samples; n_clusters: K; head_weight: (K, D) classifier rows, needed for ``predictor="head"``. Returns
    ``index`` (M,) int64 (the relabelled samples, in list order), ``old_label`` and ``new_label`` (M,)
    int64 and ``confidence`` (M,) float64. A relabelled sample may keep its label (its prediction
    agrees with it): it is trained on again.
    """
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.asarray(keep, dtype=bool)
    if emb.shape[0] != labels.shape[0] or keep.shape != labels.shape:
        raise ValueError(f"emb {emb.shape}, labels {labels.shape} and keep {keep.shape} must have N rows alike")
    if predictor == "head":
        if head_weight is None:
            raise ValueError("predictor='head' needs head_weight")
        prototypes = np.asarray(head_weight)
    elif predictor == "kept_centroids":
        prototypes = kept_centroids(emb, labels, keep, n_clusters)
    else:
        raise ValueError(f"predictor={predictor!r} must be one of {PREDICTORS}")
    rejected = np.flatnonzero(~keep)
    predicted, prob = sharpened_predictions(emb[rejected], prototypes, temperature)
    confident = prob >= confidence
    index = rejected[confident]
    return {
        "index": index.astype(np.int64),
        "old_label": labels[index],
        "new_label": predicted[confident],
        "confidence": prob[confident],
    }


def apply_correction(labels: np.ndarray, keep: np.ndarray, correction: Mapping[str, np.ndarray]):
    """Phase L's labels and kept set after a correction: (labels (N,) int64, keep (N,) bool), new arrays."""
    labels = np.array(labels, dtype=np.int64)
    keep = np.array(keep, dtype=bool)
    labels[correction["index"]] = correction["new_label"]
    keep[correction["index"]] = True
    return labels, keep


def majority_speakers(labels: np.ndarray, speakers: Sequence) -> dict[int, object]:
    """``{cluster: its majority true speaker}`` of the original clustering (ties: the id that sorts first)."""
    majority = {}
    labels = np.asarray(labels)
    speakers = np.asarray(speakers)
    for cluster in np.unique(labels):
        names, counts = np.unique(speakers[labels == cluster], return_counts=True)
        majority[int(cluster)] = names[int(np.argmax(counts))]
    return majority


def corrected_reliability(labels: np.ndarray, correction: Mapping[str, np.ndarray], speakers: Sequence) -> np.ndarray:
    """(N,) bool: each sample's label after the correction equals the majority true speaker of that
    cluster in the original clustering ``labels``."""
    speakers = np.asarray(speakers)
    majority = majority_speakers(labels, speakers)
    after, _ = apply_correction(labels, np.ones(len(labels), bool), correction)
    return np.array([majority.get(int(c)) == s for c, s in zip(after, speakers, strict=True)], dtype=bool)


def correction_evidence(
    labels: np.ndarray, keep: np.ndarray, correction: Mapping[str, np.ndarray], speakers: Sequence | None
) -> dict:
    """Counts and fractions of one correction (diagnosis only).

    A label is reliable when it equals the majority true speaker of that cluster in the original
    clustering (as the gate evidence's ``reliable``). Returns ``corrected`` (relabelled samples),
    ``changed`` (those whose label changed), ``corrected_accuracy`` (fraction of relabelled samples
    whose new label is reliable), ``reliable_before`` (of the gate's kept set) and ``reliable_after``
    (of the kept set plus the relabelled samples, with their new labels); fractions None without
    speakers or on an empty set.
    """
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.asarray(keep, dtype=bool)
    index, new_label = correction["index"], correction["new_label"]
    out = {
        "corrected": int(index.size),
        "changed": int((correction["old_label"] != new_label).sum()),
        "kept": int(keep.sum()),
        "corrected_accuracy": None,
        "reliable_before": None,
        "reliable_after": None,
    }
    if speakers is None:
        return out
    before = corrected_reliability(labels, {k: v[:0] for k, v in correction.items()}, speakers)
    after = corrected_reliability(labels, correction, speakers)
    _, after_keep = apply_correction(labels, keep, correction)
    if index.size:
        out["corrected_accuracy"] = float(after[index].mean())
    if keep.any():
        out["reliable_before"] = float(before[keep].mean())
    if after_keep.any():
        out["reliable_after"] = float(after[after_keep].mean())
    return out
