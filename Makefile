# Common commands. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint format dev bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Sync the sample district (initial drop, then maintenance) on the embedded SQLite default.
demo: install
	$(BIN)/roster-sync demo

## The whole test suite (needs PostgreSQL at 127.0.0.1:5432, see README), one worker
## per core (pytest-xdist): every test has its own database, folders and ports.
test: install
	$(BIN)/pytest -n auto

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## The Dagster UI on http://127.0.0.1:3000, on a temporary instance. It runs from a
## scratch folder because `dagster dev` would otherwise take the production
## dagster.yaml at the repository root (Postgres from DAGSTER_PG_*) as its instance.
dev: install
	mkdir -p .roster_state/dagster_dev
	cd .roster_state/dagster_dev && ../../$(BIN)/dagster dev -w ../../workspace.yaml

clean:
	rm -rf .roster_state .pytest_cache .ruff_cache
