"""The ZMQ transport's shared-memory ring (pfrl/transport/shm_ring.py), without vLLM: exact bytes
through reused slots, in one process and across two; frames wherever the ring does not apply; a
receiver that never releases its slots fails the sender within its timeout; staged copies survive
the slots' reuse."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time

import pytest
import torch

from pfrl.config import SyncSection
from pfrl.errors import SyncError
from pfrl.transport import shm_ring
from pfrl.transport.buckets import Received, split_buckets
from pfrl.transport.shm_ring import marker_path
from pfrl.transport.staging import stage_zmq
from pfrl.transport.weights import ReceiverInfo, SenderSpec, WeightSync, send_weights
from pfrl.transport.zmq_weights import ZmqWeightReceiver, ZmqWeightSender

BUCKET = 400  # bytes: two tensors a bucket, so a payload spans the ring's 4 slots several times
SLOTS = 4


def _payload(version: int) -> list[tuple[str, torch.Tensor]]:
    """Tensors whose bytes differ per version (so a slot reused too early shows)."""
    g = torch.Generator().manual_seed(version)
    named = [(f"w{i}", torch.randn(37 + i, generator=g)) for i in range(24)]
    named += [("h", torch.randn(3, 17, generator=g).half().t()), ("ids", torch.arange(9) + version)]
    named += [("bf", torch.randn(5, 7, generator=g).bfloat16()), ("empty", torch.empty(0, 3))]
    return named


def _same(got: list[tuple[str, torch.Tensor]], want: list[tuple[str, torch.Tensor]]) -> bool:
    return [n for n, _ in got] == [n for n, _ in want] and all(
        a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        for (_, a), (_, b) in zip(got, want, strict=True)
    )


def _send(addrs: list[str], version: int, payload: list, timeout_s: float = 10.0, slots: int = SLOTS):
    return send_weights(
        SenderSpec("zmq", BUCKET, timeout_s, addrs, shm_slots=slots), version, split_buckets(payload, BUCKET)
    )


def _in_thread(fn, *args) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # re-checked by the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _copy_into_place(rx: ZmqWeightReceiver, version: int) -> list[tuple[str, torch.Tensor]]:
    """What `load_weights` does: copy each tensor into place, keep nothing of the stream."""
    return [(n, t.clone()) for n, t in rx.receive(version, 10.0, Received())]


def _count_ring_buckets(rx: ZmqWeightReceiver) -> list[int]:
    calls: list[int] = []
    bucket = rx._ring.bucket

    def counted(ref, meta, borrow):
        calls.append(ref.slot)
        return bucket(ref, meta, borrow)

    rx._ring.bucket = counted  # type: ignore[method-assign]
    return calls


def test_round_trip_through_reused_slots_across_versions():
    rx = ZmqWeightReceiver("127.0.0.1")
    slots = _count_ring_buckets(rx)
    try:
        for version in (1, 2, 3):
            t, out = _in_thread(_copy_into_place, rx, version)
            stats = _send([rx.addr], version, _payload(version))
            t.join(20)
            assert "error" not in out and _same(out["value"], _payload(version))
            assert stats.buckets > 2 * SLOTS
        assert len(slots) == 3 * stats.buckets and set(slots) <= set(range(SLOTS))
    finally:
        rx.close()


def test_consumer_that_keeps_every_tensor_gets_exact_bytes():
    """vLLM's layer-wise reload keeps tensors until their layer is complete: a receiver that pins
    too many slots copies buckets out, so the sender never overwrites what is still held."""
    rx = ZmqWeightReceiver("127.0.0.1")
    try:
        t, out = _in_thread(lambda: list(rx.receive(4, 10.0, Received())))
        _send([rx.addr], 4, _payload(4), timeout_s=5.0)
        t.join(20)
        assert "error" not in out and _same(out["value"], _payload(4))
    finally:
        rx.close()


def test_a_receiver_that_never_releases_fails_the_sender_within_its_timeout():
    rx = ZmqWeightReceiver("127.0.0.1")  # bound, marker made, never read
    start = time.monotonic()
    with pytest.raises(SyncError, match="released no shared-memory slot"):
        _send([rx.addr], 1, _payload(1), timeout_s=1.0)
    assert time.monotonic() - start < 5
    rx.close()
    fresh = ZmqWeightReceiver("127.0.0.1")  # the next sync starts with every slot free again
    t, out = _in_thread(_copy_into_place, fresh, 2)
    _send([fresh.addr], 2, _payload(2))
    t.join(20)
    assert _same(out["value"], _payload(2))
    fresh.close()


def test_receivers_without_a_visible_marker_and_oversized_buckets_get_frames():
    local, remote = ZmqWeightReceiver("127.0.0.1"), ZmqWeightReceiver("127.0.0.1")
    os.unlink(marker_path(remote.addr))  # as a receiver on another host: its marker is not here
    local_slots, remote_slots = _count_ring_buckets(local), _count_ring_buckets(remote)
    payload = _payload(5) + [("big", torch.randn(20_000))]  # alone, larger than a slot (bucket + headroom)
    try:
        threads = [_in_thread(_copy_into_place, r, 5) for r in (local, remote)]
        stats = _send([local.addr, remote.addr], 5, payload)
        for t, out in threads:
            t.join(20)
            assert "error" not in out and _same(out["value"], payload)
        assert remote_slots == [] and len(local_slots) == stats.buckets - 1
    finally:
        local.close()
        remote.close()


def test_ring_off_sends_frames_only():
    rx = ZmqWeightReceiver("127.0.0.1")
    slots = _count_ring_buckets(rx)
    t, out = _in_thread(_copy_into_place, rx, 1)
    _send([rx.addr], 1, _payload(1), slots=0)
    t.join(20)
    assert _same(out["value"], _payload(1)) and slots == []
    rx.close()


def test_staged_buckets_are_copies_that_outlive_the_slots_reuse():
    rx = ZmqWeightReceiver("127.0.0.1")
    try:
        t, _ = _in_thread(_send, [rx.addr], 1, _payload(1))
        staged = stage_zmq(rx, 1, 10.0)
        t.join(20)
        t, out = _in_thread(_copy_into_place, rx, 2)  # version 2 overwrites every slot
        _send([rx.addr], 2, _payload(2))
        t.join(20)
        assert _same(out["value"], _payload(2)) and _same(list(staged.tensors()), _payload(1))
    finally:
        rx.close()


def _spawned_receiver(versions: list[int], q) -> None:
    rx = ZmqWeightReceiver("127.0.0.1")
    q.put(rx.addr)
    for version in versions:
        q.put(_same(_copy_into_place(rx, version), _payload(version)))  # tensors do not cross a Queue intact
    rx.close()


def test_round_trip_to_a_receiver_in_another_process():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_spawned_receiver, args=([1, 2, 3], q), daemon=True)
    proc.start()
    try:
        addr = q.get(timeout=120)
        assert os.path.exists(marker_path(addr))
        for version in (1, 2, 3):
            _send([addr], version, _payload(version), timeout_s=30.0)
            assert q.get(timeout=60) is True
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
    assert not os.path.exists(marker_path(addr))  # the receiver removes its marker on close


def test_ring_is_made_once_and_unlinked_on_close():
    rx = ZmqWeightReceiver("127.0.0.1")
    t, _ = _in_thread(_copy_into_place, rx, 1)
    _send([rx.addr], 1, _payload(1))
    t.join(20)
    ring = shm_ring._RING
    assert ring is not None and os.path.exists(ring.path)
    t, _ = _in_thread(_copy_into_place, rx, 2)
    _send([rx.addr], 2, _payload(2))
    t.join(20)
    assert shm_ring._RING is ring  # reused across syncs
    shm_ring.close_ring()
    assert not os.path.exists(ring.path) and shm_ring._RING is None
    rx.close()


def test_sender_spec_carries_the_ring_from_sync_config():
    infos = [ReceiverInfo(0, "i0", "zmq", "cpu", ["tcp://127.0.0.1:5000"], None)]
    sender, _ = WeightSync().plan(infos, SyncSection(transport="zmq", staged=False))
    assert sender.shm_slots == 4 and SenderSpec.from_dict(sender.to_dict()) == sender
    sender, _ = WeightSync().plan(infos, SyncSection(transport="zmq", shm_ring=False))
    assert sender.shm_slots == 0
    old = {k: v for k, v in sender.to_dict().items() if k != "shm_slots"}  # a spec from before the ring
    assert SenderSpec.from_dict(old).shm_slots == 0
    with pytest.raises(ValueError):
        SyncSection(shm_slots=1)
    assert ZmqWeightSender(["tcp://127.0.0.1:5000"], 1.0)._local == []  # no ring unless asked


def test_sweep_removes_the_files_of_dead_processes_only(tmp_path):
    dead = 2**22 + 12345  # above pid_max's ceiling: no such process
    for name, pid in [
        ("pfrl-ring-{}-ab", dead),
        ("pfrl-ring-{}-ab.ack", dead),
        ("pfrl-ring-{}-cd", os.getpid()),
    ]:
        (tmp_path / name.format(pid)).write_bytes(b"")
    (tmp_path / "pfrl-rx-dead").write_text(str(dead))
    (tmp_path / "pfrl-rx-live").write_text(str(os.getpid()))
    (tmp_path / "other").write_text(str(dead))
    shm_ring.sweep_dead(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "other",
        f"pfrl-ring-{os.getpid()}-cd",
        "pfrl-rx-live",
    ]


def test_a_full_dev_shm_means_frames_not_a_crash(monkeypatch, caplog):
    """Docker's default /dev/shm is 64 MB: a ring that does not fit is refused up front (its pages
    reserved at creation), and the sync goes as frames."""
    import errno

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    shm_ring.close_ring()
    monkeypatch.setattr(shm_ring.os, "posix_fallocate", full)
    rx = ZmqWeightReceiver("127.0.0.1")
    slots = _count_ring_buckets(rx)
    t, out = _in_thread(_copy_into_place, rx, 1)
    _send([rx.addr], 1, _payload(1))
    t.join(20)
    assert _same(out["value"], _payload(1)) and slots == [] and shm_ring._RING is None
    assert "sending frames" in caplog.text
    assert not [n for n in os.listdir(shm_ring.SHM_DIR) if n.startswith(f"pfrl-ring-{os.getpid()}-")]
    rx.close()


# -- the receiver's pool for copies out of its slots -------------------------------------------
def test_copy_pool_reuses_a_buffer_only_once_every_view_of_it_is_freed():
    pool = shm_ring.CopyPool()
    a = pool.take(1000)
    view = a[10:20].view(torch.int16)  # a view outliving its base tensor pins the buffer
    ptr = a.data_ptr()
    del a
    b = pool.take(1000)
    assert b.data_ptr() != ptr and pool.allocated == 2  # still viewed: not lent again
    del view
    c = pool.take(1000)
    assert c.data_ptr() == ptr and pool.allocated == 2  # freed: reused, no new buffer
    assert pool.owned_bytes() == 2000


def test_copy_pool_owns_no_more_than_it_ever_lent_at_once():
    pool = shm_ring.CopyPool()
    for _ in range(3):  # the same layout sync after sync: the same two buffers
        held = [pool.take(300), pool.take(500)]
        del held
    assert pool.allocated == 2 and pool.owned_bytes() == 800
    held = [pool.take(700)]  # a new layout: the old sizes' free buffers go first
    assert pool.owned_bytes() <= 800 and pool.allocated == 3
    del held
    assert pool.take(0).numel() == 0 and pool.owned_bytes() <= 800


def test_staged_copies_reuse_their_memory_across_syncs_but_never_under_a_held_version():
    rx = ZmqWeightReceiver("127.0.0.1")
    pool = rx._ring.copies
    try:
        staged = {}
        for version in (1, 2):  # version 1 is still held (waiting for its swap) while 2 is staged
            t, _ = _in_thread(_send, [rx.addr], version, _payload(version))
            staged[version] = stage_zmq(rx, version, 10.0)
            t.join(20)
        assert _same(list(staged[1].tensors()), _payload(1)) and _same(list(staged[2].tensors()), _payload(2))
        per_version = len(staged[1].buckets)
        assert pool.allocated == 2 * per_version  # nothing of version 1 was lent again
        del staged[1], staged[2]  # both swapped in (or dropped): their buffers come back
        for version in (3, 4):
            t, _ = _in_thread(_send, [rx.addr], version, _payload(version))
            staged[version] = stage_zmq(rx, version, 10.0)
            t.join(20)
            assert _same(list(staged[version].tensors()), _payload(version))
            del staged[version]
        assert pool.allocated == 2 * per_version  # versions 3 and 4 made no new buffer
    finally:
        rx.close()
