"""Run folders, atomic writes, seeding, devices and progress bars shared by every stage.

Every artefact of the kit is written through the atomic helpers here (temp file in the same folder,
then ``os.replace``), so an interruption never leaves a half-written list, checkpoint or report.
Written files get the mode a plain ``open`` would give them (0666 less the umask), so a group folder
stays readable by the group.

One process at a time writes a run folder: :func:`hold_run_folder` takes the lock file
``runs/<run>/.lock`` (``fcntl.flock``, released by the system however the process ends). ``lgl-kit
run`` holds it for the whole pipeline, a training stage for its whole run, :func:`open_run` while it
clears temp files and writes the parameters; a second writer gets one line naming the holder's pid.
The processes a holder starts (notebook kernels, torchrun's ranks) write on its behalf: a lock held
by an ancestor process counts as held.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import importlib.metadata
import io
import json
import logging
import os
import platform
import random
import re
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lgl_helpers.core import distributed

log = logging.getLogger(__name__)


# The temp file of an atomic write is ".<target name>.<8 characters from mkstemp>.tmp" next to the target;
# a killed process leaves it behind, and remove_stale_temp_files recognises exactly this pattern.
_TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def _umask() -> int:
    """The process's umask: from /proc (reading it there changes nothing, which matters with threads
    writing at once), else by setting it and setting it straight back."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike, write_fn, mode: str) -> Path:
    path = Path(path)
    if not distributed.is_main():
        return path  # one writer per run: rank 0 (lgl_helpers.core.distributed)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        # mkstemp creates the file 0600 (private while it is being written); the published file gets
        # what open() would have given it, so a lab's group folder stays readable by the group.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            write_fn(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files that interrupted atomic writes left anywhere under ``folder``; return them.

    Only names of the pattern the kit's atomic writes use (``.last.model.k3j9x0qa.tmp``) are removed,
    never other files. Call it when a stage starts or resumes in its folder, before it writes there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = [p for p in sorted(folder.rglob(f".*{_TEMP_SUFFIX}")) if p.is_file() and _TEMP_NAME.fullmatch(p.name)]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.info("removed %d temp file(s) of interrupted writes under %s", len(removed), folder)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see either the old or the complete new file."""
    return _atomic_write(path, lambda handle: handle.write(text), "w")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Byte version of :func:`atomic_write_text`."""
    return _atomic_write(path, lambda handle: handle.write(data), "wb")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temp file, so a crash mid-save keeps the previous checkpoint."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` through a temp file."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def _to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic, pretty-printed JSON (dataclasses, paths and numpy scalars are converted)."""
    return atomic_write_text(path, json.dumps(_to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as handle:
        return json.load(handle)


def read_json_object(path: str | os.PathLike, what: str) -> dict | None:
    """A JSON object the kit wrote (``what``: pipeline.json, state.json, report.json ...); None when the file
    does not exist. A truncated, non-JSON or non-object file raises ValueError, one line naming the file."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f" at line {error.lineno} column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "not text"
        raise ValueError(
            f"{path}: {what} is not valid JSON{where} ({reason}; truncated or edited?): restore or remove it"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {what} must hold a JSON object, found a {type(obj).__name__}: restore or remove it")
    return obj


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA): the single place where a run's seed is applied."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _progress_enabled() -> bool:
    if os.environ.get("LGL_PROGRESS") in ("0", "1"):
        return os.environ["LGL_PROGRESS"] == "1"
    if "ipykernel" in sys.modules and "PAPERMILL_EXECUTION" not in os.environ:
        return True
    return sys.stderr.isatty()


def progress(iterable: Iterable | None = None, **tqdm_kwargs):
    """tqdm bar when output is a terminal or an interactive notebook.

    Headless runs (papermill, CI, log files) get a :class:`~lgl_helpers.progress_log.ProgressLog`
    with the same interface instead, a log line a minute (``LGL_PROGRESS_INTERVAL`` seconds), unless
    the caller passes ``disable``; set ``LGL_PROGRESS=1`` to force the bar on or ``0`` to force it off.
    """
    if "disable" not in tqdm_kwargs and not _progress_enabled():
        from lgl_helpers.progress_log import ProgressLog

        return ProgressLog(iterable, **tqdm_kwargs)
    if "ipykernel" in sys.modules and "PAPERMILL_EXECUTION" not in os.environ:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    tqdm_kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **tqdm_kwargs)


