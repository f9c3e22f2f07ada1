"""Continuous batching across concurrent engine calls: one thread steps the vLLM engine for all.

Every sampling call of a generator (rollouts, step-level prefixes, evaluation) hands in a *round*:
its prompts and a function that makes their sampling settings for the policy version they will be
sampled with. The stepper's thread admits every waiting round into the running engine at the
version being served, steps the engine, and hands each round its outputs once its last request
finishes. A round that arrives while others run joins their batch at the next step.

Why: before, each call held the engine alone, from its first token to its longest completion. A
request of 8 prompts x 8 samples fills 64 sequences; most finish in 15-20 tokens but the last runs
to 40, so for half of the call the batch was mostly empty, and the next request queued behind it.
On the CPU preset the generator is the loop's bottleneck (the learner waited 20% of the time), and
one engine step costs nearly the same for 40 sequences as for 200. With rounds merged, requests no
longer wait for each other and the batch stays full (docs/benchmarks.md, bench e2e run 18).

Weight swaps keep their guarantee (each group sampled by exactly one version, never on half-loaded
weights). The stepper holds the gate's engine call only while rounds run in the engine; a waiting
swap stops admissions. `drain`: the rounds admitted finish, the engine call ends, the swap runs,
then the waiting rounds are admitted at the new version. `pause`: the unfinished requests are
aborted and their rounds come back `interrupted`; callers sample what is missing again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pfrl.engine_weights import SwapGate


@dataclass
class Round:
    """One call's prompts (token ids) and what the engine gave back for them."""

    prompts: list[list[int]]
    make_params: Callable[[int], dict[int, Any]]  # version -> {prompt index: SamplingParams}
    finished: dict[int, Any] = field(default_factory=dict)  # prompt index -> vLLM RequestOutput
    version: int = -1  # the policy version every finished request was sampled with
    interrupted: bool = False  # pause mode: a swap aborted the requests not in `finished`
    error: BaseException | None = None
    live: dict[str, int] = field(default_factory=dict)  # request id -> prompt index, while in the engine
    done: threading.Event = field(default_factory=threading.Event)


