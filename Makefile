# rankflow: `make run` sets up from a fresh clone and runs the main job; `make test` runs the tests.
# All generated state (the venv included) lives under .state/ (git-ignored); the pipeline's own
# state can be moved with RANKFLOW_HOME.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .state/venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
# `make test` runs on pytest-xdist workers, one module (or one shared state) per work unit: the
# scheduler is tests/conftest.py's (pytest_xdist_make_scheduler); TEST_WORKERS=0 runs in-process.
TEST_WORKERS ?= 2

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: help install run test test-fast test-unit test-integration lint format lock bench bench-models bench-warm-start bench-drift canary demo docs clean clean-state \
	browser-deps redis-deps mlflow-ui serve bench-serving soak

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(INSTALLED): requirements.lock pyproject.toml
	@mkdir -p .state
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

install: $(INSTALLED) ## Create .state/venv from requirements.lock (only when the lock changed)

run: $(INSTALLED) ## Set up if needed, then run the main job on the embedded defaults
	$(PY) -m rankflow run

test: $(INSTALLED) browser-deps redis-deps ## Run every test (unit, integration, e2e, server)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The inner loop: every test not marked slow, e2e or server (pyproject.toml lists the markers);
# `make test` still runs them all.
FAST_TESTS := not slow and not e2e and not server

test-fast: $(INSTALLED) ## Run the unit tests and the fast integration tests (the inner loop, < 2 min)
	$(PY) -m pytest -n $(TEST_WORKERS) -m "$(FAST_TESTS)" $(PYTEST_ARGS)

test-unit: $(INSTALLED) ## Run the unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(INSTALLED) ## Run the integration tests only (real dbt, Feast, DuckDB)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: $(INSTALLED) ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED) ## ruff autofix + format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: ## Re-resolve requirements.lock from pyproject.toml (needs uv; torch pinned to the on-disk CPU wheel)
	uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--find-links /opt/wheels -P 'torch==2.13.0+cpu' -o requirements.lock

# The browser test (tests/e2e/test_mlflow_ui.py) drives Debian's chromium through Playwright for
# Python (in the lock); Playwright's own browser download is never used.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell test "$$(id -u)" -eq 0 || echo sudo)

browser-deps: ## Install Debian's chromium for the browser test (only if it is missing)
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium; }

# The server-profile tests (tests/server) start a real redis-server (Debian's 7.0) and
# PostgreSQL 15 (on these machines already) on loopback, and stop them afterwards; so does the
# serving benchmark (bench/bench_serving.py) for the Redis online store.
REDIS_SERVER := /usr/bin/redis-server

