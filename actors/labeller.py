"""Ray actor around `pfrl.feedback.labeller.Labeller` (thin glue; the logic lives in pfrl/).

Two ways in: `label(bytes) -> bytes` for request/response (msgpack of a list of RolloutGroup in,
a list of LabelledGroup out, see `pfrl.types.encode`), and `run_stream(in_addr, out_addr)`, which
labels in a background thread: RolloutGroup messages pulled from `in_addr`, LabelledGroup messages
pushed to `out_addr` (both connect; the controller binds). Groups are labelled in batches of what is
already queued, so a code labeller's sandbox pool stays busy.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import ray

from pfrl.config import LabellerSection
from pfrl.feedback.labeller import Labeller
from pfrl.transport.streams import PullStream, PushStream, StreamStalled
from pfrl.types import RolloutGroup, decode, encode

log = logging.getLogger(__name__)
POLL_S = 0.2


@dataclass(slots=True)
class LabellerStats:
    alive: bool
    streaming: bool
    groups: int
    pairs: int
    skipped: int
    stream_error: str | None


@ray.remote
class LabellerActor:
    def __init__(self, task: str, labeller_cfg_dict: dict[str, Any], seed: int):
        self.labeller = Labeller(task, LabellerSection.model_validate(labeller_cfg_dict), seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts = {"groups": 0, "pairs": 0, "skipped": 0}
        self._stream_error: str | None = None

    def _label(self, groups: list[RolloutGroup]) -> list:
        if not all(isinstance(g, RolloutGroup) for g in groups):
            raise TypeError("expected RolloutGroup messages")
        out = self.labeller.label_many(groups)
        with self._lock:
            self._counts["groups"] += len(out)
            self._counts["pairs"] += sum(len(x.pairs) for x in out)
            self._counts["skipped"] += sum(x.skipped is not None for x in out)
        return out

    def label(self, groups_bytes: bytes) -> bytes:
        return encode(self._label(decode(groups_bytes)))

    def run_stream(self, in_addr: str, out_addr: str, batch: int = 16) -> None:
        """Start labelling the stream in a background thread (returns at once)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("already streaming")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._stream_loop, args=(in_addr, out_addr, batch), name="labeller-stream", daemon=True
        )
        self._thread.start()

    def _stream_loop(self, in_addr: str, out_addr: str, batch: int) -> None:
        # ZMQ sockets belong to the thread that uses them: create them here, not in run_stream.
        pull, push = PullStream(in_addr), PushStream(out_addr)
        try:
            while not self._stop.is_set():
                first = pull.recv(timeout_s=POLL_S)
                if first is None:
                    continue
                for labelled in self._label([first, *pull.drain(batch - 1)]):
                    self._send(push, labelled)
        except Exception as e:  # a dead stream must show in ping(), not vanish with the thread
            log.exception("labeller stream stopped")
            self._stream_error = f"{type(e).__name__}: {e}"
        finally:
            pull.close()
            push.close()

    def _send(self, push: PushStream, msg) -> None:
        """Send with backpressure; keep retrying while the consumer is slow, unless stopped."""
        while not self._stop.is_set():
            try:
                push.send(msg, timeout_s=1.0)
                return
            except StreamStalled:
                continue

    def ping(self) -> LabellerStats:
        with self._lock:
            c = dict(self._counts)
        streaming = self._thread is not None and self._thread.is_alive()
        return LabellerStats(True, streaming, c["groups"], c["pairs"], c["skipped"], self._stream_error)

    def stop(self) -> None:
        """Stop the stream thread (it finishes the batch in hand) and release the judge / sandbox."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.labeller.close()
