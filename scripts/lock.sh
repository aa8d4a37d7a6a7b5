#!/usr/bin/env bash
# Refresh the lock after editing pyproject.toml: re-resolve uv.lock (keeping every other pin where it
# still fits; `bash scripts/lock.sh --upgrade` takes the newest allowed releases), then re-export the
# hashed pip requirement files in requirements/ that conda and plain-pip installs use.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/uv.sh lock "$@"
for faiss in cpu gpu; do
  bash scripts/uv.sh export --frozen --quiet --no-header --no-emit-project --extra "$faiss" --extra dev \
    --format requirements-txt --output-file "requirements/$faiss.txt"
done
echo "uv.lock and requirements/{cpu,gpu}.txt refreshed; commit all three"
