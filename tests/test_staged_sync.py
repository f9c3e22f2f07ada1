"""Staged weight sync without vLLM: weights are received while an engine call runs, the learner is
answered then, and the swap into the model happens only between engine calls, before the next one.

The engine-level tests drive `GeneratorEngine`'s sync methods over a fake LLM (its workers' answers
are scripted), so they check the ordering and failure rules, not vLLM's reload."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
import torch
from helpers import FakeVllmEngine, held_call, logged_call, start_thread, wait_until

from pfrl.config import SyncSection
from pfrl.engine_stepper import EngineStepper
from pfrl.engine_weights import EngineWeights, SwapGate, WeightsIncomplete
from pfrl.errors import SyncError
from pfrl.generation import GeneratorEngine
from pfrl.transport import staging
from pfrl.transport.buckets import split_buckets
from pfrl.transport.staging import StagedSwaps, StagedWeights, stage_zmq
from pfrl.transport.weights import ReceiverSpec, WeightSync
from pfrl.transport.zmq_weights import ZmqWeightReceiver, ZmqWeightSender


def _staged(version: int) -> StagedWeights:
    return StagedWeights(version, [[("x", torch.full((2,), float(version)))]], 8, 0.0)


# -- the gate and StagedSwaps -------------------------------------------------------------------
def test_an_announced_swap_holds_back_engine_calls_that_start_after_it():
    gate, log = SwapGate(), []
    in_call, release = threading.Event(), threading.Event()

    first_call = held_call(gate, log, in_call, release, end="call 1 end")
    second_call = logged_call(gate, log, "call 2")
    t1 = start_thread(first_call)
    assert in_call.wait(5)
    gate.announce_swap()  # a staged sync answered the learner: its swap must come before call 2
    assert gate.swap_waiting()
    t2 = start_thread(second_call)
    release.set()
    t1.join(5)
    time.sleep(0.05)
    assert log == ["call 1 end"]  # call 2 still waits: the announced swap has not run
    with gate.swap(announced=True):
        log.append("swap")
    t2.join(5)
    assert log == ["call 1 end", "swap", "call 2"] and not gate.swap_waiting()


def test_a_version_staged_during_an_engine_call_is_applied_between_calls():
    gate, log = SwapGate(), []
    in_call, release = threading.Event(), threading.Event()
    swaps = StagedSwaps(gate, lambda s: log.append(f"apply v{s.version}"))

    first_call = held_call(gate, log, in_call, release, end="call 1 end")
    second_call = logged_call(gate, log, "call 2")
    t1 = start_thread(first_call)
    assert in_call.wait(5)
    swaps.stage(_staged(3))  # returns at once: the caller (the learner's sync) does not wait
    assert swaps.pending_version() == 3  # what the next engine call will serve
    t2 = start_thread(second_call)
    time.sleep(0.05)
    assert log == []  # neither the swap nor call 2 ran inside call 1
    release.set()
    for t in (t1, t2):
        t.join(5)
    swaps.join()
    assert log == ["call 1 end", "apply v3", "call 2"]
    assert swaps.pending_version() is None and swaps.last_error is None


def test_a_newer_staged_version_replaces_one_still_waiting():
    gate, applied = SwapGate(), []
    in_call, release = threading.Event(), threading.Event()
    swaps = StagedSwaps(gate, lambda s: applied.append(s.version))

    def call():
        with gate.engine_call():
            in_call.set()
            release.wait(5)

    t = start_thread(call)
    assert in_call.wait(5)
    swaps.stage(_staged(1))
    swaps.stage(_staged(2))
    assert swaps.pending_version() == 2
    release.set()
    t.join(5)
    swaps.join()
    assert applied == [2] and not gate.swap_waiting()


def test_pause_mode_interrupts_the_engine_for_a_staged_swap():
    gate, engine, applied = SwapGate(), FakeVllmEngine(), []
    swaps = StagedSwaps(gate, lambda s: applied.append(s.version))
    stepper = EngineStepper(engine, gate, lambda: applied[-1] if applied else 0, lambda: None, True, "p-")
    box: dict = {}
    t = start_thread(lambda: box.setdefault("round", stepper.run([[0]], lambda _v: {0: 100_000})))
    wait_until(lambda: len(engine.batch_sizes) > 0)  # sampling
    swaps.stage(_staged(4))
    t.join(5)
    swaps.join()
    assert box["round"].interrupted and box["round"].version == 0 and applied == [4]
    assert stepper.run([[0]], lambda _v: {0: 2}).version == 4  # sampled again under the new weights
    stepper.stop()


def test_a_failed_apply_is_kept_and_drops_the_pending_version():
    def apply(s: StagedWeights) -> None:
        raise SyncError("worker refused")

    swaps = StagedSwaps(SwapGate(), apply)
    swaps.stage(_staged(5))
    swaps.join()
    assert isinstance(swaps.last_error, SyncError) and swaps.pending_version() is None


def test_stage_zmq_keeps_every_bucket_and_a_broken_stream_stages_nothing():
    rx = ZmqWeightReceiver("127.0.0.1")
    sender = ZmqWeightSender([rx.addr], 10.0)
    tensors = [("a", torch.randn(5, 3)), ("b", torch.arange(7)), ("c", torch.randn(40))]
    t = start_thread(sender.send, 2, list(split_buckets(tensors, 64)))
    staged = stage_zmq(rx, 2, 10.0)
    t.join(5)
    assert staged.version == 2 and len(staged.buckets) > 1
    got = list(staged.tensors())
    assert [n for n, _ in got] == ["a", "b", "c"]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, tensors, strict=True))
    assert staging.take(staging.put(staged)) is staged
    with pytest.raises(LookupError):
        staging.take("staged-nope")

    def dies():
        yield [("a", torch.ones(3))]
        raise RuntimeError("learner died")

    with pytest.raises(RuntimeError):
        sender.send(3, dies())
    with pytest.raises(SyncError):
        stage_zmq(rx, 3, 0.5)
    sender.close()
    rx.close()


def test_plan_sends_one_stream_per_generator_process_when_staged():
    from pfrl.transport.weights import ReceiverInfo

    infos = [ReceiverInfo(i, f"i{i}", "zmq", "cpu", [f"tcp://w{i}a", f"tcp://w{i}b"], None, f"tcp://s{i}")
             for i in range(2)]
    sender, recv = WeightSync().plan(infos, SyncSection(transport="zmq"))
    assert sender.zmq_addrs == ["tcp://s0", "tcp://s1"] and all(r.staged for r in recv)
    assert ReceiverSpec.from_dict(recv[0].to_dict()) == recv[0]
    sender, recv = WeightSync().plan(infos, SyncSection(transport="zmq", staged=False))
    assert sender.zmq_addrs == ["tcp://w0a", "tcp://w0b", "tcp://w1a", "tcp://w1b"]
    assert not any(r.staged for r in recv)


# -- the engine's sync methods over a fake LLM --------------------------------------------------
class FakeLLM:
    def __init__(self) -> None:
        self.loaded: list[int] = []
        self.fail_next = False

    def collective_rpc(self, method: str, args: tuple = ()) -> list[dict[str, Any]]:
        assert method == "pfrl_load_staged"
        version, token = args
        staged = staging.take(token)
        if self.fail_next:
            return [{"ok": False, "error": "RuntimeError: half loaded", "group_id": None}]
        self.loaded.append(int(staged.buckets[0][0][1][0]))
        return [{"ok": True, "error": None, "version": version, "bytes": staged.bytes, "group_id": None}]

    def reset_prefix_cache(self) -> bool:
        return True


def _engine() -> GeneratorEngine:
    """A GeneratorEngine around a fake LLM: real weights, gate and staging; the engine call records
    the version it samples with."""
    engine = GeneratorEngine.__new__(GeneratorEngine)
    engine.generator_id, engine._llm = 0, FakeLLM()
    workers = [{"addr": "tcp://unused", "device": "cpu", "pid": os.getpid()}]
    sync_cfg = SyncSection(transport="zmq", timeout_s=5.0)
    engine.weights = EngineWeights(engine._llm, workers, SwapGate(), sync_cfg, generator_id=0, instance_id="fake")
    engine._gate = engine.weights.gate
    engine._stepper = EngineStepper(FakeVllmEngine(), engine._gate, lambda: engine.weights.version,
                                    engine.weights.check, False, "f-")
    return engine


def _sample(engine: GeneratorEngine) -> int:
    """One engine call through the engine's stepper; returns the version it sampled with."""
    return engine._stepper.run([[0]], lambda _v: {0: 1}).version