class EngineStepper:
    """The only thread that steps one vLLM engine. `engine` is its `LLMEngine`; `version()` is the
    version the model holds; `check()` raises when the weights cannot be sampled (a failed swap)."""

    def __init__(self, engine: Any, gate: SwapGate, version: Callable[[], int], check: Callable[[], None],
                 pause_on_swap: bool, request_prefix: str):
        self._engine, self._gate, self._version, self._check = engine, gate, version, check
        self._pause_on_swap, self._prefix = pause_on_swap, request_prefix
        self._cond = threading.Condition()
        self._waiting: list[Round] = []
        self._active: dict[str, Round] = {}  # request id -> its round (only the stepper thread touches it)
        self._next_request = 0
        self._stopped = False
        self._omp_threads = _omp_threads()  # what the engine was built with, in this thread
        self._thread = threading.Thread(target=self._serve, name=f"{request_prefix}stepper", daemon=True)
        self._thread.start()

    def run(self, prompts: list[list[int]], make_params: Callable[[int], dict[int, Any]]) -> Round:
        """Sample `make_params(version)`'s prompts; blocks until they are all finished (or, in pause
        mode, a swap interrupted them). Raises what the engine raised."""
        rnd = Round(prompts, make_params)
        with self._cond:
            if self._stopped:
                raise RuntimeError("the generator engine is shut down")
            self._waiting.append(rnd)
            self._cond.notify_all()
        rnd.done.wait()
        if rnd.error is not None:
            raise rnd.error
        return rnd

    def stop(self) -> None:
        """Fail what waits, finish what runs, end the thread (before the engine shuts down)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=60)

    # -- the stepper thread -----------------------------------------------------------------------

    def _serve(self) -> None:
        _set_omp_threads(self._omp_threads)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting or self._stopped)
                if self._stopped:
                    self._fail_all(RuntimeError("the generator engine is shut down"))
                    return
            try:
                with self._gate.engine_call():
                    self._check()
                    self._run_until_idle()
            except BaseException as e:  # every round in the engine or waiting shares the engine's fate
                self._fail_all(e)

    def _run_until_idle(self) -> None:
        """Admit and step until nothing runs and nothing may be admitted (none waiting, or a swap
        waiting); then the caller lets go of the engine."""
        while True:
            swap_waiting = self._gate.swap_waiting()
            if swap_waiting and self._pause_on_swap:
                self._interrupt()
                return
            if not swap_waiting:
                self._admit()
            if not self._active:
                return
            self._step()

    def _admit(self) -> None:
        """Every waiting round into the engine, at the version it serves now. A round whose settings
        or prompts are refused fails alone; the others go on."""
        version = self._version()
        while True:
            with self._cond:
                if not self._waiting:
                    return
                rnd = self._waiting.pop(0)
            rnd.version = version
            try:
                params = rnd.make_params(version)
                if params:
                    self._submit(rnd, params)
                else:  # e.g. no prefix to continue in any batch: vLLM refuses an empty call
                    rnd.done.set()
            except Exception as e:  # noqa: BLE001 - handed to the round's caller
                self._withdraw(rnd)
                rnd.error = e
                rnd.done.set()

    def _submit(self, rnd: Round, params: dict[int, Any]) -> None:
        from vllm.inputs import TokensPrompt

        todo = list(params)
        inputs = self._engine.renderer.render_cmpl([TokensPrompt(prompt_token_ids=rnd.prompts[i]) for i in todo])
        for i, engine_input in zip(todo, inputs, strict=True):
            rid = f"{self._prefix}{self._next_request}"
            self._next_request += 1
            self._engine.add_request(rid, engine_input, params[i])
            rnd.live[rid] = i
            self._active[rid] = rnd

    def _step(self) -> None:
        if not self._engine.has_unfinished_requests():
            raise RuntimeError(f"vLLM went idle with {len(self._active)} requests unfinished")
        for out in self._engine.step():
            rnd = self._active.pop(out.request_id, None) if out.finished else None
            if rnd is None:
                continue
            rnd.finished[rnd.live.pop(out.request_id)] = out
            if not rnd.live:
                rnd.done.set()

    def _interrupt(self) -> None:
        """Pause mode: abort every unfinished request; their rounds come back interrupted."""
        for rnd in self._abort_active():
            rnd.interrupted = True
            rnd.done.set()

    def _withdraw(self, rnd: Round) -> None:
        """Take one round's requests (those it got in before a refusal) out of the engine."""
        ids = list(rnd.live)
        for rid in ids:
            self._active.pop(rid, None)
        rnd.live.clear()
        if ids:
            self._engine.abort_request(ids)

    def _abort_active(self) -> list[Round]:
        """Take every unfinished request out of the engine; returns their rounds."""
        rounds = self._running_rounds()
        for rnd in rounds:
            self._withdraw(rnd)
        return rounds

    def _running_rounds(self) -> list[Round]:
        return list({id(r): r for r in self._active.values()}.values())

    def _fail_all(self, error: BaseException) -> None:
        """Every round running or waiting gets `error` (the engine may be unusable after it)."""
        running = self._running_rounds()
        for rnd in running:
            with contextlib.suppress(Exception):  # a dead engine cannot abort; its rounds fail all the same
                self._withdraw(rnd)
        with self._cond:
            rounds, self._waiting = running + self._waiting, []
        for rnd in rounds:
            rnd.error = error
            rnd.done.set()


# vLLM's CPU attention plans each step for the OpenMP thread count of the thread that steps it and
# checks it again in the kernel; a thread started after the engine was built may count differently
# (seen: a process that had set torch to 1 thread, an engine built with 2: "Check failed:
# metadata->thread_num == thread_num (2 vs. 1)"). The stepper thread takes its builder's count.
def _omp_threads() -> int:
    import torch

    return torch.get_num_threads()


def _set_omp_threads(n: int) -> None:
    import torch

    # torch._C's setter: vLLM's CPU worker replaces torch.set_num_threads with a no-op once it binds threads.
    torch._C.set_num_threads(n)
