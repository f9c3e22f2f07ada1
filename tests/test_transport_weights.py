"""Weight framing and both transports, without vLLM: bytes in == bytes out, streams end cleanly,
and a broken stream fails within its timeout instead of hanging."""

from __future__ import annotations

import datetime
import threading
import time
import uuid

import pytest
import torch

from pfrl.config import SyncSection
from pfrl.errors import SyncError
from pfrl.transport import collective
from pfrl.transport.buckets import (
    ALIGN,
    ModuleWeights,
    Received,
    describe,
    pack,
    split_buckets,
    unpack,
)
from pfrl.transport.weights import (
    ReceiverInfo,
    ReceiverSpec,
    SenderSpec,
    WeightSync,
    resolve_transport,
    send_weights,
)
from pfrl.transport.zmq_weights import ZmqWeightReceiver, ZmqWeightSender


def _tensors() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        ("a.weight", torch.randn(7, 5, generator=g)),
        ("b.bf16", torch.randn(3, 33, generator=g).to(torch.bfloat16)),
        ("c.ids", torch.arange(11, dtype=torch.int64)),
        ("d.scalar", torch.tensor(2.5)),
        ("e.empty", torch.empty(0, 4)),
        ("f.half_t", torch.randn(4, 6, generator=g).half().t()),  # non-contiguous
    ]


def _assert_same(got: list[tuple[str, torch.Tensor]], want: list[tuple[str, torch.Tensor]]) -> None:
    assert [n for n, _ in got] == [n for n, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)


def test_pack_unpack_roundtrip_keeps_dtype_shape_and_bytes():
    tensors = _tensors()
    meta = describe(3, 0, tensors)
    assert all(tm.offset % ALIGN == 0 for tm in meta.tensors)
    _assert_same(unpack(meta, pack(meta, tensors, "cpu")), tensors)


def test_split_buckets_respects_size_and_module_weights_dedupes_tied():
    tensors = [(f"t{i}", torch.zeros(100)) for i in range(10)]  # 400 bytes each
    buckets = list(split_buckets(tensors, 1000))
    assert [len(b) for b in buckets] == [2, 2, 2, 2, 2]
    assert [len(b) for b in split_buckets([("big", torch.zeros(1000))] + tensors[:1], 100)] == [1, 1]

    emb = torch.nn.Embedding(10, 4)
    module = torch.nn.ModuleDict({"emb": emb, "head": torch.nn.Linear(4, 10, bias=False)})
    module["head"].weight = emb.weight
    names = [n for b in ModuleWeights(module).named_weight_buckets(1 << 20) for n, _ in b]
    assert names == ["emb.weight"]


def _receive_all(receiver: ZmqWeightReceiver, version: int, out: dict, timeout_s: float = 10.0) -> None:
    into = Received()
    try:
        out["tensors"] = [(n, t.clone()) for n, t in receiver.receive(version, timeout_s, into)]
        out["into"] = into
    except SyncError as e:
        out["error"] = e


def test_zmq_transport_delivers_every_bucket_to_every_receiver():
    receivers = [ZmqWeightReceiver("127.0.0.1") for _ in range(2)]
    results = [{}, {}]
    threads = [
        threading.Thread(target=_receive_all, args=(r, 5, o)) for r, o in zip(receivers, results, strict=True)
    ]
    for t in threads:
        t.start()
    tensors = _tensors()
    stats = send_weights(
        SenderSpec("zmq", 200, 10.0, [r.addr for r in receivers]), 5, split_buckets(tensors, 200)
    )
    for t in threads:
        t.join(20)
    assert stats.receivers == 2 and stats.buckets > 2
    assert stats.bytes == sum(t.numel() * t.element_size() for _, t in tensors)
    for out in results:
        assert "error" not in out
        _assert_same(out["tensors"], tensors)
        assert out["into"].buckets == stats.buckets and out["into"].bytes == stats.bytes
    for r in receivers:
        r.close()


def test_zmq_receiver_skips_leftovers_of_an_older_version():
    receiver = ZmqWeightReceiver("127.0.0.1")
    sender = ZmqWeightSender([receiver.addr], 10.0)
    old = [("x", torch.ones(3))]
    new = [("x", torch.full((3,), 7.0))]
    sender.send(1, [old])  # an earlier sync nobody consumed
    sender.send(2, [new])
    out: dict = {}
    _receive_all(receiver, 2, out)
    _assert_same(out["tensors"], new)
    sender.close()
    receiver.close()


def test_zmq_receiver_times_out_on_a_stream_without_end_marker():
    receiver = ZmqWeightReceiver("127.0.0.1")
    sender = ZmqWeightSender([receiver.addr], 10.0)

    def dies_after_one_bucket():
        yield [("x", torch.ones(3))]
        raise RuntimeError("learner died")

    with pytest.raises(RuntimeError):
        sender.send(4, dies_after_one_bucket())
    out: dict = {}
    start = time.perf_counter()
    _receive_all(receiver, 4, out, timeout_s=1.0)
    assert isinstance(out.get("error"), SyncError)
    assert time.perf_counter() - start < 5
    sender.close()
    receiver.close()


def test_zmq_sender_times_out_when_nobody_receives():
    receiver = ZmqWeightReceiver("127.0.0.1")  # bound but never read: the queue fills up
    sender = ZmqWeightSender([receiver.addr], 1.0)
    buckets = ([("x", torch.zeros(1 << 18))] for _ in range(64))
    with pytest.raises(SyncError, match="took nothing"):
        sender.send(1, buckets)
    sender.close()
    receiver.close()


