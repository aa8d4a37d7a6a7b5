"""How well a loss gate separates right from wrong pseudo labels (diagnosis only, never used for training).

A pseudo label is *reliable* when it equals its cluster's majority true speaker
(:func:`lgl_helpers.clustering.quality.majority_agreement`). The gate keeps the samples whose loss is
at most the gate, so the mechanism works when the kept samples are markedly more reliable than the
dropped ones, and the loss itself ranks reliable labels first (a high ROC AUC of −loss).
"""

from __future__ import annotations

import numpy as np

EVIDENCE_KEYS = ("fraction_kept", "kept_reliable", "dropped_reliable", "auc_reliable")


def gate_evidence(per_sample_loss, reliable, gate: float) -> dict[str, float | None]:
    """Kept fraction, reliability of the kept and dropped samples, and the ROC AUC of −loss for reliability.

    per_sample_loss: (N,) losses; reliable: (N,) bool (or None when the true speakers are unknown);
    gate: the threshold (``loss <= gate`` is kept). Fractions are in [0, 1]; an empty side, a
    one-class ``reliable`` or an unknown ``reliable`` gives None for the values it makes undefined.
    """
    losses = np.asarray(per_sample_loss, dtype=np.float64).ravel()
    if losses.size == 0:
        raise ValueError("per_sample_loss is empty")
    kept = losses <= float(gate)
    evidence: dict[str, float | None] = dict.fromkeys(EVIDENCE_KEYS)
    evidence["fraction_kept"] = float(kept.mean())
    if reliable is None:
        return evidence
    reliable = np.asarray(reliable).ravel().astype(bool)
    if reliable.shape != losses.shape:
        raise ValueError(f"reliable has shape {reliable.shape} but per_sample_loss has {losses.shape}")
    evidence["kept_reliable"] = float(reliable[kept].mean()) if kept.any() else None
    evidence["dropped_reliable"] = float(reliable[~kept].mean()) if (~kept).any() else None
    if reliable.all() or not reliable.any():
        return evidence
    # Imported here: scikit-learn takes seconds to import, and the baseline's notebook never gates.
    from sklearn.metrics import roc_auc_score

    evidence["auc_reliable"] = float(roc_auc_score(reliable, -losses))
    return evidence
