# SBA Agentic — two commands: `make dev` (the whole system, locally) and `make test` (every test).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SBA_CACHE_DIR ?= $(HOME)/.cache/sba-agentic

.PHONY: help deps system-deps venv binaries agui-client go-programs go-test crds chart chart-sync helm helm-path lint typecheck importlint test test-unit test-integration test-e2e dev down bench clean

help:
	@echo "make dev    - bring up control plane, Postgres, Redis, operator, API and node agent"
	@echo "make test   - install everything needed, lint, type-check and run every test"
	@echo "make bench  - run the benchmarks (JSON to stdout)"
	@echo "make chart  - sync the chart's CRDs from crds/, then helm lint + helm template"

# Debian packages the stack and tests need (Redis; Node for the AG-UI client test; Go is on
# the machine image).
system-deps:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@command -v npm >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; }
	@command -v go >/dev/null || { echo "Go toolchain not found (needed to build the local control plane)"; exit 1; }

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip uv
	@# Bytecode compiled once here: every tool pod of the dev node is a fresh interpreter,
	@# and with PYTHONDONTWRITEBYTECODE each would otherwise compile pydantic from source.
	@$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev]'
	@touch $@

venv: $(STAMP)

# kube-apiserver, controller-manager, scheduler, etcd and kubectl, built once and cached.
binaries: venv
	@$(BIN)/python -m sba_devstack.binaries

# The official AG-UI client, for the e2e test that drives the API with it.
AGUI_CLIENT := tests/e2e/agui_client
$(AGUI_CLIENT)/node_modules/.installed: $(AGUI_CLIENT)/package.json $(AGUI_CLIENT)/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found (needed for the AG-UI client test)"; exit 1; }
	@cd $(AGUI_CLIENT) && npm ci --no-audit --no-fund --loglevel=error >/dev/null
	@touch $@

agui-client: system-deps $(AGUI_CLIENT)/node_modules/.installed

# Go programs: the static tool entrypoint `sba-step` (into the venv's bin, which the dev
# node serves as the tool runtime image) and the Go example tool. Stdlib only: no downloads.
ENTRYPOINT_SRC := tool-images/entrypoint
WORD_STATS_SRC := examples/tools/word-stats
GO_BUILD := CGO_ENABLED=0 go build -trimpath -ldflags="-s -w"
$(BIN)/sba-step: $(STAMP) $(wildcard $(ENTRYPOINT_SRC)/*.go) $(ENTRYPOINT_SRC)/go.mod
	@cd $(ENTRYPOINT_SRC) && $(GO_BUILD) -o $(CURDIR)/$@ .
$(WORD_STATS_SRC)/bin/word-stats: $(wildcard $(WORD_STATS_SRC)/*.go) $(WORD_STATS_SRC)/go.mod
	@cd $(WORD_STATS_SRC) && $(GO_BUILD) -o bin/word-stats .

go-programs: $(BIN)/sba-step $(WORD_STATS_SRC)/bin/word-stats

go-test:
	@cd $(ENTRYPOINT_SRC) && go vet ./... && go test -count=1 ./...
	@cd $(WORD_STATS_SRC) && go vet ./... && go test -count=1 ./...

deps: system-deps venv binaries agui-client go-programs

crds: venv
	$(BIN)/sba-agentic crds

# Helm, built from its Go module once and cached (the -X flags are Helm's own release
# flags: its version, and the Kubernetes version `helm template` and lint assume).
HELM_VERSION ?= v3.20.2
HELM_KUBE_MINOR ?= 35
HELM := $(SBA_CACHE_DIR)/helm-$(HELM_VERSION)/helm
CHART := charts/sba-agentic

$(HELM):
	@command -v go >/dev/null || { echo "Go toolchain not found (needed to build helm)"; exit 1; }
	@mkdir -p $(dir $@)
	GOBIN=$(abspath $(dir $@)) CGO_ENABLED=0 go install -ldflags "-s -w \
	  -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
	  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_KUBE_MINOR) \
	  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
	  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_KUBE_MINOR)" \
	  helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

helm: $(HELM)

# Prints the helm binary's path (tests/integration/test_chart.py builds it through this).
helm-path: $(HELM)
	@echo $(HELM)

# crds/ is the one source: its CRDs become the chart's crds/, its admission policies the
# chart's files/admission/ (templated by templates/admission.yaml).
chart-sync:
	@for f in crds/*.yaml; do \
	  case "$$(basename $$f)" in \
	    admission-*) cp $$f $(CHART)/files/admission/ ;; \
	    *) cp $$f $(CHART)/crds/ ;; \
	  esac; \
	done

chart: chart-sync $(HELM)
	$(HELM) lint --strict $(CHART)
	$(HELM) template sba-agentic $(CHART) --namespace sba-system --include-crds >/dev/null
	@echo "chart OK: $$($(HELM) version --short)"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

importlint: venv
	$(BIN)/lint-imports

test: deps lint typecheck importlint go-test
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
	$(BIN)/python bench/token_latency.py
	$(BIN)/python bench/api_throughput.py
	$(BIN)/python bench/sse_fanout.py
	$(BIN)/python bench/run_throughput.py
	$(BIN)/python bench/tool_startup.py

clean:
	rm -rf .dev .cache $(VENV)
