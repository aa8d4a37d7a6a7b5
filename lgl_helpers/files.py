"""Atomic writes and JSON reads of every artefact of the kit.

Every artefact is written through the helpers here (temp file in the same folder, then ``os.replace``), so an
interruption never leaves a half-written list, checkpoint or report. Written files get the mode a plain ``open``
would give them (0666 less the umask), so a group folder stays readable by the group. Only rank 0 of a
distributed run writes (:mod:`lgl_helpers.core.distributed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import tempfile
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
