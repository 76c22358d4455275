# Two commands do all the set-up on a machine with only python3:
#   make demo   runs the example flow on a temporary local Dask cluster
#   make test   runs the test suite (and builds the docs site, so a broken link fails)
#   make docs   builds the docs site (docs/, mkdocs.yml) into site/
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CKSUM  := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# daskflow alone (what the demo needs), then the test and benchmark extras
BASE_STAMP := $(VENV)/.installed-base-$(CKSUM)
TEST_STAMP := $(VENV)/.installed-test-$(CKSUM)
DOCS_STAMP := $(VENV)/.installed-docs-$(CKSUM)
# the docs site, built from docs/ by mkdocs.yml; --strict makes every warning
# (a link to a page, an anchor or a repository file that does not exist) an
# error; not --quiet, which hides the warnings from --strict too
SITE       := site
MKDOCS_BUILD := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(SITE)

.PHONY: demo test docs bench lint clean system-deps

$(BASE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	rm -f $(VENV)/.installed-base-* && touch $(BASE_STAMP)

$(TEST_STAMP): $(BASE_STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench,docs]'
	rm -f $(VENV)/.installed-test-* && touch $(TEST_STAMP)

$(DOCS_STAMP): $(BASE_STAMP)
	$(BIN)/python -m pip install -q -e '.[docs]'
	rm -f $(VENV)/.installed-docs-* && touch $(DOCS_STAMP)

demo: $(BASE_STAMP)
	$(BIN)/python examples/images.py

# `.venv/bin/mkdocs serve` serves the same site live while you edit docs/.
docs: $(DOCS_STAMP)
	$(MKDOCS_BUILD)

# The real services the provider tests run (Slurm with munge, an SSH server,
# Graphviz for flow.visualize, Chromium to render a run report,
# a system python3 for the SSH test user), from Debian packages, when missing
# and when this is root on a Debian-like machine; otherwise those tests skip
# and say why.
SYSTEM_PACKAGES := slurm-wlm munge openssh-server python3 graphviz chromium
system-deps:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sshd >/dev/null && command -v dot >/dev/null && command -v chromium >/dev/null; then \
	  exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $(SYSTEM_PACKAGES) for the provider tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	else \
	  echo "not root or no apt-get: the Slurm and SSH tests will be skipped"; \
	fi

test: $(TEST_STAMP) system-deps
	$(MKDOCS_BUILD)
	$(BIN)/python -m pytest

PREFECT_VENV := benchmarks/.prefect-venv
PREFECT_STAMP := $(PREFECT_VENV)/.installed

# Prefect lives in its own virtualenv: it is never a dependency of daskflow.
$(PREFECT_STAMP):
	test -x $(PREFECT_VENV)/bin/python || $(PYTHON) -m venv $(PREFECT_VENV)
	$(PREFECT_VENV)/bin/python -m pip install -q --upgrade pip
	$(PREFECT_VENV)/bin/python -m pip install -q -r benchmarks/prefect-requirements.txt
	touch $(PREFECT_STAMP)

bench: $(TEST_STAMP) $(PREFECT_STAMP)
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/chunks.py
	$(BIN)/python benchmarks/million.py
	$(BIN)/python benchmarks/cache.py
	$(BIN)/python tools/figures.py

lint: $(TEST_STAMP)
	$(BIN)/python -m pip install -q ruff mypy
	$(BIN)/ruff check daskflow tests benchmarks examples
	$(BIN)/mypy daskflow

clean:
	rm -rf $(VENV) $(PREFECT_VENV) build $(SITE) *.egg-info .pytest_cache
