"""The GPU check's dry run (every step on the CPU at tiny sizes), its failure isolation, the wheelhouse's
pinned set, and the scale simulation at a small fraction of VoxCeleb."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_wheels  # noqa: E402


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.mark.slow
def test_dry_run_runs_every_step(tmp_path):
    proc = _run("benchmarks/gpu_check.py", str(tmp_path), "--dry-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]
    assert list(steps) == list(gpu_check.STEPS)
    failed = {name: record.get("error") for name, record in steps.items() if record["status"] != "ok"}
    assert not failed
    for name in ("train_eager", "train_compiled"):
        rows = steps[name]["result"]["rows"]
        per_stage = 1 if name == "train_compiled" else 3  # a dry run compiles one precision per stage
        assert [(r["stage"], r["compiled"]) for r in rows] == [
            (s, name == "train_compiled") for s in ("stage1", "stage2") for _ in range(per_stage)
        ]
        assert all(r["samples_per_s"] > 0 for r in rows)
    assert [r["workers"] for r in steps["loader"]["result"]["rows"]] == [0, 1]
    assert [r["precision"] for r in steps["embed"]["result"]["rows"]] == list(gpu_check.PRECISIONS)
    eer_rows = steps["precision_eer"]["result"]["rows"]
    assert all(r["eer_ci"][0] <= r["eer"] <= r["eer_ci"][1] for r in eer_rows)
    assert all("eer_diff_ci" in r for r in eer_rows if r["precision"] != "fp32")
    assert steps["cuda_tests"]["result"]["failed"] == 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert all(f"| {name} | ok |" in table for name in gpu_check.STEPS)


def test_a_failing_step_is_recorded_and_the_next_still_runs(tmp_path):
    # precision_eer without the corpus step has no training list to read
    proc = _run("benchmarks/gpu_check.py", str(tmp_path), "--dry-run", "--steps", "precision_eer", "kmeans")
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]
    assert steps["precision_eer"]["status"] == "failed"
    assert "train_list.txt" in steps["precision_eer"]["error"]
    assert steps["kmeans"]["status"] == "ok" and steps["kmeans"]["result"]["non_empty"] == 10


def test_budget_leaves_later_steps_out(tmp_path):
    proc = _run("benchmarks/gpu_check.py", str(tmp_path), "--dry-run", "--budget-s", "0", "--steps", "kmeans")
    assert proc.returncode == 0
    record = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]["kmeans"]
    assert record["status"] == "not run" and "budget" in record["error"]


def test_wheelhouse_is_the_locks_versions_of_what_the_gpu_machine_lacks():
    pins = dict(p.split("==") for p in gpu_wheels.pinned_set())
    lock = gpu_wheels.lock_packages(ROOT / "uv.lock")
    assert all(lock[name]["version"] == version for name, version in pins.items())
    for needed in (
        "torchaudio",
        "faiss-cpu",
        "soundfile",
        "papermill",
        "ipykernel",
        "umap-learn",
        "pynndescent",
        "pytest",
        "setuptools",
    ):
        assert needed in pins
    present = gpu_wheels.closure(lock, gpu_wheels.PREINSTALLED)
    assert "torch" in present and "numpy" in present
    # nothing the machine has is carried (setuptools: pip's isolated build of the kit sees none of it)
    assert set(pins) & present <= set(gpu_wheels.BUILD)
    assert not set(pins) & {"faiss-gpu", "jupyterlab", *gpu_wheels.UNUSED}


def test_target_markers_pick_python_312_linux():
    assert gpu_wheels._applies("python_full_version == '3.12.*' and sys_platform == 'linux'")
    assert not gpu_wheels._applies("python_full_version < '3.11'")
    assert not gpu_wheels._applies("sys_platform == 'darwin'")


@pytest.mark.slow
def test_scale_simulation_at_a_small_fraction(tmp_path):
    steps = ["train_list", "pseudo_labels", "kmeans", "quality", "merge", "scoring", "report"]
    proc = _run("benchmarks/scale_sim.py", str(tmp_path), "--scale", "0.002", "--steps", *steps)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in steps:
        record = json.loads((tmp_path / "steps" / f"{name}.json").read_text())
        assert record["status"] == "ok", record.get("error")
        assert record["peak_rss_mib"] > 0 and record["seconds"] >= 0
    lines = json.loads((tmp_path / "steps" / "train_list.json").read_text())["result"]["lines"]
    assert lines == round(1_092_009 * 0.002)
    table = (tmp_path / "scale_table.md").read_text()
    assert all(f"| {name} | 0.002 | ok |" in table for name in steps)
