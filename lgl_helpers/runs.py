"""Run folders: where a run lives, opening it (parameters, log file), finding it, and the paths stored in it.

A run folder is the unit a researcher copies: paths inside it are stored relative to it
(:func:`relative_to_run`, :func:`path_in_run`). Writes go through :mod:`lgl_helpers.files`; one process at a
time writes a run (:mod:`lgl_helpers.run_lock`).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from lgl_helpers.core import distributed
from lgl_helpers.files import read_json, remove_stale_temp_files, write_json
from lgl_helpers.reproducibility import environment_info
from lgl_helpers.run_lock import hold_run_folder


def _config_run_folder(config: Any, folder: Path) -> Path:
    """The run folder ``config`` names (its ``run_name`` and ``runs_dir``), else ``folder`` itself."""
    values = config if isinstance(config, dict) else getattr(config, "__dict__", {})
    if values.get("run_name") and values.get("runs_dir"):
        return run_folder(values["run_name"], values["runs_dir"])
    return folder


def open_run(run_dir: str | os.PathLike, config: Any, name: str) -> Path:
    """Create the folder (a run folder, or a stage's folder inside one), clear temp files of interrupted
    writes in it and write ``<name>_params.json`` (the resolved config plus the environment), holding the
    run folder's lock (:func:`hold_run_folder`) meanwhile, so that no other writer's temp file is taken
    for a stale one.

    ``config`` is a dataclass (or dict) of the notebook's parameters; its ``run_name`` and ``runs_dir``
    name the run folder whose lock is held (without them, ``run_dir`` itself). Returns the folder as a Path.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with hold_run_folder(_config_run_folder(config, run_dir), f"notebook {name}"):
        if distributed.is_main():
            remove_stale_temp_files(run_dir)
        write_json(run_dir / f"{name}_params.json", {"params": config, "environment": environment_info()})
    return run_dir


class _FlushingFileHandler(logging.FileHandler):
    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        self.flush()


def add_file_log(run_dir: str | os.PathLike, name: str) -> Path:
    """Send the kit's INFO log lines to ``run_dir/<name>.log`` and to stdout (once per file).

    Stdout is what papermill's ``--log-output`` streams, so headless runs show one line per epoch.
    """
    path = Path(run_dir) / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("lgl_helpers")
    # The other ranks of a distributed run report only errors: rank 0 already logs every warning they would repeat.
    root.setLevel(logging.INFO if distributed.is_main() else logging.ERROR)
    if not distributed.is_main():
        path = Path(run_dir) / f"{name}.rank{distributed.rank()}.log"
    formatter = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    # One run log at a time: a later run in the same process (tests, a notebook rerun) must not
    # keep writing into an earlier run's file.
    for handler in [h for h in root.handlers if isinstance(h, _FlushingFileHandler)]:
        if Path(handler.baseFilename) != path.resolve():
            root.removeHandler(handler)
            handler.close()
    if not any(isinstance(h, _FlushingFileHandler) for h in root.handlers):
        handler = _FlushingFileHandler(path)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    if not any(getattr(h, "_lgl_stdout", False) for h in root.handlers):
        stream = logging.StreamHandler(sys.stdout)
        stream.setFormatter(formatter)
        stream._lgl_stdout = True
        root.addHandler(stream)
    return path


def project_root() -> Path:
    """The kit's checkout (folder holding ``lgl_helpers/`` and ``notebooks/``), found from the cwd upwards.

    Notebooks run with their own folder as cwd in JupyterLab and with the project root under the
    pipeline; resolving relative paths against the project root makes both agree.
    """
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "lgl_helpers").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return here


def resolve_path(path: str | os.PathLike | None) -> Path | None:
    """Absolute paths unchanged; relative ones against :func:`project_root`; ``""``/``None`` → ``None``."""
    if path is None or str(path) == "":
        return None
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def writable_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot hold a run (None when it can): the one test of ``lgl-kit run`` and ``lgl-kit doctor``.

    A folder that exists gets a probe file written and removed; one that does not gets a probe folder
    made and removed in its nearest existing parent (what creating it takes), so that the check itself
    creates nothing. A read-only or impossible runs folder is thus reported before any notebook runs
    rather than as an OSError in the middle of one.
    """
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        if not parent.is_dir():
            return f"{parent} is not a folder"
        if parent == folder:
            fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".write-check.", dir=parent))
    except OSError as error:
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(folder) else ""
        return f"{error.strerror or error}{where}"
    return None


def run_folder(run_name: str, runs_dir: str | os.PathLike = "runs") -> Path:
    """``<project>/runs/<run_name>`` (``runs_dir`` may be absolute)."""
    if not run_name or "/" in run_name or run_name in (".", ".."):
        raise ValueError(f"run_name={run_name!r} must be a plain folder name")
    return resolve_path(runs_dir) / run_name


class RunNotFoundError(FileNotFoundError):
    """The run a notebook's ``run_name`` names does not exist (or lacks what the notebook reads)."""


