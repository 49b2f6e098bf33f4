# pushpool — developer targets. Every target sets itself up: a fresh clone needs only Python 3.10+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-unit lint fmt clean validate build build-SharedLayer build-gcp reliability-report soak bench compat compat-aci compat-gcp compat-prefect docs compat-coiled

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,aws,azure,cli,modal,gcp]'
	touch $(STAMP)

BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -e '.[dev,aws,cli,bench]'
	# What the Lambda layer holds (the aws extra only), for the cold-start figures; pushpool itself comes from shared/.
	$(BENCH_VENV)/bin/pip install --quiet --target $(BENCH_VENV)/layer '.[aws]'
	rm -rf $(BENCH_VENV)/layer/pushpool $(BENCH_VENV)/layer/bin
	touch $(BENCH_STAMP)

# The tests' Prefect servers (tests/helpers.py server_python): prefect==3.8.8 on SQLAlchemy 2.1, where its SQLite server
# does not stall under polling as it does on 2.0 (docs/development.md). pushpool and the flows' runtime stay in .venv.
SERVER_VENV := .venv-server
SERVER_STAMP := $(SERVER_VENV)/.installed
$(SERVER_STAMP): pyproject.toml
	$(PYTHON) -m venv $(SERVER_VENV)
	$(SERVER_VENV)/bin/pip install --quiet --upgrade pip
	$(SERVER_VENV)/bin/pip install --quiet '.[test-server]'
	touch $(SERVER_STAMP)
# A database as a fresh server of that environment leaves it: every test server starts from a copy (tests/migrated_db.py).
MIGRATED_DB := $(SERVER_VENV)/migrated-prefect.db
$(MIGRATED_DB): $(STAMP) $(SERVER_STAMP)
	PUSHPOOL_TEST_SERVER_PYTHON=$(abspath $(SERVER_VENV))/bin/python $(BIN)/python -m tests.migrated_db $@

