"""Helpers shared by the DeepSpeed engine tests (CPU: test_learner_engine, CUDA: test_gpu)."""

from __future__ import annotations

import torch

from pfrl.config import LearnerSection, ModelSection


def make_engine(model: str, **overrides):
    from learner.engine import DPOEngine

    cfg = LearnerSection(**{"lr": 1e-3, "micro_batch_pairs": 4, **overrides})
    return DPOEngine(model, cfg, ModelSection(max_length=256), seed=0)


def weights(engine) -> dict[str, torch.Tensor]:
    """The engine's full weights, copied (on CPU a gathered tensor may be the parameter itself)."""
    out: dict[str, torch.Tensor] = {}
    for bucket in engine.named_weight_buckets(1 << 20):
        out.update({name: t.clone() for name, t in bucket})
    return out
