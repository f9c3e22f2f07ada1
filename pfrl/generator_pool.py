"""The generators as the controller sees them: one explicit state per generator.

A generator is READY (it serves the weights of `version` and may take prompts) or BLANK (Ray
restarted it: it holds the base model until it is sent the current weights, so it gets no prompts).
Every READY generator serves the same version, the newest one published: a restarted generator is
brought back by syncing all of them. Each actor start has a new `instance_id`; the pool remembers
the live one per generator, so a restart is counted once, whichever path notices it first (a
request that failed, a sync that reached a new instance, a result sampled by older weights), and
the answers of an instance known to be dead are never taken for the live one's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pfrl.errors import RunFailed


class GenStatus(Enum):
    READY = "ready"
    BLANK = "blank"


@dataclass
class GenState:
    status: GenStatus = GenStatus.READY
    version: int = 0
    instance: str | None = None
    retired: set[str] = field(default_factory=set)  # instances of this generator that died


class GeneratorPool:
    def __init__(self, actors: list[Any], instances: list[str | None]):
        self.actors = actors
        self.states = [GenState(instance=i) for i in instances]

    def __len__(self) -> int:
        return len(self.actors)

    def ready(self) -> list[int]:
        return [g for g, s in enumerate(self.states) if s.status is GenStatus.READY]

    def blanks(self) -> list[int]:
        return [g for g, s in enumerate(self.states) if s.status is GenStatus.BLANK]

    def blank(self, g: int) -> None:
        self.states[g].status = GenStatus.BLANK

    def blank_all(self) -> None:
        for g in range(len(self)):
            self.blank(g)

    def note_instance(self, g: int, instance: str) -> bool:
        """Record the instance generator g answered as; True when it is a new one (a restart)."""
        state = self.states[g]
        if instance == state.instance or instance in state.retired:
            return False
        if state.instance is not None:
            state.retired.add(state.instance)
        known, state.instance = state.instance, instance
        return known is not None

    def on_synced(self, gens: list[int], version: int, instances: list[str]) -> int:
        """These generators took `version`; returns how many restarts the sync revealed. A reply
        from an instance that has since died leaves its generator BLANK."""
        restarts = 0
        for g, instance in zip(gens, instances, strict=True):
            restarts += self.note_instance(g, instance)
            if instance == self.states[g].instance:
                self.states[g].status, self.states[g].version = GenStatus.READY, version
        return restarts

    def check_health(self, g: int, health: dict) -> tuple[bool, bool]:
        """(restarted, needs weights) from a generator's health answer."""
        restarted = self.note_instance(g, health["instance_id"])
        stale = restarted or health["version"] != self.states[g].version
        return restarted, stale

    def wait_for_restart(self, g: int, timeout_s: float) -> dict:
        """Until Ray has generator g back (calls fail fast while it restarts), or give up; returns its health."""
        import ray

        deadline = time.time() + timeout_s
        while True:
            try:
                return ray.get(self.actors[g].health.remote(), timeout=max(1.0, deadline - time.time()))
            except ray.exceptions.ActorUnavailableError:
                if time.time() > deadline:
                    raise RunFailed(f"generator {g} did not come back within {timeout_s:.0f}s") from None
                time.sleep(1.0)
            except Exception as e:
                raise RunFailed(f"generator {g} did not come back after dying: {e}") from None
