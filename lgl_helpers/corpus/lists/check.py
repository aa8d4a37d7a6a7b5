"""Checks of a list against its audio: every line's format and every referenced wav (exists, 16 kHz mono,
long enough, from the headers, in parallel; a float-coded file's samples finite), every problem reported
as ``file:line``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lgl_helpers.core.audio import MIN_SECONDS, SAMPLE_RATE, AudioError, decoded_problem, wav_info
from lgl_helpers.corpus.lists.formats import (
    TRAIN_FORMAT,
    TRIAL_FORMAT,
    ListCheckError,
    ListFormatError,
    TrainEntry,
    Trial,
    field_count_problem,
    numbered_fields,
    read_trials,
    train_list_counts,
)
from lgl_helpers.progress_log import progress

log = logging.getLogger(__name__)


def require_folder(path: str | os.PathLike, parameter: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{parameter}={str(path)!r}: folder does not exist")
    return path


def _wav_problem(path: Path, min_seconds: float) -> tuple[float, str | None]:
    """(duration, None) for a usable 16 kHz mono wav of at least ``min_seconds`` whose samples pass the
    audio rule (:func:`~lgl_helpers.core.audio.decoded_problem`: float files decoded), else (0, reason)."""
    try:
        info = wav_info(path)
    except AudioError as error:
        reason = "file does not exist" if not path.exists() else str(error).removeprefix(f"{path}: ")
        return 0.0, reason
    if info.sample_rate != SAMPLE_RATE:
        return 0.0, f"sample rate is {info.sample_rate} Hz, expected {SAMPLE_RATE} Hz"
    if info.channels != 1:
        return 0.0, f"has {info.channels} channels, expected mono"
    if info.duration < min_seconds:
        return 0.0, f"is {info.duration:.3f} s long, shorter than the minimum {min_seconds} s"
    problem = decoded_problem(path, info)
    return (0.0, problem) if problem else (info.duration, None)


def check_wavs(
    paths: list[Path], min_seconds: float, *, workers: int = 8, show_progress: bool = True, desc: str = "wav headers"
) -> list[tuple[float, str | None]]:
    """Header check of many files in a thread pool (libsndfile releases the GIL), in input order."""
    chunk = 512  # a future per chunk, not per file: a million futures would cost gigabytes

    def run(batch):
        return [_wav_problem(p, min_seconds) for p in batch]

    batches = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    results: list[tuple[float, str | None]] = []
    bar = progress(total=len(paths), desc=desc, unit="file", **({} if show_progress else {"disable": True}))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for batch_result in pool.map(run, batches):
            results.extend(batch_result)
            bar.update(len(batch_result))
    bar.close()
    return results


_DETECT_LINES = 200  # lines looked at to tell a training list from a trial list


def _line_kind(fields: list[str]) -> str | None:
    """The kind one line looks like, from its last field: a duration (train) or a wav path (trials).

    The last field rather than the first: a bad label or a path with spaces does not hide it. None when
    the line looks like neither (e.g. a training line without its duration).
    """
    try:
        float(fields[-1])
        return "train"
    except ValueError:
        pass
    if fields[-1].lower().endswith(".wav") and (len(fields) >= 3 or fields[0] in ("0", "1")):
        return "trials"
    return None


def _detect_kind(path: Path) -> tuple[str, str | None]:
    """``(kind, note)``: the kind most of the first lines look like; ``note`` says what was assumed and
    how to force the kind when the lines disagree or none looks like either (then "train" is assumed)."""
    votes: Counter = Counter()
    sampled = 0
    for _, fields in numbered_fields(path):
        votes[_line_kind(fields)] += 1
        sampled += 1
        if sampled == _DETECT_LINES:
            break
    kind = "trials" if votes["trials"] > votes["train"] else "train"
    other = "train" if kind == "trials" else "trials"
    if not sampled or (votes[kind] and votes[other] <= 0.1 * votes[kind]):
        return kind, None  # sure, or an empty list (reported as such)
    label = {"train": "training", "trials": "trial"}
    return kind, (
        f"read as a {label[kind]} list: {votes[kind]} of the first {sampled} lines look like one, "
        f"{votes[other]} like a {label[other]} list; force the kind with --kind {other} (kind={other!r})"
    )


def check_list(
    list_path: str | os.PathLike,
    root: str | os.PathLike,
    kind: str = "auto",
    *,
    min_seconds: float = MIN_SECONDS,
    workers: int = 8,
    show_progress: bool = True,
) -> dict:
    """Validate a training or trial list against the audio under ``root``.

    Checks the format of every line and that every referenced file exists, has a readable wav header
    (libsndfile sizes a truncated file by its actual data), is 16 kHz mono and at least
    ``min_seconds`` long, and for training lists that the listed duration matches the header. ``kind`` is
    "train", "trials" or "auto" (what most of the first lines look like; when that is unclear the kind
    assumed is logged and named in the error). Raises :class:`ListCheckError` with every problem as
    ``file:line: message``.
    Returns counts: train → lines, speakers, hours, min/mean/max_seconds; trials → trials, target,
    nontarget, files, speakers.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise ListFormatError(f"list={str(list_path)!r}: list file does not exist")
    root = require_folder(root, "root")
    note = None
    if kind == "auto":
        kind, note = _detect_kind(list_path)
        if note:
            log.warning("%s: %s", list_path, note)
    if kind not in ("train", "trials"):
        raise ValueError(f"kind={kind!r} must be 'train', 'trials' or 'auto'")
    problems: list[str] = []
    first_line: dict[str, int] = {}  # relative path → first line that names it
    # Each distinct path is checked once: an all-pairs trial list names every file thousands of times.
    unsafe: dict[str, bool] = {}
    listed_duration: dict[int, float] = {}
    rows = []
    for number, fields in numbered_fields(list_path):
        where = f"{list_path}:{number}"
        if len(fields) != 3:
            expected = TRAIN_FORMAT if kind == "train" else TRIAL_FORMAT
            problems.append(f"{where}: {field_count_problem(expected, len(fields))}")
            continue
        if kind == "train":
            try:
                listed_duration[number] = float(fields[2])
            except ValueError:
                problems.append(f"{where}: duration {fields[2]!r} is not a number")
                continue
            names = [fields[1]]
        else:
            if fields[0] not in ("0", "1"):
                problems.append(f"{where}: trial label {fields[0]!r} is not 0 or 1")
                continue
            names = fields[1:]
        for name in names:
            if name not in unsafe:
                unsafe[name] = os.path.isabs(name) or ".." in Path(name).parts
        bad_path = [n for n in names if unsafe[n]]
        if bad_path:
            problems.append(f"{where}: path {bad_path[0]!r} must be relative to root and stay inside it")
            continue
        for name in names:
            first_line.setdefault(name, number)
        rows.append((number, fields))
    if not rows and not problems:
        problems.append(f"{list_path}: list is empty")
    files = sorted(first_line)
    checks = dict(
        zip(
            files,
            check_wavs(
                [root / f for f in files],
                min_seconds,
                workers=workers,
                show_progress=show_progress,
                desc="checking audio",
            ),
        )
    )
    for name in files:
        if checks[name][1]:
            problems.append(f"{list_path}:{first_line[name]}: {root / name}: {checks[name][1]}")
    if kind == "train":
        for number, fields in rows:
            header = checks[fields[1]][0]
            if header and abs(header - listed_duration[number]) > 0.1:
                problems.append(
                    f"{list_path}:{number}: listed duration {fields[2]} s but {root / fields[1]} is {header:.3f} s long"
                )
    else:
        labels = [fields[0] for _, fields in rows]
        if rows and "1" not in labels:
            problems.append(f"{list_path}: has no target (label 1) trials, so no EER can be computed")
        if rows and "0" not in labels:
            problems.append(f"{list_path}: has no non-target (label 0) trials, so no EER can be computed")
    if problems:
        problems.sort(key=_problem_order)
        raise ListCheckError(str(list_path) if note is None else f"{list_path} ({note})", problems)
    if kind == "train":
        return train_list_counts([TrainEntry(f[0], f[1], checks[f[1]][0]) for _, f in rows])
    n_target = sum(1 for _, f in rows if f[0] == "1")
    return {
        "kind": "trials",
        "trials": len(rows),
        "target": n_target,
        "nontarget": len(rows) - n_target,
        "files": len(files),
        "speakers": len({f.split("/")[0] for f in files}),
    }


