"""SwapGate (engine calls and weight swaps take turns) and per-request seeds, without vLLM."""

from __future__ import annotations

import threading
import time

from helpers import held_call, logged_call, start_thread, wait_until

from pfrl.engine_weights import SwapGate
from pfrl.generation import request_seed


# Threads hand over through events and the gate's own state, never through sleeps, so a loaded
# machine cannot reorder them.
def test_swap_waits_for_the_engine_call_in_flight():
    gate, log = SwapGate(), []
    in_call = threading.Event()

    def engine_call():
        with gate.engine_call():
            log.append("call start")
            in_call.set()
            wait_until(gate.swap_waiting)  # the swap is queued behind this call...
            time.sleep(0.05)  # ...and still has not run while the call goes on
            log.append("call end")

    def swap():
        with gate.swap():
            log.append("swap")

    t1 = start_thread(engine_call)
    assert in_call.wait(5)
    t2 = start_thread(swap)
    t1.join(5)
    t2.join(5)
    assert log == ["call start", "call end", "swap"]


def test_a_waiting_swap_goes_before_the_next_engine_call():
    gate, log = SwapGate(), []
    in_call, release = threading.Event(), threading.Event()

    first_call = held_call(gate, log, in_call, release)

    def swap():
        with gate.swap():
            log.append("swap")

    second_call = logged_call(gate, log, "call")

    t1 = start_thread(first_call)
    assert in_call.wait(5)
    t2 = start_thread(swap)
    wait_until(gate.swap_waiting)
    t3 = start_thread(second_call)
    time.sleep(0.05)  # give the second call time to queue (if it has not, the order holds anyway)
    assert log == []
    release.set()
    for t in (t1, t2, t3):
        t.join(5)
    assert log == ["swap", "call"]


def test_request_seed_is_stable_and_depends_on_every_part():
    base = request_seed(0, "p1", 0, 3)
    assert base == request_seed(0, "p1", 0, 3)
    assert 0 <= base < 2**31
    variants = {
        request_seed(1, "p1", 0, 3),
        request_seed(0, "p2", 0, 3),
        request_seed(0, "p1", 1, 3),
        request_seed(0, "p1", 0, 4),
    }
    assert base not in variants and len(variants) == 4