def _sync(engine: GeneratorEngine | EngineWeights, version: int, value: float, *, break_off: bool = False) -> dict:
    weights = engine if isinstance(engine, EngineWeights) else engine.weights
    info = weights.receiver_info("zmq")
    assert info.stage_addr is not None
    # Through the shared-memory ring (the default on one host): the staged copies must outlive it.
    sender = ZmqWeightSender([info.stage_addr], 5.0, shm_slots=2, bucket_bytes=1024)
    assert sender._local == [0]  # the stage receiver's marker is visible here

    def buckets():
        yield [("x", torch.full((2,), value))]
        if break_off:
            raise RuntimeError("learner died mid-publish")
        yield [("y", torch.zeros(2))]

    def send():
        try:
            sender.send(version, buckets())
        except RuntimeError:
            pass

    t = start_thread(send)
    try:
        return weights.receive(version, ReceiverSpec("zmq", 1.0, staged=True).to_dict())
    finally:
        t.join(5)
        sender.close()


def test_engine_answers_a_staged_sync_during_a_call_and_swaps_before_the_next():
    engine = _engine()
    in_call, release, seen = threading.Event(), threading.Event(), []

    def long_call():
        with engine._gate.engine_call():
            in_call.set()
            release.wait(5)
            seen.append(engine.policy_version)

    t = start_thread(long_call)
    assert in_call.wait(5)
    answer = _sync(engine, 1, 1.0)  # answered while the call still runs
    assert answer["version"] == 1 and answer["staged"] and answer["bytes"] == 16
    assert not release.is_set() and engine.serving_version() == 1 and engine.policy_version == 0
    release.set()
    t.join(5)
    assert _sample(engine) == 1
    assert seen == [0] and engine._llm.loaded == [1]


