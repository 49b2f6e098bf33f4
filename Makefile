# pushpool — developer targets. Every target sets itself up: a fresh clone needs only Python 3.10+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-unit lint fmt clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,aws]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with pushpool, the test tools and a Prefect server (prefect==3.8.8)

demo: setup  ## run the push path end to end on a local Prefect server with the process backend
	$(BIN)/python examples/demo/run_demo.py

test: setup  ## everything that runs here: unit, contract, integration (real Prefect server), e2e
	$(BIN)/python -m pytest -q

test-unit: setup  ## the fast subset, no servers
	$(BIN)/python -m pytest -q tests/unit

lint: setup  ## ruff
	$(BIN)/ruff check shared functions tests examples bench
	$(BIN)/ruff format --check shared functions tests examples bench

fmt: setup
	$(BIN)/ruff format shared functions tests examples bench
	$(BIN)/ruff check --fix shared functions tests examples bench

clean:
	rm -rf $(VENV) build *.egg-info shared/*.egg-info .pytest_cache
