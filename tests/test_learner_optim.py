"""Learning-rate schedule, parameter groups and the DeepSpeed config built from `LearnerSection`."""

from __future__ import annotations

import math

import pytest
import torch

from learner.optim import deepspeed_config, lr_factor, param_groups
from pfrl.config import LearnerSection


def test_warmup_then_cosine_to_zero():
    cfg = LearnerSection(warmup_steps=4, schedule="warmup_cosine")
    factors = [lr_factor(s, cfg, total_steps=14) for s in range(16)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # no step is spent at lr 0
    assert factors[4] == pytest.approx(1.0)
    # halfway through the 10 cosine steps the factor is 0.5
    assert factors[9] == pytest.approx(0.5)
    assert factors[14] == pytest.approx(0.0, abs=1e-12) and factors[15] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))


def test_cosine_floor_and_constant():
    cfg = LearnerSection(schedule="warmup_cosine", min_lr_ratio=0.1)
    assert lr_factor(10, cfg, total_steps=10) == pytest.approx(0.1)
    assert lr_factor(5, cfg, total_steps=10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    const = LearnerSection(schedule="constant", warmup_steps=2)
    assert [lr_factor(s, const, 10) for s in range(4)] == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_norms_and_biases_are_not_decayed():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 3  # linear bias, norm weight, norm bias


def test_deepspeed_config_follows_section():
    cfg = LearnerSection(zero_stage=3, grad_clip=0.5, zero3_persistence_threshold=0)
    ds = deepspeed_config(cfg, torch.bfloat16, world_size=4)
    assert ds["zero_optimization"] == {"stage": 3, "stage3_param_persistence_threshold": 0}
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"] == {"enabled": True}
    assert ds["train_batch_size"] == 4 and ds["gradient_accumulation_steps"] == 1
    assert "bf16" not in deepspeed_config(LearnerSection(), torch.float32, 1)
