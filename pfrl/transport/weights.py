"""Weight sync: one interface over two transports, and the handshake the controller runs.

Learner rank 0 publishes `(version, named tensors)` bucket by bucket; every vLLM worker of every
generator receives them (in its worker extension, `pfrl.transport.vllm_worker`) and applies them
with the model's `load_weights`, then reports the version it serves. Transports:

- `collective`: broadcast over a dedicated process group (NCCL on GPUs, gloo on CPU);
- `zmq`: msgpack header + raw frames over ZMQ, for CPU, across nodes, and where no group forms; to
  receivers on the learner's own host, through a shared-memory ring (`sync.shm_ring`,
  pfrl/transport/shm_ring.py).

`sync_weights` runs the handshake (see docs/generation.md):
  1. `gen.prepare_sync(transport)` on every generator -> `ReceiverInfo` (no engine access);
  2. the controller picks the transport, and for `collective` hosts the group's TCPStore;
  3. `learner.publish_weights(version, sender_spec)` and `gen.receive_weights(version, spec)` run
     concurrently; each generator swaps between engine calls, never mid-request. With
     `sync.staged` (ZMQ), a generator answers once the bytes are staged in its process and swaps
     them in before its next engine call (pfrl/transport/staging.py): the sync does not wait for
     the engine call in flight.
Specs cross Ray as plain dicts made from the dataclasses below (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pfrl.config import SyncSection
from pfrl.errors import SyncError
from pfrl.transport.buckets import Named
from pfrl.transport.collective import GroupSpec

log = logging.getLogger(__name__)

TRANSPORTS = ("collective", "zmq")


@dataclass(slots=True)
class SenderSpec:
    """What learner rank 0 needs to publish one version."""

    transport: str
    bucket_bytes: int
    timeout_s: float
    zmq_addrs: list[str] = field(default_factory=list)
    group: GroupSpec | None = None
    shm_slots: int = 0  # zmq: slots of the shared-memory ring for same-host receivers (0: frames only)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SenderSpec:
        group = GroupSpec(**d["group"]) if d["group"] is not None else None
        return cls(**{**d, "zmq_addrs": list(d["zmq_addrs"]), "group": group})


@dataclass(slots=True)
class ReceiverSpec:
    """What one generator's workers need to receive one version; worker r of the generator is
    rank `base_rank + r` of the collective group."""

    transport: str
    timeout_s: float
    group: GroupSpec | None = None
    base_rank: int = 0
    staged: bool = False  # zmq: the generator process stages the weights (pfrl/transport/staging.py)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReceiverSpec:
        group = GroupSpec(**d["group"]) if d["group"] is not None else None
        return cls(d["transport"], d["timeout_s"], group, d["base_rank"], bool(d.get("staged", False)))


@dataclass(slots=True)
class ReceiverInfo:
    """A generator's answer to `prepare_sync`: how its workers can be reached."""

    generator_id: int
    instance_id: str  # new on every (re)start of the actor
    transport: str  # the requested transport with `auto` resolved for this generator's device
    device: str
    zmq_addrs: list[str]  # one per vLLM worker
    group_id: str | None  # the collective group its workers are in, if any
    stage_addr: str | None = None  # the generator process's own ZMQ receiver, for staged syncs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReceiverInfo:
        return cls(**d)


@dataclass(slots=True)
class SendStats:
    version: int
    transport: str
    buckets: int
    bytes: int
    receivers: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_transport(requested: str, device: str) -> str:
    """`auto`: the collective on GPUs (NCCL), ZMQ on CPU."""
    if requested == "auto":
        return "collective" if device == "cuda" else "zmq"
    if requested not in TRANSPORTS:
        raise ValueError(f"unknown weight transport {requested!r}")
    return requested


def send_weights(spec: SenderSpec, version: int, buckets: Iterable[Named]) -> SendStats:
    """Learner side: stream `buckets` to every receiver named in `spec`."""
    if spec.transport not in TRANSPORTS:
        raise ValueError(f"unknown weight transport {spec.transport!r}")
    start = time.perf_counter()
    if spec.transport == "zmq":
        from pfrl.transport.zmq_weights import ZmqWeightSender

        sender = ZmqWeightSender(spec.zmq_addrs, spec.timeout_s, spec.shm_slots, spec.bucket_bytes)
        try:
            count, nbytes = sender.send(version, buckets)
        finally:
            sender.close()
        receivers = len(spec.zmq_addrs)
    else:
        from pfrl.transport import collective

        assert spec.group is not None, "a collective sender spec carries its group"
        pg = collective.join(spec.group, 0, spec.timeout_s)
        count, nbytes = collective.send(pg, spec.group.backend, version, buckets)
        receivers = spec.group.world_size - 1
    return SendStats(version, spec.transport, count, nbytes, receivers, time.perf_counter() - start)


@dataclass
class _HostedGroup:
    """The controller's side of a collective group: the TCPStore everyone rendezvouses on."""

    spec: GroupSpec
    members: tuple[str, ...]  # generator instance ids, in rank order
    store: Any