def _group(world_size: int) -> tuple[collective.GroupSpec, torch.distributed.TCPStore]:
    store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    return collective.GroupSpec("127.0.0.1", store.port, uuid.uuid4().hex[:8], world_size, "gloo"), store


def test_collective_gloo_broadcast_delivers_buckets_to_all_ranks():
    spec, _store = _group(3)
    timeout = datetime.timedelta(seconds=30)
    tensors = _tensors()
    results: dict[int, list] = {}

    def member(rank: int) -> None:
        pg, _ = collective.make_group(spec, rank, timeout)
        if rank == 0:
            results[0] = list(collective.send(pg, "gloo", 9, split_buckets(tensors, 300)))
        else:
            into = Received()
            results[rank] = [(n, t.clone()) for n, t in collective.receive(pg, "gloo", 9, into)]

    threads = [threading.Thread(target=member, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    buckets, nbytes = results[0]
    assert buckets == len(list(split_buckets(tensors, 300)))
    assert nbytes == sum(t.numel() * t.element_size() for _, t in tensors)
    _assert_same(results[1], tensors)
    _assert_same(results[2], tensors)


def test_collective_join_reuses_the_group_until_its_id_changes():
    spec, _store = _group(1)
    pg = collective.join(spec, 0, 10.0)
    assert collective.join(spec, 0, 10.0) is pg
    assert collective.current_group_id() == spec.group_id
    spec2, _store2 = _group(1)
    assert collective.join(spec2, 0, 10.0) is not pg
    assert collective.current_group_id() == spec2.group_id
    collective.leave()
    assert collective.current_group_id() is None


def test_collective_join_fails_within_timeout_when_peers_never_come():
    spec, _store = _group(2)
    start = time.perf_counter()
    with pytest.raises(SyncError):
        collective.join(spec, 0, 2.0)
    assert time.perf_counter() - start < 20
    assert collective.current_group_id() is None


def _info(i: int, instance: str, group_id: str | None, transport: str = "collective") -> ReceiverInfo:
    return ReceiverInfo(i, instance, transport, "cpu", [f"tcp://127.0.0.1:{5000 + i}"], group_id)


def test_plan_reuses_a_group_only_while_the_same_generators_are_in_it():
    cfg = SyncSection(transport="collective", bucket_mb=1.0)
    state = WeightSync()
    sender, recv = state.plan([_info(0, "a", None), _info(1, "b", None)], cfg)
    group = sender.group
    assert group is not None and group.world_size == 3 and group.backend == "gloo"
    assert [r.base_rank for r in recv] == [1, 2] and sender.bucket_bytes == 1 << 20
    # Both generators joined: the next sync reuses the group.
    again, _ = state.plan([_info(0, "a", group.group_id), _info(1, "b", group.group_id)], cfg)
    assert again.group == group
    # Generator 1 was restarted (new instance, in no group): everyone forms a new group.
    fresh, _ = state.plan([_info(0, "a", group.group_id), _info(1, "c", None)], cfg)
    assert fresh.group.group_id != group.group_id


def test_plan_zmq_collects_every_worker_address_and_specs_roundtrip():
    cfg = SyncSection(transport="zmq")
    sender, recv = WeightSync().plan([_info(0, "a", None, "zmq"), _info(1, "b", None, "zmq")], cfg)
    assert sender.zmq_addrs == ["tcp://127.0.0.1:5000", "tcp://127.0.0.1:5001"] and sender.group is None
    assert SenderSpec.from_dict(sender.to_dict()) == sender
    assert ReceiverSpec.from_dict(recv[0].to_dict()) == recv[0]
    with pytest.raises(SyncError, match="disagree"):
        WeightSync().plan([_info(0, "a", None, "zmq"), _info(1, "b", None)], cfg)


def test_resolve_transport_and_unknown_sender_transports():
    assert resolve_transport("auto", "cuda") == "collective"
    assert resolve_transport("auto", "cpu") == "zmq"
    assert resolve_transport("zmq", "cuda") == "zmq"
    with pytest.raises(ValueError):
        resolve_transport("carrier-pigeon", "cpu")
    walked = []

    def buckets():
        walked.append(0)
        yield [("x", torch.zeros(2))]

    # ZeRO-3 peers walk the gathers through rank 0 (actors/learner.py), not through a `none` sender
    with pytest.raises(ValueError, match="unknown weight transport 'none'"):
        send_weights(SenderSpec("none", 64, 1.0), 2, buckets())
    assert walked == []


def test_a_generator_that_cannot_answer_prepare_sync_is_a_sync_error_not_a_collective_fallback():
    """A dead generator (Ray raises on the call) surfaces as SyncError, which the controller
    recovers from; it is no evidence against the collective, so `auto` keeps it."""
    from types import SimpleNamespace

    from pfrl.transport.weights import sync_weights

    def unavailable(_transport):
        raise RuntimeError("The actor is temporarily unavailable: RpcError")

    dead = SimpleNamespace(prepare_sync=SimpleNamespace(remote=unavailable))
    state = WeightSync()
    state.last_transport = "collective"  # the previous sync used it
    with pytest.raises(SyncError, match="did not answer prepare_sync.*temporarily unavailable"):
        sync_weights(object(), [dead], 3, SyncSection(transport="auto"), state=state)
    assert not state.zmq_fallback
