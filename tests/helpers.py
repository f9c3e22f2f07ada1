"""Small builders shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

from pfrl.types import Problem, PromptItem, RolloutGroup


def group(problem: Problem, completions: list[str], version: int = 0, iteration: int = 0) -> RolloutGroup:
    """A rollout group of `completions` as a generator would send it (token fields left empty)."""
    return RolloutGroup(PromptItem(problem, iteration), completions, [], [], 0, 0, version)


def wrong_math(solution: str, delta: int = 1) -> str:
    """A synthetic math solution with its boxed answer moved by `delta`: a wrong completion."""
    head, _, tail = solution.rpartition("\\boxed{")
    return f"{head}\\boxed{{{int(tail.split('}')[0]) + delta}}}."


def start_thread(target, *args) -> threading.Thread:
    """`target(*args)` on a daemon thread, started."""
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def wait_until(condition, timeout_s: float = 5.0) -> None:
    """Poll `condition` until it holds; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


# Engine calls on a SwapGate, as thread targets for the gate tests.
def held_call(gate, log: list, in_call: threading.Event, release: threading.Event, end: str | None = None):
    """An engine call that sets `in_call`, holds the gate until `release`, then logs `end`."""
    def run() -> None:
        with gate.engine_call():
            in_call.set()
            release.wait(5)
            if end is not None:
                log.append(end)
    return run


def logged_call(gate, log: list, entry: str):
    """An engine call that only logs `entry`."""
    def run() -> None:
        with gate.engine_call():
            log.append(entry)
    return run


@dataclass
class FakeOutput:
    request_id: str
    finished: bool
    steps: int  # how many engine steps the request ran
    at: int  # the engine's step count when it finished


class FakeVllmEngine:
    """The parts of vLLM's LLMEngine that EngineStepper drives. Each request runs `params` engine steps (its 'length'); `step()` advances every live request
    by one and returns those that finish. `hold` (when set) blocks steps until it is released."""

    def __init__(self) -> None:
        self.live: dict[str, list[int]] = {}  # request id -> [steps left, steps run]
        self.batch_sizes: list[int] = []
        self.aborted: list[str] = []
        self.renderer = SimpleNamespace(render_cmpl=lambda prompts: prompts)
        self.hold: threading.Event | None = None
        self.stepping = threading.Event()

    def add_request(self, rid: str, _prompt, length: int) -> None:
        self.live[rid] = [length, 0]

    def has_unfinished_requests(self) -> bool:
        return bool(self.live)

    def abort_request(self, ids: list[str]) -> None:
        self.aborted += ids
        for rid in ids:
            self.live.pop(rid, None)

    def step(self) -> list[FakeOutput]:
        self.stepping.set()
        if self.hold is not None:
            assert self.hold.wait(5)
        time.sleep(0.001)
        self.batch_sizes.append(len(self.live))
        outs = []
        for rid, state in list(self.live.items()):
            state[0] -= 1
            state[1] += 1
            if state[0] == 0:
                del self.live[rid]
                outs.append(FakeOutput(rid, True, state[1], len(self.batch_sizes)))
        return outs
