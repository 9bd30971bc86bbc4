# Two commands: `make run` sets up and serves jobq; `make test` sets up and runs every test.
# Setting up installs jobq itself into .venv (editable, with the server's extra), so .venv/bin/jobq exists.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint setup

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml requirements.txt requirements-server.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt -e '.[server]'
	touch $@

# the Node Faktory client the Faktory protocol tests drive (tests/faktory_node), from its lock file
NODE_TESTS := tests/faktory_node
$(NODE_TESTS)/node_modules/.package-lock.json: $(NODE_TESTS)/package-lock.json
	cd $(NODE_TESTS) && npm ci --no-audit --no-fund --loglevel=error

setup: $(VENV)/.installed

run: setup
	$(BIN)/python main.py $(ARGS)

test: setup $(NODE_TESTS)/node_modules/.package-lock.json
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
