# tlbench — every target depends on `setup`, which builds .venv once (and again when pyproject.toml changes).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
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
WORKERS ?= 1
STORAGE ?=
STUDY ?=
BACKBONES ?=
PYTEST_ARGS ?=

.PHONY: help setup train sweep report ui dashboard bench test test-fast lint format clean screen

help:
	@echo "make setup | train ARGS='k=v ...' | sweep [SWEEP=name | DATA=folder [CLASS_MAP='{...}']] [ARGS='k=v ...'] [WORKERS=n] [STORAGE=url] | report [STUDY=name]"
	@echo "make screen [DATA=folder] [BACKBONES=a,b,c] [CLASS_MAP='{ants: [ant], bees: [bee]}'] [STUDY=name]"
	@echo "make ui | dashboard | bench [ARGS='--only eager --repeats 3'] | test | lint | clean"
	@echo "make mlflow-server BACKEND=postgresql://… [ARTIFACTS=dir]   (see README, \"Several machines\")"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PINS)
	$(BIN)/python -m pip install -e '.[dev,pinned]'
	touch $(STAMP)

train: setup
	$(BIN)/tlbench train $(ARGS)

report: setup
	$(BIN)/tlbench report $(if $(STUDY),--study $(STUDY))

sweep: setup
	$(BIN)/tlbench sweep $(if $(SWEEP),--sweep $(SWEEP)) $(if $(DATA),--data '$(DATA)') $(if $(CLASS_MAP),--class-map '$(CLASS_MAP)') --workers $(WORKERS) $(if $(STORAGE),--storage '$(STORAGE)') $(if $(STUDY),--study $(STUDY)) $(ARGS)

screen: setup
	$(BIN)/tlbench screen $(if $(DATA),--data '$(DATA)') $(if $(BACKBONES),--backbones '$(BACKBONES)') $(if $(CLASS_MAP),--class-map '$(CLASS_MAP)') $(if $(STUDY),--study $(STUDY)) $(ARGS)

ui: setup
	$(BIN)/tlbench ui

dashboard: setup
	$(BIN)/tlbench dashboard $(if $(STUDY),--study $(STUDY)) $(if $(STORAGE),--storage '$(STORAGE)')

bench: setup
	$(BIN)/python -m benchmarks $(ARGS)

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
