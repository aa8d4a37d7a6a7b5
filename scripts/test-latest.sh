#!/usr/bin/env bash
# Upgrade canary (not part of CI): install the newest releases pyproject.toml allows, ignoring uv.lock,
# into .venv-latest and run the test suite there. A failure here is the next breaking release, found
# before a new user meets it; fix the range in pyproject.toml, then `make lock`.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${LGL_PYTHON:-$(command -v python3.11 || command -v python3)}
faiss=${LGL_FAISS:-cpu}
export UV_PYTHON_DOWNLOADS=never
bash scripts/uv.sh venv --quiet --allow-existing --python "$python_bin" .venv-latest
bash scripts/uv.sh pip install --quiet --python .venv-latest/bin/python --refresh --upgrade --resolution highest \
  -e ".[$faiss,dev]"
bash scripts/uv.sh pip list --python .venv-latest/bin/python --format freeze \
  | grep -iE '^(torch|torchaudio|numpy|faiss-cpu|faiss-gpu|papermill|scikit-learn|umap-learn)==' >&2
.venv-latest/bin/python -m pytest -q "$@"