def environment_info() -> dict:
    """Machine and package versions recorded next to every run's parameters."""
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "numpy": np.__version__,
    }
    for module, distributions in RECORDED_PACKAGES.items():
        info[module] = _installed_version(distributions)
    return info


# Recorded name: the pip distributions that install it. Read from the installed metadata: importing the
# packages for their __version__ took about 6 s at every stage start (umap loads numba, papermill jsonschema).
RECORDED_PACKAGES = {
    "torchaudio": ("torchaudio",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss"),
    "sklearn": ("scikit-learn",),
    "umap": ("umap-learn",),
    "soundfile": ("soundfile",),
    "papermill": ("papermill",),
}


def _installed_version(distributions: tuple[str, ...]) -> str | None:
    """The version of the first of ``distributions`` that is installed; None (recorded, not fatal) if none is."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


LOCK_FILE = ".lock"  # in runs/<run>/: "<pid> <what holds it>"


class RunFolderBusy(ValueError):
    """Another process writes the run folder; the message names it (pid and command)."""


_held: dict[Path, list] = {}  # run folder → [open lock file, depth of nested holds in this process]


def _ancestor_pids() -> set[int]:
    """Process ids of this process's parent, its parent, ... (from /proc; the parent alone elsewhere)."""
    pids, pid = set(), os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            # /proc/<pid>/stat: "pid (name) state ppid ..."; the name may hold spaces and parentheses
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _lock_holder(handle) -> tuple[int | None, str]:
    handle.seek(0)
    pid, _, what = handle.read().strip().partition(" ")
    return (int(pid) if pid.isdigit() else None), what


def _secondary_rank() -> bool:
    """A torchrun rank other than 0 (also before its process group exists): rank 0 holds the lock for all."""
    return not distributed.is_main() or int(os.environ.get("RANK", "0")) != 0


def _acquire(run_dir: Path, holder: str) -> bool:
    """Take the lock of ``run_dir``; False when an ancestor process holds it already (nothing to release)."""
    key = run_dir.resolve()
    if key in _held:
        _held[key][1] += 1
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, what = _lock_holder(handle)
        handle.close()
        if pid is not None and pid in _ancestor_pids():
            return False
        who = f"pid {pid} ({what})" if pid is not None else "another process"
        stop = f"; `kill {pid}` stops it (a rerun then resumes)" if pid is not None else ""
        raise RunFolderBusy(
            f"run folder {run_dir} is in use by {who}: one writer at a time; wait for it to end{stop}"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {holder}\n")
    handle.flush()
    _held[key] = [handle, 1]
    return True


def _release(run_dir: Path) -> None:
    key = run_dir.resolve()
    _held[key][1] -= 1
    if _held[key][1] == 0:
        handle = _held.pop(key)[0]
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()  # the file stays: removing a lock file others may have open would let two holders in


@contextlib.contextmanager
def hold_run_folder(run_dir: str | os.PathLike, holder: str):
    """Hold the run folder's lock (``run_dir/.lock``, the folder created) for the ``with`` block.

    ``holder`` says what holds it (``"lgl-kit run --profile demo"``), for the message a second writer
    gets: :class:`RunFolderBusy`, one line with the holder's pid. Re-entrant within a process; a lock
    held by an ancestor process (the ``lgl-kit run`` that started this kernel) counts as held; torchrun
    ranks other than 0 do not take it.
    """
    run_dir = Path(run_dir)
    if _secondary_rank():
        yield run_dir
        return
    acquired = _acquire(run_dir, holder)
    try:
        yield run_dir
    finally:
        if acquired:
            _release(run_dir)


def holds_run_folder(holder: str):
    """Decorator: ``fn(config, ...)`` runs holding the lock of ``config``'s run folder (``run_name``, ``runs_dir``)."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(config, *args, **kwargs):
            with hold_run_folder(run_folder(config.run_name, config.runs_dir), holder):
                return fn(config, *args, **kwargs)

        return wrapper

    return decorate


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
