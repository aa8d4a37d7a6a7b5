"""Mid-epoch checkpoints: every ``checkpoint_minutes`` of wall time inside an epoch, and on SIGTERM.

An epoch at VoxCeleb scale takes 40 minutes; a job killed in the middle of one would lose it. While a
stage trains, :class:`StepCheckpoints` is asked at every batch boundary whether to write a checkpoint
now: when ``checkpoint_minutes`` have passed since the epoch started (or since the last one), or when
a SIGTERM arrived (what SLURM and other schedulers send before they kill a job). After SIGTERM the
stage writes the checkpoint and stops with :class:`TrainingStopped`; calling the stage again (resume)
continues the epoch at the next batch and finishes it with the numbers of an uninterrupted run.

Under torch.distributed every rank asks at the same boundary and the answer is agreed (one
all-reduce of two flags), so all ranks write, stop or go on together and none waits forever in a
collective; only rank 0 writes the file.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from lgl_helpers.core import distributed

log = logging.getLogger(__name__)

DEFAULT_MINUTES = 20
# 128 + SIGTERM: the status a shell reports for a process ended by SIGTERM.
EXIT_STOPPED = 143


class TrainingStopped(SystemExit):
    """SIGTERM stopped training at a checkpoint (a mid-epoch one or a saved epoch); rerun the stage to resume.

    A SystemExit: ``lgl-kit train`` exits with :data:`EXIT_STOPPED` and no traceback; a notebook
    cell shows it as an error, so that papermill stops the notebook there.
    """

    def __init__(self, message: str):
        super().__init__(EXIT_STOPPED)
        self.message = message

    def __str__(self) -> str:
        return self.message


class StepCheckpoints:
    """When a stage writes a mid-epoch checkpoint, and its SIGTERM handler.

    Use it as a context manager around a stage's training: inside, SIGTERM only sets a flag (the
    handler is installed in the main thread only; signals cannot be handled elsewhere), and the
    previous handler is back afterwards. ``minutes`` (the validated ``checkpoint_minutes``) 0: no
    timed checkpoints. ``clock`` returns seconds (None: ``time.monotonic``; tests pass a fake one).
    """

    def __init__(self, minutes: float, clock: Callable[[], float] | None = None):
        self.minutes = float(minutes)
        self.clock = clock or time.monotonic
        self.signalled = False
        self._since = self.clock()
        self._previous = None
        self._installed = False

    # -- the SIGTERM handler ------------------------------------------------------------------
    def _on_sigterm(self, signum, frame) -> None:
        if not self.signalled:
            log.warning("SIGTERM received: writing a checkpoint at the next batch boundary, then stopping")
        self.signalled = True

    def __enter__(self) -> StepCheckpoints:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    # -- the decisions ------------------------------------------------------------------------
    def epoch_started(self) -> None:
        """The timer of ``minutes`` restarts with every epoch (an epoch's end is a checkpoint already)."""
        self._since = self.clock()

    def _agreed(self) -> tuple[bool, bool]:
        """(write now, stop after it), the same on every rank: any rank's SIGTERM or timer counts."""
        due = self.minutes > 0 and self.clock() - self._since >= self.minutes * 60
        stop, due = distributed.any_rank([self.signalled, due])
        return stop or due, stop

    def after_batch(self, where: str, batches: int, write: Callable[[], None]) -> None:
        """At the boundary after ``batches`` batches of the epoch ``where`` names (e.g. "epoch 3"), on every rank.

        ``write()`` is called on every rank when a checkpoint is due: it gathers the epoch's running
        totals (a collective) and writes the file on rank 0. Raises :class:`TrainingStopped` after it
        when SIGTERM asked to stop.
        """
        write_now, stop = self._agreed()
        if not write_now:
            return
        tic = time.perf_counter()
        write()
        distributed.barrier()  # no rank exits while rank 0 is still writing
        self._since = self.clock()
        log.info("%s: mid-epoch checkpoint after batch %d (%.1f s)", where, batches, time.perf_counter() - tic)
        if stop:
            message = f"SIGTERM: checkpoint written at {where} batch {batches}, rerun to resume"
            log.warning(message)
            raise TrainingStopped(message)

    def after_epoch(self, where: str) -> None:
        """After an epoch (or another step) is saved, on every rank: stop there when SIGTERM arrived meanwhile."""
        if distributed.any_rank([self.signalled])[0]:
            message = f"SIGTERM: {where} is saved, rerun to resume"
            log.warning(message)
            raise TrainingStopped(message)
