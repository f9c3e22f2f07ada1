"""A generator's data-plane loop: prompts in, rollout groups out, never blocked for good.

`RolloutStream` runs in a background thread. It pulls `PromptItem`s, takes up to `batch_size` that
are already queued (it never waits to fill a batch, and never holds more than it was given), samples
them, and pushes one `RolloutGroup` per prompt. Sends wait in short slices: when downstream stays
full for `stall_timeout_s` the stream reports itself stalled (and keeps the group, retrying), so a
stuck consumer shows up in `health()` instead of hanging the generator forever.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pfrl.transport.streams import PullStream, PushStream, StreamStalled
from pfrl.types import PromptItem, RolloutGroup

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often a waiting stream looks at its stop flag


@dataclass(slots=True)
class StreamHealth:
    running: bool = False
    prompts: int = 0
    groups: int = 0
    completion_tokens: int = 0
    errors: int = 0
    last_error: str | None = None
    stalled: bool = False


class RolloutStream:
    """Background loop: PullStream of PromptItem -> `generate` -> PushStream of RolloutGroup."""

    def __init__(
        self,
        generate: Callable[[list[PromptItem]], list[RolloutGroup]],
        prompts_addr: str,
        rollouts_addr: str,
        batch_size: int,
        stall_timeout_s: float,
        retry_on: tuple[type[Exception], ...] = (),
    ):
        self._generate = generate
        self._addrs = (prompts_addr, rollouts_addr)
        self._batch_size = batch_size
        self._stall_timeout_s = stall_timeout_s
        self._retry_on = retry_on  # errors after which the same batch is tried again (e.g. mid-resync)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._health = StreamHealth()
        self._thread = threading.Thread(target=self._run, name="rollout-stream", daemon=True)

    def start(self) -> None:
        self._health.running = True
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def health(self) -> StreamHealth:
        with self._lock:
            return dataclasses.replace(self._health)

    def _note(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._health, key, value)

    def _error(self, err: BaseException) -> None:
        with self._lock:
            self._health.errors += 1
            self._health.last_error = f"{type(err).__name__}: {err}"

    def _run(self) -> None:
        # ZMQ sockets belong to the thread that uses them: create them here.
        pull, push = PullStream(self._addrs[0]), PushStream(self._addrs[1])
        try:
            while not self._stop.is_set():
                batch = self._next_batch(pull)
                if batch and not self._sample_and_send(batch, push):
                    break
        finally:
            pull.close()
            push.close()
            self._note(running=False)

    def _next_batch(self, pull: PullStream) -> list[PromptItem]:
        first = pull.recv(timeout_s=POLL_S)
        if first is None:
            return []
        batch = [first, *pull.drain(self._batch_size - 1)]
        good = [m for m in batch if isinstance(m, PromptItem)]
        if len(good) < len(batch):
            self._error(TypeError(f"{len(batch) - len(good)} non-PromptItem message(s) on the prompt stream"))
        return good

    def _sample_and_send(self, batch: list[PromptItem], push: PushStream) -> bool:
        """False when the loop must end (stop requested, or the engine failed for good)."""
        while True:
            try:
                groups = self._generate(batch)
                break
            except self._retry_on as e:
                self._error(e)
                if self._stop.wait(1.0):
                    return False
            except Exception as e:
                log.exception("generation failed; rollout stream ends")
                self._error(e)
                return False
        with self._lock:
            self._health.prompts += len(batch)
        for group in groups:
            if not self._deliver(push, group):
                return False
        return True

    def _deliver(self, push: PushStream, group: RolloutGroup) -> bool:
        waited = 0.0
        while not self._stop.is_set():
            try:
                push.send(group, timeout_s=POLL_S)
            except StreamStalled as e:
                waited += POLL_S
                if waited >= self._stall_timeout_s:
                    self._note(stalled=True, last_error=f"StreamStalled: {e} (for {waited:.0f}s)")
                continue
            with self._lock:
                self._health.groups += 1
                self._health.completion_tokens += group.completion_tokens
                self._health.stalled = False
            return True
        return False
