# Two commands for a fresh Debian/Ubuntu machine:
#   make demo   set everything up, then run the main job on the embedded default (offline)
#   make test   set everything up, then run the test suite
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup.sh
	bash tools/setup.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/spy demo

test: setup
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) bench/bench_pipeline.py

clean:
	rm -rf $(VENV) data/demo .pytest_cache
