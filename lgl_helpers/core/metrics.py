"""Speaker-verification metrics: EER and minDCF of cosine trial scores (docs/method.md, "Evaluation").

Both equal the reference implementation's numbers, ties included: the EER is read from scikit-learn's
ROC (rebuilt here in numpy, bit for bit, without its input checks and their extra sorts) at the point
where |FNR - FPR| is smallest (the larger of the two, in percent); the minDCF walks the scores sorted
ascending (stably, so tied trials keep their list order) with one threshold per trial, as the
reference's Kaldi-style loop does, but vectorised. Both measures can share that one sort
(:func:`eer_and_min_dcf`).

A stage keeps the scores of its final test evaluation in ``test_scores.txt`` (:func:`write_trial_scores`),
one trial a line ``<score> <label> <path A> <path B>`` in the trial list's order, so that intervals
(:mod:`lgl_helpers.core.bootstrap`) and comparisons between systems can be computed later without the
models. :func:`match_trials` decides whether two lists hold the same trials.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lgl_helpers.corpus.lists.formats import ListFormatError, Trial, numbered_line_fields
from lgl_helpers.files import atomic_write_text

TEST_SCORES = "test_scores.txt"  # a stage's final test scores, next to its metrics.json
SCORES_FORMAT = "<score> <1|0> <wav path A> <wav path B>"


def check_labels(labels, name: str = "labels") -> np.ndarray:
    """labels: (N,) of 0 / 1 with both values present → (N,) int64. ValueError naming ``name`` otherwise."""
    labels = np.asarray(labels).ravel()
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise ValueError(
            f"{name} must be 0 (different speakers) or 1 (same speaker), got {labels[bad[0]].item()!r} at index {bad[0]}"
        )
    labels = labels.astype(np.int64)
    n_target = int(labels.sum())
    if n_target == 0 or n_target == labels.size:
        raise ValueError(f"{name}: need both target and non-target trials, got {n_target} targets out of {labels.size}")
    return labels


def check_scores(scores, size: int, name: str = "scores", against: str = "labels") -> np.ndarray:
    """scores: (N,) finite, N == ``size`` (the length of ``against``) → (N,) float64. ValueError naming ``name``."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size != size:
        raise ValueError(f"{name} has {scores.size} values but {against} has {size}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return scores


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).ravel()
    scores = check_scores(scores, labels.size)
    return scores, check_labels(labels)


def stable_argsort(x: np.ndarray) -> np.ndarray:
    """``np.argsort(x, kind="stable")`` of a 1-D array, 2-3x faster when few values are tied.

    The unstable (SIMD) sort orders the values; only the tied ones are then put back in index order.
    With many ties (over 1 in 8 values) the stable sort itself is quicker.
    """
    order = np.argsort(x)
    sorted_x = x[order]
    tied = np.flatnonzero(sorted_x[1:] == sorted_x[:-1])
    if tied.size > x.size // 8:
        return np.argsort(x, kind="stable")
    if tied.size:
        members = np.union1d(tied, tied + 1)  # every position of every tie group
        group = order[members]
        order[members] = group[np.lexsort((group, sorted_x[members]))]
    return order


