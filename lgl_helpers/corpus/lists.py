"""The list formats of the field (docs/method.md, "Data and list formats").

Training list, one utterance a line: ``<speaker id> <relative wav path> <duration in seconds>``.
Trial list, one trial a line: ``<1|0> <relative wav path A> <relative wav path B>``.
Speaker ids in the training list are used only to report clustering quality, never for training.

Besides parsing and writing, this module builds a training list from a VoxCeleb-layout folder
(``<root>/<speaker>/<session>/<utterance>.wav``, durations from the wav headers), draws
speaker-stratified subsets (the reference's "train_mini"), checks a list against its audio, and
fetches the official VoxCeleb1 trial lists (Vox1-O/E/H).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from lgl_helpers.core.audio import MIN_SECONDS, SAMPLE_RATE, AudioError, wav_info
from lgl_helpers.runs import atomic_write_bytes, atomic_write_text, progress

log = logging.getLogger(__name__)


class ListFormatError(ValueError):
    """A list file that cannot be used. The message names the file and, where it applies, the line."""


# Shared by `build` (a file with whitespace in its path) and the field-count checks (such a path in a list line).
_WHITESPACE = "the space-separated list format cannot hold"
_TRAIN_FORMAT = "<speaker> <relative wav path> <seconds>"
_TRIAL_FORMAT = "<1|0> <wav path A> <wav path B>"


def _field_count_problem(expected: str, count: int) -> str:
    """Message for a line without 3 fields; more than 3 most often means a path with spaces in it."""
    message = f"expected 3 fields '{expected}', got {count}"
    return message + f": does a path contain whitespace, which {_WHITESPACE}?" if count > 3 else message


@dataclass(frozen=True)
class TrainEntry:
    speaker: str
    path: str
    duration: float


@dataclass(frozen=True)
class Trial:
    label: int
    path_a: str
    path_b: str


def _lines(path: str | os.PathLike) -> Iterable[tuple[int, list[str]]]:
    path = Path(path)
    if not path.is_file():
        raise ListFormatError(f"{path}: list file does not exist")
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if fields:
                yield number, fields


def read_train_list(path: str | os.PathLike) -> list[TrainEntry]:
    """Parse a training list; raises :class:`ListFormatError` naming ``file:line`` on any bad line."""
    entries = []
    for number, fields in _lines(path):
        if len(fields) != 3:
            raise ListFormatError(f"{path}:{number}: {_field_count_problem(_TRAIN_FORMAT, len(fields))}")
        speaker, rel_path, duration_text = fields
        try:
            duration = float(duration_text)
        except ValueError:
            raise ListFormatError(f"{path}:{number}: duration {duration_text!r} is not a number") from None
        if not duration > 0:
            raise ListFormatError(f"{path}:{number}: duration {duration_text!r} must be positive")
        entries.append(TrainEntry(speaker, rel_path, duration))
    if not entries:
        raise ListFormatError(f"{path}: training list is empty")
    return entries


def read_trials(path: str | os.PathLike) -> list[Trial]:
    """Parse a trial list; raises :class:`ListFormatError` naming ``file:line`` on any bad line."""
    trials = []
    for number, fields in _lines(path):
        if len(fields) != 3:
            raise ListFormatError(f"{path}:{number}: {_field_count_problem(_TRIAL_FORMAT, len(fields))}")
        if fields[0] not in ("0", "1"):
            raise ListFormatError(f"{path}:{number}: trial label {fields[0]!r} is not 0 or 1")
        trials.append(Trial(int(fields[0]), fields[1], fields[2]))
    if not trials:
        raise ListFormatError(f"{path}: trial list is empty")
    return trials


def write_train_list(path: str | os.PathLike, entries: Iterable[TrainEntry]) -> Path:
    """Write a training list atomically (durations with 3 decimals, as the reference's lists)."""
    text = "".join(f"{e.speaker} {e.path} {e.duration:.3f}\n" for e in entries)
    return atomic_write_text(path, text)


def write_trials(path: str | os.PathLike, trials: Iterable[Trial]) -> Path:
    """Write a trial list atomically."""
    return atomic_write_text(path, "".join(f"{t.label} {t.path_a} {t.path_b}\n" for t in trials))



class ListCheckError(ListFormatError):
    """Every problem found in a list or a folder of audio; ``problems`` holds one message per problem."""

    def __init__(self, subject: str, problems: list[str], shown: int = 20):
        self.problems = list(problems)
        lines = self.problems[:shown]
        more = len(self.problems) - len(lines)
        text = f"{subject}: {len(self.problems)} problem(s)\n  " + "\n  ".join(lines)
        super().__init__(text + (f"\n  ... and {more} more" if more > 0 else ""))


def _require_folder(path: str | os.PathLike, parameter: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{parameter}={str(path)!r}: folder does not exist")
    return path


def _wav_problem(path: Path, min_seconds: float) -> tuple[float, str | None]:
    """(duration, None) for a usable 16 kHz mono wav of at least ``min_seconds``, else (0, reason)."""
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
    return info.duration, None


def _check_wavs(paths: list[Path], min_seconds: float, *, workers: int = 8,
                show_progress: bool = True, desc: str = "wav headers") -> list[tuple[float, str | None]]:
    """Header check of many files in a thread pool (libsndfile releases the GIL), in input order."""
    chunk = 512  # a future per chunk, not per file: a million futures would cost gigabytes

    def run(batch):
        return [_wav_problem(p, min_seconds) for p in batch]

    batches = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    results: list[tuple[float, str | None]] = []
    bar = progress(total=len(paths), desc=desc, unit="file", **({} if show_progress else {"disable": True}))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for batch_result in pool.map(run, batches):
            results.extend(batch_result)
            bar.update(len(batch_result))
    bar.close()
    return results


def scan_wavs(root: str | os.PathLike) -> list[str]:
    """Relative paths ``<speaker>/<session>/<name>.wav`` under ``root``, sorted (os.scandir, 3 levels)."""
    root = _require_folder(root, "root")
    found = []
    with os.scandir(root) as speakers:
        for speaker in speakers:
            if not speaker.is_dir() or speaker.name.startswith("."):
                continue
            with os.scandir(speaker.path) as sessions:
                for session in sessions:
                    if not session.is_dir() or session.name.startswith("."):
                        continue
                    with os.scandir(session.path) as files:
                        found.extend(f"{speaker.name}/{session.name}/{f.name}" for f in files
                                     if f.name.lower().endswith(".wav") and f.is_file())
    return sorted(found)


def build_train_list(root: str | os.PathLike, out: str | os.PathLike | None = None, *, workers: int = 8,
                     min_seconds: float = MIN_SECONDS, skip_bad: bool = False,
                     show_progress: bool = True) -> list[TrainEntry]:
    """Scan a VoxCeleb-layout folder into training-list entries (durations from wav headers only).

    ``root/<speaker>/<session>/<utterance>.wav``; the speaker id is the first folder. Unusable files
    (unreadable, not 16 kHz mono, shorter than ``min_seconds``) raise :class:`ListCheckError` listing
    all of them, or are left out with a warning when ``skip_bad``. With ``out`` the list is written
    atomically, and only when it is complete. Returns the entries sorted by path.
    """
    root = _require_folder(root, "root")
    rel_paths = scan_wavs(root)
    if not rel_paths:
        raise ListCheckError(f"root={str(root)!r}", ["no wav files in the layout <speaker>/<session>/<utterance>.wav"])
    checks = _check_wavs([root / p for p in rel_paths], min_seconds, workers=workers, show_progress=show_progress)
    entries, problems = [], []
    for rel, (duration, problem) in zip(rel_paths, checks):
        if problem is None and any(c.isspace() for c in rel):
            problem = f"path contains whitespace, which {_WHITESPACE}"
        if problem:
            problems.append(f"{root / rel}: {problem}")
        else:
            entries.append(TrainEntry(rel.split("/")[0], rel, duration))
    if problems and not skip_bad:
        raise ListCheckError(f"root={str(root)!r}", problems)
    for problem in problems:
        log.warning("left out: %s", problem)
    if not entries:
        raise ListCheckError(f"root={str(root)!r}", ["no usable wav files"])
    if out is not None:
        write_train_list(out, entries)
    return entries


def subset_train_list(entries: list[TrainEntry], n_utterances: int, *, n_speakers: int | None = None, seed: int = 0,
                      per_speaker: str = "equal") -> list[TrainEntry]:
    """A speaker-stratified subset, fixed by ``seed`` (e.g. the reference's 100 k utterances of 4,082 speakers).

    ``n_speakers`` speakers are drawn at random (all when None); ``n_utterances`` are then split
    among them ``"equal"``-ly (as evenly as each speaker's count allows) or ``"proportional"``-ly
    (a uniform draw, at least one per speaker). Returns entries sorted by path.
    """
    by_speaker: dict[str, list[TrainEntry]] = {}
    for entry in entries:
        by_speaker.setdefault(entry.speaker, []).append(entry)
    speakers = sorted(by_speaker)
    if per_speaker not in ("equal", "proportional"):
        raise ValueError(f"per_speaker={per_speaker!r} must be 'equal' or 'proportional'")
    if n_speakers is not None and not 1 <= n_speakers <= len(speakers):
        raise ValueError(f"n_speakers={n_speakers} must be between 1 and the list's {len(speakers)} speakers")
    rng = np.random.default_rng(seed)
    if n_speakers is not None:
        speakers = sorted(rng.choice(speakers, size=n_speakers, replace=False).tolist())
    counts = np.array([len(by_speaker[s]) for s in speakers])
    if not len(speakers) <= n_utterances <= counts.sum():
        raise ValueError(f"n_utterances={n_utterances} must be between the number of chosen speakers "
                         f"({len(speakers)}) and their utterances ({int(counts.sum())})")
    if per_speaker == "equal":
        # water-filling: the largest level L with sum(min(count, L)) <= n, the remainder one each at random
        level = 0
        while np.minimum(counts, level + 1).sum() <= n_utterances:
            level += 1
        quotas = np.minimum(counts, level)
        spare = np.flatnonzero(counts > level)
        quotas[rng.choice(spare, size=n_utterances - int(quotas.sum()), replace=False)] += 1
    else:
        owner = np.repeat(np.arange(len(speakers)), counts - 1)
        quotas = np.ones(len(speakers), dtype=np.int64)
        np.add.at(quotas, rng.choice(owner, size=n_utterances - len(speakers), replace=False), 1)
    chosen = []
    for speaker, quota in zip(speakers, quotas):
        pool = by_speaker[speaker]
        chosen.extend(pool[i] for i in rng.permutation(len(pool))[:quota])
    return sorted(chosen, key=lambda e: e.path)


def train_list_counts(entries: list[TrainEntry]) -> dict:
    """Summary counts of training entries: lines, speakers, hours, min/mean/max_seconds."""
    durations = np.array([e.duration for e in entries])
    return {"kind": "train", "lines": len(entries), "speakers": len({e.speaker for e in entries}),
            "hours": round(float(durations.sum()) / 3600.0, 4), "min_seconds": round(float(durations.min()), 3),
            "mean_seconds": round(float(durations.mean()), 3), "max_seconds": round(float(durations.max()), 3)}


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
    for _, fields in _lines(path):
        votes[_line_kind(fields)] += 1
        sampled += 1
        if sampled == _DETECT_LINES:
            break
    kind = "trials" if votes["trials"] > votes["train"] else "train"
    other = "train" if kind == "trials" else "trials"
    if not sampled or (votes[kind] and votes[other] <= 0.1 * votes[kind]):
        return kind, None  # sure, or an empty list (reported as such)
    label = {"train": "training", "trials": "trial"}
    return kind, (f"read as a {label[kind]} list: {votes[kind]} of the first {sampled} lines look like one, "
                  f"{votes[other]} like a {label[other]} list; force the kind with --kind {other} (kind={other!r})")


def check_list(list_path: str | os.PathLike, root: str | os.PathLike, kind: str = "auto", *,
               min_seconds: float = MIN_SECONDS, workers: int = 8,
               show_progress: bool = True) -> dict:
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
    root = _require_folder(root, "root")
    note = None
    if kind == "auto":
        kind, note = _detect_kind(list_path)
        if note:
            log.warning("%s: %s", list_path, note)
    if kind not in ("train", "trials"):
        raise ValueError(f"kind={kind!r} must be 'train', 'trials' or 'auto'")
    problems: list[str] = []
    first_line: dict[str, int] = {}  # relative path → first line that names it
    listed_duration: dict[int, float] = {}
    rows = []
    for number, fields in _lines(list_path):
        where = f"{list_path}:{number}"
        if len(fields) != 3:
            expected = _TRAIN_FORMAT if kind == "train" else _TRIAL_FORMAT
            problems.append(f"{where}: {_field_count_problem(expected, len(fields))}")
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
        bad_path = [n for n in names if os.path.isabs(n) or ".." in Path(n).parts]
        if bad_path:
            problems.append(f"{where}: path {bad_path[0]!r} must be relative to root and stay inside it")
            continue
        for name in names:
            first_line.setdefault(name, number)
        rows.append((number, fields))
    if not rows and not problems:
        problems.append(f"{list_path}: list is empty")
    files = sorted(first_line)
    checks = dict(zip(files, _check_wavs([root / f for f in files], min_seconds, workers=workers,
                                         show_progress=show_progress, desc="checking audio")))
    for name in files:
        if checks[name][1]:
            problems.append(f"{list_path}:{first_line[name]}: {root / name}: {checks[name][1]}")
    if kind == "train":
        for number, fields in rows:
            header = checks[fields[1]][0]
            if header and abs(header - listed_duration[number]) > 0.1:
                problems.append(f"{list_path}:{number}: listed duration {fields[2]} s but {root / fields[1]} "
                                f"is {header:.3f} s long")
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
    return {"kind": "trials", "trials": len(rows), "target": n_target, "nontarget": len(rows) - n_target,
            "files": len(files), "speakers": len({f.split("/")[0] for f in files})}


def _problem_order(problem: str) -> tuple[int, str]:
    # "file:line: ..." problems in line order; whole-file problems last
    head = problem.split(": ", 1)[0]
    line = head.rsplit(":", 1)[-1]
    return (int(line), problem) if line.isdigit() else (1 << 62, problem)


# ---------------------------------------------------------------------------------------------
# Official VoxCeleb1 trial lists

VOXCELEB_META_URLS = (
    "https://mm.kaist.ac.kr/datasets/voxceleb/meta/",
    "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta/",
)
# name → (trials, sha256 or None): Vox1-O (cleaned), Vox1-E (cleaned), Vox1-H (cleaned)
VOXCELEB_TRIAL_LISTS = {
    "veri_test2.txt": (37611, "0bc0a0fe3e557f1a75fb71e566d862d460709e80a4fe28e80e49bc0ab3a536ea"),
    "list_test_all2.txt": (579818, None),
    "list_test_hard2.txt": (550894, None),
}


class FetchError(RuntimeError):
    """A trial list that could not be downloaded or did not verify; the message says what to do."""


def verify_trial_list(name: str, data: bytes, expected: dict | None = None) -> None:
    """Raise :class:`FetchError` unless ``data`` is the official ``name``: line count, format, sha256."""
    expected = VOXCELEB_TRIAL_LISTS if expected is None else expected
    n_trials, sha256 = expected[name]
    lines = [line for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if len(lines) != n_trials:
        raise FetchError(f"{name}: has {len(lines)} trials, expected {n_trials}")
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise FetchError(f"{name}:{number}: not a '<1|0> <wav A> <wav B>' trial line: {line[:80]!r}")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise FetchError(f"{name}: sha256 {hashlib.sha256(data).hexdigest()} differs from the official {sha256}")


def fetch_voxceleb(out_dir: str | os.PathLike = "data_lists/voxceleb", *, names: Iterable[str] | None = None,
                   base_urls: Iterable[str] = VOXCELEB_META_URLS, timeout: float = 60.0,
                   opener: Callable | None = None, expected: dict | None = None) -> dict[str, Path]:
    """Download and verify the official VoxCeleb1 trial lists into ``out_dir``; returns name → path.

    Each mirror in ``base_urls`` is tried in turn; a file is written (atomically) only once it has
    the expected number of trials and, for Vox1-O, the expected sha256. A file already present and
    valid is kept. ``opener(url, timeout=...)`` returns a file-like response (default
    ``urllib.request.urlopen``). Raises :class:`FetchError` naming every URL tried when a list
    cannot be had, e.g. offline.
    """
    opener = opener or urllib.request.urlopen
    expected = VOXCELEB_TRIAL_LISTS if expected is None else expected
    names = list(expected) if names is None else list(names)
    unknown = [n for n in names if n not in expected]
    if unknown:
        raise ValueError(f"names={unknown}: unknown trial lists; known are {list(expected)}")
    out_dir = Path(out_dir)
    fetched = {}
    for name in names:
        target = out_dir / name
        if target.is_file():
            try:
                verify_trial_list(name, target.read_bytes(), expected)
                log.info("%s: present and verified", target)
                fetched[name] = target
                continue
            except FetchError as error:
                log.warning("%s: present but invalid (%s); downloading again", target, error)
        failures = []
        for base in base_urls:
            url = base.rstrip("/") + "/" + name
            try:
                with opener(url, timeout=timeout) as response:
                    data = response.read()
                verify_trial_list(name, data, expected)
            except (urllib.error.URLError, OSError, ValueError, FetchError) as error:
                failures.append(f"{url}: {getattr(error, 'reason', None) or error}")
                continue
            atomic_write_bytes(target, data)
            log.info("%s: downloaded from %s and verified", target, url)
            fetched[name] = target
            break
        else:
            raise FetchError(
                f"could not fetch {name} (are you offline?). Tried:\n  " + "\n  ".join(failures)
                + f"\nDownload it by hand from one of these addresses into {out_dir}/ and run the command again."
            )
    return fetched


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
            "give a separate val_trials for an unbiased test EER", paths["trials"],
        )
        return test_trials, test_trials
    val_trials = read_trials(paths["val_trials"])
    _check_trial_files(val_trials, paths["test_root"], "val_trials", paths["val_trials"])
    check_list(paths["val_trials"], paths["test_root"], "trials")
    return val_trials, test_trials
