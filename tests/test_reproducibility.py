"""lgl_helpers.reproducibility: the environment every run records next to its parameters."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

from lgl_helpers import reproducibility


def test_environment_records_the_installed_versions_without_importing_the_packages():
    # A fresh interpreter: whether the packages were imported is only visible from there.
    script = (
        "import json, sys; from lgl_helpers import reproducibility; info = reproducibility.environment_info(); "
        "print(json.dumps({'info': info, 'imported': [m for m in reproducibility.RECORDED_PACKAGES if m in sys.modules]}))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert out["imported"] == []  # umap (numba) and papermill (jsonschema) took seconds to import
    assert out["info"]["sklearn"] == importlib.metadata.version("scikit-learn")
    assert out["info"]["umap"] == importlib.metadata.version("umap-learn")
    assert out["info"]["papermill"] == importlib.metadata.version("papermill")
    assert out["info"]["cpu_count"] >= 1 and out["info"]["torch"]


def test_a_package_that_is_not_installed_is_recorded_as_none(monkeypatch):
    monkeypatch.setitem(reproducibility.RECORDED_PACKAGES, "faiss", ("no-such-distribution-lgl",))
    assert reproducibility.environment_info()["faiss"] is None
