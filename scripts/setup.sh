#!/usr/bin/env bash
# Create .venv (if missing), install the kit with its pinned torch/torchaudio pair, and register the
# Jupyter kernel "lgl-kit". Re-running is cheap: it reinstalls only when pyproject.toml changed.
#   LGL_PYTHON=python3.11   interpreter used to create the venv (default: python3.11, else python3)
#   LGL_FAISS=cpu|gpu       which faiss build to install (default: gpu when nvidia-smi works, else cpu)
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${LGL_PYTHON:-$(command -v python3.11 || command -v python3)}
if [ -z "${LGL_FAISS:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then LGL_FAISS=gpu; else LGL_FAISS=cpu; fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $python_bin"
  "$python_bin" -m venv .venv
fi

stamp=.venv/.lgl-kit-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) faiss=$LGL_FAISS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing lgl-kit[$LGL_FAISS,dev] into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$LGL_FAISS,dev]"
  echo "$want" > "$stamp"
fi

if [ ! -f .venv/share/jupyter/kernels/lgl-kit/kernel.json ]; then
  echo "[setup] registering Jupyter kernel lgl-kit"
  .venv/bin/python -m ipykernel install --sys-prefix --name lgl-kit --display-name "Python (lgl-kit)" >/dev/null
fi
