# Two commands do all the set-up on a fresh machine:
#   make run    - install into .venv (first time) and run the main job (linstab report) on the default model
#   make test   - install into .venv (first time) and run the test suite (fast + slow tier)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
SHARED  ?= $(abspath ../shared)
export LINSTAB_WEIGHTS_DIR ?= $(SHARED)/weights
export LINSTAB_CIFAR10_JPEG ?= $(SHARED)/data/cifar10-jpeg
OUT     ?= out

.PHONY: run test test-all test-fast test-slow test-heavy lint venv

$(BIN)/linstab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps pytorchcv
	touch $(BIN)/linstab

venv: $(BIN)/linstab

run: venv
	$(BIN)/linstab report --out $(OUT)/report

# one pytest-xdist worker per core, each at one torch thread (tests/conftest.py); a test file
# stays on one worker, so its module fixtures are built once
test-fast: venv
	$(BIN)/python -m pytest -q -n auto --dist loadfile

test-slow: venv
	$(BIN)/python -m pytest -q -m "slow and not heavy" -n auto --dist loadfile || [ $$? -eq 5 ]

# exact routes and estimates against dense LAPACK on full-size ResNet-56 units (minutes; not in CI)
test-heavy: venv
	$(BIN)/python -m pytest -q -m heavy -n auto --dist loadfile

lint: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

# both tiers in one run: the workers fill the slow tier's long files with fast tests
# (tests/conftest.py hands out the slow files first)
test-all: venv
	$(BIN)/python -m pytest -q -m "not heavy" -n auto --dist loadfile --durations=30

test: test-all lint
	$(BIN)/python examples/unit_svds.py
