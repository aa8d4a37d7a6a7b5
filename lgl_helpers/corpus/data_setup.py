"""Data set-up for notebook 00: resolve the data locations, build and validate the lists, summarise.

The kit trains on a list of VoxCeleb2-layout utterances and evaluates on VoxCeleb1-style trials,
augmenting with MUSAN and simulated RIRs (docs/method.md, "Data and list formats"). This module turns the
notebook's parameters into checked lists inside ``runs/<run_name>/lists/`` and a ``data.json`` that
every later stage reads (``runs.resolve_data_paths``), falling back to the embedded toy corpus for
every location left empty. Its figures are in :mod:`lgl_helpers.notebook.data_figures`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lgl_helpers import files, runs
from lgl_helpers.config import NotebookConfig, check, check_choice, check_int
from lgl_helpers.corpus import lists, toy

log = logging.getLogger(__name__)


@dataclass
class DataSetupConfig(NotebookConfig):
    """Parameters of notebook 00 (field names equal its parameters cell)."""

    run_name: str = "lab"  # folder under runs_dir
    runs_dir: str = "runs"  # where run folders live (relative to the project root)
    toy_root: str = "runs/toy"  # the toy corpus, used for every data path left ""
    toy_preset: str = "default"  # toy corpus sizes: "default" (demo), "small" (CI pipeline) or "tiny" (unit tests)
    make_toy: bool = True  # generate the toy corpus at toy_root when it is missing
    train_root: str = ""  # training audio <root>/<speaker>/<session>/<utt>.wav; "" = toy
    train_list: str = ""  # "<spk> <rel path> <seconds>" list; "" = toy's, or built from train_root
    test_root: str = ""  # test audio folder; "" = toy
    trials: str = ""  # "<1|0> <path A> <path B>" list; "" = toy's
    val_trials: str = ""  # trials for model selection; "" = same as trials
    musan_root: str = ""  # musan_split folder; "" = toy's
    rir_root: str = ""  # folder holding simulated_rirs/; "" = toy's
    n_spectrograms: int = 3  # example spectrograms to draw
    seed: int = 0  # which examples are drawn
    interactive: bool = True  # widgets (False under papermill)
    recompute: bool = False  # True: compute again where the run has results (lgl_helpers.notebook.viewing)

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = {"str": str, "bool": bool, "int": int}[field.type]
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            check(self.name_of(field.name), value, ok, f"of type {field.type}")
        check_choice(self.name_of("toy_preset"), self.toy_preset, toy.PRESETS)
        check_int(self.name_of("n_spectrograms"), self.n_spectrograms, 0)


def ensure_toy_corpus(toy_root: str | os.PathLike, preset: str = "default", make: bool = True) -> Path | None:
    """The toy corpus at ``toy_root`` (resolved against the project root), generated when missing and ``make``.

    Returns None when it is missing and ``make`` is False. A corpus generated with a different
    configuration than ``preset`` is an error, rather than silently used or replaced.
    """
    root = runs.resolve_path(toy_root)
    if root is None:
        return None
    wanted = dataclasses.asdict(toy.ToyConfig.preset(preset))
    if toy.is_toy_corpus(root):
        found = toy.read_toy_manifest(root)["config"]
        if found != wanted:
            differing = sorted(k for k in wanted if found.get(k) != wanted[k])
            raise ValueError(
                f"toy_root={str(toy_root)!r} holds a toy corpus whose {differing} differ from toy_preset={preset!r}; "
                "point toy_root at another folder or delete this one"
            )
        return root
    if not make:
        return None
    log.info("generating the %s toy corpus at %s", preset, root)
    toy.generate_toy_corpus(root, toy.ToyConfig.preset(preset))
    return root


def toy_needed(cfg: DataSetupConfig) -> bool:
    """True when a data location of ``cfg`` is left empty, so that it falls back to the toy corpus."""
    return any(not getattr(cfg, key) for key in ("train_root", "test_root", "musan_root", "rir_root"))


def resolve_data_setup(cfg: DataSetupConfig, generate: bool = True) -> dict[str, Path | None]:
    """The data locations of ``cfg``, keyed by ``runs.DATA_KEYS`` (absolute paths).

    Each empty location falls back to the toy corpus (generated if ``make_toy``). ``train_list`` is
    None when it is to be built from an explicit ``train_root``; ``val_trials`` defaults to the toy
    corpus's validation list when the test data are the toy's, else to ``trials``;
    ``musan_root``/``rir_root`` may be None (no augmentation sets). Raises naming the parameter when a
    given path does not exist or a required one is missing. With ``generate=False`` (``lgl-kit doctor``)
    a missing toy corpus that ``make_toy`` would generate is not generated: its paths are returned as
    they will be, not yet on disk.
    """
    given = {key: runs.resolve_path(getattr(cfg, key)) for key in runs.DATA_KEYS}
    for key, path in given.items():
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{key}={getattr(cfg, key)!r}: {path} does not exist")
    if given["train_list"] is not None and given["train_root"] is None:
        raise ValueError("train_list is given but train_root is empty: the list's paths need their root folder")
    if given["trials"] is not None and given["test_root"] is None:
        raise ValueError("trials is given but test_root is empty: the trial paths need their root folder")
    toy_root = None
    if toy_needed(cfg):
        toy_root = ensure_toy_corpus(cfg.toy_root, cfg.toy_preset, cfg.make_toy and generate)
        if toy_root is None and cfg.make_toy:
            toy_root = runs.resolve_path(cfg.toy_root)  # generate=False: where notebook 00 will generate it
    fallback = toy.toy_paths(toy_root) if toy_root is not None else {key: None for key in runs.DATA_KEYS}
    paths = dict(given)
    if paths["train_root"] is None:
        paths["train_root"], paths["train_list"] = fallback["train_root"], fallback["train_list"]
    if paths["test_root"] is None:
        paths["test_root"] = fallback["test_root"]
        paths["trials"] = paths["trials"] or fallback["trials"]
        paths["val_trials"] = paths["val_trials"] or fallback["val_trials"]
    for key in ("musan_root", "rir_root"):
        paths[key] = paths[key] or fallback[key]
    for key, parameter in (("train_root", "train_root"), ("test_root", "test_root"), ("trials", "trials")):
        if paths[key] is None:
            raise ValueError(
                f"{parameter} is empty and there is no toy corpus at toy_root={cfg.toy_root!r} "
                "(set make_toy=True or give the path)"
            )
    paths["val_trials"] = paths["val_trials"] or paths["trials"]
    return paths


def prepare_lists(paths: dict[str, Path | None], run_dir: str | os.PathLike, *, show_progress: bool = True) -> dict:
    """Build (if needed) and validate the lists, then copy them into ``run_dir/lists`` and write ``data.json``.

    Every list is checked against its audio before anything is written, so bad input leaves the run
    folder untouched. Returns ``{"paths": {DATA_KEYS → absolute Path or None}, "checks": {"train":
    counts, "trials": counts[, "val_trials": counts]}, "built_train_list": bool}``.
    """
    run_dir = Path(run_dir)
    built = paths["train_list"] is None
    checks = {}
    if built:  # building already checks every file's header, so its entries need no second pass
        entries = lists.build_train_list(paths["train_root"], show_progress=show_progress)
        checks["train"] = lists.train_list_counts(entries)
    else:
        checks["train"] = lists.check_list(
            paths["train_list"], paths["train_root"], "train", show_progress=show_progress
        )
    checks["trials"] = lists.check_list(paths["trials"], paths["test_root"], "trials", show_progress=show_progress)
    separate_val = Path(paths["val_trials"]).resolve() != Path(paths["trials"]).resolve()
    if separate_val:
        checks["val_trials"] = lists.check_list(
            paths["val_trials"], paths["test_root"], "trials", show_progress=show_progress
        )
    toy_lists = toy_test_lists(paths)
    extra_lists = {name: path for name, path in toy_lists.items() if path.resolve() != Path(paths["trials"]).resolve()}
    for name, path in extra_lists.items():
        checks[name] = lists.check_list(path, paths["test_root"], "trials", show_progress=show_progress)

    out = {key: (Path(value).resolve() if value is not None else None) for key, value in paths.items()}
    folder = run_dir.resolve() / "lists"
    if built:
        out["train_list"] = lists.write_train_list(folder / "train_list.txt", entries)
    else:
        out["train_list"] = files.atomic_write_text(folder / "train_list.txt", Path(paths["train_list"]).read_text())
    out["trials"] = files.atomic_write_text(folder / "trials.txt", Path(paths["trials"]).read_text())
    out["val_trials"] = out["trials"]
    if separate_val:
        out["val_trials"] = files.atomic_write_text(folder / "val_trials.txt", Path(paths["val_trials"]).read_text())
    eval_trials = {name: out["trials"] for name in toy_lists if name not in extra_lists}
    eval_trials |= {name: files.atomic_write_text(folder / p.name, p.read_text()) for name, p in extra_lists.items()}
    # Paths inside the run are stored relative to it: a copied or moved run folder finds its own lists.
    data = {key: runs.relative_to_run(out[key], run_dir) or None for key in runs.DATA_KEYS}
    data[runs.EVAL_TRIALS_KEY] = {name: runs.relative_to_run(path, run_dir) for name, path in eval_trials.items()}
    files.write_json(run_dir / "data.json", data)
    return {"paths": out, "checks": checks, "built_train_list": built, "eval_trials": eval_trials}


def toy_test_lists(paths: dict[str, Path | None]) -> dict[str, Path]:
    """The toy corpus's test lists (``toy-O``, ``toy-H``) when the test list of ``paths`` is the toy corpus's
    own, else none: what the stages evaluate when their ``eval_trials`` is left ``{}``."""
    root = Path(paths["test_root"]).resolve().parent
    own = toy.toy_eval_trials(root)
    if own.get("toy-O") is None or own["toy-O"].resolve() != Path(paths["trials"]).resolve():
        return {}
    return own


def summarize_train_list(entries: list[lists.TrainEntry]) -> dict:
    """Counts of a training list: speakers, sessions, utterances, hours, durations, utterances per speaker."""
    durations = np.array([e.duration for e in entries])
    per_speaker = np.unique([e.speaker for e in entries], return_counts=True)[1]
    return {
        "speakers": int(len(per_speaker)),
        "sessions": len({e.path.rsplit("/", 1)[0] for e in entries}),
        "utterances": len(entries),
        "hours": round(float(durations.sum()) / 3600.0, 4),
        "seconds_min": round(float(durations.min()), 3),
        "seconds_median": round(float(np.median(durations)), 3),
        "seconds_mean": round(float(durations.mean()), 3),
        "seconds_max": round(float(durations.max()), 3),
        "utterances_per_speaker_min": int(per_speaker.min()),
        "utterances_per_speaker_mean": round(float(per_speaker.mean()), 2),
        "utterances_per_speaker_max": int(per_speaker.max()),
    }


def find_augmentation_sets(musan_root: str | os.PathLike | None, rir_root: str | os.PathLike | None) -> dict:
    """Files found for augmentation: MUSAN chunks per category and simulated RIRs per room type.

    MUSAN as distributed (``<musan_root>/<noise|speech|music>/<subset>/<file>.wav``) or split
    (``.../<subset>/<recording>/<chunk>.wav``): the category is the first folder under the root. RIRs:
    ``<rir_root>/simulated_rirs/<room type>/<room>/<rir>.wav`` (``rir_root`` may also be the
    ``simulated_rirs`` folder itself). A missing root counts zero files.
    """
    musan = {category: 0 for category in toy.MUSAN_CATEGORIES}
    if musan_root is not None and Path(musan_root).is_dir():
        for pattern in ("*/*/*.wav", "*/*/*/*.wav"):
            for path in Path(musan_root).glob(pattern):
                category = path.relative_to(musan_root).parts[0]
                musan[category] = musan.get(category, 0) + 1
    rooms: dict[str, int] = {}
    if rir_root is not None and Path(rir_root).is_dir():
        rir_dir = Path(rir_root) / "simulated_rirs" if (Path(rir_root) / "simulated_rirs").is_dir() else Path(rir_root)
        for path in rir_dir.glob("*/*/*.wav"):
            rooms[path.parts[-3]] = rooms.get(path.parts[-3], 0) + 1
    return {
        "musan": musan,
        "musan_files": sum(musan.values()),
        "rirs": sum(rooms.values()),
        "rir_room_types": dict(sorted(rooms.items())),
    }


def finished(run_dir: str | os.PathLike) -> bool:
    """Whether notebook 00 has finished in ``run_dir``: ``data.json`` and ``data_summary.json`` (written last)."""
    return (Path(run_dir) / "data.json").is_file() and (Path(run_dir) / "data_summary.json").is_file()


def read_setup(run_dir: str | os.PathLike) -> dict:
    """A finished set-up as :func:`prepare_lists` returned it, from ``data.json`` and ``data_summary.json``
    (nothing checked again, nothing written)."""
    run_dir = Path(run_dir)
    summary = files.read_json(run_dir / "data_summary.json")
    paths = runs.resolve_data_paths(run_dir)
    return {
        "paths": paths,
        "checks": summary["checks"],
        "built_train_list": summary["built_train_list"],
        "eval_trials": runs.data_eval_trials(run_dir),
    }


def write_data_summary(run_dir: str | os.PathLike, setup: dict, train_summary: dict, augmentation: dict) -> dict:
    """Write ``run_dir/data_summary.json``: paths, list checks, training-data and augmentation counts."""
    summary = {
        "paths": {key: runs.relative_to_run(value, run_dir) or None for key, value in setup["paths"].items()},
        "built_train_list": setup["built_train_list"],
        "checks": setup["checks"],
        "train": train_summary,
        "augmentation": augmentation,
    }
    files.write_json(Path(run_dir) / "data_summary.json", summary)
    return summary