class WeightSync:
    """Controller-side state across syncs: the hosted collective group (reused while the same
    generator instances are in it) and whether `auto` fell back to ZMQ."""

    def __init__(self) -> None:
        self._group: _HostedGroup | None = None
        self.zmq_fallback = False
        self.last_transport: str | None = None

    def _group_for(self, infos: list[ReceiverInfo], workers: list[int], backend: str) -> GroupSpec:
        members = tuple(i.instance_id for i in infos)
        g = self._group
        if g and g.members == members and all(i.group_id == g.spec.group_id for i in infos):
            return g.spec
        import torch.distributed as dist

        from pfrl.runtime import node_ip

        host = node_ip()
        store = dist.TCPStore(host, 0, is_master=True, wait_for_workers=False)
        spec = GroupSpec(host, store.port, uuid.uuid4().hex[:12], 1 + sum(workers), backend)
        self._group = _HostedGroup(spec, members, store)
        return spec

    def plan(self, infos: list[ReceiverInfo], cfg: SyncSection) -> tuple[SenderSpec, list[ReceiverSpec]]:
        transports = {i.transport for i in infos}
        if len(transports) != 1:
            raise SyncError(f"generators disagree on the weight transport: {sorted(transports)}")
        transport = "zmq" if self.zmq_fallback and cfg.transport == "auto" else transports.pop()
        self.last_transport = transport
        bucket_bytes = int(cfg.bucket_mb * 2**20)
        if transport == "zmq":
            if cfg.staged and all(i.stage_addr for i in infos):
                # One stream per generator, into its process, while its engine keeps sampling.
                staged = [i.stage_addr for i in infos if i.stage_addr]
                recv = [ReceiverSpec("zmq", cfg.timeout_s, staged=True) for _ in infos]
                return SenderSpec("zmq", bucket_bytes, cfg.timeout_s, staged, shm_slots=cfg.ring_slots), recv
            addrs = [a for i in infos for a in i.zmq_addrs]
            recv = [ReceiverSpec("zmq", cfg.timeout_s) for _ in infos]
            return SenderSpec("zmq", bucket_bytes, cfg.timeout_s, addrs, shm_slots=cfg.ring_slots), recv
        workers = [len(i.zmq_addrs) for i in infos]
        backend = "nccl" if infos[0].device == "cuda" else "gloo"
        group = self._group_for(infos, workers, backend)
        bases = [1 + sum(workers[:k]) for k in range(len(infos))]
        recv = [ReceiverSpec("collective", cfg.timeout_s, group, b) for b in bases]
        return SenderSpec("collective", bucket_bytes, cfg.timeout_s, group=group), recv

    def forget_group(self) -> None:
        self._group = None

    def fall_back_to_zmq(self) -> None:
        self.zmq_fallback = True
        self._group = None


def _run_once(
    learner: Any,
    gens: Sequence[Any],
    version: int,
    cfg: SyncSection,
    state: WeightSync,
) -> dict[str, Any]:
    import ray

    start = time.perf_counter()
    state.last_transport = None  # set by `plan`: a failure before it is no reason to leave the collective
    try:
        answers = ray.get([g.prepare_sync.remote(cfg.transport) for g in gens], timeout=cfg.timeout_s)
    except Exception as e:  # a generator died or hangs: the caller decides whether the run survives
        raise SyncError(
            f"weight sync of version {version}: a generator did not answer prepare_sync: {e}"
        ) from e
    infos = [ReceiverInfo.from_dict(d) for d in answers]
    sender, receivers = state.plan(infos, cfg)
    pub = learner.publish_weights.remote(version, sender.to_dict())
    recvs = [g.receive_weights.remote(version, r.to_dict()) for g, r in zip(gens, receivers, strict=True)]
    try:
        sent, *results = ray.get([pub, *recvs], timeout=2 * cfg.timeout_s)
    except Exception as e:
        state.forget_group()  # members may be stuck mid-collective: the next sync forms a new group
        raise SyncError(f"weight sync of version {version} failed: {e}") from e
    latency = time.perf_counter() - start
    served = [r["version"] for r in results]
    if any(v != version for v in served):
        raise SyncError(f"generators serve versions {served} after syncing version {version}")
    return {
        "version": version,
        "transport": sender.transport,
        "latency_ms": 1000 * latency,
        "bytes": sent["bytes"],
        "buckets": sent["buckets"],
        "gbps": sent["bytes"] / latency / 1e9,
        "publish_s": sent["seconds"],
        "receive_s": [r["seconds"] for r in results],
        # where a generator's time went: waiting at its swap gate, and (staged) the transfer alone
        "gate_wait_s": [r.get("wait_s", 0.0) for r in results],
        "staged": [bool(r.get("staged")) for r in results],
        "versions": served,
        "instances": [i.instance_id for i in infos],  # lets the controller notice restarts it was not told of
    }


def sync_weights(
    learner_rank0_handle: Any,
    generator_handles: Sequence[Any],
    version: int,
    sync_cfg: SyncSection,
    state: WeightSync,
) -> dict[str, Any]:
    """Push the learner's weights as `version` to every generator; returns latency (ms), bytes,
    GB/s (payload bytes / latency) and the version each generator now serves. Raises SyncError.

    Under ZeRO-3 the other learner ranks take part in rank 0's gathers: rank 0 asks them itself
    (actors/learner.py), so only rank 0 is named here. `state` carries what outlives one sync (the
    hosted collective group, the ZMQ fallback): its owner passes the same one every time. With
    `sync.transport=auto`, a collective that cannot be formed falls back to ZMQ for good."""
    try:
        return _run_once(learner_rank0_handle, generator_handles, version, sync_cfg, state)
    except SyncError as e:
        if sync_cfg.transport != "auto" or state.last_transport != "collective":
            raise
        log.warning("collective weight sync failed (%s); falling back to ZMQ", e)
        state.fall_back_to_zmq()
        return _run_once(learner_rank0_handle, generator_handles, version, sync_cfg, state)
