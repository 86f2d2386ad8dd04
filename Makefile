# heat-platform: the README's commands. `make demo` and `make test` work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)

export HEAT_PLATFORM_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(HEAT_PLATFORM_HOME)/dagster_home
export DDE_BACKEND := pytorch
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := True
export DO_NOT_TRACK := 1

.PHONY: demo test test-fast dev serve bench lint format lock clean-data env system-deps

# The environment: torch from the local CPU wheel first, then everything else pinned.
$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

env: $(STAMP)

# Runs the whole asset graph end to end on the built-in synthetic experiment.
demo: $(STAMP)
	$(BIN)/heat-platform demo

# Debian packages the tests use, installed when missing (CI runs as root; .ci/run calls this):
# PostgreSQL (the deploy tests run throwaway servers; no cluster is created) and HAProxy (in
# front of the model servers in `heat-platform serve`), chromium (the browser test). The list
# is in .ci/system-deps.
system-deps:
	@.ci/system-deps

# Runs lint, the import contracts and the whole test suite (CI calls this through .ci/run).
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup --no-loadscope-reorder --durations=20

# The edit-test loop: what needs no daemon, server or training (under 90 s on 2 cores).
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 -m "not slow and not server" -q

# The Dagster UI (webserver + daemon) on the same instance the demo used, and the MLflow UI on
# the same store (HEAT_PLATFORM_MLFLOW_UI_URL, default http://127.0.0.1:5000), where the UI's
# MLflow links, Data Docs and Evidently reports open; stopped with it.
dev: $(STAMP)
	$(BIN)/heat-platform init
	$(BIN)/heat-platform mlflow-ui & trap 'kill $$! 2>/dev/null' EXIT; \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Serves the champions on 127.0.0.1:3100 behind HAProxy (apt-get install haproxy).
serve: $(STAMP)
	$(BIN)/heat-platform serve

bench: $(STAMP)
	$(BIN)/python bench/forward_solver.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/pinn_accuracy.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/serving_faults.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/step_costs.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format heat_platform heat_platform_tests bench bentos

# Re-pin constraints.txt from the current environment.
lock: $(STAMP)
	{ echo "# Exact versions proven to co-install on the target machine (Python 3.11, CPU)."; \
	  echo "# Regenerate with: make lock (after changing pyproject.toml)."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v -i '^heat-platform' | sed 's/^torch==2.13.0+cpu/torch==2.13.0/'; } > constraints.txt

clean-data:
	rm -rf $(HEAT_PLATFORM_HOME)
