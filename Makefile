# Entry points. Each target sets up .venv first (idempotent), so on a fresh clone one command does everything.
RUN ?= demo
PROFILE ?= demo
PY := .venv/bin/python

.PHONY: setup demo test test-fast test-latest lock lab clean-runs gpu-wheels gpu-check

setup:
	@bash scripts/setup.sh

demo: setup  ## the main job: toy corpus + the whole pipeline headless + the report table
	@.venv/bin/lgl-kit run --profile $(PROFILE) --run-name $(RUN) --log-output
	@.venv/bin/lgl-kit report --run-name $(RUN)

test: setup  ## lint + format check, then unit tests + notebooks executed headless on a small corpus
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check --quiet .
	@$(PY) -m pytest -q

test-fast: setup  ## the edit-test loop: lint, then every test not marked slow (no end-to-end training, no notebook runs)
	@.venv/bin/ruff check .
	@$(PY) -m pytest -q -m "not slow"

test-latest:  ## upgrade canary, not in CI: newest releases pyproject.toml allows, in .venv-latest
	@bash scripts/test-latest.sh

lock:  ## after editing pyproject.toml: re-resolve uv.lock and re-export requirements/*.txt
	@bash scripts/lock.sh

lab: setup  ## step through the notebooks interactively
	@.venv/bin/jupyter lab notebooks/

gpu-wheels: setup  ## wheelhouse/gpu: what a GPU machine without network lacks, at the lock's versions (docs/gpu-check.md)
	@$(PY) scripts/gpu_wheels.py

GPU_OUT ?= runs/gpu_check
gpu-check:  ## on the GPU machine: offline install from wheelhouse/gpu, then benchmarks/gpu_check.py into GPU_OUT
	@bash scripts/gpu_check.sh $(GPU_OUT)

clean-runs:
	rm -rf runs/
