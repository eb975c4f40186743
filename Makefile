# The two commands of the README: `make demo` and `make test`. `make ui` opens the Dagster UI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OA_HOME ?= $(CURDIR)/.openaudience
DAGSTER_HOME ?= $(OA_HOME)/dagster

.PHONY: install demo test ui lock clean

# Pinned installs from requirements.lock (resolved from pyproject.toml by `make lock`).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/oa demo

test: install
	$(BIN)/ruff check orchestration tests connectors ml
	$(BIN)/python -m pytest

ui: install
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/python -c "from orchestration.run_nightly import ensure_dagster_home; ensure_dagster_home()"
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev -m orchestration.definitions -h 127.0.0.1 -p 3000

lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements.lock --python-version 3.11

clean:
	rm -rf $(OA_HOME) target logs