DOCS_VENV := .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.installed
$(DOCS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/pip install --quiet --upgrade pip
	$(DOCS_VENV)/bin/pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

setup: $(STAMP)  ## create .venv with pushpool, the test tools and a Prefect server (prefect==3.8.8)

demo: setup  ## run the push path end to end on a local Prefect server with the process backend
	$(BIN)/python examples/demo/run_demo.py

# Four pytest-xdist workers, each with a Prefect server and emulators of its own (tests/conftest.py); a file's tests
# stay on one worker in order (loadfile), files handed out in collection order, the longest first (LONGEST_FIRST in
# tests/conftest.py; xdist's own order starts the files with most tests first). On this 2-core machine 2 workers left
# the load average at 1.3-1.9 and took 11 min 49 s, 3 took 9 min 9 s (same head, back to back); 4 keep the middle of
# the run CPU-bound and took 8 min 19 s - 10 min 18 s in fresh clones,
# up to 10 min 46 s in local runs (2026-12-06; docs/development.md).
TEST_WORKERS ?= 4
test: setup $(SERVER_STAMP) $(MIGRATED_DB)  ## everything that runs here: unit, contract, integration (real Prefect server), e2e
	PUSHPOOL_TEST_SERVER_PYTHON=$(abspath $(SERVER_VENV))/bin/python PUSHPOOL_TEST_MIGRATED_DB=$(abspath $(MIGRATED_DB)) \
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-unit: setup  ## the fast subset, no servers
	$(BIN)/python -m pytest -q tests/unit

lint: setup  ## ruff
	$(BIN)/ruff check shared functions tests examples bench
	$(BIN)/ruff format --check shared functions tests examples bench

fmt: setup
	$(BIN)/ruff format shared functions tests examples bench
	$(BIN)/ruff check --fix shared functions tests examples bench

compat: setup $(BENCH_STAMP)  ## pushpool's ECS requests vs Prefect's ECS worker's for the same runs (docs/ecs-compat.md)
	PUSHPOOL_WORKER_PYTHON=$(abspath $(BENCH_VENV))/bin/python $(BIN)/python -m pytest -q tests/compat

AZURE_WORKER_VENV := .venv-compat-azure
AZURE_WORKER_STAMP := $(AZURE_WORKER_VENV)/.installed
$(AZURE_WORKER_STAMP): pyproject.toml
	$(PYTHON) -m venv $(AZURE_WORKER_VENV)
	$(AZURE_WORKER_VENV)/bin/pip install --quiet --upgrade pip
	$(AZURE_WORKER_VENV)/bin/pip install --quiet '.[aci-worker]'
	touch $(AZURE_WORKER_STAMP)

compat-aci: setup $(AZURE_WORKER_STAMP)  ## pushpool's ACI container groups vs Prefect's ACI worker's (docs/aci-compat.md)
	PUSHPOOL_AZURE_WORKER_PYTHON=$(abspath $(AZURE_WORKER_VENV))/bin/python $(BIN)/python -m pytest -q tests/compat/test_aci_vs_worker.py

# Prefect's Cloud Run v2 and v1 workers (prefect-gcp and its pins) in an environment of its own, for `make compat-gcp`.
GCP_WORKER_VENV := .venv-compat-gcp
GCP_WORKER_STAMP := $(GCP_WORKER_VENV)/.installed
$(GCP_WORKER_STAMP):
	$(PYTHON) -m venv $(GCP_WORKER_VENV)
	$(GCP_WORKER_VENV)/bin/pip install --quiet --upgrade pip
	$(GCP_WORKER_VENV)/bin/pip install --quiet 'prefect==3.8.8' 'fastapi<0.151' 'sqlalchemy>=2.0,<2.1' 'prefect-gcp==0.6.22'
	touch $(GCP_WORKER_STAMP)

compat-gcp: setup $(GCP_WORKER_STAMP)  ## pushpool's Cloud Run job bodies vs Prefect's cloud-run-v2 and v1 cloud-run workers' (docs/cloudrun-compat.md)
	PUSHPOOL_GCP_WORKER_PYTHON=$(abspath $(GCP_WORKER_VENV))/bin/python $(BIN)/python -m pytest -q tests/compat_gcp

# Prefect servers of other releases, for `make compat-prefect`: each in an environment of its own with the dependency
# versions of its release date (uv's --exclude-newer: an old Prefect with today's fastapi/SQLAlchemy does not start).
# uv itself comes from the package index into a small tool environment.
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
$(UV):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet 'uv==0.9.9'
# version:date -- the day after the version's upload to the package index.
PREFECT_COMPAT := 3.0.11:2024-10-26 3.4.25:2025-10-24 3.9.1:2026-10-31
PREFECT_COMPAT_STAMPS := $(foreach vd,$(PREFECT_COMPAT),.venv-prefect-$(word 1,$(subst :, ,$(vd)))/.installed)
.venv-prefect-%/.installed: | $(UV)
	rm -rf .venv-prefect-$*
	$(UV) venv --quiet --python $(PYTHON) .venv-prefect-$*
	$(UV) pip install --quiet --python .venv-prefect-$*/bin/python \
		--exclude-newer "$(word 2,$(subst :, ,$(filter $*:%,$(PREFECT_COMPAT))))T00:00:00Z" 'prefect==$*'
	touch $@

compat-prefect: setup $(PREFECT_COMPAT_STAMPS)  ## the push path end to end against Prefect 3.0.11, 3.4.25 and 3.9.1 servers
	PUSHPOOL_PREFECT_COMPAT="$(foreach vd,$(PREFECT_COMPAT),$(word 1,$(subst :, ,$(vd)))=$(abspath .venv-prefect-$(word 1,$(subst :, ,$(vd))))/bin/python)" \
		$(BIN)/python -m pytest -q tests/compat_prefect

# Prefect's Coiled worker (prefect-coiled, which submits with the coiled SDK's batch API) in an environment of its own,
# for `make compat-coiled`; the dependencies of coiled 1.135.6's release month (uv's --exclude-newer, as below).
COILED_WORKER_VENV := .venv-compat-coiled
COILED_WORKER_STAMP := $(COILED_WORKER_VENV)/.installed
$(COILED_WORKER_STAMP): | $(UV)
	rm -rf $(COILED_WORKER_VENV)
	$(UV) venv --quiet --python $(PYTHON) $(COILED_WORKER_VENV)
	$(UV) pip install --quiet --python $(COILED_WORKER_VENV)/bin/python --exclude-newer 2026-11-01T00:00:00Z \
		'prefect==3.8.8' 'prefect-coiled==0.0.4' 'coiled==1.135.6'
	touch $(COILED_WORKER_STAMP)

compat-coiled: setup $(COILED_WORKER_STAMP)  ## pushpool's Coiled job and cluster requests vs prefect-coiled's worker's (docs/coiled-compat.md)
	PUSHPOOL_COILED_WORKER_PYTHON=$(abspath $(COILED_WORKER_VENV))/bin/python $(BIN)/python -m pytest -q tests/compat_coiled

docs: $(DOCS_STAMP)  ## build the documentation site (mkdocs, strict: broken links fail) into build/site
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict

# The per-provider monitor ticks (section 5b) run in the test environment, which has every provider's SDK and emulator.
bench: setup $(BENCH_STAMP)  ## pushpool vs Prefect's ECS worker (moto + local Prefect): writes bench/results/<date>.md + PNG
	PUSHPOOL_BENCH_PROVIDERS_PYTHON=$(abspath $(VENV))/bin/python $(BENCH_VENV)/bin/python bench/run.py

reliability-report: setup  ## run the reliability scenarios and print lost/duplicated/stuck per scenario
	rm -f .reliability/report.json
	$(BIN)/python -m pytest -q tests/reliability tests/unit/test_fuzz_bad_input.py
	$(BIN)/python tests/reliability/print_report.py

soak: setup  ## the reliability scenarios at 5x scale and 10,000 fuzz cases per property
	rm -f .reliability/report.json
	PUSHPOOL_SOAK=5 PUSHPOOL_FUZZ_EXAMPLES=10000 $(BIN)/python -m pytest -q tests/reliability tests/unit/test_fuzz_bad_input.py
	$(BIN)/python tests/reliability/print_report.py

VALIDATE_VENV := .venv-validate
VALIDATE_STAMP := $(VALIDATE_VENV)/.installed
$(VALIDATE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VALIDATE_VENV)
	$(VALIDATE_VENV)/bin/pip install --quiet --upgrade pip
	$(VALIDATE_VENV)/bin/pip install --quiet "$$(sed -n 's/^validate = \["\(.*\)"\]$$/\1/p' pyproject.toml)"
	touch $(VALIDATE_STAMP)

validate: setup $(VALIDATE_STAMP)  ## cfn-lint on the AWS SAM template, checkov on the Azure ARM template and the GCP Terraform (offline)
	$(BIN)/cfn-lint infra/template.yaml
	$(VALIDATE_VENV)/bin/checkov -f infra/azure/azuredeploy.json --framework arm --compact --quiet --skip-download
	$(VALIDATE_VENV)/bin/checkov -d infra/gcp --framework terraform --compact --quiet --skip-download

GCP_BUILD := .gcp-build
build-gcp: setup  ## the Google Cloud functions' source archive: main.py, pushpool and requirements.txt (infra/gcp)
	rm -rf $(GCP_BUILD) && mkdir -p $(GCP_BUILD)/src
	cp functions/gcp/main.py $(GCP_BUILD)/src/
	cp -r shared/pushpool $(GCP_BUILD)/src/pushpool
	find $(GCP_BUILD)/src -name __pycache__ -prune -exec rm -rf {} +
	$(BIN)/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
		print('\n'.join(p['dependencies'] + p['optional-dependencies']['gcp']))" > $(GCP_BUILD)/src/requirements.txt
	cd $(GCP_BUILD)/src && $(abspath $(BIN))/python -m zipfile -c ../functions.zip .
	@du -sh $(GCP_BUILD)/functions.zip

LAYER := .aws-sam/build/SharedLayer
build: setup  ## Lambda artefacts without Docker: the shared layer (arm64 wheels, AWS extra only) and the functions
	rm -rf .aws-sam/build .aws-sam/wheels
	$(BIN)/pip wheel --quiet --no-deps -w .aws-sam/wheels .
	$(BIN)/pip install --quiet --target $(LAYER)/python --platform manylinux2014_aarch64 --implementation cp \
		--python-version 3.12 --only-binary=:all: "$$(ls .aws-sam/wheels/pushpool-*.whl)[aws]"
	for fn in submit monitor provision; do mkdir -p .aws-sam/build/$$fn && cp functions/$$fn/app.py .aws-sam/build/$$fn/; done
	cd $(LAYER) && $(abspath $(BIN))/python -m zipfile -c ../SharedLayer.zip python
	for fn in submit monitor provision; do (cd .aws-sam/build/$$fn && $(abspath $(BIN))/python -m zipfile -c ../$$fn.zip app.py); done
	@du -sh .aws-sam/build/*.zip

build-SharedLayer:  ## called by `sam build` (BuildMethod: makefile)
	pip install ".[aws]" -t "$(ARTIFACTS_DIR)/python"

clean:
	rm -rf $(VENV) $(SERVER_VENV) $(BENCH_VENV) $(VALIDATE_VENV) $(AZURE_WORKER_VENV) $(GCP_WORKER_VENV) $(COILED_WORKER_VENV) $(UV_VENV) .venv-prefect-* $(GCP_BUILD) build *.egg-info shared/*.egg-info .pytest_cache .aws-sam
