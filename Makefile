# Two commands for a fresh Debian/Ubuntu machine:
#   make demo   set everything up, then run the main job on the embedded default (offline)
#   make test   set everything up, then run the test suite
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# `make demo` keeps its generated library and model in the checkout's data/ (gitignored, removed by `make clean`)
# rather than in the per-user data folder that `spy` uses by default. Override: make demo DEMO_DATA_DIR=...
DEMO_DATA_DIR ?= $(CURDIR)/data

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup.sh
	bash tools/setup.sh
	touch $(STAMP)

demo: setup
	SPY_DATA_DIR="$(DEMO_DATA_DIR)" $(VENV)/bin/spy demo

test: setup
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) bench/bench_pipeline.py

clean:
	rm -rf $(VENV) "$(DEMO_DATA_DIR)/demo" .pytest_cache
