"""Headless progress: the throttled log line that stands in for a tqdm bar (fake clock, no sleeping)."""

import logging

import numpy as np
import pytest
import soundfile

from lgl_helpers import progress_log
from lgl_helpers.progress_log import ProgressLog


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "lgl_helpers.progress_log"]


def test_a_line_at_most_every_interval_with_rate_postfix_elapsed_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="lgl_helpers")
    clock = FakeClock()
    bar = ProgressLog(range(100), desc="iter 1 T epoch 3", unit="batch", interval=60, clock=clock)
    assert (bar.total, bar.desc) == (100, "iter 1 T epoch 3")
    for step, _ in enumerate(bar, start=1):
        clock.now += 2.0  # a batch takes 2 s
        bar.set_postfix(loss=f"{10 - step / 20:.3f}", acc=12.5)
        if step == 45:
            break
    bar.close()
    # 45 batches, 90 s: one line after 60 s (at the 30th batch's update), the next would need 120 s.
    assert _lines(caplog) == [
        "iter 1 T epoch 3: 30/100 batch (30 %), 0.5 batch/s, loss=8.500 acc=12.5, elapsed 1:00, ETA 2:20"
    ]


def test_update_counts_items_without_a_total_and_works_as_a_context_manager(caplog):
    caplog.set_level(logging.INFO, logger="lgl_helpers")
    clock = FakeClock()
    with ProgressLog(desc="embed", unit="file", interval=10, clock=clock) as bar:
        for _ in range(3):
            clock.now += 4.0
            bar.update(50)
    assert bar.n == 150
    assert _lines(caplog) == ["embed: 150 file, 12.5 file/s, elapsed 0:12"]  # no total: no percentage, no ETA


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(progress_log.INTERVAL_ENV, raising=False)
    assert progress_log.interval_seconds() == progress_log.INTERVAL_S == 60.0
    monkeypatch.setenv(progress_log.INTERVAL_ENV, "5")
    assert ProgressLog(range(3)).interval == 5.0
    for bad in ("soon", "-1", "inf"):
        monkeypatch.setenv(progress_log.INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=rf"LGL_PROGRESS_INTERVAL='{bad}' must be a number of seconds >= 0"):
            ProgressLog(range(3))


def test_durations_over_an_hour():
    assert progress_log.format_duration(3 * 3600 + 62) == "3:01:02"
    assert progress_log.format_duration(59.6) == "1:00"


def test_progress_is_a_log_when_headless_and_a_bar_otherwise(monkeypatch):
    monkeypatch.setenv("LGL_PROGRESS", "0")
    assert isinstance(progress_log.progress(range(3), desc="x", total=3, unit="batch", leave=False), ProgressLog)
    # A caller that turns its bar off (show_progress=False) stays silent.
    assert not isinstance(progress_log.progress(total=3, disable=True), ProgressLog)
    monkeypatch.setenv("LGL_PROGRESS", "1")
    assert not isinstance(progress_log.progress(range(3)), ProgressLog)


def test_a_headless_embedding_pass_logs_its_progress(tmp_path, monkeypatch, caplog):
    """A real caller: ``embed_files`` opens ``progress_log.progress(...)`` as a context manager and updates it per batch."""
    import torch

    from lgl_helpers.core.embed import embed_files
    from lgl_helpers.core.models import ECAPATDNN

    monkeypatch.setenv("LGL_PROGRESS", "0")
    monkeypatch.setenv(progress_log.INTERVAL_ENV, "0")  # every update logs
    caplog.set_level(logging.INFO, logger="lgl_helpers")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.wav")
        soundfile.write(paths[-1], np.random.default_rng(i).standard_normal(8000).astype(np.float32) * 0.1, 16000)
    torch.manual_seed(0)
    embed_files(ECAPATDNN(16).eval(), paths, device="cpu", batch_seconds=0.5)
    lines = _lines(caplog)
    assert lines and all(line.startswith("embed: ") and " file/s, elapsed " in line for line in lines)
    assert lines[-1].startswith("embed: 3/3 file (100 %)")
