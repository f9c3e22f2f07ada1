"""The weights one vLLM engine serves, and how new ones come in from the learner.

Engine calls and weight swaps take turns through a `SwapGate`:

- `swap_mode=drain`: a swap waits for the current engine call to finish;
- `swap_mode=pause`: the engine call stops at the next step, its unfinished requests are aborted,
  the swap runs, and those prompts are sampled again from scratch under the new weights.

Either way a group is sampled by exactly one policy version, and no request ever runs on
half-updated weights (the swap itself happens between engine steps, inside the workers).

With `sync.staged` (ZMQ, the default there) the transfer is not part of the swap: the weights are
received into this process while the engine samples, the learner is answered, and the swap (a
local load plus the prefix-cache reset) is queued on the gate at once, so it runs before any engine
call that starts later (pfrl/transport/staging.py). A transfer that breaks off leaves the model and
its version as they were. A swap that fails part-way leaves the engine refusing to sample
(`WeightsIncomplete`) until a full sync succeeds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pfrl.config import SyncSection
from pfrl.errors import SyncError
from pfrl.transport import staging
from pfrl.transport.staging import StagedSwaps, StagedWeights, stage_zmq
from pfrl.transport.weights import ReceiverInfo, ReceiverSpec, resolve_transport
from pfrl.transport.zmq_weights import ZmqWeightReceiver


class WeightsIncomplete(RuntimeError):
    """A weight sync failed part-way: the engine refuses to sample until a full sync succeeds."""


class SwapGate:
    """Engine calls and weight swaps take turns; a waiting swap goes before the next engine call."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._swapping = False
        self._swaps_waiting = 0

    def _free(self) -> bool:
        return not self._busy and not self._swapping

    @contextmanager
    def engine_call(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._free() and self._swaps_waiting == 0)
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def announce_swap(self) -> None:
        """Queue a swap now, to be run later by `swap(announced=True)`: from here on no new engine
        call starts before it (a staged sync answers the learner before its swap runs)."""
        with self._cond:
            self._swaps_waiting += 1

    @contextmanager
    def swap(self, announced: bool = False) -> Iterator[None]:
        with self._cond:
            if not announced:
                self._swaps_waiting += 1
            self._cond.wait_for(self._free)
            self._swaps_waiting -= 1
            self._swapping = True
        try:
            yield
        finally:
            with self._cond:
                self._swapping = False
                self._cond.notify_all()

    def swap_waiting(self) -> bool:
        return self._swaps_waiting > 0


