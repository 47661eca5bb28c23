# Two set-up commands (see README): `make repro` runs the pipeline, `make test` runs the tests.
# Both create .venv on first use and (re)install when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1
# dvc.yaml stage commands call `python`: make it the venv's.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test quick lint tracking-server clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The full paper table (needs internet for the downloads; a GPU to finish in reasonable time).
repro: $(STAMP)
	$(BIN)/dvc repro

# The whole test suite: unit tests, the CI-scale pipeline run + NLL regression gate, and the offline
# rehearsal of the paper profile. Debian packages some tests need (chromium, ...) come first.
# TEST_WORKERS: pytest-xdist processes (default: one per core, at most 4); tests/conftest.py groups them.
TEST_WORKERS ?= auto
test: $(STAMP)
	bash ci/system-deps.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4

# Offline CPU demo: the CI-scale profile through the real stages, then the report. Its real 28×28 data is
# Debian's dataset-fashion-mnist: installed here when possible; otherwise download@fashion_mnist fetches
# it from torchvision's mirror (online), and offline the profile stops at once naming both ways out.
quick: $(STAMP)
	bash ci/system-deps.sh dataset-fashion-mnist || echo "[quick] going on without Debian's Fashion-MNIST"
	$(BIN)/python -m pixelzoo.profile quick

# Team MLflow server (PostgreSQL + artifacts proxied to a shared folder); settings in the script's header.
tracking-server: $(STAMP)
	PYTHON=$(abspath $(BIN))/python scripts/tracking-server.sh

lint: $(STAMP)
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
