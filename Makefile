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
SWEEP ?= default
WORKERS ?= 1
STORAGE ?=
STUDY ?=
PYTEST_ARGS ?=

.PHONY: help setup train sweep report ui dashboard bench test test-fast lint format clean

help:
	@echo "make setup | train ARGS='k=v ...' | sweep [SWEEP=name] [WORKERS=n] [STORAGE=url] | report [STUDY=name]"
	@echo "make ui | dashboard | bench | test | lint | clean"

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

ui: setup
	$(BIN)/tlbench ui

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache reports/bench.json
