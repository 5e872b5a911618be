# One command each: `make up` runs the control plane, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: up test bench stress scaleout install install-dev clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

up: $(VENV)/.installed
	$(PY) scripts/up.py

test: $(VENV)/.installed-dev
	$(PY) scripts/servers.py -- $(PY) -m pytest -n 2 $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(PY) scripts/servers.py -- $(PY) -m pytest -m bench -s tests/bench $(PYTEST_ARGS)

stress: $(VENV)/.installed-dev
	FLOOD_PER_THREAD=500 $(PY) scripts/servers.py -- $(PY) -m pytest -n0 tests/dispatch/test_concurrency.py $(PYTEST_ARGS)

scaleout: $(VENV)/.installed-dev
	$(PY) scripts/servers.py -- $(PY) -m pytest -n0 -m scaleout tests/scaleout $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var
