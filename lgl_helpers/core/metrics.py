"""Speaker-verification metrics: EER and minDCF of cosine trial scores (docs/method.md, "Evaluation").

Both equal the reference implementation's numbers, ties included: the EER is read from scikit-learn's
ROC at the point where |FNR - FPR| is smallest (the larger of the two, in percent); the minDCF walks
the scores sorted ascending (stably, so tied trials keep their list order) with one threshold per
trial, as the reference's Kaldi-style loop does, but vectorised.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores has {scores.size} values but labels has {labels.size}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 (different speakers) or 1 (same speaker)")
    labels = labels.astype(np.int64)
    n_target = int(labels.sum())
    if n_target == 0 or n_target == labels.size:
        raise ValueError(f"need both target and non-target trials, got {n_target} targets out of {labels.size}")
    return scores, labels


def det_points(scores, labels) -> dict[str, np.ndarray]:
    """ROC/DET operating points. scores, labels: (N,) → dict ``fpr``, ``fnr``, ``thresholds`` (M,), descending."""
    scores, labels = _check(scores, labels)
    fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=1)
    return {"fpr": fpr, "fnr": 1.0 - tpr, "thresholds": thresholds}


def compute_eer(scores, labels) -> float:
    """Equal error rate in percent. scores: (N,) higher = same speaker; labels: (N,) 1 = target trial."""
    points = det_points(scores, labels)
    fpr, fnr = points["fpr"], points["fnr"]
    index = np.nanargmin(np.abs(fnr - fpr))
    return float(max(fpr[index], fnr[index]) * 100)


def compute_min_dcf(scores, labels, p_target: float = 0.05, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised minimum detection cost. scores, labels: (N,).

    Cost at each sorted score s: ``c_miss·P_miss(≤ s)·p_target + c_fa·P_fa(> s)·(1 - p_target)``, minimum
    over all scores, divided by ``min(c_miss·p_target, c_fa·(1 - p_target))``.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target={p_target} must lie strictly between 0 and 1")
    scores, labels = _check(scores, labels)
    sorted_labels = labels[np.argsort(scores, kind="stable")]
    n_target = int(labels.sum())
    n_nontarget = labels.size - n_target
    fnrs = np.cumsum(sorted_labels) / float(n_target)
    fprs = 1 - np.cumsum(1 - sorted_labels) / float(n_nontarget)
    c_det = c_miss * fnrs * p_target + c_fa * fprs * (1 - p_target)
    c_def = min(c_miss * p_target, c_fa * (1 - p_target))
    return float(np.min(c_det) / c_def)
