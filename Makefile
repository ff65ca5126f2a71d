# The only interface people and scripts need. Every target sets up what it needs first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := $(CURDIR)/.venv
STACK_DIR ?= $(CURDIR)/.stack
export STACK_DIR
# `make dag` reads these from the environment so JSON never passes through make's own quoting.
export DAG CONF
PYTEST_ARGS ?=

.PHONY: help venv stack airflow run dag test unit lint bench airflow-down stack-down clean

help:
	@echo "make run          set up the local stack and a real Airflow, trigger build_images for main, follow it"
	@echo "make test         set up the local stack and run the whole test suite"
	@echo "make unit         the fast tier: tests that need no engine or registry"
	@echo "make dag DAG=<dag_id> CONF='<json>'   one DAG run in-process (airflow dags test) on the local stack"
	@echo "make lint         ruff and the layer contract (import-linter)"
	@echo "make bench        the benchmarks (after make run); each ends with a RESULT line"
	@echo "make airflow-down stop the stack's Airflow (api-server, scheduler, dag-processor, triggerer, PostgreSQL)"
	@echo "make stack-down   stop what the stack started (data stays in .stack/)"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,stack]'
	# The build leaves plugins/*.egg-info behind; plugins/ is on Airflow's sys.path, so its copy of the
	# airflow.plugins entry point would register the plugin twice. The installed dist-info is enough.
	rm -rf plugins/*.egg-info
	touch $@

stack: venv
	AIRFLOW_BIN=$(VENV)/bin/airflow bash include/stack/up.sh

# The stack's real Airflow (started once, reused by the next `make run`); the run is triggered through
# its REST API and followed here. `make dag` is the quick in-process path.
airflow: stack
	source $(STACK_DIR)/env && $(VENV)/bin/python include/stack/airflow_server.py up

run: airflow
	source $(STACK_DIR)/env && $(VENV)/bin/python include/stack/airflow_server.py trigger build_images '{"branch": "main"}'

dag: stack
	@test -n "$${DAG:-}" || { echo "usage: make dag DAG=<dag_id> CONF='<json>'" >&2; exit 2; }
	bash include/stack/run-dag.sh

# Lint first: a broken layer contract fails in seconds, before the stack is set up. The suite runs as three
# pytest processes at once on the one stack (tests/run_streams.py says why and how they stay apart);
# `pytest` alone runs the same tests in one.
test: lint stack
	source $(STACK_DIR)/env && $(VENV)/bin/python tests/run_streams.py --durations=25 $(PYTEST_ARGS)

unit: venv
	$(VENV)/bin/python -m pytest -m "not stack" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check plugins dags tests benchmarks include
	# The layer contract (pyproject.toml [tool.importlinter]; README "Architecture").
	cd plugins && $(VENV)/bin/lint-imports ../pyproject.toml

bench: stack
	source $(STACK_DIR)/env && for script in benchmarks/*.py; do $(VENV)/bin/python "$$script"; done

airflow-down:
	test ! -x $(VENV)/bin/python || $(VENV)/bin/python include/stack/airflow_server.py down

stack-down: airflow-down
	bash include/stack/down.sh

clean: stack-down
	bash include/stack/down.sh --purge
