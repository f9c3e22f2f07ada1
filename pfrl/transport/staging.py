"""Staged weight sync: receive a version while the engine samples, swap it in between engine calls.

With `sync.staged` (ZMQ only), the generator process binds a receiver of its own (`stage`) and
takes the learner's buckets into memory while the engine keeps sampling under the old weights; the
learner's sync ends once every byte is staged, without waiting for the engine call in flight. The
swap itself (loading the staged tensors into the model, resetting the prefix cache) still takes the
generator's swap gate, before the next engine call: `StagedSwaps` orders that. A transfer that
breaks off never touches the model.

Staged buckets that came through the learner's shared-memory ring are copies in memory the stage
receiver reuses from sync to sync (`CopyPool`, pfrl/transport/shm_ring.py): a version's buffers
are lent again only once every tensor of it is freed, i.e. after its swap loaded it or a newer
version replaced it, never while it waits. Buckets that came as frames (a learner on another host)
are views of those frames.

An engine whose workers live in the generator's own process (vLLM's `uni` executor, the default at
tensor-parallel size 1) hands the staged tensors to its worker through `put`/`take`, a
process-local registry (no copy); workers in other processes are sent the staged buckets again over
their own ZMQ receivers, through the generator's own shared-memory ring when they are on its host
(pfrl/engine_weights.py).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from pfrl.transport.buckets import Named, Received
from pfrl.transport.zmq_weights import ZmqWeightReceiver

log = logging.getLogger(__name__)


@dataclass
class StagedWeights:
    """One complete version held in memory: buckets of views of the received frames."""

    version: int
    buckets: list[Named]
    bytes: int
    seconds: float  # the transfer into memory

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for bucket in self.buckets:
            yield from bucket


def stage_zmq(receiver: ZmqWeightReceiver, version: int, timeout_s: float) -> StagedWeights:
    """Receive every bucket of `version` into memory; raises SyncError (nothing staged) if the
    stream breaks off."""
    into = Received()
    start = time.perf_counter()
    buckets = list(receiver.receive_buckets(version, timeout_s, into))
    return StagedWeights(version, buckets, into.bytes, time.perf_counter() - start)


_REGISTRY: dict[str, StagedWeights] = {}
_REGISTRY_LOCK = threading.Lock()
_TOKENS = itertools.count()


def put(staged: StagedWeights) -> str:
    """Hand `staged` to a worker in this process; the worker `take`s it by the returned token."""
    token = f"staged-{next(_TOKENS)}"
    with _REGISTRY_LOCK:
        _REGISTRY[token] = staged
    return token


def take(token: str) -> StagedWeights:
    with _REGISTRY_LOCK:
        staged = _REGISTRY.pop(token, None)
    if staged is None:
        raise LookupError(f"no staged weights under {token!r} in this process (is the worker in another one?)")
    return staged


@dataclass
class StagedSwaps:
    """Staged versions waiting for the swap gate.

    `stage` announces a swap on the gate at once (so every engine call that starts after it waits
    for the swap) and starts a thread that takes the gate when it is free (drain: after the call in
    flight; pause: at the call's next step) and applies the newest staged version. A version staged
    while an older one still waits replaces it: one swap applies the newest, the other finds
    nothing to do. `apply` raises on failure; the error is kept in `last_error` and the version is
    dropped (the engine's own flags say whether it may sample)."""

    gate: object  # pfrl.engine_weights.SwapGate (not imported: engine_weights imports this module)
    apply: Callable[[StagedWeights], None]
    _pending: StagedWeights | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    last_error: BaseException | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    def stage(self, staged: StagedWeights) -> None:
        with self._lock:
            self.gate.announce_swap()  # type: ignore[attr-defined]
            self._pending = staged
        t = threading.Thread(target=self._swap, name=f"pfrl-swap-v{staged.version}", daemon=True)
        self.threads = [x for x in self.threads if x.is_alive()] + [t]
        t.start()

    def pending_version(self) -> int | None:
        """The staged version the next engine call will serve (None when nothing waits)."""
        with self._lock:
            return None if self._pending is None else self._pending.version

    def _swap(self) -> None:
        with self.gate.swap(announced=True):  # type: ignore[attr-defined]
            with self._lock:
                staged = self._pending
            if staged is None:
                return  # an earlier swap already applied the newest version
            try:
                self.apply(staged)
            except BaseException as e:  # a thread of its own: nobody else would see it
                log.error("applying staged weights of version %d failed: %s", staged.version, e)
                self.last_error = e
            finally:
                with self._lock:
                    if self._pending is staged:
                        self._pending = None

    def join(self, timeout_s: float = 5.0) -> None:
        for t in list(self.threads):
            t.join(timeout_s)
