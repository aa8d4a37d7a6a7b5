"""Progress of long loops in a headless run: a throttled log line where a terminal would show a tqdm bar.

Under papermill, in CI or into a log file the bars are off (:func:`progress`), and
an epoch line comes only when the epoch ends: 40 minutes of silence per VoxCeleb epoch. In their
place :class:`ProgressLog` logs one line at most every :data:`INTERVAL_S` seconds (the environment
variable ``LGL_PROGRESS_INTERVAL`` overrides it), through ``logging``, so the run's log file and
``lgl-kit run --log-output`` show it::

    iter 1 T epoch 3: 1200/5400 batch (22 %), 4.12 batch/s, loss=8.214 acc=12.5, elapsed 4:51, ETA 17:00

It has the part of tqdm's interface the kit's loops use: iteration, ``update``, ``set_postfix``,
``close``, ``total``, ``desc``, ``n`` and the context manager.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

INTERVAL_S = 60.0  # seconds between two progress lines of one loop
INTERVAL_ENV = "LGL_PROGRESS_INTERVAL"


def interval_seconds() -> float:
    """The seconds between progress lines: ``LGL_PROGRESS_INTERVAL`` when set, else :data:`INTERVAL_S`."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{INTERVAL_ENV}={raw!r} must be a number of seconds >= 0 (default {INTERVAL_S:g})")
    return value


def format_duration(seconds: float) -> str:
    """``m:ss`` below an hour, ``h:mm:ss`` above."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class ProgressLog:
    """A loop's progress as log lines: at most one every ``interval`` seconds (None: :func:`interval_seconds`).

    ``total`` None takes ``len(iterable)`` when it has one; without a total there is no percentage
    and no ETA. ``clock`` returns seconds (tests pass a fake one). tqdm's display options (``leave``,
    ``dynamic_ncols``, ...) have no meaning in a log and are ignored.
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        desc: str | None = None,
        total: int | None = None,
        unit: str = "it",
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        **display_options,
    ):
        self.iterable = iterable
        self.desc = desc or ""
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.unit = unit
        self.n = 0
        self.postfix: dict[str, str] = {}
        self.interval = interval_seconds() if interval is None else float(interval)
        self._clock = clock
        self._start = self._last = clock()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def __len__(self) -> int:
        return self.total if self.total is not None else len(self.iterable)

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; log a line when ``interval`` seconds have passed since the last one."""
        self.n += n
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            log.info("%s", self.line(now))

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs) -> None:
        """The latest values (loss, accuracy...) for the next line; tqdm's signature."""
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = {key: _format_value(value) for key, value in values.items()}

    def close(self) -> None:
        """Nothing to release: the loop's end is logged by its caller (the epoch line)."""

    def line(self, now: float | None = None) -> str:
        """``desc: step/total unit (pct), rate unit/s, postfix, elapsed e, ETA t`` as of ``now``."""
        elapsed = (self._clock() if now is None else now) - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        if self.total:
            count += f" ({100 * self.n / self.total:.0f} %)"
        parts = [count, f"{rate:.3g} {self.unit}/s"]
        if self.postfix:
            parts.append(" ".join(f"{key}={value}" for key, value in self.postfix.items()))
        parts.append(f"elapsed {format_duration(elapsed)}")
        if self.total and rate > 0:
            parts.append(f"ETA {format_duration(max(self.total - self.n, 0) / rate)}")
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)


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
        return ProgressLog(iterable, **tqdm_kwargs)
    if "ipykernel" in sys.modules and "PAPERMILL_EXECUTION" not in os.environ:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    tqdm_kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **tqdm_kwargs)
