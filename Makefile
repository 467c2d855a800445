# Quickstart: `make dev` (serve at 127.0.0.1:8787 on the SQLite default) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP := $(BIN)/pip --disable-pip-version-check -q

.PHONY: install dev test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

dev: install
	$(BIN)/trex dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q

test: lint typecheck unit

bench: install
	$(BIN)/python -m bench.proxy_overhead

clean:
	rm -rf $(VENV) .wrangler .pytest_cache .mypy_cache .ruff_cache
