# SBA Agentic — two commands: `make dev` (the whole system, locally) and `make test` (every test).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SBA_CACHE_DIR ?= $(HOME)/.cache/sba-agentic

.PHONY: help deps system-deps venv binaries crds lint typecheck importlint test test-unit test-integration test-e2e dev down bench clean

help:
	@echo "make dev    - bring up control plane, Postgres, Redis, operator, API and node agent"
	@echo "make test   - install everything needed, lint, type-check and run every test"
	@echo "make bench  - run the benchmarks (JSON to stdout)"

# Debian packages the stack needs (Redis; Go is on the machine image).
system-deps:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@command -v go >/dev/null || { echo "Go toolchain not found (needed to build the local control plane)"; exit 1; }

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip uv
	@$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	@touch $@

venv: $(STAMP)

# kube-apiserver, controller-manager, scheduler, etcd and kubectl, built once and cached.
binaries: venv
	@$(BIN)/python -m sba_devstack.binaries

deps: system-deps venv binaries

crds: venv
	$(BIN)/sba-agentic crds

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

importlint: venv
	$(BIN)/lint-imports

test: deps lint typecheck importlint
	$(BIN)/pytest -q -p no:cacheprovider --durations=15

test-unit: venv
	$(BIN)/pytest -q tests/unit

test-integration: deps
	$(BIN)/pytest -q tests/integration

test-e2e: deps
	$(BIN)/pytest -q tests/e2e

dev: deps
	$(BIN)/sba-agentic dev up

down: venv
	$(BIN)/sba-agentic dev down

bench: deps
	$(BIN)/python bench/run_latency.py

clean:
	rm -rf .dev .cache $(VENV)
