"""Bucketed access to the full weights of a (possibly ZeRO-3 partitioned) module.

Under ZeRO-3 each rank holds a slice of every parameter, so reading or writing whole tensors means
gathering them, and gathering is a collective: every rank must walk the same buckets in the same
order. One bucket is gathered at a time, so peak extra memory is one bucket, never the whole model.
For unpartitioned modules (ZeRO 0-2, plain torch) the same functions simply read the tensors.
A module wrapped with LoRA adapters is read merged, under the base model's names (learner/memory.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext

import torch

from learner.memory import is_lora, merged_buckets

NamedParams = list[tuple[str, torch.nn.Parameter]]


def is_partitioned(p: torch.Tensor) -> bool:
    return hasattr(p, "ds_id")


def param_nbytes(p: torch.Tensor) -> int:
    # DeepSpeed sets ds_numel (the full size) on the parameters it partitions; torch's stubs cannot know
    numel = p.ds_numel if is_partitioned(p) else p.numel()  # type: ignore[attr-defined]
    return int(numel) * p.element_size()


def named_buckets(module: torch.nn.Module, bucket_bytes: int) -> list[NamedParams]:
    """Parameters in definition order (deduplicated: a tied embedding appears once), grouped so a
    bucket stays under `bucket_bytes` unless one tensor alone is larger."""
    buckets: list[NamedParams] = []
    current: NamedParams = []
    size = 0
    for name, p in module.named_parameters():
        n = param_nbytes(p)
        if current and size + n > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.append((name, p))
        size += n
    if current:
        buckets.append(current)
    return buckets


def gathered(params: list[torch.nn.Parameter], modifier_rank: int | None = None) -> AbstractContextManager:
    """Whole tensors inside the context; with `modifier_rank`, that rank's edits are kept on exit."""
    if not any(is_partitioned(p) for p in params):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


def iter_weight_buckets(
    module: torch.nn.Module, bucket_bytes: int, rank: int
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """CPU copies of the full tensors, bucket by bucket, on rank 0; other ranks get empty buckets
    (they still have to iterate: under ZeRO-3 they take part in each gather)."""
    if is_lora(module):
        for merged in merged_buckets(module, bucket_bytes):
            yield [(name, t.to("cpu", copy=True)) for name, t in merged] if rank == 0 else []
        return
    for bucket in named_buckets(module, bucket_bytes):
        with gathered([p for _, p in bucket]):
            out = [(name, p.detach().to("cpu", copy=True)) for name, p in bucket] if rank == 0 else []
        yield out


@torch.no_grad()
def copy_module_weights(src: torch.nn.Module, dst: torch.nn.Module, bucket_bytes: int) -> None:
    """dst <- src, parameter by name; both may be partitioned (collective under ZeRO-3). A LoRA
    `src` is copied merged into a plain `dst`."""
    dst_params = dict(dst.named_parameters())
    if is_lora(src):
        for merged in merged_buckets(src, bucket_bytes):
            targets = [dst_params[name] for name, _ in merged]
            with gathered(targets, modifier_rank=0):
                for (_, value), t in zip(merged, targets, strict=True):
                    t.data.copy_(value)
        return
    for bucket in named_buckets(src, bucket_bytes):
        targets = [dst_params[name] for name, _ in bucket]
        with gathered([p for _, p in bucket]), gathered(targets, modifier_rank=0):
            for (_, p), t in zip(bucket, targets, strict=True):
                t.data.copy_(p.data)


@torch.no_grad()
def load_module_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], bucket_bytes: int) -> None:
    """Copy a full state dict (same names as `named_parameters`) into a possibly partitioned module."""
    for bucket in named_buckets(module, bucket_bytes):
        missing = [name for name, _ in bucket if name not in state]
        if missing:
            raise KeyError(f"weights missing from the state dict: {missing[:3]}")
        with gathered([p for _, p in bucket], modifier_rank=0):
            for name, p in bucket:
                p.data.copy_(state[name].to(p.device, p.dtype))
