# Two commands for a fresh machine (Python 3.11+ and the package registries):
#   make run    install everything, serve authql on 127.0.0.1:8000 (embedded SQLite)
#   make test   install everything, lint, run the whole test suite
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: install run test lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

run: install
	$(BIN)/authql serve --host 127.0.0.1 --port 8000

test: install
	bash .ci/system-packages.sh
	$(BIN)/ruff check authql tests bench
	$(BIN)/ruff format --check authql tests bench
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check authql tests bench
	$(BIN)/ruff format --check authql tests bench

format: install
	$(BIN)/ruff format authql tests bench
	$(BIN)/ruff check --fix authql tests bench

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
