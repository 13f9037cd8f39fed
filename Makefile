# One place for what the README tells you to run, and what CI runs.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup demo batch-demo test lint check wheel-check soak bench

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

# The package as a user gets it: the wheel, installed alone in a fresh venv (SQLite, no
# psycopg), then `onceq --version`, `onceq demo`, and the one line that asks for the
# postgres extra. CI runs it after `check`.
WHEEL_DIR := build/wheel-check
wheel-check: setup
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)
	$(BIN)/python -m build --wheel --outdir $(WHEEL_DIR)/dist . > $(WHEEL_DIR)/build.log
	$(PYTHON) -m venv $(WHEEL_DIR)/venv
	$(WHEEL_DIR)/venv/bin/pip install -q $(WHEEL_DIR)/dist/onceq-*.whl
	cd $(WHEEL_DIR) && venv/bin/onceq --version
	cd $(WHEEL_DIR) && venv/bin/onceq demo --pages 12
	cd $(WHEEL_DIR) && ! venv/bin/python -c "import psycopg" 2>/dev/null
	cd $(WHEEL_DIR) && venv/bin/onceq jobs --url postgresql://127.0.0.1:1/x 2>&1 \
		| grep -q "pip install 'onceq\[postgres\]'"
	rm -rf $(WHEEL_DIR)

# The fault-injection tier at soak length (minutes to hours; not part of `check`).
soak: setup
	ONCEQ_SOAK=1 $(BIN)/pytest -m chaos

bench: setup
	$(BIN)/onceq bench
