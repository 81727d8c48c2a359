# tlbench — every target depends on `setup`, which builds .venv once (and again when pyproject.toml changes).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp records the checkout the editable package was installed from ("source=<path>"). A .venv
# shared by several checkouts (a link to another checkout's) is never re-installed from this one, which
# would silently point the other checkout's `tlbench` at this one's source: see `setup` below.
STAMP := $(VENV)/.installed
VENV_OWNER = sed -n 's/^source=//p' '$(STAMP)' 2>/dev/null
VENV_TAKEOVER ?=
# torch/torchvision releases that exist for this platform (see README, "Installation").
ifeq ($(shell uname -m),aarch64)
TORCH_PINS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
endif

ARGS ?=
SWEEP ?=
DATA ?=
CLASS_MAP ?=
WORKERS ?= auto
STORAGE ?=
STUDY ?=
BACKBONES ?=
PYTEST_ARGS ?=
PORT ?=
UI_PORT ?= 5000
DASHBOARD_PORT ?= 8080
LIVE ?=

.PHONY: help setup train sweep report ui dashboard bench gpu-check test test-fast lint format clean screen

help:
	@echo "make setup | train ARGS='k=v ...' | sweep [SWEEP=name | DATA=folder [CLASS_MAP='{...}']] [ARGS='k=v ...'] [WORKERS=n] [STORAGE=url] | report [STUDY=name]"
	@echo "make screen [DATA=folder] [BACKBONES=a,b,c] [CLASS_MAP='{ants: [ant], bees: [bee]}'] [STUDY=name]"
	@echo "make ui [PORT=5000] | dashboard [STUDY=name] [LIVE=1] [PORT=8080] | bench [ARGS='--only loaded --repeats 3'] | gpu-check | test | lint | clean"
	@echo "make mlflow-server BACKEND=postgresql://… [ARTIFACTS=dir]   (see README, \"Several machines\")"

# A .venv installed from another checkout that still exists: stop with a message (running its package
# here would run that checkout's code; re-installing would re-point it). From a checkout that is gone,
# or with VENV_TAKEOVER=1: re-install from this one. A stamp without "source=" (older tlbench) counts
# as this checkout's.
setup: $(STAMP)
	@owner=$$($(VENV_OWNER)); if [ -n "$$owner" ] && [ "$$owner" != "$(CURDIR)" ]; then \
	  $(MAKE) --no-print-directory -B $(STAMP); fi

$(STAMP): pyproject.toml
	@owner=$$($(VENV_OWNER)); if [ -n "$$owner" ] && [ "$$owner" != "$(CURDIR)" ]; then \
	  if [ -f "$$owner/pyproject.toml" ] && [ -z "$(VENV_TAKEOVER)" ]; then \
	    echo "make: $(VENV) belongs to the checkout $$owner (its editable tlbench runs that checkout's code), not to $(CURDIR): re-installing it here would re-point $$owner. Give this checkout its own: remove the link (rm $(VENV)) and run make again, or pass VENV=path/to/another/venv; to move this one here on purpose: make setup VENV_TAKEOVER=1" >&2; \
	    exit 2; fi; \
	  echo "make: $(VENV) was installed from $$owner; re-installing it from $(CURDIR)"; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PINS)
	$(BIN)/python -m pip install -e '.[dev,pinned]'
	echo "source=$(CURDIR)" > $(STAMP)

train: setup
	$(BIN)/tlbench train $(ARGS)

report: setup
	$(BIN)/tlbench report $(if $(STUDY),--study $(STUDY))

sweep: setup
	$(BIN)/tlbench sweep $(if $(SWEEP),--sweep $(SWEEP)) $(if $(DATA),--data '$(DATA)') $(if $(CLASS_MAP),--class-map '$(CLASS_MAP)') --workers $(WORKERS) $(if $(STORAGE),--storage '$(STORAGE)') $(if $(STUDY),--study $(STUDY)) $(ARGS)

screen: setup
	$(BIN)/tlbench screen $(if $(DATA),--data '$(DATA)') $(if $(BACKBONES),--backbones '$(BACKBONES)') $(if $(CLASS_MAP),--class-map '$(CLASS_MAP)') $(if $(STUDY),--study $(STUDY)) $(ARGS)

ui: setup
	$(BIN)/tlbench ui --port $(or $(PORT),$(UI_PORT))

dashboard: setup
	$(BIN)/tlbench dashboard $(if $(STUDY),--study $(STUDY)) $(if $(STORAGE),--storage '$(STORAGE)') $(if $(LIVE),--live) --port $(or $(PORT),$(DASHBOARD_PORT))

bench: setup
	$(BIN)/python -m benchmarks $(ARGS)

# On a machine with a GPU: the bench, a 4-workers-per-GPU scaling check and the photo study in 10 min,
# written into docs/benchmarks.md (ARGS='--photos FOLDER --budget-min 10 --skip photos').
gpu-check: setup
	$(BIN)/python -m benchmarks.gpu $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache reports/bench.json

# An MLflow tracking server for workers on several machines (README, "Several machines"):
#   make mlflow-server BACKEND=postgresql://mlflow@db-host/mlflow ARTIFACTS=/shared/mlartifacts
# BACKEND: the backend store (an SQLAlchemy URL; put the password in ~/.pgpass, not the URL). It
# reaches mlflow through the environment (MLFLOW_BACKEND_STORE_URI), so neither make's echo nor `ps`
# shows it. ARTIFACTS: where the server stores the artifacts it receives (a directory or s3://…).
# MLFLOW_HOST defaults to 127.0.0.1 (this machine only). WARNING: binding another address
# (MLFLOW_HOST=0.0.0.0) exposes the server, which has no authentication, to everyone who can reach
# MLFLOW_PORT; do that only on a trusted cluster network, and name the host workers use in
# ALLOWED_HOSTS (mlflow answers only localhost and private IPs otherwise).
BACKEND ?=
ARTIFACTS ?= mlartifacts
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
ALLOWED_HOSTS ?=

.PHONY: mlflow-server
# SQLAlchemy 2.1 reads postgresql:// as psycopg 3; the dev and postgres extras install psycopg2.
mlflow-server: export MLFLOW_BACKEND_STORE_URI = $(patsubst postgres://%,postgresql+psycopg2://%,$(patsubst postgresql://%,postgresql+psycopg2://%,$(BACKEND)))
mlflow-server: export MLFLOW_ARTIFACTS_DESTINATION = $(ARTIFACTS)
mlflow-server: setup
	@test -n "$$MLFLOW_BACKEND_STORE_URI" || { echo "usage: make mlflow-server BACKEND=postgresql://user@host/db [ARTIFACTS=dir] [MLFLOW_HOST=127.0.0.1] [MLFLOW_PORT=5000] [ALLOWED_HOSTS=name:port]" >&2; exit 2; }
	@echo "MLflow server on http://$(MLFLOW_HOST):$(MLFLOW_PORT): set MLFLOW_TRACKING_URI to that on every machine"
	$(BIN)/mlflow server --host '$(MLFLOW_HOST)' --port '$(MLFLOW_PORT)' $(if $(ALLOWED_HOSTS),--allowed-hosts '$(ALLOWED_HOSTS)')