class EngineWeights:
    """The served version of one engine's weights and the receiving side of weight syncs.

    `llm` is the vLLM `LLM` (its workers run pfrl/transport/vllm_worker.py); `workers` is what each
    worker answered to `pfrl_receiver_info` (address, device, pid)."""

    def __init__(self, llm: Any, workers: list[dict[str, Any]], gate: SwapGate, sync_cfg: SyncSection,
                 generator_id: int, instance_id: str):
        self._llm, self._workers, self.gate, self.sync_cfg = llm, workers, gate, sync_cfg
        self.generator_id, self.instance_id = generator_id, instance_id
        self.version = 0
        self._ok = True
        self._group_id: str | None = None
        self._last_swap_bytes = 0
        # Staged syncs (sync.staged): the weights come into this process while the engine samples.
        self._stage_rx: ZmqWeightReceiver | None = None  # bound on first use (receiver_info)
        self._stage_lock = threading.Lock()  # one transfer at a time on the staging socket
        self.staged = StagedSwaps(gate, self._apply_staged)

    def check(self) -> None:
        """Inside an engine call: refuse to sample on weights a failed swap left half-loaded."""
        if not self._ok:
            raise WeightsIncomplete(f"generator {self.generator_id}: last weight sync failed part-way")

    def receiver_info(self, transport: str | None = None) -> ReceiverInfo:
        """How the learner reaches this engine's workers; `transport` defaults to `sync.transport`."""
        device = self._workers[0]["device"]
        transport = resolve_transport(transport or self.sync_cfg.transport, device)
        stage_addr = None
        if transport == "zmq" and self.sync_cfg.staged:
            if self._stage_rx is None:
                self._stage_rx = ZmqWeightReceiver()
            stage_addr = self._stage_rx.addr
        return ReceiverInfo(
            generator_id=self.generator_id,
            instance_id=self.instance_id,
            transport=transport,
            device=device,
            zmq_addrs=[w["addr"] for w in self._workers],
            group_id=self._group_id,
            stage_addr=stage_addr,
        )

    def serving_version(self) -> int:
        """The version the next engine call samples with: a staged version waiting for its swap,
        else the one in the model (after a failed swap, still the last complete one)."""
        pending = self.staged.pending_version()
        return self.version if pending is None else pending

    def receive(self, version: int, spec: dict[str, Any]) -> dict[str, Any]:
        """Take `version` from the learner; raises SyncError on failure. Unstaged, the transfer
        runs inside the swap, between engine calls; staged (`spec["staged"]`), it runs now, while
        the engine samples, and the answer comes once the bytes are in memory: the swap follows
        before the next engine call (`StagedSwaps`)."""
        if ReceiverSpec.from_dict(spec).staged:
            return self._receive_staged(version, spec)
        asked = time.perf_counter()
        with self.gate.swap():
            start = time.perf_counter()
            self._swap_in(version, lambda: self._llm.collective_rpc("pfrl_receive", args=(version, spec)))
            return {
                "generator_id": self.generator_id,
                "version": version,
                "bytes": self._last_swap_bytes,
                "seconds": time.perf_counter() - start,
                "wait_s": start - asked,
                "staged": False,
            }

    def _receive_staged(self, version: int, spec: dict[str, Any]) -> dict[str, Any]:
        rx = self._stage_rx
        if rx is None:
            raise SyncError(f"generator {self.generator_id}: a staged sync without prepare_sync")
        with self._stage_lock:
            try:
                staged = stage_zmq(rx, version, ReceiverSpec.from_dict(spec).timeout_s)
            except SyncError as e:  # nothing reached the model: it keeps serving its version
                raise SyncError(f"generator {self.generator_id}: {e}") from e
            self.staged.stage(staged)
        return {
            "generator_id": self.generator_id,
            "version": version,
            "bytes": staged.bytes,
            "seconds": staged.seconds,
            "wait_s": 0.0,
            "staged": True,
        }

    def _apply_staged(self, staged: StagedWeights) -> None:
        """Under the gate: load a staged version into the model (StagedSwaps calls this)."""
        self._swap_in(staged.version, lambda: self._load_staged(staged))

    def _load_staged(self, staged: StagedWeights) -> list[dict[str, Any]]:
        if all(w.get("pid") == os.getpid() for w in self._workers):  # the `uni` executor: hand over in memory
            return self._llm.collective_rpc("pfrl_load_staged", args=(staged.version, staging.put(staged)))
        # Workers in their own processes: send them the staged buckets over their own receivers,
        # through this process's shared-memory ring to those on its host (tensor-parallel workers
        # of one engine all are: one copy into a slot serves them all), as frames to any other.
        from pfrl.transport.zmq_weights import ZmqWeightSender

        timeout_s = self.sync_cfg.timeout_s
        sender = ZmqWeightSender(
            [w["addr"] for w in self._workers], timeout_s,
            shm_slots=self.sync_cfg.ring_slots, bucket_bytes=int(self.sync_cfg.bucket_mb * 2**20),
        )
        sent: list[BaseException] = []

        def send() -> None:
            try:
                sender.send(staged.version, staged.buckets)
            except BaseException as e:
                sent.append(e)

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        try:
            spec = ReceiverSpec("zmq", timeout_s).to_dict()
            return self._llm.collective_rpc("pfrl_receive", args=(staged.version, spec))
        finally:
            thread.join(timeout_s)
            sender.close()

    def _swap_in(self, version: int, load: Any) -> None:
        """Inside the gate: run `load` (the workers' answers), then reset the prefix cache; any
        failure leaves the engine refusing to sample until a full sync succeeds."""
        results = load()
        self._group_id = results[0]["group_id"] if all(r["ok"] for r in results) else None
        failed = [r["error"] for r in results if not r["ok"]]
        if failed:
            self._ok = False
            raise SyncError(f"generator {self.generator_id}: {failed[0]}")
        # Cached KV blocks were computed by the old weights: they must not be reused.
        if not self._llm.reset_prefix_cache():
            self._ok = False
            raise SyncError(f"generator {self.generator_id}: prefix cache still in use after the swap")
        self._last_swap_bytes = results[0]["bytes"]
        self.version, self._ok = version, True

    def close(self) -> None:
        if self._stage_rx is not None:
            self._stage_rx.close()
