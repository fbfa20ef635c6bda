# The README's two commands: `make preview` (offline preview of a stack) and `make test`.
# Both create the virtual environment Pulumi.yaml names (.venv) and install into it first.
PYTHON ?= python3
VENV   ?= .venv
STACK  ?= dev
PY     := $(VENV)/bin/python

.PHONY: preview test typecheck unit bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

preview: $(VENV)/.installed
	$(PY) -m tools.preview --stack $(STACK) --out build/$(STACK)

typecheck: $(VENV)/.installed
	$(PY) -m mypy

unit: $(VENV)/.installed
	$(PY) -m pytest

test: typecheck unit

bench: $(VENV)/.installed
	$(PY) -m tools.bench

clean:
	rm -rf build .mypy_cache .pytest_cache
