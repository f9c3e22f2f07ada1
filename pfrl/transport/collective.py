"""Collective weight transport: a broadcast from learner rank 0 to every vLLM worker.

The group is its own process group, built from a TCPStore the controller hosts (see
`pfrl.transport.weights.sync_weights`) and a key prefix per group, so it never touches
torch.distributed's default group (DeepSpeed's) nor vLLM's own. It is NCCL on GPUs and gloo on CPU,
through the same code: the backend object's `broadcast` with rank 0 as root.

Forming a group is slow on NCCL (communicator setup), so each process keeps the one group it is in
and reuses it while the group id in the spec is unchanged; a new id (a generator was restarted)
makes every member leave the old group and join the new one.

Per bucket rank 0 broadcasts three tensors: `[header_len, payload_len]` (int64), the msgpack
`WeightsMeta` header (uint8) and the flat payload (uint8, see `pfrl.transport.buckets`).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from pfrl.errors import SyncError
from pfrl.transport.buckets import (
    Named,
    Received,
    check_order,
    describe,
    end_marker,
    is_end,
    pack,
    payload_bytes,
    unpack,
)
from pfrl.types import WeightsMeta, decode, encode


@dataclass(slots=True)
class GroupSpec:
    """Where and how to form the weight-sync group; rank 0 is the learner."""

    host: str
    port: int
    group_id: str
    world_size: int
    backend: str  # "gloo" | "nccl"


@dataclass(slots=True)
class _Membership:
    group_id: str
    rank: int
    pg: Any
    store: Any


_member: _Membership | None = None


def current_group_id() -> str | None:
    return _member.group_id if _member is not None else None


def leave() -> None:
    """Drop this process's group (an NCCL communicator is shut down, freeing its buffers)."""
    global _member
    if _member is not None and hasattr(_member.pg, "shutdown"):
        try:
            _member.pg.shutdown()
        except Exception:  # a broken group may fail to shut down; it is abandoned either way
            pass
    _member = None


def make_group(spec: GroupSpec, rank: int, timeout: datetime.timedelta) -> tuple[Any, Any]:
    """A fresh process-group backend for `rank` (blocks until every rank has joined) and the
    store client it rendezvoused on; `join` is the cached entry point."""
    import torch.distributed as dist

    store = dist.TCPStore(spec.host, spec.port, is_master=False, timeout=timeout)
    prefix = dist.PrefixStore(f"pfrl-weights/{spec.group_id}", store)
    if spec.backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return dist.ProcessGroupNCCL(prefix, rank, spec.world_size, opts), store
    return dist.ProcessGroupGloo(prefix, rank, spec.world_size, timeout=timeout), store


def join(spec: GroupSpec, rank: int, timeout_s: float) -> Any:
    """This process's member of the group `spec` at `rank` (formed once, then reused)."""
    global _member
    if _member is not None and _member.group_id == spec.group_id and _member.rank == rank:
        return _member.pg
    leave()
    try:
        pg, store = make_group(spec, rank, datetime.timedelta(seconds=timeout_s))
    except RuntimeError as e:
        raise SyncError(f"cannot join weight group {spec.group_id} as rank {rank}: {e}") from e
    _member = _Membership(spec.group_id, rank, pg, store)
    return pg


def _broadcast(pg: Any, t: torch.Tensor) -> None:
    import torch.distributed as dist

    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    opts.rootTensor = 0
    try:
        pg.broadcast([t], opts).wait()
    except RuntimeError as e:
        leave()  # the group is unusable after a failed collective; the next sync forms a new one
        raise SyncError(f"weight broadcast failed: {e}") from e


def comm_device(backend: str) -> torch.device:
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _send_one(pg: Any, meta: WeightsMeta, bucket: Named, device: torch.device) -> None:
    header = torch.frombuffer(bytearray(encode(meta)), dtype=torch.uint8).to(device)
    flat = pack(meta, bucket, device)
    _broadcast(pg, torch.tensor([header.numel(), flat.numel()], dtype=torch.int64, device=device))
    _broadcast(pg, header)
    if flat.numel():
        _broadcast(pg, flat)


def send(pg: Any, backend: str, version: int, buckets: Iterable[Named]) -> tuple[int, int]:
    """Broadcast every bucket then the end marker; returns (buckets, payload bytes)."""
    device = comm_device(backend)
    count = nbytes = 0
    for bucket in buckets:
        meta = describe(version, count, bucket)
        _send_one(pg, meta, bucket, device)
        count += 1
        nbytes += payload_bytes(meta)
    _send_one(pg, end_marker(version, count), [], device)
    return count, nbytes


def _recv_one(pg: Any, device: torch.device) -> tuple[WeightsMeta, torch.Tensor]:
    sizes = torch.empty(2, dtype=torch.int64, device=device)
    _broadcast(pg, sizes)
    header_len, flat_len = (int(v) for v in sizes.tolist())
    header = torch.empty(header_len, dtype=torch.uint8, device=device)
    _broadcast(pg, header)
    meta = decode(header.cpu().numpy().tobytes())
    if not isinstance(meta, WeightsMeta):
        raise SyncError(f"expected a WeightsMeta header, got {type(meta).__name__}")
    flat = torch.empty(flat_len, dtype=torch.uint8, device=device)
    if flat_len:
        _broadcast(pg, flat)
    return meta, flat


def receive(pg: Any, backend: str, version: int, into: Received) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the broadcast tensors bucket by bucket until the end marker (lazily: the consumer
    loads one bucket into the model before the next is received)."""
    device = comm_device(backend)
    start = time.perf_counter()
    while True:
        meta, flat = _recv_one(pg, device)
        if is_end(meta):
            if meta.num_buckets != into.buckets:
                raise SyncError(f"sender sent {meta.num_buckets} buckets, {into.buckets} arrived")
            into.seconds = time.perf_counter() - start
            return
        check_order(meta, version, into.buckets)
        yield from unpack(meta, flat)
        into.buckets += 1
        into.tensors += len(meta.tensors)
        into.bytes += payload_bytes(meta)
