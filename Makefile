# The two commands a new user needs:
#   make demo   installs everything into .venv and writes an audit report
#   make test   installs everything (system packages too) and runs the whole suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean services

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/xaudit demo --out report.html

services:
	bash scripts/ensure-system.sh

test: $(STAMP) services
	$(BIN)/ruff check .
	# Unit and component tests in parallel; tests that start real worker processes
	# against the shared Redis/PostgreSQL, or drive the browser, one at a time.
	$(BIN)/python -m pytest -n 2 --timeout 900 -m "not integration and not browser" tests
	$(BIN)/python -m pytest --timeout 1200 -m "integration or browser" tests

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/attributions.py

clean:
	rm -rf $(VENV) build *.egg-info
