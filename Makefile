# The README's two quick-start commands are `make quickstart` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# pytest-xdist workers (--dist loadfile: a file's tests on one worker); the tests hold torch to one thread each
TEST_WORKERS ?= 2

.PHONY: setup quickstart test test-all lint docs bench bench-quick clean

$(BIN)/lit-transfer: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[dev,docs]"
	touch $@

setup: $(BIN)/lit-transfer

quickstart: setup
	$(BIN)/python -m lit_transfer.demo.quickstart

test: setup
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile --durations=20

test-all: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=20

lint: setup
	$(BIN)/ruff check lit_transfer tests benchmarks
	$(BIN)/ruff format --check lit_transfer tests benchmarks
	$(BIN)/mypy lit_transfer benchmarks

docs: setup
	$(BIN)/mkdocs build --strict

bench: setup
	$(PIP) install -q -e ".[peers]"   # fastai, for the peers benchmark's fastai row
	$(BIN)/python -m benchmarks.run

bench-quick: setup
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) site runs lightning_logs
