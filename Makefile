# Two entry points: `make demo` and `make test`. Both create .venv (Python 3.11) if it is
# absent and install what they need: torch 2.13.0 (the CPU build) first, so nothing
# that depends on torch pulls a CUDA build, then govgym with its extras.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.govgym-installed
TORCH := torch==2.13.0
# Older Gymnasium releases the suite also runs against (1.0.0: the oldest we support;
# 1.2.2: what Ray 2.60 pins), installed beside the venv and put first on PYTHONPATH.
GYM_COMPAT := 1.0.0 1.2.2
PYTEST_ARGS ?=

.PHONY: demo test install bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e '.[all,dev]'
	for v in $(GYM_COMPAT); do \
	  $(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/compat/gymnasium-$$v gymnasium==$$v || exit 1; \
	done
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python examples/demo.py

test: install
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/audit.py
	$(BIN)/python benchmarks/sql_kernel.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/sql_seeds.py

lint: install
	$(BIN)/ruff check govgym tests examples benchmarks

clean:
	rm -rf $(VENV) build dist .pytest_cache runs
