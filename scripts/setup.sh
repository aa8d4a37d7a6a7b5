#!/usr/bin/env bash
# Create .venv with exactly the locked dependency set (uv.lock) and register the Jupyter kernel "lgl-kit".
# Re-running is cheap: uv checks the venv against the lock in well under a second and installs only
# what differs. Stops with a clear message when pyproject.toml and uv.lock disagree (run `make lock`).
#   LGL_PYTHON=python3.11   interpreter for the venv (default: python3.11, else python3)
#   LGL_FAISS=cpu|gpu       which faiss build to install (default: gpu when nvidia-smi works, else cpu)
set -euo pipefail
cd "$(dirname "$0")/.."

uv_bin=$(bash scripts/uv.sh --path)
python_bin=${LGL_PYTHON:-$(command -v python3.11 || command -v python3)}
# The interpreter itself, not a launcher such as a pyenv shim: uv compares it with the venv's base
# interpreter and, given the shim, replaced the whole venv at every `make` target (8 min on 2 busy cores).
python_bin=$("$python_bin" -c 'import sys; print(sys.executable)')
if [ -z "${LGL_FAISS:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then LGL_FAISS=gpu; else LGL_FAISS=cpu; fi
fi
case "$LGL_FAISS" in cpu|gpu) ;; *) echo "[setup] LGL_FAISS must be cpu or gpu, got '$LGL_FAISS'" >&2; exit 2;; esac

# --locked: refuse to run when the lock is stale instead of silently re-resolving.
# Never download a Python: use the interpreter the user has.
# --compile-bytecode: uv installs no .pyc files, and where PYTHONDONTWRITEBYTECODE is set (as on some
# machines and clusters) Python never writes them, so every kernel would compile torch and the rest from
# source at each import (18 s -> 9 s for the notebooks' imports, measured on 2 cores). Compiled once, at install.
UV_PYTHON_DOWNLOADS=never "$uv_bin" sync --locked --quiet --python "$python_bin" --extra "$LGL_FAISS" --extra dev \
  --compile-bytecode

if [ ! -f .venv/share/jupyter/kernels/lgl-kit/kernel.json ]; then
  echo "[setup] registering Jupyter kernel lgl-kit"
  .venv/bin/python -m ipykernel install --sys-prefix --name lgl-kit --display-name "Python (lgl-kit)" >/dev/null
fi

# numba compiles umap's functions in every kernel unless they are cached (13-15 s of notebook 02 on 2
# cores); one small fit fills the cache, once per venv (lgl_helpers/notebook/projection.py).
if [ ! -f .venv/.umap-cache-warm ]; then
  echo "[setup] compiling umap's numba functions once (cached for every later kernel)"
  .venv/bin/python -W ignore -m lgl_helpers.notebook.projection && touch .venv/.umap-cache-warm
fi
