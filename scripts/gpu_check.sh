#!/usr/bin/env bash
# The GPU check on a machine with torch preinstalled and no network (docs/gpu-check.md): install what it
# lacks from wheelhouse/gpu (make gpu-wheels) into a venv that sees the machine's packages, install the kit
# itself, then run benchmarks/gpu_check.py. Its work files stay in LGL_GPU_WORK (default /tmp/lgl-gpu-check);
# the tables, JSON and logs are copied to OUT.
#   bash scripts/gpu_check.sh OUT [gpu_check.py options, e.g. --budget-s 430]
#   LGL_PYTHON=python3.12   the interpreter with torch (default: python3)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash scripts/gpu_check.sh OUT [gpu_check.py options]}
shift
python_bin=${LGL_PYTHON:-python3}
venv=${LGL_GPU_VENV:-/tmp/lgl-gpu-venv}
work=${LGL_GPU_WORK:-/tmp/lgl-gpu-check}
mkdir -p "$out" "$work"
start=$(date +%s)
{
  [ -x "$venv/bin/python" ] || "$python_bin" -m venv --system-site-packages "$venv"
  # --no-deps: the wheelhouse holds exactly the missing closure; the machine's own packages stay as they are
  "$venv/bin/python" -m pip install --quiet --no-index --no-deps wheelhouse/gpu/*.whl
  "$venv/bin/python" -m pip install --quiet --no-index --find-links wheelhouse/gpu --no-deps -e .
  "$venv/bin/python" -m ipykernel install --sys-prefix --name lgl-kit --display-name "Python (lgl-kit)"
  "$venv/bin/python" -m pip check
} >"$out/install.log" 2>&1
echo "[gpu_check] offline install: $(($(date +%s) - start)) s (log: $out/install.log; pip check: $(tail -1 "$out/install.log"))"
# A failed install is not the end: the check's environment step says what is missing, every other step still runs.
"$venv/bin/python" benchmarks/gpu_check.py "$work" "$@"
status=$?
for item in gpu_check.md gpu_check.json cuda_tests.xml steps; do
  [ -e "$work/$item" ] && cp -r "$work/$item" "$out/"
done
cp "$work"/*.log "$out/" 2>/dev/null
[ -f "$work/runs/gpu_ci/report.md" ] && cp "$work/runs/gpu_ci/report.md" "$out/gpu_ci_report.md"
echo "[gpu_check] total with install: $(($(date +%s) - start)) s"
exit $status
