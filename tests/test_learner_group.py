"""Two learner ranks as Ray actors in one DeepSpeed data-parallel group (gloo on CPU).

Both ZeRO-2 and ZeRO-3 (every parameter partitioned) must take the same steps as one rank
without ZeRO on the same global batches: same losses and rewards, same gradient norm, same weights.
The third batch has an odd size, so ranks hold different pair counts; under ZeRO-3 each pair is its
own micro-batch, so one rank runs a zero-weight pass to match its peer's number of passes.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from pfrl.config import LearnerSection, ModelSection, load_config

pytestmark = pytest.mark.slow

COMMON = ["learner.lr=1e-3", "model.max_length=256"]
KEYS = ("learner/loss", "learner/reward_chosen", "learner/margin", "learner/grad_norm", "learner/tokens")


def batches(pairs) -> list[list]:
    return [pairs[:8], pairs[8:], pairs[:3]]


def full_weights(buckets) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for bucket in buckets:
        out.update(bucket)
    return out


@pytest.fixture(scope="module")
def baseline(tiny_math_model, pairs):
    """One rank in this process, no ZeRO, whole batches: what the groups must reproduce."""
    from learner.engine import DPOEngine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see the one_thread fixture (conftest)
    cfg = load_config(None, COMMON)
    lc = LearnerSection(**{**cfg.learner.model_dump(), "zero_stage": 0, "micro_batch_pairs": 8})
    engine = DPOEngine(tiny_math_model, lc, ModelSection(max_length=256), seed=0)
    metrics = [engine.train_step(b) for b in batches(pairs)]
    w = full_weights(engine.named_weight_buckets(1 << 20))
    torch.set_num_threads(threads)
    return metrics, w


def start_group(model: str, overrides: list[str]):
    from pfrl.learner_group import LearnerGroup

    cfg = load_config(None, [*COMMON, "learner.num_learners=2", "cluster.learner_cpus=0.5", *overrides])
    return LearnerGroup(cfg, model, seed=0)


def assert_same_steps(metrics, baseline_metrics) -> None:
    for got, want in zip(metrics, baseline_metrics, strict=True):
        for key in KEYS:
            # rewards are beta x differences of log-probs near -70: 1e-5 absolute is float noise
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=2e-5), key
        assert got["learner/pairs"] == want["learner/pairs"]


def assert_same_weights(w: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Equal up to Adam's magnification of rounding on near-zero gradients (test_learner_engine)."""
    assert set(w) == set(want)
    for key, t in want.items():
        diff = (w[key] - t).abs()
        assert diff.max().item() < 1e-4, key
        assert (diff > 2e-6).float().mean().item() < 1e-3, key


def test_zero2_two_ranks_match_one(ray_local, tiny_math_model, pairs, baseline, tmp_path):
    import ray

    group = start_group(tiny_math_model, ["learner.zero_stage=2", "learner.micro_batch_pairs=2"])
    try:
        metrics = [group.train_step(b) for b in batches(pairs)]
        assert_same_steps(metrics, baseline[0])
        sums = ray.get(group.rank0.weight_checksums.remote(1 << 16))
        assert sums == pytest.approx({k: float(t.double().sum()) for k, t in baseline[1].items()}, abs=1e-3)
        group.save_hf(str(tmp_path / "z2"))
    finally:
        group.shutdown()
    from safetensors.torch import load_file

    assert_same_weights(load_file(str(tmp_path / "z2" / "model.safetensors")), baseline[1])


def test_zero3_two_ranks_match_one(ray_local, tiny_math_model, pairs, baseline, tmp_path):
    """Partitioned weights are gathered bucket by bucket (small buckets: many gathers) for saving,
    checksums, the reference refresh and checkpoints."""
    import ray

    overrides = ["learner.zero_stage=3", "learner.zero3_persistence_threshold=0", "learner.micro_batch_tokens=16"]
    group = start_group(tiny_math_model, overrides)
    try:
        metrics = [group.train_step(b) for b in batches(pairs)]
        assert metrics[2]["learner/micro_batches"] == 2  # rank 1 (1 pair) ran a zero-weight pass
        assert_same_steps(metrics, baseline[0])
        sums = ray.get(group.rank0.weight_checksums.remote(1 << 14))
        assert sums == pytest.approx({k: float(t.double().sum()) for k, t in baseline[1].items()}, abs=1e-3)
        group.save_hf(str(tmp_path / "z3"))
        check_refresh_and_checkpoint(group, pairs, tmp_path / "ck")
    finally:
        group.shutdown()
    from safetensors.torch import load_file

    assert_same_weights(load_file(str(tmp_path / "z3" / "model.safetensors")), baseline[1])


def check_refresh_and_checkpoint(group, pairs, ckpt_dir) -> None:
    group.refresh_reference()
    fresh = group.train_step(pairs[:8])
    assert fresh["learner/reward_chosen"] == pytest.approx(0.0, abs=1e-6)
    assert fresh["learner/loss"] == pytest.approx(math.log(2), abs=1e-6)
    group.save_checkpoint(str(ckpt_dir), "s4")
    expected = group.train_step(pairs[8:])
    assert expected["learner/reward_chosen"] != pytest.approx(0.0, abs=1e-6)
    group.load_checkpoint(str(ckpt_dir), "s4")
    again = group.train_step(pairs[8:])
    for key in (*KEYS, "learner/lr"):
        assert again[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key


def test_a_dead_rank_fails_the_run_whichever_call_notices(ray_local, tmp_path):
    """The chaos bench once killed the learner during a checkpoint: the Ray error escaped as a
    traceback and state.json kept saying "running". Every group call must turn it into RunFailed."""
    from pfrl.errors import RunFailed
    from pfrl.learner_group import LearnerGroup

    @ray_local.remote(num_cpus=0, max_restarts=0)
    class Rank:
        def save_checkpoint(self, ckpt_dir: str, tag: str) -> str:
            if tag == "step4":
                os._exit(1)  # killed mid-write (ray.kill would race with the call)
            return tag

        def refresh_reference(self) -> None:
            return None

    group = LearnerGroup.__new__(LearnerGroup)  # the calls only, over a stand-in rank
    group.actors = [Rank.remote()]
    group.save_checkpoint(str(tmp_path), "step2")
    with pytest.raises(RunFailed, match="learner rank died during save_checkpoint"):
        group.save_checkpoint(str(tmp_path), "step4")
    with pytest.raises(RunFailed, match="learner rank died during refresh_reference"):
        group.refresh_reference()
