# make train: set up .venv (if needed) and train with the defaults.
# make test: ruff, pytest and the documentation site (mkdocs build --strict).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test lint docs docs-reference screenshots bench bench-quick bench-robustness gpu-prepare gpu-check-cpu clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

train: $(STAMP)
	$(BIN)/mnistcli train

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The manual (docs/, mkdocs-material) into site/.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# docs/reference.md from the Typer app itself, so it says what --help says (tests/test_docs.py
# fails when it drifts).
docs-reference: $(STAMP)
	$(BIN)/typer mnistcli.cli utils docs --name mnistcli --title "Command reference" \
	  --output docs/reference.md

# docs/images/*.svg from the real commands on a small model trained here (a few minutes on 2
# cores); SCREENSHOT_ARGS="--data DIR" for a local MNIST folder.
SCREENSHOT_ARGS ?=
screenshots: $(STAMP)
	$(BIN)/python docs/screenshots.py $(SCREENSHOT_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/selfcheck.py
	$(BIN)/python bench/bench.py

bench-quick: $(STAMP)
	$(BIN)/python bench/bench.py --quick

# What bench/gpu_check.sh needs on a GPU machine without network, inside the tree (both folders
# are git-ignored): wheels of what that machine lacks plus the CLI stack at the versions tested
# here (its own typer predates the pydantic-based one we run), and MNIST's four .gz files.
GPU_WHEELS := plotext==6.1.0 platformdirs==4.14.8 torchinfo==1.8.0 typer==0.29.2 rich==15.0.0 \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  annotated-doc==0.0.7 typing_extensions==4.16.0
MNIST_SRC ?= ../shared/mnist

gpu-prepare:
	rm -rf .whl && mkdir -p .whl .mnist
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform any -d .whl $(GPU_WHEELS)
	install -m 644 $(MNIST_SRC)/*-ubyte.gz .mnist/
	@ls -l .whl .mnist

# The same script end to end on this machine's CPU, with tiny subsets (no figures worth keeping).
gpu-check-cpu: $(STAMP)
	PYTHON=$(BIN)/python bash bench/gpu_check.sh --device cpu --quick

# predict on 2,000 test digits re-made 15 ways (tight crops, pens, paper, photos); CHECKPOINT=...
CHECKPOINT ?= runs/latest/best.pt
bench-robustness: $(STAMP)
	$(BIN)/python bench/robustness.py --checkpoint $(CHECKPOINT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis site
