# `make run`: set up .venv with the pinned dependencies and run the pipeline. `make test`: the test suite.
# `make browser`: Chromium for the report's headless-browser test (it skips without one; CI installs it).
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1

.PHONY: setup run test test-fast lint bench browser clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@[ -d .git ] || git init --quiet
	touch $(STAMP)

run: setup
	dvc repro
	@echo "Report: reports/report.html   Metrics: dvc metrics show"

test: setup
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

lint: setup
	$(BIN)/ruff check src stages tests bench

bench: setup
	$(BIN)/python bench/pipeline.py

# Nothing to do when chromium is on PATH; otherwise Debian's package, as root or through sudo.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
browser:
	@if command -v chromium >/dev/null 2>&1; then \
		echo "chromium: $$(command -v chromium)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium && chromium --version; \
	else \
		echo "make browser: no chromium on PATH and no apt-get to install it; install Chromium by hand" >&2; \
		exit 1; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
