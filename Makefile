# Quick start: `make demo` runs the whole pipeline, `make test` runs the tests.
# Both create .venv on first use. torch and torchvision are pinned as a matched pair and installed first,
# so that the looser ranges in pyproject.toml are already satisfied and pip fetches nothing larger.
# Why this pair (measured here, 2026-11): the CPU-only torch==2.13.0 wheel installs in seconds, but no
# torchvision on the index loads beside it ("operator torchvision::nms does not exist"), and the pretrained
# edge backbones (issue: transfer learning) need torchvision. torch==2.14.1 + torchvision==0.29.1 is the
# pair this machine holds on disk: CUDA builds that run on the CPU, about a minute to install, 5.5 GB venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench arm64 clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_PAIR)
	$(BIN)/pip install --quiet -e '.[train,dev,camera,serve,openvino]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgecnn demo

# tests/test_scale.py runs in a pytest process of its own: it starts torchrun groups and SIGKILLs a rank. With
# OpenVINO loaded into the same pytest process earlier (test_examples ran `bench --openvino` in-process, now
# in worker processes), the pytest process died with SIGSEGV at the restart test, without a faulthandler trace.
test: $(STAMP)
	$(BIN)/python -m pytest -q --ignore=tests/test_scale.py
	$(BIN)/python -m pytest -q tests/test_scale.py

lint: $(STAMP)
	$(BIN)/ruff check edgecnn export runtime tests benchmarks
	mkdir -p build/mypy/edgecnn  # mypy does not follow the editable install: a link tree under the installed names
	ln -sfn ../../../edgecnn/__init__.py build/mypy/edgecnn/__init__.py
	ln -sfn ../../../export build/mypy/edgecnn/export
	ln -sfn ../../../runtime build/mypy/edgecnn/runtime
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

arm64: $(STAMP)
	$(BIN)/python benchmarks/arm64_emulated.py

clean:
	rm -rf $(VENV) edgecnn-demo build *.egg-info
