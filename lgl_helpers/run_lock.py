"""One process at a time writes a run folder.

:func:`hold_run_folder` takes the lock file ``runs/<run>/.lock`` (``fcntl.flock``, released by the system however
the process ends). ``lgl-kit run`` holds it for the whole pipeline, a training stage for its whole run,
:func:`lgl_helpers.runs.open_run` while it clears temp files and writes the parameters; a second writer gets
one line naming the holder's pid. The processes a holder starts (notebook kernels, torchrun's ranks) write on
its behalf: a lock held by an ancestor process counts as held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from lgl_helpers.core import distributed

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
