# `make demo` and `make test` each set up .venv first; nothing else is needed on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean-demo

setup: $(STAMP)

# torch==2.13.0 first: it is the CPU build this machine has on disk (a bare `torch` pulls CUDA).
# molsets ships the MOSES data but its own dependencies do not build; chemspec reads only its data files.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps molsets==0.3.1
	touch $(STAMP)

demo: setup
	$(BIN)/chemspec compile specs/quickstart.yaml
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	$(BIN)/chemspec report
	$(BIN)/chemspec archive verify

test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q
