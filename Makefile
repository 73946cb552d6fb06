# Ferry: declarative live migration of containers in Kubernetes.
# `make help` lists the targets. Everything that needs root (the local cluster,
# the integration and e2e tiers, the demo) says so in its help line.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HELM ?= $(or $(FERRY_CACHE),/var/cache/ferry)/bin/helm
PYTEST_ARGS ?=

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

# One distribution per component folder (see pyproject.toml), all installed editable.
COMPONENTS := api wire operator node-helper plugin cluster

$(BIN)/ferry-cluster: pyproject.toml $(addsuffix /pyproject.toml,$(COMPONENTS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(addprefix -e ./,$(COMPONENTS)) --group dev
	@touch $@

.PHONY: dev
dev: $(BIN)/ferry-cluster ## Create the virtualenv with the project and its dev tools.

.PHONY: host-deps
host-deps: ## Install the host packages the local cluster needs (Debian, root).
	./hack/install-host-deps.sh

.PHONY: lint
lint: dev ## ruff, mypy --strict, import-linter's layers, module sizes, CRDs in step with the models, helm lint.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python hack/check-module-sizes.py
	$(BIN)/python -m ferry_api.crdgen --check --out crds
	diff -r crds charts/ferry/crds-src
	@if [ -x $(HELM) ]; then $(HELM) lint --strict charts/ferry; else echo "helm not built yet: make prepare"; fi

.PHONY: crds
crds: dev ## Regenerate crds/ from the API models (and the chart's copy in charts/ferry/crds-src).
	$(BIN)/python -m ferry_api.crdgen --out crds
	cp crds/*.yaml charts/ferry/crds-src/

.PHONY: format
format: dev ## Apply ruff's fixes and formatting.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

##@ Tests

.PHONY: prepare
prepare: host-deps dev ## Build (once, cached) kube-apiserver, etcd, kubectl, helm and the node root filesystem (root).
	$(BIN)/ferry-cluster prepare

.PHONY: test
test: prepare ## Everything, from a fresh machine: unit, integration and e2e (root).
	$(BIN)/pytest tests/unit tests/integration tests/e2e $(PYTEST_ARGS)

.PHONY: unit
unit: prepare ## Unit tests only (the chart's need helm, which prepare builds).
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: integration
integration: prepare ## Integration tests against a real kube-apiserver (root).
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

.PHONY: e2e
e2e: prepare ## End-to-end tests on the simulated nodes (root).
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

##@ Local cluster

.PHONY: images
images: prepare ## Build the operator and node-helper images from their Containerfiles, no registry (root).
	$(BIN)/ferry-cluster up
	$(BIN)/ferry-cluster image ferry

.PHONY: demo
demo: prepare ## Local cluster, two nodes, a running container moved between them (root).
	$(BIN)/python -m ferry_cluster.demo

.PHONY: bench
bench: prepare ## Performance report: ContainerMigration vs manual export/scp/import, 0/256 MiB/1 GiB; PodMigration vs upstream's manual procedure, 0/256 MiB (root).
	$(BIN)/python -m ferry_cluster.podbench --keep --output bench-pod-results.json
	$(BIN)/python -m ferry_cluster.bench --output bench-results.json --plot bench-downtime.png

.PHONY: bench-memory
bench-memory: prepare ## make bench's methods plus PageServer over plain TCP, 64 MiB and 1 GiB (root).
	$(BIN)/python -m ferry_cluster.bench --methods manual,ferry,pageserver,plain --sizes 64MiB,1GiB \
		--output bench-memory-results.json --plot bench-memory.png

.PHONY: cluster-up
cluster-up: prepare ## Start the local cluster (root).
	$(BIN)/ferry-cluster up

.PHONY: cluster-down
cluster-down: dev ## Stop the local cluster and remove all it made (root).
	$(BIN)/ferry-cluster down

.PHONY: clean
clean: ## Remove the virtualenv and caches in the tree (not the build cache).
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
