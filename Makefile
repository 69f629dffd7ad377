# ps-lightning: `make demo` and `make test` set everything up themselves (.venv, install).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PSL := $(BIN)/ps-lightning

# The paper's parameters (see README): which original model, which request.
DATASET ?= digits
SEED ?= 209
EXPID ?= 0
RATIO ?= 0.1
CLASSES ?= 1
DATA_DIR ?= data
RUNS_DIR ?= runs
# Trainer settings passed to every step; MAX_EPOCHS and TRAINING_ARGS only to original and
# retrain training (e.g. TRAINING_ARGS="--trainer.precision=bf16-mixed
# --trainer.callbacks+=ps_lightning.models.ChannelsLast": ResNet20 trains about 2.3x faster on a CPU
# with AMX, benchmarks/README.md).
ACCELERATOR ?= auto
DEVICES ?= auto
PRECISION ?= 32-true
MAX_EPOCHS ?=
TRAINING_ARGS ?=

comma := ,
# Where each step's run lives, named here and in no config: every step is given its folder
# (--run, under <save_dir>/<dataset>/) and the files of the runs before it (FROM_ORIGINAL,
# FROM_REQUEST, the evaluation's checkpoints). The README's by-hand commands are these, for the
# default variables (tests/test_run_layout.py).
REQUEST_TAG := seed$(SEED)-ratio$(RATIO)-classes$(subst $(comma),+,$(CLASSES))
ORIGINAL_RUN := expid$(EXPID)/original
REQUEST_RUN := expid$(EXPID)/$(REQUEST_TAG)
ORIGINAL_DIR := $(RUNS_DIR)/$(DATASET)/$(ORIGINAL_RUN)
REQUEST_DIR := $(RUNS_DIR)/$(DATASET)/$(REQUEST_RUN)
ORIGINAL_CKPT := $(ORIGINAL_DIR)/checkpoints/model.ckpt
MANIFEST := $(REQUEST_DIR)/retrain/split.json
CONFIGS := configs/$(DATASET)
# The datasets `make <dataset>` runs: the folders of configs/.
DATASETS := $(sort $(notdir $(patsubst %/,%,$(wildcard configs/*/))))
space := $(subst ,, )

COMMON := --trainer.logger.init_args.save_dir $(RUNS_DIR) --data.init_args.data_dir $(DATA_DIR) \
	--trainer.accelerator $(ACCELERATOR) --trainer.devices $(DEVICES) \
	--trainer.precision $(PRECISION) --trainer.enable_progress_bar false
REQUEST := --data.init_args.forget_classes '[$(CLASSES)]' --data.init_args.forget_ratio $(RATIO) \
	--data.init_args.seed $(SEED)
TRAINING := --seed_everything $(EXPID) \
	$(if $(MAX_EPOCHS),--trainer.max_epochs $(MAX_EPOCHS) --lr_scheduler.init_args.T_max $(MAX_EPOCHS)) \
	$(TRAINING_ARGS)
FROM_REQUEST := $(REQUEST) --data.init_args.split_manifest $(MANIFEST)
FROM_ORIGINAL := --model.init_args.original_ckpt $(ORIGINAL_CKPT)
# A step whose run folder exists but whose model.ckpt does not was interrupted: it is resumed
# (from its last.ckpt where it has one), never skipped and never refused.
RESUME = $(if $(wildcard $(1)/config.yaml),--ckpt_path last)

.PHONY: help install demo test lint tensorboard chain bench bench-cifar10-random $(DATASETS) \
	fashion_mnist-data clean-runs

help:
	@echo "make demo          the chain on the embedded digits data for 10% of class 1, then for the"
	@echo "                   whole class (the same original model), each with its comparison table"
	@echo "make test          the test suite"
	@echo "make <dataset>     $(subst $(space), | ,$(DATASETS)):"
	@echo "                   original -> retrain -> naive_ps -> ps -> evaluate (no naive_ps for RATIO=1.0)"
	@echo "make fashion_mnist-data   lay out Fashion-MNIST offline from Debian's dataset-fashion-mnist"
	@echo "make bench         every method x seed x scenario side by side (DATASET, SEEDS, METHODS, SCENARIOS)"
	@echo "make tensorboard   TensorBoard on $(RUNS_DIR)"
	@echo "variables: SEED EXPID RATIO CLASSES DATA_DIR RUNS_DIR ACCELERATOR DEVICES PRECISION MAX_EPOCHS"
	@echo "           TRAINING_ARGS (original and retrain training only)"
	@echo "           bench: SEEDS SCENARIOS METHODS ISOLATE=1 (each step in its own process: peak memory)"
	@echo "                  SELECT=1 (choose each method's values on SELECT_SEEDS by GRID, report on SEEDS)"
	@echo "                  SELECT_METHODS=... (re-select only these) MERGE=1 (keep the other methods' rows)"
	@echo "                  METHOD_ARGS=\"METHOD:--trainer.ARG ...\" (one method's Trainer arguments)"
	@echo "make bench-cifar10-random   the SalUn / l1-sparse papers' random-10% CIFAR-10 setting (GPU)"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check ps_lightning tests benchmarks
	$(BIN)/ruff format --check ps_lightning tests benchmarks

tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir $(RUNS_DIR)

# The demo: the paper's request (10% of class 1) and then the whole class, both from the same
# original model, so that one request where the retrained model still knows the samples and
# one where it has forgotten them are side by side.
demo:
	@$(MAKE) --no-print-directory chain DATASET=digits
	@$(MAKE) --no-print-directory chain DATASET=digits RATIO=1.0

$(DATASETS):
	@$(MAKE) --no-print-directory chain DATASET=$@

# Fashion-MNIST without internet access to its host: Debian's package dataset-fashion-mnist
# ships the four original idx .gz files (installed: /usr/share/datasets/fashion-mnist; else the
# package is downloaded and unpacked in a temporary folder). They are unpacked where
# torchvision's FashionMNIST looks, so `make fashion_mnist` finds them and downloads nothing.
FASHION_MNIST_DEB_DIR ?= /usr/share/datasets/fashion-mnist
FASHION_MNIST_FILES := train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
	t10k-labels-idx1-ubyte
fashion_mnist-data:
	@set -e; raw=$(DATA_DIR)/FashionMNIST/raw; src=$(FASHION_MNIST_DEB_DIR); mkdir -p $$raw; \
	if [ ! -f $$src/train-images-idx3-ubyte.gz ]; then \
		tmp=$$(mktemp -d); (cd $$tmp && apt-get download dataset-fashion-mnist); \
		dpkg -x $$tmp/dataset-fashion-mnist_*.deb $$tmp/root; \
		src=$$tmp/root/usr/share/datasets/fashion-mnist; trap "rm -rf $$tmp" EXIT; \
	fi; \
	for name in $(FASHION_MNIST_FILES); do \
		gunzip -c $$src/$$name.gz > $$raw/.$$name.partial && mv $$raw/.$$name.partial $$raw/$$name; \
	done; \
	echo "Fashion-MNIST laid out in $$raw"

# The chain. Each step is a file target, the model.ckpt written once when the step finished: a
# finished step is not run again (delete its run directory to redo it), an interrupted one is
# resumed. The retrain step draws the request's split; later steps reuse it.
chain: $(REQUEST_DIR)/evaluate/table.md
	@echo "The comparison table (printed by its test step): $<"

$(ORIGINAL_CKPT): | $(STAMP)
	$(PSL) fit --config $(CONFIGS)/original.yaml --run $(ORIGINAL_RUN) $(COMMON) $(REQUEST) $(TRAINING) \
		$(call RESUME,$(ORIGINAL_DIR))

$(REQUEST_DIR)/retrain/checkpoints/model.ckpt: | $(STAMP)
	$(PSL) fit --config $(CONFIGS)/retrain.yaml --run $(REQUEST_RUN)/retrain $(COMMON) $(REQUEST) \
		$(TRAINING) --data.init_args.split_manifest null $(call RESUME,$(REQUEST_DIR)/retrain)

$(REQUEST_DIR)/%/checkpoints/model.ckpt: $(ORIGINAL_CKPT) $(REQUEST_DIR)/retrain/checkpoints/model.ckpt
	$(PSL) fit --config $(CONFIGS)/$*.yaml --run $(REQUEST_RUN)/$* $(COMMON) $(FROM_REQUEST) $(FROM_ORIGINAL) \
		$(call RESUME,$(REQUEST_DIR)/$*)

# Naive PS refuses a whole-class request (RATIO=1.0): that chain evaluates PS alone beside the
# references.
CHAIN_MODELS := retrain $(if $(filter 1 1.0 1.00,$(RATIO)),,naive_ps) ps
EVALUATED := original: $(ORIGINAL_CKPT)$(foreach s,$(CHAIN_MODELS),$(comma) $(s): $(REQUEST_DIR)/$(s)/checkpoints/model.ckpt)
$(REQUEST_DIR)/evaluate/table.md: $(ORIGINAL_CKPT) $(foreach s,$(CHAIN_MODELS),$(REQUEST_DIR)/$(s)/checkpoints/model.ckpt)
	$(PSL) test --config $(CONFIGS)/evaluate.yaml --run $(REQUEST_RUN)/evaluate $(COMMON) $(FROM_REQUEST) \
		--model.init_args.checkpoints '{$(subst $(space)$(comma),$(comma),$(EVALUATED))}'

# The benchmark harness (ps-lightning bench): resumable, its runs in $(RUNS_DIR)/bench. make bench
# updates the committed tables benchmarks/results/<dataset>-<scenario>.{md,json} (--out benchmarks/results;
# ps-lightning bench alone writes them into <runs-dir>/results). SELECT=1: each method's values
# are first chosen on SELECT_SEEDS by the grid benchmarks/grids/<dataset>.yaml (lowest mean avg gap; written
# to benchmarks/results/<dataset>-selection.{md,json}), then reported on SEEDS (default 3 4 5).
# MAX_EPOCHS: original and retrain training epochs (and their schedule), as for make <dataset>;
# ARCHITECTURE: their network, if not the config's (a name from ps_lightning.models).
# METHOD_ARGS: METHOD:ARG words, each an extra argument of that method's steps alone (e.g.
# METHOD_ARGS="finetune:--trainer.precision=bf16-mixed" trains a peer like TRAINING_ARGS' models).
METHOD_ARGS ?=
SELECT ?=
SELECT_SEEDS ?= 0 1 2
SEEDS ?= $(if $(SELECT),3 4 5,0 1 2 3 4)
SCENARIOS ?= subclass random wholeclass
METHODS ?=
# SELECT_METHODS: with SELECT=1, re-select only these (the others keep their committed
# selection); MERGE=1: keep the committed rows of the methods not run now (see README).
SELECT_METHODS ?=
MERGE ?=
GRID ?= benchmarks/grids/$(DATASET).yaml
bench: $(STAMP)
	$(BIN)/ps-lightning bench --dataset $(DATASET) --seeds $(SEEDS) \
		--scenarios $(SCENARIOS) $(if $(METHODS),--methods $(METHODS)) \
		$(if $(SELECT),--grid $(GRID) --select-seeds $(SELECT_SEEDS)) \
		$(if $(SELECT_METHODS),--select-methods $(SELECT_METHODS)) $(if $(MERGE),--merge) \
		$(if $(MAX_EPOCHS),--max-epochs $(MAX_EPOCHS)) $(if $(ARCHITECTURE),--architecture $(ARCHITECTURE)) \
		$(foreach arg,$(TRAINING_ARGS),--training-arg=$(arg)) \
		$(foreach arg,$(METHOD_ARGS),--method-arg=$(arg)) \
		--runs-dir $(RUNS_DIR)/bench --out benchmarks/results $(if $(ISOLATE),--isolate) \
		--trainer-arg=--trainer.accelerator=$(ACCELERATOR) --trainer-arg=--trainer.devices=$(DEVICES) \
		--trainer-arg=--trainer.precision=$(PRECISION) --trainer-arg=--data.init_args.data_dir=$(DATA_DIR)

# The SalUn / l1-sparse papers' "random 10%" request on CIFAR-10 (10% of the training set drawn
# at random), every method side by side, on their network, ResNet-18; a GPU job (hours), never
# run by the tests.
bench-cifar10-random:
	@$(MAKE) --no-print-directory bench DATASET=cifar10 SCENARIOS=random ACCELERATOR=gpu ARCHITECTURE=ResNet18 \
		SEEDS="$(SEEDS)" $(if $(SELECT),SELECT=1)

clean-runs:
	rm -rf $(RUNS_DIR)
