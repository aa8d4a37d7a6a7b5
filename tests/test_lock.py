"""The lock is the install: pyproject.toml, uv.lock and the exported requirement files must agree."""

import glob
import re
import shutil
import subprocess

import pytest
import tomllib

from lgl_helpers.runs import project_root

ROOT = project_root()


def _uv() -> str:
    """The pinned uv that scripts/setup.sh installs into .tools/, else one on PATH."""
    pinned = sorted(glob.glob(str(ROOT / ".tools" / "uv-*" / "bin" / "uv")))
    found = pinned[-1] if pinned else shutil.which("uv")
    if not found:
        pytest.skip("uv not installed (bash scripts/uv.sh --path installs it)")
    return found


def _locked_versions() -> dict[str, set[str]]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        versions.setdefault(package["name"], set()).add(package["version"])
    return versions


def test_lock_matches_pyproject():
    result = subprocess.run([_uv(), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"uv.lock is out of date with pyproject.toml; run `make lock`:\n{result.stderr}"


def test_torch_and_torchaudio_are_one_exact_pair():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {re.split(r"[=<>!~ ;]", d)[0]: d for d in dependencies}
    torch_pin = re.fullmatch(r"torch==(\d+\.\d+\.\d+)", pins["torch"])
    audio_pin = re.fullmatch(r"torchaudio==(\d+\.\d+\.\d+)", pins["torchaudio"])
    assert torch_pin and audio_pin, "torch and torchaudio must be pinned with == to one exact release each"
    # torchaudio X.Y.Z is built against torch X.Y.Z; any other pairing can fail to load its C extension.
    assert torch_pin.group(1) == audio_pin.group(1)
    locked = _locked_versions()
    assert locked["torch"] == {torch_pin.group(1)} and locked["torchaudio"] == {audio_pin.group(1)}


def test_both_faiss_builds_are_locked():
    locked = _locked_versions()
    assert len(locked.get("faiss-cpu", ())) == 1 and len(locked.get("faiss-gpu", ())) == 1


@pytest.mark.parametrize("faiss", ["cpu", "gpu"])
def test_exported_requirements_match_the_lock(faiss, tmp_path):
    exported = tmp_path / f"{faiss}.txt"
    subprocess.run(
        [
            _uv(),
            "export",
            "--frozen",
            "--offline",
            "--quiet",
            "--no-header",
            "--no-emit-project",
            "--extra",
            faiss,
            "--extra",
            "dev",
            "--format",
            "requirements-txt",
            "--output-file",
            str(exported),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    committed = ROOT / "requirements" / f"{faiss}.txt"
    assert committed.read_text() == exported.read_text(), f"{committed} differs from uv.lock; run `make lock`"
    other = {"cpu": "faiss-gpu==", "gpu": "faiss-cpu=="}[faiss]
    assert other not in committed.read_text(), "a requirement file must carry exactly one faiss build"
