"""A stage's final evaluation on several trial lists at once, raw and label-free normalised (docs/method.md,
"Evaluation").

Each stage ends by scoring its best model (chosen on ``val_trials`` alone) on the test list ``trials``
and on every list of ``eval_trials`` (name → trial list, e.g. ``{"Vox1-O": ..., "Vox1-E": ...,
"Vox1-H": ...}``; empty = the test list alone, named ``test``). One pass embeds every distinct file of
all of them, of the validation list and of the normalisation cohort
(:func:`~lgl_helpers.core.embed.embed_files`), so a file shared by Vox1-O, -E and -H is embedded
once. Then, per list and per score variant of :data:`~lgl_helpers.core.score_norm.METHODS` (raw
cosine, mean subtracted, AS-norm):

* a score file ``<stage>/eval/<name>/scores_<variant>.txt``, one trial a line ``<score> <label> <path
  A> <path B>`` (:func:`~lgl_helpers.core.metrics.write_trial_scores`); a list that is the test list
  itself keeps its raw scores in the stage's ``test_scores.txt`` only;
* its EER and minDCF (p_target 0.05 and 0.01) in ``metrics.json`` under ``eval``; the report adds
  speaker-bootstrap intervals from the score files.

The validation scores of the same pass give ``eer_threshold`` (the score at which the validation
list's false-accept and false-reject rates meet), stored in ``best.model`` for ``lgl-kit verify``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lgl_helpers import files, runs
from lgl_helpers.config import check
from lgl_helpers.core import score_norm
from lgl_helpers.core.embed import cosine_scores, embed_files
from lgl_helpers.core.encoder import THRESHOLD_KEY
from lgl_helpers.core.metrics import compute_eer, compute_min_dcf, det_points, write_trial_scores
from lgl_helpers.core.models import load_weights
from lgl_helpers.corpus.lists import TrainEntry, Trial, check_list, read_train_list, read_trials

log = logging.getLogger(__name__)

EVAL_DIR = "eval"  # in the stage folder: one folder of score files per list
DEFAULT_LIST = "test"  # the name of the test list when eval_trials is empty
LIST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a list's name is a folder name


def check_eval_trials(owner: str, value) -> None:
    """The rule of an ``eval_trials`` parameter of ``owner`` (a config class name): a mapping of names
    (letters, digits, ``.``, ``_``, ``-``) to non-empty trial-list paths. ValueError naming it."""
    name = f"{owner}.eval_trials"
    check(name, value, isinstance(value, Mapping), 'a mapping name → trial list, e.g. {"Vox1-O": "veri_test2.txt"}')
    for key, path in value.items():
        check(f"{name}[{key!r}]", key, isinstance(key, str) and LIST_NAME.fullmatch(key) is not None, "a plain name")
        check(f"{name}[{key!r}]", path, isinstance(path, (str, os.PathLike)) and str(path) != "", "a trial-list path")


def list_paths(config, trials: Path) -> dict[str, Path]:
    """name → resolved path of each list a stage's ``config`` evaluates: its ``eval_trials``; when empty,
    the lists notebook 00 set up (``runs.data_eval_trials``: the toy corpus's ``toy-O`` and ``toy-H``),
    else ``{"test": trials}``."""
    if config.eval_trials:
        return {name: runs.resolve_path(path) for name, path in config.eval_trials.items()}
    prepared = runs.data_eval_trials(runs.run_folder(config.run_name, config.runs_dir))
    return prepared or {DEFAULT_LIST: Path(trials)}


@dataclass(frozen=True)
class TrialList:
    """One evaluation list: its name, file and trials."""

    name: str
    path: Path
    trials: list[Trial]


def read_trial_lists(
    paths: Mapping[str, Path], test_root: Path, checked: Sequence[TrialList] = ()
) -> dict[str, TrialList]:
    """Read and check each list of ``paths`` (name → file): it must exist and every file it names must
    be a usable wav under ``test_root`` (:func:`~lgl_helpers.corpus.lists.check_list`, header reads of
    each distinct file). A file of ``checked`` (lists the stage has read and checked already) is taken
    from there. FileNotFoundError naming the parameter, ListCheckError naming ``file:line``."""
    known = {item.path.resolve(): item.trials for item in checked}
    out = {}
    for name, path in paths.items():
        path = Path(path)
        if path.resolve() in known:
            out[name] = TrialList(name, path, known[path.resolve()])
            continue
        if not path.is_file():
            raise FileNotFoundError(f"eval_trials[{name!r}]: trial list {path} does not exist")
        check_list(path, test_root, "trials", show_progress=False)
        out[name] = TrialList(name, path, read_trials(path))
    return out


@dataclass(frozen=True)
class Cohort:
    """The training utterances whose embeddings normalise the scores, and how they are used.

    ``kind``: ``"train"`` (their embeddings are the cohort) or ``"centroids"`` (the centroids of their
    ``pseudo_labels`` (K,) are); ``paths``: (K,) wav files; ``top_n``: AS-norm's N.
    """

    kind: str
    paths: list[Path]
    top_n: int
    pseudo_labels: np.ndarray | None = None


def plan_cohort(
    kind: str,
    size: int,
    top_n: int,
    entries: Sequence[TrainEntry],
    train_root: Path,
    seed: int,
    pseudo_labels: np.ndarray | None = None,
) -> Cohort | None:
    """The cohort of the ``norm_*`` parameters: ``size`` training utterances drawn with ``seed`` (all
    when 0 or when the list is shorter), None for ``kind`` ``"none"``. ``pseudo_labels``: (N,) of
    ``entries``, needed for ``"centroids"`` (None there only for an early check). AS-norm's top N is
    at most the cohort's members: a smaller cohort lowers it, with a log line."""
    if kind == "none":
        return None
    index = score_norm.sample_cohort(len(entries), size, seed)
    paths = [Path(train_root) / entries[i].path for i in index]
    labels = None if pseudo_labels is None or kind != "centroids" else np.asarray(pseudo_labels)[index]
    n_members = len(index) if labels is None else int(np.unique(labels).size)
    if top_n > n_members:
        log.info("norm_top_n=%d but the %s cohort has %d members: AS-norm uses all of them", top_n, kind, n_members)
        top_n = n_members
    if top_n < score_norm.MIN_TOP_N:
        raise ValueError(f"norm_cohort={kind!r}: the cohort has {n_members} member(s); AS-norm needs at least 2")
    return Cohort(kind, paths, top_n, labels)


def eer_threshold(scores, labels) -> float:
    """The score at the EER: the ROC threshold where |FNR - FPR| is smallest (the point
    :func:`~lgl_helpers.core.metrics.compute_eer` reads); a trial at or above it is accepted. scores, labels: (M,)."""
    points = det_points(scores, labels)
    return float(points["thresholds"][np.nanargmin(np.abs(points["fnr"] - points["fpr"]))])


def store_threshold(checkpoint: str | os.PathLike, threshold: float) -> Path:
    """Add ``eer_threshold`` to a kit checkpoint (load, add the key, atomic save)."""
    obj = load_weights(checkpoint)
    obj[THRESHOLD_KEY] = float(threshold)
    return files.atomic_torch_save(obj, checkpoint)


def _metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "eer": compute_eer(scores, labels),
        "min_dcf": compute_min_dcf(scores, labels, p_target=0.05),
        "min_dcf_0.01": compute_min_dcf(scores, labels, p_target=0.01),
    }