def _ascending(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores sorted ascending, stably (tied trials keep their list order), with their labels. (N,), (N,)."""
    order = stable_argsort(scores)
    return scores[order], labels[order]


def _roc(sorted_scores: np.ndarray, sorted_labels: np.ndarray) -> dict[str, np.ndarray]:
    """scikit-learn's ``roc_curve`` (``drop_intermediate=True``) from ascending-sorted inputs, bit for bit.

    Read from the highest score down: one point per distinct score (the end of each tie group, so the
    order inside a group does not matter), collinear points dropped, (0, 0) at threshold +inf first.
    """
    scores = sorted_scores[::-1]
    last = np.append(np.flatnonzero(np.diff(scores)), scores.size - 1)
    tps = np.cumsum(sorted_labels[::-1], dtype=np.float64)[last]
    fps = 1 + last.astype(np.float64) - tps
    thresholds = scores[last]
    if fps.shape[0] > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    return {"fpr": fps / fps[-1], "fnr": 1.0 - tps / tps[-1], "thresholds": np.r_[np.inf, thresholds]}


def _eer(points: dict[str, np.ndarray]) -> float:
    fpr, fnr = points["fpr"], points["fnr"]
    index = np.nanargmin(np.abs(fnr - fpr))
    return float(max(fpr[index], fnr[index]) * 100)


def _check_costs(p_target: float) -> None:
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target={p_target} must lie strictly between 0 and 1")


def _min_dcf(sorted_labels: np.ndarray, p_target: float, c_miss: float, c_fa: float) -> float:
    n_target = int(sorted_labels.sum())
    n_nontarget = sorted_labels.size - n_target
    fnrs = np.cumsum(sorted_labels) / float(n_target)
    fprs = 1 - np.cumsum(1 - sorted_labels) / float(n_nontarget)
    c_det = c_miss * fnrs * p_target + c_fa * fprs * (1 - p_target)
    c_def = min(c_miss * p_target, c_fa * (1 - p_target))
    return float(np.min(c_det) / c_def)


def det_points(scores, labels) -> dict[str, np.ndarray]:
    """ROC/DET operating points. scores, labels: (N,) → dict ``fpr``, ``fnr``, ``thresholds`` (M,), descending."""
    return _roc(*_ascending(*_check(scores, labels)))


def compute_eer(scores, labels) -> float:
    """Equal error rate in percent. scores: (N,) higher = same speaker; labels: (N,) 1 = target trial."""
    return _eer(det_points(scores, labels))


def compute_min_dcf(scores, labels, p_target: float = 0.05, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised minimum detection cost. scores, labels: (N,).

    Cost at each sorted score s: ``c_miss·P_miss(≤ s)·p_target + c_fa·P_fa(> s)·(1 - p_target)``, minimum
    over all scores, divided by ``min(c_miss·p_target, c_fa·(1 - p_target))``.
    """
    _check_costs(p_target)
    _, sorted_labels = _ascending(*_check(scores, labels))
    return _min_dcf(sorted_labels, p_target, c_miss, c_fa)


def eer_and_min_dcf(scores, labels, p_targets: Sequence[float] = (0.05, 0.01)) -> tuple[float, list[float]]:
    """:func:`compute_eer` and :func:`compute_min_dcf` (c_miss = c_fa = 1) per ``p_targets``, from one sort.

    scores, labels: (N,). Returns (EER in percent, [minDCF per p_target]), equal to the separate calls.
    """
    for p_target in p_targets:
        _check_costs(p_target)
    sorted_scores, sorted_labels = _ascending(*_check(scores, labels))
    return _eer(_roc(sorted_scores, sorted_labels)), [_min_dcf(sorted_labels, p, 1.0, 1.0) for p in p_targets]


# ----------------------------------------------------------------------------------------------
# Score files and trial lists
# ----------------------------------------------------------------------------------------------


def write_trial_scores(path: str | os.PathLike, trials: Sequence[Trial], scores) -> Path:
    """Write ``<score> <label> <path A> <path B>`` per trial, in ``trials``' order, atomically.

    scores: (M,) one per trial. Scores are written with ``repr`` (the shortest text that reads back as
    the same float), so metrics recomputed from the file equal those of the evaluation.
    """
    scores = check_scores(scores, len(trials), against="trials")
    text = "".join(f"{float(s)!r} {t.label} {t.path_a} {t.path_b}\n" for s, t in zip(scores, trials))
    return atomic_write_text(path, text)


def read_trial_scores(path: str | os.PathLike) -> tuple[list[Trial], np.ndarray]:
    """Read a file of :func:`write_trial_scores` → (trials, scores (M,) float64).

    Raises :class:`~lgl_helpers.corpus.lists.ListFormatError` naming ``file:line`` on a bad line.
    """
    path = Path(path)
    return _parse_trial_scores(path, _score_lines(path))


def _score_lines(path: Path) -> list[str]:
    """The lines of a score file, split as reading it line by line splits them."""
    if not path.is_file():
        raise ListFormatError(f"{path}: score file does not exist")
    return path.read_text().split("\n")


def _parse_trial_scores(path: Path, lines: list[str]) -> tuple[list[Trial], np.ndarray]:
    trials, scores = [], []
    for number, fields in numbered_line_fields(lines):
        if len(fields) != 4:
            raise ListFormatError(f"{path}:{number}: expected 4 fields '{SCORES_FORMAT}', got {len(fields)}")
        try:
            score = float(fields[0])
        except ValueError:
            raise ListFormatError(f"{path}:{number}: score {fields[0]!r} is not a number") from None
        if not np.isfinite(score):
            raise ListFormatError(f"{path}:{number}: score {fields[0]!r} is not finite")
        if fields[1] not in ("0", "1"):
            raise ListFormatError(f"{path}:{number}: trial label {fields[1]!r} is not 0 or 1")
        trials.append(Trial(int(fields[1]), fields[2], fields[3]))
        scores.append(score)
    if not trials:
        raise ListFormatError(f"{path}: score file is empty")
    return trials, np.array(scores, dtype=np.float64)


class TrialScoreReader:
    """:func:`read_trial_scores` for many score files of a few trial lists (a report reads twenty-odd,
    of three lists). A file whose label and path columns equal, line for line, those of a file this
    reader has read gets that file's trials back, the same list, without building them again: building
    the :class:`Trial` tuples is most of the reading, and comparing a list with itself is instant.
    Anything else (a new list, a blank line, a bad score) is parsed, and refused, as by :func:`read_trial_scores`.
    Each file is read once.
    """

    def __init__(self) -> None:
        self._known: list[tuple[list[str], list[Trial]]] = []  # (label and path columns, their trials)

    def __call__(self, path: str | os.PathLike) -> tuple[list[Trial], np.ndarray]:
        """(trials, scores (M,) float64) of the score file ``path``."""
        path = Path(path)
        lines = _score_lines(path)
        score_texts, columns = _split_score_column(lines)
        if columns is not None:
            for known_columns, trials in self._known:
                if columns == known_columns:
                    scores = _finite_scores(score_texts)
                    if scores is not None:
                        return trials, scores
        trials, scores = _parse_trial_scores(path, lines)
        if columns is not None:
            self._known.append((columns, trials))
        return trials, scores


def _split_score_column(lines: list[str]) -> tuple[list[str], list[str] | None]:
    """(score texts, the rest of each line); the rest is None when a line (other than the newline's
    empty last one) is not ``<score> <rest>``."""
    if lines and not lines[-1]:
        lines = lines[:-1]
    parts = [line.partition(" ") for line in lines]
    if not parts or any(not sep or not score for score, sep, _ in parts):
        return [], None
    return [score for score, _, _ in parts], [rest for _, _, rest in parts]


def _finite_scores(texts: list[str]) -> np.ndarray | None:
    """(M,) float64 of the score texts, read as :func:`read_trial_scores` reads them; None if one is not a finite number."""
    try:
        scores = np.fromiter(map(float, texts), dtype=np.float64, count=len(texts))
    except ValueError:
        return None
    return scores if np.isfinite(scores).all() else None


def match_trials(trials: Sequence[Trial], other: Sequence[Trial]) -> np.ndarray | None:
    """Position in ``other`` of each trial of ``trials`` when both hold the same trials, else None.

    "The same" means the same ``(label, path A, path B)`` triples, each as often, in any line order:
    such lists give the same EER whatever their file paths. A set comparison would not do: a list that
    repeats a trial weighs it twice. Returns (M,) int64 with ``other[index[i]] == trials[i]``.
    """
    if len(trials) != len(other):
        return None
    if list(trials) == list(other):
        return np.arange(len(trials), dtype=np.int64)

    def key(trial: Trial) -> tuple[int, str, str]:
        return (trial.label, trial.path_a, trial.path_b)

    order = sorted(range(len(trials)), key=lambda i: key(trials[i]))
    other_order = sorted(range(len(other)), key=lambda i: key(other[i]))
    if any(key(trials[i]) != key(other[j]) for i, j in zip(order, other_order)):
        return None
    index = np.empty(len(trials), dtype=np.int64)
    index[order] = other_order
    return index
