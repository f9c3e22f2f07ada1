"""ZMQ weight transport: msgpack header + one raw frame per tensor, bucket by bucket.

Each receiving vLLM worker binds one PULL socket for its lifetime and reports its address; the
sender opens a PUSH socket to each address and sends every bucket to every receiver. It works on
CPU, across nodes and wherever no collective group can be formed. Tensor bytes go out zero-copy
(the frames are views of the tensors) and come in as views of the received frames, which
`load_weights` copies into the model before the next bucket is read.

Small high-water marks bound the memory in flight to a few buckets per receiver, and every wait has
a timeout, so a dead peer surfaces as `SyncError` instead of a hang.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator

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
    """Pushes buckets to every receiver address (one PUSH socket each)."""

    def __init__(self, addrs: list[str], timeout_s: float):
        self._timeout_ms = int(timeout_s * 1000)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._socks: list[tuple[str, zmq.Socket[bytes]]] = []
        for addr in addrs:
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, HWM)
            # Frames still queued at close are delivered in the background, up to the timeout.
            sock.setsockopt(zmq.LINGER, self._timeout_ms)
            sock.connect(addr)
            self._socks.append((addr, sock))

    def _send(self, frames: list, trackers: list[zmq.MessageTracker]) -> None:
        for addr, sock in self._socks:
            if not sock.poll(self._timeout_ms, zmq.POLLOUT):
                raise SyncError(f"weight receiver {addr} took nothing for {self._timeout_ms / 1000:.0f}s")
            tracker = sock.send_multipart(frames, copy=False, track=True)
            assert tracker is not None, "track=True always returns a tracker"
            trackers.append(tracker)

    def send(self, version: int, buckets: Iterable[Named]) -> tuple[int, int]:
        """Send every bucket then the end marker; returns (buckets, payload bytes per receiver)."""
        count = nbytes = 0
        trackers: list[zmq.MessageTracker] = []
        for bucket in buckets:
            meta = describe(version, count, bucket)
            frames = [encode(meta)] + [as_bytes(t.cpu()).numpy() for _, t in bucket]
            self._send(frames, trackers)
            count += 1
            nbytes += payload_bytes(meta)
        self._send([encode(end_marker(version, count))], trackers)
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

    def _recv(self, timeout_s: float) -> tuple[WeightsMeta, list[zmq.Frame]]:
        if not self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise SyncError(f"no weights arrived on {self.addr} for {timeout_s:.0f}s")
        frames = self._sock.recv_multipart(copy=False)
        meta = decode(frames[0].bytes)
        if not isinstance(meta, WeightsMeta) or len(frames) - 1 != len(meta.tensors):
            raise SyncError(f"malformed weight message on {self.addr}")
        return meta, frames[1:]

    def receive(self, version: int, timeout_s: float, into: Received) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield tensors until the end marker of `version`. Leftovers of an older, aborted sync
        still queued on the socket are skipped."""
        for bucket in self.receive_buckets(version, timeout_s, into):
            yield from bucket

    def receive_buckets(self, version: int, timeout_s: float, into: Received) -> Iterator[Named]:
        """`receive`, one bucket at a time (its tensors are views of the bucket's frames, which
        they keep alive: a staged bucket holds its bytes without a copy)."""
        start = time.perf_counter()
        while True:
            meta, frames = self._recv(timeout_s)
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
            yield [(tm.name, _frame_tensor(tm, frame)) for tm, frame in zip(meta.tensors, frames, strict=True)]
            into.buckets += 1
            into.tensors += len(meta.tensors)
            into.bytes += payload_bytes(meta)

    def close(self) -> None:
        self._sock.close(linger=0)
