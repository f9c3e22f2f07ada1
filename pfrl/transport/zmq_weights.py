"""ZMQ weight transport: msgpack header + one raw frame per tensor, bucket by bucket.

Each receiving vLLM worker binds one PULL socket for its lifetime and reports its address; the
sender opens a PUSH socket to each address and sends every bucket to every receiver. It works on
CPU, across nodes and wherever no collective group can be formed. Tensor bytes go out zero-copy
(the frames are views of the tensors) and come in as views of the received frames, which
`load_weights` copies into the model before the next bucket is read.

To a receiver on the sender's own host (proven by a marker file), a bucket goes through a ring of
shared-memory slots instead, and the message carries only its header (pfrl/transport/shm_ring.py).

Small high-water marks bound the memory in flight to a few buckets per receiver, and every wait has
a timeout, so a dead peer surfaces as `SyncError` instead of a hang.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import nullcontext

import torch
import zmq

from pfrl.errors import SyncError
from pfrl.runtime import node_ip
from pfrl.transport.buckets import (
    Named,
    Received,
    as_bytes,
    check_order,
    describe,
    dtype_from_name,
    end_marker,
    is_end,
    payload_bytes,
    view,
)
from pfrl.transport.shm_ring import (
    RING_TAG,
    RingReader,
    SenderRing,
    SlotRef,
    create_marker,
    lease_ring,
    remove_file,
    sees_marker,
)
from pfrl.types import TensorMeta, WeightsMeta, decode, encode

HWM = 4  # buckets queued per receiver


def _frame_tensor(tm: TensorMeta, frame: zmq.Frame) -> torch.Tensor:
    if tm.nbytes == 0:
        return torch.empty(tm.shape, dtype=dtype_from_name(tm.dtype))
    with warnings.catch_warnings():
        # The frame is read-only; load_weights only reads it (copying into the model).
        warnings.simplefilter("ignore", UserWarning)
        raw = torch.frombuffer(frame.buffer, dtype=torch.uint8)
    return view(tm, raw)


class ZmqWeightSender:
    """Pushes buckets to every receiver address (one PUSH socket each); with `shm_slots` > 0,
    through a ring of that many `bucket_bytes` slots to the receivers on this host."""

    def __init__(self, addrs: list[str], timeout_s: float, shm_slots: int = 0, bucket_bytes: int = 0):
        self._timeout_ms = int(timeout_s * 1000)
        self._shm_slots, self._bucket_bytes = shm_slots, bucket_bytes
        # Receivers whose marker this process sees share its /dev/shm: they can read the ring.
        self._local = [i for i, addr in enumerate(addrs) if shm_slots and sees_marker(addr)]
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._socks: list[tuple[str, zmq.Socket[bytes]]] = []
        for addr in addrs:
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, HWM)
            # Frames still queued at close are delivered in the background, up to the timeout.
            sock.setsockopt(zmq.LINGER, self._timeout_ms)
            sock.connect(addr)
            self._socks.append((addr, sock))

    def _send_one(
        self, addr: str, sock: zmq.Socket[bytes], frames: list, trackers: list[zmq.MessageTracker]
    ) -> None:
        if not sock.poll(self._timeout_ms, zmq.POLLOUT):
            raise SyncError(f"weight receiver {addr} took nothing for {self._timeout_ms / 1000:.0f}s")
        tracker = sock.send_multipart(frames, copy=False, track=True)
        assert tracker is not None, "track=True always returns a tracker"
        trackers.append(tracker)

    def _lend(self, ring: SenderRing | None, meta: WeightsMeta, bucket: Named) -> int | None:
        """Put the bucket in a ring slot for the same-host receivers; None: it goes as frames."""
        if ring is None or not self._local or not ring.fits(meta):
            return None
        slot = ring.acquire(self._timeout_ms / 1000)
        ring.fill(slot, meta, bucket, self._local)
        return slot

    def _send_bucket(
        self, ring: SenderRing | None, meta: WeightsMeta, bucket: Named, trackers: list[zmq.MessageTracker]
    ) -> None:
        header = encode(meta)
        slot = self._lend(ring, meta, bucket)
        frames: list = []  # built only if some receiver needs them
        for i, (addr, sock) in enumerate(self._socks):
            if ring is not None and slot is not None and i in self._local:
                self._send_one(addr, sock, [RING_TAG, ring.ref(i, slot).encode(), header], trackers)
                continue
            frames = frames or [header] + [as_bytes(t.cpu()).numpy() for _, t in bucket]
            self._send_one(addr, sock, frames, trackers)

    def send(self, version: int, buckets: Iterable[Named]) -> tuple[int, int]:
        """Send every bucket then the end marker; returns (buckets, payload bytes per receiver)."""
        count = nbytes = 0
        trackers: list[zmq.MessageTracker] = []
        leased = lease_ring(self._bucket_bytes, self._shm_slots) if self._local else nullcontext(None)
        with leased as ring:
            if ring is not None:
                ring.begin()
            for bucket in buckets:
                meta = describe(version, count, bucket)
                self._send_bucket(ring, meta, bucket, trackers)
                count += 1
                nbytes += payload_bytes(meta)
            end = [encode(end_marker(version, count))]
            for addr, sock in self._socks:
                self._send_one(addr, sock, end, trackers)
        # Frames are views of the learner's tensors: return only once ZMQ is done reading them,
        # so a training step right after cannot change bytes still waiting to go out.
        try:
            for tracker in trackers:
                tracker.wait(self._timeout_ms / 1000)
        except zmq.NotDone:
            raise SyncError(f"weights still unsent after {self._timeout_ms / 1000:.0f}s") from None
        return count, nbytes

    def close(self) -> None:
        for _, sock in self._socks:
            sock.close()


class ZmqWeightReceiver:
    """One PULL socket, bound for the life of the worker; `receive` yields one version's tensors."""

    def __init__(self, host: str | None = None):
        self._sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, HWM)
        self._sock.setsockopt(zmq.LINGER, 0)
        host = host or node_ip()
        self.addr = f"tcp://{host}:{self._sock.bind_to_random_port(f'tcp://{host}')}"
        self._marker = create_marker(self.addr)  # tells a sender on this host it may use its ring
        self._ring = RingReader()

    def _recv(self, timeout_s: float) -> tuple[WeightsMeta, list[zmq.Frame], SlotRef | None]:
        """One message: its header, and either its tensor frames or where its slot is."""
        if not self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise SyncError(f"no weights arrived on {self.addr} for {timeout_s:.0f}s")
        frames = self._sock.recv_multipart(copy=False)
        ref = None
        if len(frames) == 3 and frames[0].bytes == RING_TAG:
            ref, frames = SlotRef.decode(frames[1].bytes), frames[2:]
        meta = decode(frames[0].bytes)
        if not isinstance(meta, WeightsMeta) or (ref is None and len(frames) - 1 != len(meta.tensors)):
            raise SyncError(f"malformed weight message on {self.addr}")
        return meta, frames[1:], ref

    def receive(self, version: int, timeout_s: float, into: Received) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield tensors until the end marker of `version`, for a consumer that copies them into
        place (a ring slot is released once its tensors are freed). Leftovers of an older, aborted
        sync still queued on the socket are skipped."""
        for bucket in self._buckets(version, timeout_s, into, borrow=True):
            for item in bucket:
                self._ring.flush()  # ack the slots the consumer is done with
                yield item

    def receive_buckets(self, version: int, timeout_s: float, into: Received) -> Iterator[Named]:
        """`receive`, one bucket at a time, for a caller that may keep them (staging): tensors are
        views of the bucket's frames, which they keep alive, or copies of its ring slot in memory the
        receiver reuses once they are freed (`CopyPool`)."""
        return self._buckets(version, timeout_s, into, borrow=False)

    def _bucket(self, meta: WeightsMeta, frames: list[zmq.Frame], ref: SlotRef | None, borrow: bool) -> Named:
        if ref is not None:
            return self._ring.bucket(ref, meta, borrow)
        return [(tm.name, _frame_tensor(tm, frame)) for tm, frame in zip(meta.tensors, frames, strict=True)]

    def _buckets(self, version: int, timeout_s: float, into: Received, borrow: bool) -> Iterator[Named]:
        start = time.perf_counter()
        while True:
            meta, frames, ref = self._recv(timeout_s)
            if meta.version < version:
                continue
            if is_end(meta):
                if meta.num_buckets != into.buckets or meta.version != version:
                    raise SyncError(
                        f"sender ended version {meta.version} after {meta.num_buckets} buckets, "
                        f"{into.buckets} of version {version} arrived"
                    )
                into.seconds = time.perf_counter() - start
                return
            check_order(meta, version, into.buckets)
            yield self._bucket(meta, frames, ref, borrow)
            into.buckets += 1
            into.tensors += len(meta.tensors)
            into.bytes += payload_bytes(meta)

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ring.close()
        remove_file(self._marker)
        self._marker = None