def _problem_order(problem: str) -> tuple[int, str]:
    # "file:line: ..." problems in line order; whole-file problems last
    head = problem.split(": ", 1)[0]
    line = head.rsplit(":", 1)[-1]
    return (int(line), problem) if line.isdigit() else (1 << 62, problem)


def _check_trial_files(trials: list[Trial], root: Path, name: str, path: Path) -> None:
    files = sorted({p for t in trials for p in (t.path_a, t.path_b)})
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise FileNotFoundError(
            f"{name} {path}: {len(missing)} of its {len(files)} files are missing under test_root {root}: {shown}"
        )


def read_eval_trials(paths: dict) -> tuple[list[Trial], list[Trial]]:
    """Validation and test trials of a training stage, every referenced file checked under ``test_root``.

    ``paths`` as from :func:`lgl_helpers.runs.resolve_data_paths`. Each list must exist and every file it
    names must be a usable wav (:func:`check_list`: header reads only, every problem as ``file:line``), so
    a bad test file is refused before any model is evaluated. Returns ``(val_trials, test_trials)``;
    when both are the same list (the reference's practice) it is read once and the leak of the test set
    into model selection is logged.
    """
    test_trials = read_trials(paths["trials"])
    _check_trial_files(test_trials, paths["test_root"], "trials", paths["trials"])
    check_list(paths["trials"], paths["test_root"], "trials")
    if paths["val_trials"] == paths["trials"]:
        log.warning(
            "val_trials is the test list %s: model selection (best epoch) sees the test set, as in the reference; "
            "give a separate val_trials for an unbiased test EER",
            paths["trials"],
        )
        return test_trials, test_trials
    val_trials = read_trials(paths["val_trials"])
    _check_trial_files(val_trials, paths["test_root"], "val_trials", paths["val_trials"])
    check_list(paths["val_trials"], paths["test_root"], "trials")
    return val_trials, test_trials
