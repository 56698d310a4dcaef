# Two entry points: `make run` (main job) and `make test` (the test suite).
# Both create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,tryton]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/crmbench run --report reports/latest

lint: $(STAMP)
	$(BIN)/ruff check bench reference_impl tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) fixtures/data