def test_engine_keeps_its_weights_when_a_staged_transfer_breaks_off():
    engine = _engine()
    _sync(engine, 1, 1.0)
    assert _sample(engine) == 1
    with pytest.raises(SyncError):
        _sync(engine, 2, 2.0, break_off=True)
    # Nothing reached the model: it still serves version 1, whole, and may sample.
    assert engine.serving_version() == 1 and not engine._gate.swap_waiting()
    assert _sample(engine) == 1
    assert engine._llm.loaded == [1]


def test_engine_refuses_to_sample_after_a_staged_swap_fails_until_a_full_sync():
    engine = _engine()
    engine._llm.fail_next = True
    _sync(engine, 1, 1.0)
    engine.weights.staged.join()
    assert isinstance(engine.weights.staged.last_error, SyncError)
    with pytest.raises(WeightsIncomplete):
        _sample(engine)
    assert engine.serving_version() == 0  # not the version it was sent: the controller sees it stale
    engine._llm.fail_next = False
    _sync(engine, 2, 2.0)
    assert _sample(engine) == 2


def test_a_staged_version_keeps_its_memory_until_its_swap_is_done_and_then_lends_it_again():
    """Staged copies come from the stage receiver's reused buffers: a version whose swap is still
    loading must not be overwritten by the next sync's copies; once swapped in, its buffers serve
    later syncs (no new memory)."""
    llm = FakeLLM()
    workers = [{"addr": "tcp://unused", "device": "cpu", "pid": os.getpid()}]  # the `uni` executor
    weights = EngineWeights(llm, workers, SwapGate(), SyncSection(transport="zmq", timeout_s=5.0), 0, "fake")
    loading, finish = threading.Event(), threading.Event()

    def slow_load(method: str, args: tuple = ()) -> list[dict[str, Any]]:
        staged = staging.take(args[1])
        if staged.version == 1:
            loading.set()
            finish.wait(5)  # the next sync is staged meanwhile
        llm.loaded.append(int(staged.buckets[0][0][1][0]))
        return [{"ok": True, "error": None, "version": args[0], "bytes": staged.bytes, "group_id": None}]

    llm.collective_rpc = slow_load  # type: ignore[method-assign]
    _sync(weights, 1, 1.0)
    assert loading.wait(5)
    _sync(weights, 2, 2.0)  # through the same ring and receiver, while version 1 is being loaded
    pool = weights._stage_rx._ring.copies  # type: ignore[union-attr]
    made = pool.allocated
    assert made == 4  # 2 buckets each, none of version 1's lent again
    finish.set()
    weights.staged.join()
    assert llm.loaded == [1, 2] and weights.version == 2
    _sync(weights, 3, 3.0)
    weights.staged.join()
    assert llm.loaded == [1, 2, 3] and pool.allocated == made  # reused what the swaps released