redis-deps: ## Install Debian's redis-server for the server-profile tests (only if it is missing)
	@test -x $(REDIS_SERVER) || { $(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y redis-server; }

# The scoring service (docs/serving.md): loopback by default; RANKFLOW_SERVICE_URL moves it.
serve: $(INSTALLED) ## Start the scoring service (POST /score, /metrics) on http://127.0.0.1:8080
	$(PY) -m rankflow serve

# The canary (docs/canary.md): a warm-started challenger, offline gate, canary phase.
canary: $(INSTALLED) ## Run the canary flow once: challenger from @champion -> gates -> canary phase -> promote / reject
	$(PY) -m rankflow canary

demo: $(INSTALLED) ## The drift scenario after `make run`: drift, gap check, canary promotion, 3 failure cases, rollback
	$(PY) -m rankflow demo

# The soak (docs/benchmarks.md "Soak of the daily schedule"): its own state under .state/soak.
SOAK_ARGS ?=
soak: $(INSTALLED) ## Soak of the daily schedule: 14 simulated days through `rankflow serve`, faults, drift from day 10; invariants PASS/FAIL
	$(PY) -m rankflow --home $(RANKFLOW_STATE)/soak soak $(SOAK_ARGS)

bench-serving: $(INSTALLED) redis-deps ## /score latency and throughput vs the raw Feast + model path, SQLite and Redis
	$(PY) bench/bench_serving.py

MLFLOW_PORT ?= 5000
mlflow-ui: $(INSTALLED) ## Serve the MLflow UI over the state dir on http://127.0.0.1:$(MLFLOW_PORT)
	$(PY) -m rankflow mlflow-ui --port $(MLFLOW_PORT)

# Prefect (docs/operations.md): a server, a process worker, the deployments
# of prefect.yaml. Prefect's home (database, results, profiles) is the state dir's prefect/.
.PHONY: prefect-server prefect-worker deploy
RANKFLOW_STATE := $(or $(RANKFLOW_HOME),$(CURDIR)/.state)
PREFECT_PORT ?= 4200
PREFECT_POOL := rankflow-process
PREFECT_CLI := PREFECT_HOME=$(RANKFLOW_STATE)/prefect PYTHONPATH=$(CURDIR) $(VENV)/bin/prefect
prefect-server prefect-worker deploy: export PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api

prefect-server: $(INSTALLED) ## Start a Prefect server on http://127.0.0.1:$(PREFECT_PORT) (UI and API)
	$(PREFECT_CLI) server start --host 127.0.0.1 --port $(PREFECT_PORT)

prefect-worker: $(INSTALLED) ## Start a worker of the rankflow-process pool (creates the pool if needed)
	@$(PREFECT_CLI) work-pool inspect $(PREFECT_POOL) >/dev/null 2>&1 || \
		$(PREFECT_CLI) work-pool create $(PREFECT_POOL) --type process
	$(PREFECT_CLI) worker start --pool $(PREFECT_POOL) --type process

deploy: $(INSTALLED) ## Create or update the deployments of prefect.yaml on the Prefect server
	@$(PREFECT_CLI) work-pool inspect $(PREFECT_POOL) >/dev/null 2>&1 || \
		$(PREFECT_CLI) work-pool create $(PREFECT_POOL) --type process
	$(PREFECT_CLI) --no-prompt deploy --all

bench: $(INSTALLED) ## Run the pipeline benchmarks under bench/ (on demand; prints ratios)
	$(PY) bench/bench_pipeline.py
	$(PY) bench/bench_incremental.py

bench-models: $(INSTALLED) ## Model benchmarks on the 1M pipeline training set: oracle bound, quality with/without ids and crosses (5 seeds), warm start, speed (~60 min)
	mkdir -p .state/bench
	$(PY) bench/oracle_bound.py --rows 1000000 --out .state/bench/oracle_bound.json
	$(PY) bench/bench_models.py --source feast_source:load --rows 1000000 --seeds 5 \
		--bound .state/bench/oracle_bound.json --variant 'base=' \
		--variant 'user_ids=features.categorical.user_id:{encoding: hash, buckets: 50000, embedding_dim: 16, min_count: 2}' \
		--variant 'no_crosses=features.crosses:[]' --only warm,speed

bench-warm-start: $(INSTALLED) ## Warm vs cold start after a concept drift, 5 seeds, distill 0 and 0.3, mean +- SE (goal: 1/3 of the steps, no AUC loss; ~6 min at load 5)
	mkdir -p .state/bench
	$(PY) bench/bench_warm_start.py --seeds 5 --rows 100000 --distill 0,0.3 --out .state/bench/warm_start.json

bench-drift: $(INSTALLED) ## The drift check's FAIL rate on 20 simulated drift-free served days (~8 min with the first build)
	mkdir -p .state/bench
	$(PY) bench/bench_drift_false_alarms.py --days 20 --sim-days 61 --out .state/bench/drift.json

docs: $(INSTALLED) ## Generate dbt docs (written to $$RANKFLOW_HOME/dbt/docs)
	$(PY) -m rankflow dbt-docs

clean-state: ## Delete generated pipeline state (keeps the venv)
	find .state -mindepth 1 -maxdepth 1 ! -name venv -exec rm -rf {} +

clean: ## Delete all of .state, the venv included
	rm -rf .state
