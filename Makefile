# `make run` and `make test` work on a fresh machine: the first call creates .venv with uv from requirements.lock.
SHELL := /bin/bash
PY := .venv/bin/python
UV := .venv/bin/uv
STAMP := .venv/.installed
RECIPE ?= recipes/easy_vqa.yaml

.PHONY: run test test-all lint lock demo gpu-check clean

$(UV):
	@test -x $(PY) || python3 -m venv .venv
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.8

$(STAMP): requirements.lock pyproject.toml | $(UV)
	$(UV) pip install --python $(PY) --compile-bytecode -r requirements.lock
	$(UV) pip install --python $(PY) --no-deps -e .
	@touch $(STAMP)

# one torch thread unless the caller sets OMP_NUM_THREADS: on a shared 2-core machine two threads trained ~10x slower
# than one (threads spin waiting for each other); on a quiet one, one thread costs ~30% more wall time
run: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} .venv/bin/mmrwkv run $(RECIPE)

test: $(STAMP)
	.venv/bin/ruff check .
	$(PY) -m pytest -q -m "not slow" --timeout=900

test-all: $(STAMP)
	.venv/bin/ruff check .
	$(PY) -m pytest -q --timeout=1800

lint: $(STAMP)
	.venv/bin/ruff check .

demo: $(STAMP)
	.venv/bin/mmrwkv demo

# no venv step: a GPU machine may have no network; the script installs the project offline when it must
gpu-check:
	bash kernels/check_gpu.sh

# Regenerate the lock file after changing dependencies in pyproject.toml.
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 --python-platform x86_64-unknown-linux-gnu -o requirements.lock

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache
