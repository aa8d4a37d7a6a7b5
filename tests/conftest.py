"""Shared fixtures. ``tiny_corpus``: one tiny toy corpus per test session, for every module's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lgl_helpers.corpus.toy import ToyConfig, generate_toy_corpus


@pytest.fixture(scope="session")
def tiny_config() -> ToyConfig:
    """The configuration ``tiny_corpus`` is generated with (8 train / 4 test speakers, 1-2 s utterances)."""
    return ToyConfig.tiny()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, tiny_config) -> Path:
    """Path of a tiny toy corpus: train/, test/, musan_split/, rirs/, lists/{train_list,trials}.txt.

    Generated once per session in about a second; shared, so tests must treat it as read-only.
    """
    root = tmp_path_factory.mktemp("toy") / "tiny"
    generate_toy_corpus(root, tiny_config, workers=1, show_progress=False)
    return root


@pytest.fixture(scope="session")
def training_seed() -> int:
    """Seed of the tests that assert on a learned number (0 unless ``LGL_TEST_SEED`` is set).

    ``benchmarks/ci_margins.py --unit`` reruns those tests over several seeds to measure their margins.
    """
    return int(os.environ.get("LGL_TEST_SEED", "0"))


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory):
    """The whole pipeline on the ``ci`` profile, once per session: (run folder, the --set overrides it
    used, its pipeline state, the pipeline's messages). Tests that change the run put it back."""
    from lgl_helpers.app import pipeline

    runs_dir = tmp_path_factory.mktemp("runs")
    overrides = {"00_data_setup.toy_root": str(runs_dir / "toy_small")}
    messages = []
    state = pipeline.run_pipeline("ci", "ci", overrides, runs_dir=str(runs_dir), echo=messages.append)
    return runs_dir / "ci", overrides, state, messages
