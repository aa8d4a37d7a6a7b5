"""Build the wheelhouse a GPU check installs offline: exactly what the GPU machine lacks, at uv.lock's versions.

The GPU machines the kit is checked on have Python 3.12 with torch 2.11.0+cu130, numpy, scipy,
scikit-learn, matplotlib, numba, tensorboard, onnx and onnxruntime (and what those depend on), no
network, and take at most 64 MiB of files along. What the check needs beyond that: torchaudio (the
encoder's features), faiss-cpu (k-means; the locked faiss-gpu wheel is 135 MB and built for CUDA 12),
soundfile, PyYAML and tqdm (the kit), papermill, ipykernel and ipywidgets (the notebooks, headless),
umap-learn (notebook 02), pytest (the CUDA tests) and setuptools (to install the kit itself), each with
its dependencies from the lock, less everything the preinstalled packages bring.

Every wheel is fetched with ``pip download --no-deps --only-binary=:all:`` for CPython 3.12 on
manylinux x86_64 at the lock's version, into ``wheelhouse/gpu`` (git-ignored), then the folder's size
is printed and checked against the limit. ``--list`` prints the pinned set without downloading.

Usage: python scripts/gpu_wheels.py [--out wheelhouse/gpu] [--max-mib 40] [--list]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import tomllib
from packaging.markers import Marker

ROOT = Path(__file__).resolve().parents[1]
# On the GPU machine already (with their own dependencies): never carried.
PREINSTALLED = (
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "numba",
    "tensorboard",
    "onnx",
    "onnxruntime",
)
# What the check imports or runs that the machine lacks.
NEEDED = (
    "torchaudio",
    "faiss-cpu",
    "soundfile",
    "pyyaml",
    "tqdm",
    "papermill",
    "ipykernel",
    "ipywidgets",
    "umap-learn",
    "pytest",
)
# Declared by the packages above but imported only where available (ipykernel's debugger, IPython's completion,
# classic Notebook's widget front end): 12 MiB a headless run does without. The install uses --no-deps.
UNUSED = ("debugpy", "jedi", "widgetsnbextension")
# pip builds the kit's editable install in an isolated environment, which sees none of the machine's packages.
BUILD = ("setuptools",)
TARGET = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_machine": "x86_64",
    "platform_system": "Linux",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "extra": "",
}


def _applies(marker: str | None) -> bool:
    return marker is None or Marker(marker).evaluate(TARGET)


def lock_packages(lock_path: Path) -> dict[str, dict]:
    """name → the lock's entry of it that applies to CPython 3.12 on Linux (a lock may pin several versions)."""
    chosen: dict[str, dict] = {}
    for package in tomllib.loads(lock_path.read_text())["package"]:
        markers = package.get("resolution-markers")
        if markers and not any(_applies(m) for m in markers):
            continue
        chosen.setdefault(package["name"], package)
    return chosen


def closure(packages: dict[str, dict], roots, stop=()) -> set[str]:
    """Names reachable from ``roots`` through the dependencies that apply to the target, not entering ``stop``."""
    seen: set[str] = set()
    todo = [r for r in roots if r not in stop]
    while todo:
        name = todo.pop()
        if name in seen or name not in packages:
            seen.add(name)
            continue
        seen.add(name)
        for dep in packages[name].get("dependencies", []):
            if dep["name"] not in seen and dep["name"] not in stop and _applies(dep.get("marker")):
                todo.append(dep["name"])
    return seen


def pinned_set(lock_path: Path = ROOT / "uv.lock") -> list[str]:
    """``name==version`` of every wheel to carry, sorted."""
    packages = lock_packages(lock_path)
    present = closure(packages, PREINSTALLED)
    needed = closure(packages, NEEDED, stop=(*present, *UNUSED)) | set(BUILD)
    missing = sorted(needed - set(packages))
    if missing:
        raise SystemExit(f"{lock_path} pins no version of {', '.join(missing)}")
    return [f"{name}=={packages[name]['version']}" for name in sorted(needed)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "wheelhouse" / "gpu")
    ap.add_argument("--max-mib", type=float, default=40.0)
    ap.add_argument("--list", action="store_true", help="print the pinned set and stop")
    a = ap.parse_args()
    pins = pinned_set()
    if a.list:
        print("\n".join(pins))
        return
    a.out.mkdir(parents=True, exist_ok=True)
    wanted = {p.split("==")[0].replace("-", "_").lower() for p in pins}
    for stale in a.out.glob("*.whl"):  # wheels of an older lock
        if stale.name.split("-")[0].lower() not in wanted or not any(
            stale.name.lower().startswith(f"{p.split('==')[0].replace('-', '_').lower()}-{p.split('==')[1]}-")
            for p in pins
        ):
            stale.unlink()
    # uv's venvs carry no pip: then the first python3 on PATH that has one
    pip = [sys.executable, "-m", "pip"] if importlib.util.find_spec("pip") else ["python3", "-m", "pip"]
    command = [
        *pip, "download", "--no-deps", "--only-binary=:all:", "--dest", str(a.out),
        "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none",
        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "any",
        "--quiet", *pins,
    ]  # fmt: skip
    subprocess.run(command, check=True)
    (a.out / "requirements.txt").write_text("\n".join(pins) + "\n")
    wheels = sorted(a.out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels for {len(pins)} pins in {a.out}: {size:.1f} MiB")
    for wheel in sorted(wheels, key=lambda w: -w.stat().st_size)[:5]:
        print(f"  {wheel.stat().st_size / 2**20:6.1f} MiB  {wheel.name}")
    if len(wheels) != len(pins):
        raise SystemExit(f"expected one wheel per pin ({len(pins)}), found {len(wheels)}")
    if size > a.max_mib:
        raise SystemExit(f"the wheelhouse is {size:.1f} MiB, over the {a.max_mib:g} MiB limit")


if __name__ == "__main__":
    main()
