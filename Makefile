# The two commands of the README: `make demo` and `make test`. `make ui` opens the Dagster UI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OA_HOME ?= $(CURDIR)/.openaudience
DAGSTER_HOME ?= $(OA_HOME)/dagster

.PHONY: install demo lint test test-fast test-spark ui lock clean

# Pinned installs from requirements.lock (resolved from pyproject.toml by `make lock`).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/oa demo

lint: install
	$(BIN)/ruff check openaudience orchestration tests connectors ml
	$(BIN)/lint-imports --no-cache

# Both use every core (pytest-xdist; PYTEST_WORKERS=0 runs in one process): a module's tests stay
# on one worker, longest modules first; the shared builds and the PostgreSQL cluster are made once
# (tests/conftest.py).
PYTEST_WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder
# Our own code as bytecode before the tests start their `oa`, dbt and Dagster processes: with
# PYTHONDONTWRITEBYTECODE set, each of them would compile it again (up-to-date files are skipped).
COMPILE := $(BIN)/python -m compileall -q -j 0 openaudience orchestration connectors ml tests >/dev/null

# the 40 slowest steps (setup and call apart) close the output: where the next minute is
test: lint
	$(COMPILE)
	$(PYTEST) -m "not spark" --durations=40

# The edit loop: everything but the tests that build the dbt project (`-m slow`), in about 2 minutes.
test-fast: lint
	$(COMPILE)
	$(PYTEST) -m "not slow and not spark" -q

# The project on Apache Spark (local mode, Java 17) against DuckDB: one process, so one Spark
# session serves every test (tests/test_spark.py). About 5 minutes; .ci/run calls it after make test.
test-spark: install
	$(COMPILE)
	$(BIN)/python -m pytest -n 0 -m spark --durations=10

# The instance and the dbt manifest first: loading the code location runs no dbt.
ui: install
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/python -m orchestration.prepare
	VIRTUAL_ENV=$(CURDIR)/$(VENV) DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dg dev -h 127.0.0.1 -p 3000

lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra spark -o requirements.lock --python-version 3.11

clean:
	rm -rf $(OA_HOME) target logs