def holds_run_folder(holder: str):
    """Decorator: ``fn(config, ...)`` runs holding the lock of ``config``'s run folder (``run_name``, ``runs_dir``)."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(config, *args, **kwargs):
            with hold_run_folder(run_folder(config.run_name, config.runs_dir), holder):
                return fn(config, *args, **kwargs)

        return wrapper

    return decorate


def _other_runs(runs_dir: Path) -> str:
    found = sorted(path.parent.name for path in runs_dir.glob("*/data.json"))
    return f"runs there: {', '.join(found)}" if found else "no runs there yet"


def require_run(run_name: str, runs_dir: str, needs: str = "data.json", made_by: str = "notebook 00") -> Path:
    """The run folder of ``run_name``, checked to hold ``needs`` (a path inside it, written by ``made_by``).

    Raises :class:`RunNotFoundError` in one line naming the folder, the runs that do exist and what to
    run first, instead of a later cell failing on a missing file.
    """
    run_dir = run_folder(run_name, runs_dir)
    if not run_dir.is_dir():
        raise RunNotFoundError(
            f"run_name={run_name!r}: no run folder {run_dir} ({_other_runs(run_dir.parent)}); "
            f"set run_name to one of them, or run notebook 00 (or `lgl-kit run --run-name {run_name}`) first"
        )
    if not (run_dir / needs).exists():
        raise RunNotFoundError(
            f"run_name={run_name!r}: {run_dir / needs} does not exist; run {made_by} for this run first"
        )
    return run_dir


def relative_to_run(path: str | os.PathLike | None, run_dir: str | os.PathLike) -> str:
    """How a run stores a path: relative to ``run_dir`` (POSIX) when inside it, so that the run folder can be
    copied or moved; absolute otherwise (the corpus, a checkpoint elsewhere); ``""`` for None / ``""``."""
    if path is None or str(path) == "":
        return ""
    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    return path.relative_to(run_dir).as_posix() if path.is_relative_to(run_dir) else str(path)


def path_in_run(value: str | os.PathLike | None, run_dir: str | os.PathLike) -> Path | None:
    """The inverse of :func:`relative_to_run`: a stored relative path against ``run_dir``, an absolute one
    unchanged, ``""`` / None → None."""
    if value is None or str(value) == "":
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(run_dir) / path


def stored_paths(params: dict, keys, run_dir: str | os.PathLike) -> dict:
    """``params`` with the paths under ``keys`` as :func:`relative_to_run` stores them: what a resumed run
    compares, so that a run recorded with absolute paths (earlier kits) still resumes where it is."""
    return {
        **params,
        **{key: relative_to_run(path_in_run(params[key], run_dir), run_dir) for key in keys if params.get(key)},
    }


DATA_KEYS = ("train_root", "train_list", "test_root", "trials", "val_trials", "musan_root", "rir_root")


def resolve_data_paths(
    run_dir: str | os.PathLike, base: dict | None = None, **overrides: str
) -> dict[str, Path | None]:
    """Data locations for a stage: ``run_dir/data.json`` (written by notebook 00) with non-empty overrides on top.

    Keys are :data:`DATA_KEYS`. A stage's notebook passes its own data parameters as overrides, so
    ``""`` means "as set up by notebook 00" and any path given explicitly wins. ``base`` replaces
    data.json (``lgl-kit doctor``: the locations notebook 00 is about to write there).
    """
    unknown = set(overrides) - set(DATA_KEYS)
    if unknown:
        raise ValueError(f"unknown data keys {sorted(unknown)}; valid keys are {list(DATA_KEYS)}")
    data_file = Path(run_dir) / "data.json"
    paths = {key: None for key in DATA_KEYS}
    if base is not None:
        paths.update({key: base.get(key) for key in DATA_KEYS})
    elif data_file.is_file():
        # data.json keeps the lists inside the run relative to it (notebook 00), so a copied run finds its own.
        stored = read_json(data_file)
        paths.update({key: path_in_run(value, run_dir) for key, value in stored.items() if key in DATA_KEYS})
    paths.update({key: resolve_path(value) for key, value in overrides.items() if value})
    if paths["val_trials"] is None:
        paths["val_trials"] = paths["trials"]
    return paths


EVAL_TRIALS_KEY = "eval_trials"  # data.json: name → test list that notebook 00 prepared (the toy corpus's)


def data_eval_trials(run_dir: str | os.PathLike) -> dict[str, Path]:
    """The evaluation lists notebook 00 wrote to ``run_dir/data.json`` (name → file; empty when none), what a
    stage evaluates when its ``eval_trials`` is left ``{}``."""
    data_file = Path(run_dir) / "data.json"
    if not data_file.is_file():
        return {}
    return {name: path_in_run(path, run_dir) for name, path in read_json(data_file).get(EVAL_TRIALS_KEY, {}).items()}
