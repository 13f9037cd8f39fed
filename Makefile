# One place for what the README tells you to run, and what CI runs.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup demo batch-demo test lint check soak bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,postgres,dashboard]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/onceq demo

# A batch of code tasks in git worktrees, merged once each (examples/batch).
batch-demo: setup
	$(BIN)/python examples/batch/demo.py

lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup
	$(BIN)/pytest

# What CI runs: lint, types, and the whole test suite (PostgreSQL tests included).
check: lint test

# The fault-injection tier at soak length (minutes to hours; not part of `check`).
soak: setup
	ONCEQ_SOAK=1 $(BIN)/pytest -m chaos

bench: setup
	$(BIN)/onceq bench
