# `make demo` and `make test` each set up .venv first; nothing else is needed on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test files run on this many processes: the suite's stages are mostly Python start-up on one core.
TEST_WORKERS ?= 2

.PHONY: setup demo test report-screenshot

setup: $(STAMP)

# torch==2.13.0 first: it is the CPU build this machine has on disk (a bare `torch` pulls CUDA); triton
# 3.6.0 (the GPU device's) for the tests' Triton interpreter.
# molsets ships the MOSES data but its own dependencies do not build; chemspec reads only its data files.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0 triton==3.6.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps molsets==0.3.1
	touch $(STAMP)

demo: setup
	$(BIN)/chemspec compile specs/quickstart.yaml
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	$(BIN)/chemspec report
	$(BIN)/chemspec archive verify

test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The quickstart report as headless Chromium renders it (needs `make demo` first; installs Debian's
# chromium when it is missing and apt-get is allowed).
SHOT := results/quickstart/report/screenshot.png
report-screenshot: setup
	$(BIN)/chemspec report > /dev/null
	command -v chromium >/dev/null || apt-get install -y -q chromium
	chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
	  --disable-sync --no-first-run --hide-scrollbars --window-size=1200,3000 \
	  --screenshot=$(abspath $(SHOT)) file://$(abspath results/quickstart/report/index.html)
	@echo "wrote $(SHOT)"
