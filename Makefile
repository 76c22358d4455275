# Two commands do all the set-up on a machine with only python3:
#   make demo   runs the example flow on a temporary local Dask cluster
#   make test   runs the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/images.py

test: $(STAMP)
	$(BIN)/python -m pytest

PREFECT_VENV := benchmarks/.prefect-venv
PREFECT_STAMP := $(PREFECT_VENV)/.installed

# Prefect lives in its own virtualenv: it is never a dependency of daskflow.
$(PREFECT_STAMP):
	test -x $(PREFECT_VENV)/bin/python || $(PYTHON) -m venv $(PREFECT_VENV)
	$(PREFECT_VENV)/bin/python -m pip install -q --upgrade pip
	$(PREFECT_VENV)/bin/python -m pip install -q -r benchmarks/prefect-requirements.txt
	touch $(PREFECT_STAMP)

bench: $(STAMP) $(PREFECT_STAMP)
	$(BIN)/python benchmarks/bench.py

lint: $(STAMP)
	$(BIN)/python -m pip install -q ruff mypy
	$(BIN)/ruff check daskflow tests benchmarks examples
	$(BIN)/mypy daskflow

clean:
	rm -rf $(VENV) $(PREFECT_VENV) build *.egg-info .pytest_cache
