"""Small builders shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import threading
import time

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


def pausing_call(gate, log: list, in_call: threading.Event):
    """An engine call that, once a swap is waiting, yields to it between two steps (pause mode)."""
    def run() -> None:
        with gate.engine_call():
            log.append("step 1")
            in_call.set()
            wait_until(gate.swap_waiting)
            gate.yield_to_swaps()  # what pause mode does at a step boundary
            log.append("step 2")
    return run
