# Quick start: `make demo` runs the whole pipeline, `make test` runs the tests.
# Both create .venv on first use. The CPU build of torch is pinned and installed first, so that the
# looser range in pyproject.toml is already satisfied and pip never fetches a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_CPU := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench arm64 clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_CPU)
	$(BIN)/pip install --quiet -e '.[train,dev,camera]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgecnn demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check edgecnn export runtime tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

arm64: $(STAMP)
	$(BIN)/python benchmarks/arm64_emulated.py

clean:
	rm -rf $(VENV) edgecnn-demo build *.egg-info
