# The two commands a new user needs:
#   make demo   installs everything into .venv and writes an audit report
#   make test   installs everything (system packages too) and runs the whole suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit lint bench bench-smoke clean services

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/xaudit demo --out report.html

services:
	bash scripts/ensure-system.sh

# Three stages, each run whatever happened in the one before, each reported at the end;
# the target fails when any stage failed.
#   unit         fast unit and component tests, in parallel (tests marked neither slow,
#                integration, browser nor bench)
#   slow         tests that train models over seeds or run whole audits (marked slow)
#   integration  real worker processes on the suite's own Redis, and the browser
# Benchmarks are never part of them: `make bench` (full) / `make bench-smoke` (quick).
UNIT := not slow and not integration and not browser and not bench
SLOW := slow and not integration and not browser and not bench
INTEGRATION := (integration or browser) and not bench
PYTEST := $(BIN)/python -m pytest

test: $(STAMP) services
	@status=0; summary=""; \
	run() { name=$$1; shift; echo "=== stage $$name: $$*"; \
	  if "$$@"; then summary="$$summary\n  $$name: passed"; \
	  else summary="$$summary\n  $$name: FAILED"; status=1; fi; }; \
	run lint $(BIN)/ruff check . ; \
	run unit $(PYTEST) -n 2 --timeout 900 -m "$(UNIT)" tests ; \
	run slow $(PYTEST) -n 2 --timeout 1200 -m "$(SLOW)" tests ; \
	run integration $(PYTEST) --timeout 1200 -m "$(INTEGRATION)" tests ; \
	printf "=== make test:$$summary\n"; exit $$status

test-unit: $(STAMP)
	$(PYTEST) -n 2 --timeout 900 -m "$(UNIT)" tests

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/attributions.py

# A quick run of the attribution benchmark that checks it prints every table (a CI step
# of its own; a few minutes, never part of make test).
bench-smoke: $(STAMP)
	$(PYTEST) --timeout 900 -m bench tests/bench

clean:
	rm -rf $(VENV) build *.egg-info
