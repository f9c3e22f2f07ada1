"""The learner's CUDA path: DeepSpeed in bf16 under ZeRO 0, 2 and 3, its checkpoints and saved
model, and weight publishing over ZMQ out of GPU memory.

Marked `gpu`: skipped where CUDA is absent (conftest), run on a GPU machine with `pytest -m gpu
tests/test_gpu.py`. The CPU suite covers the same logic in fp32 over gloo; these catch what only
CUDA and bf16 change (device placement, dtype of weights on the wire, DeepSpeed's bf16 optimizer).
"""

from __future__ import annotations

import math
import threading

import pytest
import torch
from learner_util import make_engine, weights

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name].cpu(), b[name].cpu()), name


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_dpo_engine_learns_checkpoints_and_saves_on_cuda_in_bf16(tiny_math_model, pairs, stage, tmp_path):
    from transformers import AutoModelForCausalLM

    engine = make_engine(tiny_math_model, zero_stage=stage)
    assert engine.device.type == "cuda" and engine.dtype == torch.bfloat16
    history = [engine.train_step(pairs[i : i + 8]) for _ in range(4) for i in (0, 8)]
    assert all(math.isfinite(h["learner/loss"]) and math.isfinite(h["learner/grad_norm"]) for h in history)
    first = sum(h["learner/loss"] for h in history[:2]) / 2
    last = sum(h["learner/loss"] for h in history[-2:]) / 2
    assert last < first - 0.05, [round(h["learner/loss"], 3) for h in history]
    assert history[-1]["learner/margin"] > history[0]["learner/margin"]

    saved = weights(engine)
    assert all(t.dtype == torch.bfloat16 for t in saved.values())
    engine.save_checkpoint(tmp_path / "ckpt", "t")
    engine.train_step(pairs[:8])  # move away from the checkpoint
    assert any(not torch.equal(saved[n], t) for n, t in weights(engine).items())
    engine.load_checkpoint(tmp_path / "ckpt", "t")
    assert_same(weights(engine), saved)

    engine.save_hf(tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.bfloat16)
    state = model.state_dict()
    for name, t in saved.items():
        assert torch.equal(state[name], t), name


@pytest.mark.parametrize("shm_slots", [0, 4])  # frames; the shared-memory ring (copied into from the GPU)
def test_weights_published_over_zmq_from_gpu_memory_arrive_intact(tiny_math_model, pairs, shm_slots):
    from learner.publish import publish
    from pfrl.transport.buckets import Received
    from pfrl.transport.weights import SenderSpec
    from pfrl.transport.zmq_weights import ZmqWeightReceiver

    engine = make_engine(tiny_math_model, zero_stage=3)
    engine.train_step(pairs[:8])
    receiver, out = ZmqWeightReceiver("127.0.0.1"), {}

    def receive():
        into = Received()
        out["tensors"] = {n: t.to("cuda", copy=True) for n, t in receiver.receive(1, 60.0, into)}
        out["into"] = into

    thread = threading.Thread(target=receive)
    thread.start()
    stats = publish(engine, 1, SenderSpec("zmq", 1 << 18, 60.0, [receiver.addr], shm_slots=shm_slots).to_dict())
    thread.join(60)
    receiver.close()
    expected = weights(engine)
    assert_same(out["tensors"], expected)
    assert stats["bytes"] == sum(t.numel() * t.element_size() for t in expected.values()) == out["into"].bytes
    assert stats["buckets"] == out["into"].buckets > 1


def test_nccl_weight_group_forms_broadcasts_bf16_buckets_and_is_left():
    """One GPU cannot hold two NCCL ranks, so this is the learner's side alone, in a world of one:
    the NCCL group is built over the same TCPStore rendezvous as in a run, bf16 CUDA buckets go
    through the broadcast path, and leaving shuts the communicator down."""
    import torch.distributed as dist

    from pfrl.transport import collective
    from pfrl.transport.buckets import split_buckets

    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    spec = collective.GroupSpec("127.0.0.1", store.port, "gpu-test", 1, "nccl")
    pg = collective.join(spec, 0, 60.0)
    assert collective.join(spec, 0, 60.0) is pg and collective.comm_device("nccl").type == "cuda"
    tensors = [(f"w{i}", torch.randn(64, 64, dtype=torch.bfloat16, device="cuda")) for i in range(5)]
    buckets, nbytes = collective.send(pg, "nccl", 1, split_buckets(tensors, 20_000))
    assert buckets == len(list(split_buckets(tensors, 20_000))) > 1
    assert nbytes == 5 * 64 * 64 * 2
    collective.leave()
    assert collective.current_group_id() is None
