"""Speaker-level bootstrap intervals of the EER and minDCF, and of the paired difference between two
systems scored on the same trials (docs/method.md, "Evaluation").

Why speakers and not trials: the trials of one test speaker share that speaker's voice and recordings,
so they are not independent. Resampling trials treats N correlated trials as N independent ones and
gives intervals that are too narrow. The scheme is the subsets bootstrap over speakers (Bolle, Ratha
& Pankanti, "Error analysis of pattern recognition systems: the subsets bootstrap", 2004):

* A resample draws S of the list's S speakers with replacement (numpy's ``default_rng(seed)``):
  ``counts[s]`` ~ Multinomial(S, 1/S) is how often speaker s was drawn, 0 when it was left out.
* Every trial whose speakers were drawn is kept, once per copy. A target trial of speaker s gets weight
  ``counts[s]``. A non-target trial between s and t gets ``counts[s] · counts[t]``, one per pairing
  of a copy of s with a copy of t. Target trials are not weighted ``counts[s]²``: two copies of s paired
  with each other are not a target trial of the list, and squaring over-weights speakers drawn often.
* The EER / minDCF of a resample is that of its weighted trials. The interval is the percentile
  interval: the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the resampled values.

A resample without target weight or without non-target weight (possible only with very few speakers)
has no EER. It is left out and counted (``n_degenerate``).

The weighted EER is read at the ROC corners of the full list (the thresholds :func:`compute_eer` reads),
and the weighted minDCF walks the same stably sorted scores as :func:`compute_min_dcf`. With every count
1, both give those functions' numbers exactly, so the point estimate and its resamples are read alike.
(Written out with its trials repeated, a resampled list can have a few more corners, where
:func:`compute_eer` could read an EER up to one same-label run's weight away; the minDCF is the same
either way.) All resamples are evaluated at once from cumulative
weights: trials are grouped by speaker (targets) or speaker pair (non-targets), since all trials of a
group have the same weight in every resample, so the work scales with the (threshold, group) pairs
rather than with trials × resamples: 0.1-0.5 s for 50k trials and 1000 resamples on one CPU core.

A paired difference applies the same resamples to both systems' scores, so what the two share (a hard
speaker is hard for both) cancels out of the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from lgl_helpers.core.metrics import check_labels, check_scores, compute_eer, compute_min_dcf, det_points

N_RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
# The metrics of evaluate_trials: name → p_target of the minDCF (None: the EER, in percent).
METRICS = {"eer": None, "min_dcf": 0.05, "min_dcf_0.01": 0.01}
# Resamples evaluated together: a (cuts × 16) block of cumulative weights stays in a CPU cache, where
# numpy's cumsum runs about twice as fast as on larger blocks.
RESAMPLES_PER_CHUNK = 16


def speaker_ids(paths: Sequence[str], name: str = "paths") -> np.ndarray:
    """Speaker id of each path: its first component (``idNNNNN/<session>/<utt>.wav`` → ``idNNNNN``). (N,) str."""
    ids = []
    for i, path in enumerate(paths):
        speaker, separator, _ = str(path).partition("/")
        if not separator or not speaker:
            raise ValueError(
                f"{name}[{i}] = {path!r}: no speaker folder; the bootstrap takes the speaker id from the first "
                "path component (<speaker>/<session>/<utterance>.wav)"
            )
        ids.append(speaker)
    return np.array(ids, dtype=str)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1")


def percentile_interval(values, confidence: float = CONFIDENCE) -> list[float]:
    """[lo, hi]: the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of values (B,), NaN left out."""
    _check_confidence(confidence)
    values = np.asarray(values, dtype=np.float64)
    half = (1.0 - confidence) / 2.0
    lo, hi = np.nanquantile(values, [half, 1.0 - half])
    return [float(lo), float(hi)]


@dataclass(frozen=True)
class Resampled:
    """One system's metrics: ``point`` (name → value on the full list) and ``values`` (name → (B,), one
    per resample, NaN for a degenerate one), from :meth:`SpeakerBootstrap.evaluate` of ``bootstrap``."""

    bootstrap: SpeakerBootstrap = field(repr=False)
    point: dict[str, float]
    values: dict[str, np.ndarray]


class SpeakerBootstrap:
    """The speaker resamples of one trial list, applied to any score vector of those trials.

    labels: (N,) 1 = target trial; speakers_a, speakers_b: (N,) speaker id of each side of each trial
    (:func:`speaker_ids` of the paths). ``counts``: (B, S) explicit draws, column j for speaker
    ``self.speakers[j]`` (sorted ids); None draws ``n_resamples`` of them with ``seed``. One object
    scores every system of a list with the same resamples, which is what makes differences paired.
    Raises ValueError naming the argument: lengths that differ, a label not 0/1, one class missing, a
    speaker id that contradicts a label.
    """

    def __init__(
        self,
        labels,
        speakers_a,
        speakers_b,
        *,
        n_resamples: int = N_RESAMPLES,
        seed: int = SEED,
        counts: np.ndarray | None = None,
    ):
        labels = check_labels(labels)
        speakers_a, speakers_b = np.asarray(speakers_a).ravel(), np.asarray(speakers_b).ravel()
        for name, side in (("speakers_a", speakers_a), ("speakers_b", speakers_b)):
            if side.size != labels.size:
                raise ValueError(f"{name} has {side.size} values but labels has {labels.size}")
        self.labels = labels
        self.speakers, codes = np.unique(np.concatenate([speakers_a, speakers_b]), return_inverse=True)
        code_a, code_b = codes[: labels.size], codes[labels.size :]
        contradicting = np.flatnonzero((labels == 1) != (code_a == code_b))
        if contradicting.size:
            i = contradicting[0]
            raise ValueError(
                f"trial {i + 1}: label {labels[i]} but speakers_a {str(speakers_a[i])!r} and speakers_b "
                f"{str(speakers_b[i])!r}: a target trial (1) needs the same speaker on both sides, a non-target (0) two"
            )
        n_speakers = self.speakers.size
        if counts is None:
            if int(n_resamples) != n_resamples or n_resamples < 1:
                raise ValueError(f"n_resamples={n_resamples} must be a positive integer")
            rng = np.random.default_rng(seed)
            counts = rng.multinomial(n_speakers, np.full(n_speakers, 1.0 / n_speakers), size=int(n_resamples))
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[1] != n_speakers or np.any(counts < 0):
            raise ValueError(f"counts must be (resamples, {n_speakers}) non-negative draw counts, got {counts.shape}")
        self.counts = counts
        # Groups of trials that weigh the same in every resample: a target group per speaker, a
        # non-target group per unordered speaker pair; numbered within each class.
        low, high = np.minimum(code_a, code_b), np.maximum(code_a, code_b)
        self._trial_group = np.empty(labels.size, dtype=np.int64)
        self._group_speakers = []  # per class, targets first: the speakers whose counts give a group's weight
        for label in (1, 0):
            trials = np.flatnonzero(labels == label)
            keys, self._trial_group[trials] = np.unique(low[trials] * n_speakers + high[trials], return_inverse=True)
            self._group_speakers.append((keys // n_speakers,) if label else (keys // n_speakers, keys % n_speakers))
        # (S, B) float: a chunk of resamples is a slice of each row; sums of these integer weights are exact
        self._counts_by_speaker = np.ascontiguousarray(counts.T, dtype=np.float64)

    @property
    def n_resamples(self) -> int:
        return self.counts.shape[0]

    def _block_matrices(self, order: np.ndarray, cuts: np.ndarray) -> list[sparse.csr_matrix]:
        """For targets and for non-targets: (K, groups) sparse counts of each group's trials of ``order``
        that the cut k includes and the cut k - 1 does not.

        order: (N,) trial indices; cuts: (K,) increasing counts of trials of ``order``, the last one N.
        All trials of one group between two cuts weigh the same in every resample, so the work of a
        resample scales with the (cut, group) pairs, not with the trials.
        """
        first_cut = np.searchsorted(cuts, np.arange(order.size), side="right")  # the first cut that includes it
        matrices = []
        for label, speakers in zip((1, 0), self._group_speakers):
            trials = self.labels[order] == label
            rows, columns = first_cut[trials], self._trial_group[order[trials]]
            shape = (cuts.size, speakers[0].size)
            matrices.append(sparse.csr_matrix((np.ones(rows.size), (rows, columns)), shape=shape))
        return matrices

    def _cumulative(self, blocks: sparse.csr_matrix, speakers: tuple, resamples: slice) -> np.ndarray:
        """Weight of one class's trials within each cut, for ``resamples``: (K, b)."""
        group_weights = self._counts_by_speaker[speakers[0], resamples]  # (groups, b)
        if len(speakers) == 2:  # non-targets: one weight per pairing of the two speakers' copies
            group_weights = group_weights * self._counts_by_speaker[speakers[1], resamples]
        return np.cumsum(blocks @ group_weights, axis=0)

    def evaluate(self, scores, name: str = "scores") -> Resampled:
        """One system's metrics (:data:`METRICS`) on the full list and on every resample. scores: (N,),
        ``name`` the argument named in errors. A degenerate resample (no target or no non-target
        weight) gets NaN."""
        scores = check_scores(scores, self.labels.size, name)
        labels = self.labels
        order = np.argsort(scores, kind="stable")  # ascending, ties in list order: compute_min_dcf's walk
        sorted_scores, sorted_labels = scores[order], labels[order]
        # EER: the trials scoring at or above a ROC corner's threshold are all but an ascending prefix.
        below = np.searchsorted(sorted_scores, det_points(scores, labels)["thresholds"], side="left")
        # minDCF: within a run of non-targets the cost falls, within a run of targets it rises, so its
        # minimum lies after the end of a non-target run (or after the first trial).
        run_ends = np.flatnonzero((sorted_labels == 0) & (np.r_[sorted_labels[1:], 1] == 1)) + 1
        dcf_cuts = np.union1d(run_ends, [1])
        cuts = np.union1d(np.union1d(below, dcf_cuts), [labels.size])
        corners, dcf_rows = np.searchsorted(cuts, below), np.searchsorted(cuts, dcf_cuts)
        blocks = self._block_matrices(order, cuts)
        out = {metric: np.empty(self.n_resamples) for metric in METRICS}
        for start in range(0, self.n_resamples, RESAMPLES_PER_CHUNK):
            resamples = slice(start, start + RESAMPLES_PER_CHUNK)
            cum_target, cum_nontarget = (
                self._cumulative(matrix, speakers, resamples) for matrix, speakers in zip(blocks, self._group_speakers)
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                chunk = {"eer": _weighted_eer(cum_target, cum_nontarget, corners)}
                chunk.update(_weighted_min_dcf(cum_target, cum_nontarget, dcf_rows))
            valid = (cum_target[-1] > 0) & (cum_nontarget[-1] > 0)
            for metric, values in chunk.items():
                out[metric][resamples] = np.where(valid, values, np.nan)
        point = {
            metric: compute_eer(scores, labels) if p_target is None else compute_min_dcf(scores, labels, p_target)
            for metric, p_target in METRICS.items()
        }
        return Resampled(self, point, out)

    def _summary(self, resampled_eer: np.ndarray, confidence: float) -> dict:
        """The counts that go with an interval; ValueError when no resample has both classes."""
        degenerate = int(np.isnan(resampled_eer).sum())
        if degenerate == self.n_resamples:
            raise ValueError(
                f"every one of the {self.n_resamples} resamples lacks target or non-target trials "
                f"({self.speakers.size} speakers): too few speakers for a speaker bootstrap"
            )
        return {
            "n_resamples": self.n_resamples,
            "n_speakers": int(self.speakers.size),
            "confidence": confidence,
            "n_degenerate": degenerate,
        }

    def intervals(self, system: Resampled, confidence: float = CONFIDENCE) -> dict:
        """Point value and interval of each metric of one system (from :meth:`evaluate`) → dict ``eer``,
        ``eer_ci`` [lo, hi], ``min_dcf``, ``min_dcf_ci``, ``min_dcf_0.01``, ``min_dcf_0.01_ci``,
        ``n_resamples``, ``n_speakers``, ``confidence``, ``n_degenerate`` (resamples left out)."""
        self._check_own(system, "system")
        summary = self._summary(system.values["eer"], confidence)
        out = {}
        for metric in METRICS:
            out[metric] = system.point[metric]
            out[f"{metric}_ci"] = percentile_interval(system.values[metric], confidence)
        return out | summary

    def paired(self, system: Resampled, reference: Resampled, confidence: float = CONFIDENCE) -> dict:
        """Metric(system) - metric(reference) with its interval; both from :meth:`evaluate` of this object,
        so the same resamples apply to both → dict ``eer_diff``, ``eer_diff_ci`` [lo, hi], likewise
        ``min_dcf_diff``, ``min_dcf_0.01_diff`` (and ``_ci``), plus the counts of :meth:`intervals`.
        A negative EER difference: ``system`` errs less than ``reference``.
        """
        self._check_own(system, "system")
        self._check_own(reference, "reference")
        summary = self._summary(system.values["eer"], confidence)
        out = {}
        for metric in METRICS:
            out[f"{metric}_diff"] = system.point[metric] - reference.point[metric]
            out[f"{metric}_diff_ci"] = percentile_interval(system.values[metric] - reference.values[metric], confidence)
        return out | summary

    def _check_own(self, resampled: Resampled, name: str) -> None:
        if resampled.bootstrap is not self:
            raise ValueError(f"{name} was evaluated by another SpeakerBootstrap: its resamples are not these")


def _weighted_eer(cum_target: np.ndarray, cum_nontarget: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """EER (%) per resample, read at the ROC corners. cum_*: (K, b) weight of the trials below each cut;
    corners: (C,) rows of the corners, threshold descending (the order of :func:`det_points`). → (b,)

    FNR - FPR falls along the corners (from 1 to -1), so the corner of smallest |FNR - FPR| is next to
    the first one where it is ≤ 0, found by bisection; of the two, the earlier one wins a tie, as
    ``np.nanargmin`` in :func:`compute_eer` picks the first. Corners before it with the same gap have
    the same FNR and FPR, hence the same EER.
    """
    n_target, n_nontarget = cum_target[-1], cum_nontarget[-1]
    columns = np.arange(cum_target.shape[1])

    def rates(corner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = corners[corner]
        # compute_eer's float operations: fpr = fps / n, fnr = 1 - tps / n, with tps and fps the weights at or above
        fpr = (n_nontarget - cum_nontarget[rows, columns]) / n_nontarget
        fnr = 1.0 - (n_target - cum_target[rows, columns]) / n_target
        return fnr, fpr

    low, high = np.ones_like(columns), np.full_like(columns, corners.size - 1)
    while np.any(low < high):
        middle = (low + high) // 2
        fnr, fpr = rates(middle)
        positive = fnr - fpr > 0  # NaN (a degenerate resample) stops the search at once
        low, high = np.where(positive, middle + 1, low), np.where(positive, high, middle)
    fnr, fpr = rates(low)
    fnr_before, fpr_before = rates(low - 1)
    earlier = np.abs(fnr_before - fpr_before) <= np.abs(fnr - fpr)
    return np.where(earlier, np.maximum(fpr_before, fnr_before), np.maximum(fpr, fnr)) * 100


def _weighted_min_dcf(cum_target: np.ndarray, cum_nontarget: np.ndarray, dcf_rows: np.ndarray) -> dict:
    """minDCF per resample for each p_target of :data:`METRICS`. cum_*: (K, b); dcf_rows: (D,) rows of
    the cuts where the cost can be lowest → dict name → (b,).

    compute_min_dcf's float operations, with c_miss = c_fa = 1 (its defaults, which evaluate_trials
    reports; multiplying by 1.0 is exact, so it is left out). Rejecting every trial costs 1, so the
    minimum lies where (1 - p) · FPR ≤ c_def, i.e. FPR ≤ p / (1 - p): the highest-scoring cuts. Only
    those rows (for the largest p) are costed.
    """
    fprs = 1 - cum_nontarget[dcf_rows] / cum_nontarget[-1]
    largest = max(p for p in METRICS.values() if p is not None)
    # FPR falls along the rows; the looser bound keeps rounding at the border on the safe side
    inside = fprs <= largest / (1 - largest) * (1 + 1e-9)
    first = int(np.min(np.where(inside.any(axis=0), np.argmax(inside, axis=0), 0)))
    rows = dcf_rows[first:]
    fnrs, fprs = cum_target[rows] / cum_target[-1], fprs[first:]
    out = {}
    for name, p_target in METRICS.items():
        if p_target is not None:
            c_det = fnrs * p_target + fprs * (1 - p_target)
            out[name] = np.min(c_det, axis=0) / min(p_target, 1 - p_target)
    return out


def bootstrap_metrics(
    scores,
    labels,
    speakers_a,
    speakers_b,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> dict:
    """EER and minDCF of one system with speaker-bootstrap intervals; see :meth:`SpeakerBootstrap.intervals`.

    scores, labels, speakers_a, speakers_b: (N,).
    """
    resamples = SpeakerBootstrap(labels, speakers_a, speakers_b, n_resamples=n_resamples, seed=seed)
    return resamples.intervals(resamples.evaluate(scores), confidence)


def paired_difference(
    scores,
    reference_scores,
    labels,
    speakers_a,
    speakers_b,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> dict:
    """Metric(scores) - metric(reference_scores) of two systems on the same trials, with a paired
    speaker-bootstrap interval; see :meth:`SpeakerBootstrap.paired`. All arguments (N,)."""
    resamples = SpeakerBootstrap(labels, speakers_a, speakers_b, n_resamples=n_resamples, seed=seed)
    system, reference = resamples.evaluate(scores), resamples.evaluate(reference_scores, "reference_scores")
    return resamples.paired(system, reference, confidence)
