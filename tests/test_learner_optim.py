"""Learning-rate schedule, parameter groups and the DeepSpeed config built from `LearnerSection`."""

from __future__ import annotations

import pytest
import torch

from learner.optim import deepspeed_config, lr_at, param_groups
from pfrl.config import LearnerSection


def test_warmup_then_cosine_to_the_floor():
    cfg = LearnerSection(lr=1.0, warmup_ratio=0.25, min_lr_ratio=0.1, schedule="warmup_cosine")
    lrs = [lr_at(s, 16, cfg) for s in range(18)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # no step is spent at lr 0
    assert lrs[4] == pytest.approx(1.0)
    # halfway through the 12 cosine steps the lr is halfway between the peak and the floor
    assert lrs[10] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lrs[16] == pytest.approx(0.1) and lrs[17] == pytest.approx(0.1)  # held at the floor beyond
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert min(lrs) > 0


def test_floor_must_be_above_zero_and_constant_holds_the_peak():
    with pytest.raises(ValueError, match="min_lr_ratio"):
        LearnerSection(min_lr_ratio=0.0)
    const = LearnerSection(lr=2.0, schedule="constant", warmup_ratio=0.2)
    assert [lr_at(s, 10, const) for s in range(4)] == pytest.approx([1.0, 2.0, 2.0, 2.0])
    assert lr_at(0, 1, LearnerSection(lr=2.0)) == pytest.approx(2.0)  # a one-step schedule trains at the peak


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