def _rows(trials: Sequence[Trial], index: Mapping[str, int], where: str) -> tuple[np.ndarray, np.ndarray]:
    """(index_a, index_b) (M,) rows of each trial's files in the embedded set; ValueError naming the
    first file outside it."""
    try:
        return (np.array([index[t.path_a] for t in trials]), np.array([index[t.path_b] for t in trials]))
    except KeyError as missing:
        raise ValueError(
            f"{where}: names {missing.args[0]}, which is not among the {len(index)} embedded files"
        ) from None


def score_lists(
    emb: np.ndarray,
    keys: Sequence[str],
    lists: Mapping[str, TrialList],
    cohort_emb: np.ndarray | None = None,
    cohort: Cohort | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Score every list from embeddings already computed, raw and normalised.

    emb: (N, D) L2-normalised, row i the file ``keys[i]`` (a path relative to ``test_root``);
    cohort_emb: (K, D) of ``cohort.paths`` (None: raw scores only). Returns name → variant (of
    :data:`~lgl_helpers.core.score_norm.METHODS`) → (M,) float64 scores in the list's trial order.
    A list naming a file outside ``keys`` raises ValueError naming the list and the file.
    """
    index = {key: i for i, key in enumerate(keys)}
    if cohort is not None:
        shifted = score_norm.subtract_mean(emb, cohort_emb.mean(axis=0))
        members = (
            cohort_emb
            if cohort.kind == "train"
            else score_norm.pseudo_label_centroids(cohort_emb, cohort.pseudo_labels)
        )
        mean, std = score_norm.cohort_stats(emb, members, cohort.top_n)
    out = {}
    for name, trial_list in lists.items():
        index_a, index_b = _rows(trial_list.trials, index, f"eval_trials[{name!r}] {trial_list.path}")
        raw = cosine_scores(emb, index_a, index_b)
        out[name] = {"raw": raw}
        if cohort is not None:
            out[name]["mean"] = cosine_scores(shifted, index_a, index_b)
            out[name]["asnorm"] = score_norm.asnorm(raw, index_a, index_b, mean, std)
    return out


@dataclass(frozen=True)
class EvalPlan:
    """What a stage's final evaluation scores: its ``test`` list (``trials``), its ``val`` list (for
    ``eer_threshold``), the evaluation ``lists`` and the normalisation ``cohort`` (None: raw only)."""

    test: TrialList
    val: TrialList
    lists: dict[str, TrialList]
    cohort: Cohort | None


def plan_evaluation(
    config,
    paths: Mapping[str, Path],
    entries: Sequence[TrainEntry],
    val_trials: list[Trial],
    test_trials: list[Trial],
    pseudo_labels: np.ndarray | None = None,
) -> EvalPlan:
    """The :class:`EvalPlan` of a stage's config (its ``eval_trials``, ``norm_cohort``,
    ``norm_cohort_size``, ``norm_top_n`` and ``seed``), checked: every list read and its files'
    headers checked, the cohort drawn from ``entries``. ``paths`` as from
    :func:`lgl_helpers.runs.resolve_data_paths`; ``val_trials`` / ``test_trials``: the stage's lists,
    already checked; ``pseudo_labels`` (N,) of ``entries`` for the ``"centroids"`` cohort (None in
    the early check before any clustering). Notebooks call it before training, so that a bad list
    or cohort stops the run before any compute; the stage calls it again at the end.
    """
    test = TrialList("trials", Path(paths["trials"]), test_trials)
    val = TrialList("val_trials", Path(paths["val_trials"]), val_trials)
    lists = read_trial_lists(list_paths(config, paths["trials"]), paths["test_root"], (test, val))
    cohort = plan_cohort(
        config.norm_cohort,
        config.norm_cohort_size,
        config.norm_top_n,
        entries,
        paths["train_root"],
        config.seed,
        pseudo_labels,
    )
    return EvalPlan(test, val, lists, cohort)


def check_evaluation(config) -> dict[str, TrialList]:
    """Before training: the lists and cohort of a stage's final evaluation, checked as the stage will
    (:func:`read_trial_lists`, :func:`plan_cohort` without pseudo labels). Data paths as the stage
    resolves them (the config's, else ``runs/<run>/data.json``). Returns the lists; raises naming the
    list or parameter, so that notebooks 01, 03 and 04 stop before any compute."""
    run_dir = runs.run_folder(config.run_name, config.runs_dir)
    paths = runs.resolve_data_paths(run_dir, **{key: getattr(config, key) for key in runs.DATA_KEYS})
    if paths["trials"] is None and not config.eval_trials:
        return {}  # no test list at all: the stage's own checks name it
    lists = read_trial_lists(list_paths(config, paths["trials"]), paths["test_root"])
    if config.norm_cohort != "none":
        if paths["train_list"] is None:
            raise ValueError(
                f"norm_cohort={config.norm_cohort!r} draws from the training list, but train_list is not set"
            )
        entries = read_train_list(paths["train_list"])
        plan_cohort(config.norm_cohort, config.norm_cohort_size, config.norm_top_n, entries, paths["train_root"], 0)
    return lists


def final_evaluation(
    model: torch.nn.Module,
    plan: EvalPlan,
    test_root: Path,
    stage_dir: Path,
    test_scores: Path,
    *,
    device: str | torch.device | None = None,
) -> dict:
    """Embed every distinct file of ``plan`` once, score all lists, write the score files; see the module
    docstring.

    The raw scores of ``plan.test`` go to ``test_scores``; those of ``plan.val`` give
    ``eer_threshold``. Returns dict ``test`` and ``val`` (``eer``, ``min_dcf``, ``min_dcf_0.01``),
    ``eer_threshold``, and ``eval``: ``lists`` (name → ``trials``, ``n_trials``, ``n_target``,
    ``n_files``, ``scores`` (variant → file) and ``metrics`` (variant → the three metrics)),
    ``score_norm`` (the cohort used, or None), ``n_files_embedded`` and ``seconds``.
    """
    test, val, lists, cohort = plan.test, plan.val, plan.lists, plan.cohort
    if cohort is not None and cohort.kind == "centroids" and cohort.pseudo_labels is None:
        raise ValueError("norm_cohort='centroids' needs the pseudo labels of the last clustering")
    tic = time.perf_counter()
    every = {"test": test, "val": val, **{f"list {name}": item for name, item in lists.items()}}
    keys = list(dict.fromkeys(p for item in every.values() for t in item.trials for p in (t.path_a, t.path_b)))
    cohort_paths = cohort.paths if cohort is not None else []
    emb = embed_files(model, [test_root / key for key in keys] + cohort_paths, device=device, show_progress=False)
    emb, cohort_emb = emb[: len(keys)], emb[len(keys) :]
    scored = score_lists(emb, keys, {"test": test, "val": val}) | {
        f"list {name}": variants for name, variants in score_lists(emb, keys, lists, cohort_emb, cohort).items()
    }
    out = {}
    for key, trial_list in (("test", test), ("val", val)):
        labels = np.array([t.label for t in trial_list.trials], dtype=np.int64)
        out[key] = _metrics(scored[key]["raw"], labels)
        if key == "val":
            out["eer_threshold"] = eer_threshold(scored[key]["raw"], labels)
    write_trial_scores(test_scores, test.trials, scored["test"]["raw"])
    records = {}
    for name, trial_list in lists.items():
        labels = np.array([t.label for t in trial_list.trials], dtype=np.int64)
        files, metrics = {}, {}
        for variant, scores in scored[f"list {name}"].items():
            same_as_test = variant == "raw" and trial_list.path.resolve() == test.path.resolve()
            path = test_scores if same_as_test else stage_dir / EVAL_DIR / name / f"scores_{variant}.txt"
            if not same_as_test:
                write_trial_scores(path, trial_list.trials, scores)
            files[variant] = runs.relative_to_run(path, stage_dir.parent)  # the run folder can move
            metrics[variant] = _metrics(scores, labels)
        records[name] = {
            "trials": runs.relative_to_run(trial_list.path, stage_dir.parent),
            "n_trials": len(trial_list.trials),
            "n_target": int(labels.sum()),
            "n_files": len({p for t in trial_list.trials for p in (t.path_a, t.path_b)}),
            "scores": files,
            "metrics": metrics,
        }
        log.info(
            "eval %s: %d trials, EER %s",
            name,
            len(trial_list.trials),
            ", ".join(f"{variant} {m['eer']:.2f}%" for variant, m in metrics.items()),
        )
    norm = None
    if cohort is not None:
        n_members = len(cohort_paths) if cohort.kind == "train" else int(np.unique(cohort.pseudo_labels).size)
        norm = {"cohort": cohort.kind, "n_utterances": len(cohort_paths), "n_members": n_members, "top_n": cohort.top_n}
    out["eval"] = {
        "lists": records,
        "score_norm": norm,
        "n_files_embedded": len(keys) + len(cohort_paths),
        "seconds": time.perf_counter() - tic,
    }
    return out
