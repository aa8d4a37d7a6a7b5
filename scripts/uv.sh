#!/usr/bin/env bash
# Run the pinned uv (installed on first use into .tools/, git-ignored), so every machine resolves and
# installs with the same resolver version.   bash scripts/uv.sh lock | bash scripts/uv.sh --path
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.8
tools=.tools/uv-$UV_VERSION
if [ ! -x "$tools/bin/uv" ]; then
  echo "[setup] installing uv $UV_VERSION into $tools" >&2
  python_bin=${LGL_PYTHON:-$(command -v python3.11 || command -v python3)}
  "$python_bin" -m pip install -qq --disable-pip-version-check --root-user-action=ignore --target "$tools" "uv==$UV_VERSION" >&2
fi
if [ "${1:-}" = "--path" ]; then
  echo "$PWD/$tools/bin/uv"
else
  exec "$tools/bin/uv" "$@"
fi
