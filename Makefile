# Threadsite: `make run` serves the site, `make test` runs every test.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
CHROMIUM := /usr/bin/chromium

.PHONY: help run test lint format chromium torture bench

help:
	@echo "make run [PORT=8000]  serve Threadsite on 127.0.0.1 (Ctrl-C stops it)"
	@echo "make test             run the whole test suite, browser tests included"
	@echo "make torture          the reliability suites with far larger counts (500 kills; slow)"
	@echo "make lint             ruff check and ruff format --check"
	@echo "make format           apply ruff's fixes and formatting"
	@echo "make bench            measure the performance targets (docs/performance.md; ~7 min)"

# The virtualenv, and one stamp per requirements set: pip runs again only when a
# requirements file is newer than its stamp.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.installed-runtime

# Settings come from the environment; a local .env file (shell syntax, see .env.example)
# is read first when present.
run: $(VENV)/.installed-runtime
	@set -a; if [ -f .env ]; then . ./.env; fi; set +a; \
	$(BIN)/python manage.py migrate --noinput --verbosity 0; \
	$(BIN)/python manage.py ensure_staff; \
	exec $(BIN)/python manage.py serve --port $(PORT)

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian's chromium for the browser tests"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	  else \
	    echo "The browser tests need Chromium at $(CHROMIUM). Install it with" >&2; \
	    echo "  sudo apt-get install chromium" >&2; \
	    echo "or run the other tests only: $(BIN)/pytest -m 'not browser'" >&2; \
	    exit 1; \
	  fi; \
	fi

test: $(VENV)/.installed-dev chromium
	DJANGO_ALLOW_ASYNC_UNSAFE=true $(BIN)/pytest

# The reliability suites (docs/reliability.md) with the counts raised: 500 kills under
# load, many more model-based store sequences. Figures go to test-results/.
torture: $(VENV)/.installed-dev
	THREADSITE_TORTURE=1 DJANGO_ALLOW_ASYNC_UNSAFE=true $(BIN)/pytest tests/reliability -m "not browser"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Builds its own stores (100,000 threads) and servers in temporary directories, installs
# Debian's wrk when missing (as root), prints the table; exits 1 when a target is missed.
bench: $(VENV)/.installed-runtime
	$(BIN)/python -m bench.run $(BENCH_ARGS)
