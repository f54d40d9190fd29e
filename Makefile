# make train: set up .venv (if needed) and train with the defaults. make test: ruff + pytest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test lint bench bench-quick bench-robustness clean

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

bench: $(STAMP)
	$(BIN)/python bench/bench.py

bench-quick: $(STAMP)
	$(BIN)/python bench/bench.py --quick

# predict on 2,000 test digits re-made 15 ways (tight crops, pens, paper, photos); CHECKPOINT=...
CHECKPOINT ?= runs/latest/best.pt
bench-robustness: $(STAMP)
	$(BIN)/python bench/robustness.py --checkpoint $(CHECKPOINT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
