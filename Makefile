# The README's two commands: `make demo` and `make test`. Both set up everything they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test unit statemachine integration lint typecheck sam-check bench system-deps venv clean local-up local-down

demo: system-deps venv  ## a real rotation over a PostgreSQL primary and 2 replicas, then a failing one with rollback
	$(BIN)/python -m rotator.demo

test: system-deps venv lint typecheck  ## the whole suite: lint, types, unit, state machine and integration tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

statemachine: venv
	$(BIN)/python -m pytest tests/statemachine $(PYTEST_ARGS)

integration: system-deps venv
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

sam-check: $(SAM_VENV)/.installed  ## sam validate --lint, asl-validator, sam build (python3.13, arm64)
	bash scripts/sam-check.sh

bench: system-deps venv  ## rotation latency over a real cluster; prints figures, writes benchmarks/results/
	$(BIN)/python benchmarks/bench_rotation.py

local-up: system-deps venv
	$(BIN)/rotator local up

local-down: venv
	$(BIN)/rotator local down

system-deps:
	@bash scripts/install-system-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml functions/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

$(SAM_VENV)/.installed:
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --upgrade pip
	# Its own virtualenv: next to moto[all], pip resolves an old SAM CLI.
	$(SAM_VENV)/bin/python -m pip install -q "aws-sam-cli==1.170.0"
	touch $@

clean:
	-$(BIN)/rotator local down 2>/dev/null
	rm -rf .aws-sam .rotator .pytest_cache .mypy_cache .ruff_cache
