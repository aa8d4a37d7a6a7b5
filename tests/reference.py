"""Locates the reference fixtures (outputs of the authors' LGL code) used by the fidelity tests.

``LGL_REFERENCE_DIR`` overrides the default ``<repo>/../shared/reference``. Tests that need the folder
skip with a reason naming the path when it is absent (a user's clone); with ``LGL_REQUIRE_REFERENCE=1``
(set by ``.ci/run``) they fail instead, so CI can never skip them silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REFERENCE_DIR = Path(
    os.environ.get("LGL_REFERENCE_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "reference")
)


def reference_path(name: str) -> Path:
    """Path of one fixture file; skips the calling test when it is missing (fails under ``LGL_REQUIRE_REFERENCE=1``)."""
    path = REFERENCE_DIR / name
    if not path.is_file():
        message = f"reference fixture {path} not found (set LGL_REFERENCE_DIR)"
        if os.environ.get("LGL_REQUIRE_REFERENCE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def load_reference(name: str):
    """A ``.pt`` / ``.model`` fixture loaded with ``weights_only=True`` on the CPU."""
    return torch.load(reference_path(name), map_location="cpu", weights_only=True)