class FakeTPLLM:
    """Two tensor-parallel workers in processes of their own (pids not the generator's) on its host:
    `pfrl_receive` reads their real receivers here, as vLLM's workers would, keeping copies."""

    def __init__(self) -> None:
        self.rxs = [ZmqWeightReceiver("127.0.0.1") for _ in range(2)]
        self.got: list[list[tuple[str, torch.Tensor]]] = []
        self.ring_buckets = 0
        for rx in self.rxs:
            bucket = rx._ring.bucket

            def counted(ref, meta, borrow, bucket=bucket):
                self.ring_buckets += 1
                return bucket(ref, meta, borrow)

            rx._ring.bucket = counted  # type: ignore[method-assign]

    def workers(self) -> list[dict[str, Any]]:
        return [{"addr": rx.addr, "device": "cpu", "pid": os.getpid() + 1 + i} for i, rx in enumerate(self.rxs)]

    def collective_rpc(self, method: str, args: tuple = ()) -> list[dict[str, Any]]:
        from pfrl.transport.buckets import Received

        assert method == "pfrl_receive"
        version, spec = args
        timeout_s = ReceiverSpec.from_dict(spec).timeout_s
        intos = [Received() for _ in self.rxs]
        got: list[list[tuple[str, torch.Tensor]]] = [[] for _ in self.rxs]

        def load(i: int) -> None:  # each worker copies into place as it reads, like load_weights
            got[i] = [(n, t.clone()) for n, t in self.rxs[i].receive(version, timeout_s, intos[i])]

        threads = [start_thread(load, i) for i in range(len(self.rxs))]
        for t in threads:
            t.join(10)
        self.got += got
        return [{"ok": True, "error": None, "version": version, "bytes": into.bytes, "group_id": None} for into in intos]

    def reset_prefix_cache(self) -> bool:
        return True


@pytest.mark.parametrize("shm_ring", [True, False])
def test_staged_weights_go_to_out_of_process_workers_through_the_ring_on_one_host(shm_ring):
    llm = FakeTPLLM()
    sync_cfg = SyncSection(transport="zmq", timeout_s=5.0, bucket_mb=1024 / 2**20, shm_ring=shm_ring)
    weights = EngineWeights(llm, llm.workers(), SwapGate(), sync_cfg, generator_id=0, instance_id="fake")
    tensors = [(f"w{i}", torch.randn(50 + i)) for i in range(12)]
    buckets = list(split_buckets(tensors, 1024))
    try:
        weights._apply_staged(StagedWeights(7, buckets, sum(t.numel() * 4 for _, t in tensors), 0.0))
        assert weights.version == 7 and len(llm.got) == 2
        for got in llm.got:
            assert [n for n, _ in got] == [n for n, _ in tensors]
            assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, tensors, strict=True))
        # With the ring on, every bucket reached both workers through it.
        assert llm.ring_buckets == (2 * len(buckets) if shm_ring else 0)
    finally:
        for rx in llm.rxs:
            rx.close()
