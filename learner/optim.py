"""Optimizer, learning-rate schedule and DeepSpeed config for the policy, from `LearnerSection`.

AdamW is a plain torch optimizer handed to DeepSpeed (no JIT-built fused/CPU Adam op needed on
either device). Norm weights and biases are not decayed, as in the usual transformer recipe.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pfrl.config import LearnerSection


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: LearnerSection) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.adam_betas, eps=1e-8
    )


def lr_at(step: int, horizon: int, cfg: LearnerSection) -> float:
    """The learning rate of the optimizer step with index `step` (0-based) of a schedule that spans
    `horizon` steps (an iteration of the online loop, or a whole `pfrl dpo` run).

    Warmup ramps linearly over `warmup_ratio` of the horizon and reaches the peak on its last step
    (the first step is not wasted at lr 0); the cosine then falls towards `min_lr_ratio x lr`, which
    it reaches only at `horizon`, and holds there should a run outlast its estimate. The floor is
    above zero by the schema, so no step ever trains at lr 0."""
    warmup = round(cfg.warmup_ratio * horizon)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


def deepspeed_config(cfg: LearnerSection, dtype: torch.dtype, world_size: int) -> dict[str, Any]:
    """One optimizer step per `train_step`: the engine marks the accumulation boundary itself (the
    number of micro-batches varies with token packing), so DeepSpeed's own count stays at 1."""
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if dtype == torch.bfloat16:
        ds["bf16"] = {"enabled": True}
    elif dtype == torch.float16:
        ds["fp16"] = {"enabled": True, "initial_scale_power": 16}
    if cfg.zero_stage == 3:
        ds["zero_optimization"]["stage3_param_persistence_threshold"] = cfg.zero3_persistence_threshold
    return ds


def reference_deepspeed_config(cfg: LearnerSection, dtype: torch.dtype, world_size: int) -> dict[str, Any]:
    """ZeRO-3 inference: the frozen reference is partitioned like the policy, no optimizer."""
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "train_batch_size": world_size,
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": cfg.zero3_persistence_threshold,
        },
        "steps_per_print": 2**31 - 1,
    }
    if dtype == torch.bfloat16:
        ds["bf16"] = {"enabled": True}
    elif dtype == torch.float16:
        ds["fp16"] = {"enabled": True}
    return ds
