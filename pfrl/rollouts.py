"""Rollout requests in flight: prompts out to a generator, then its groups out to a labeller.

A second kind carries step-level pDPO work: labelled groups whose pairs wait (`Held`) while a
generator samples continuations of their solution prefixes and a labeller values them. It is
versioned, re-issued and re-labelled exactly like the first kind.

Generation and labelling are request/response calls on actors, chained by object refs (a
generator's output goes to a labeller without passing through the controller). Knowing which
prompts each request holds makes faults exact: a dead generator's prompts are handed back to be
issued again, a dead labeller's groups are labelled again by another call, nothing else moves.
`poll` turns what finished into events for the controller, in the order they happened.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pfrl.errors import RunFailed
from pfrl.types import (
    LabelledGroup,
    PreferencePair,
    PrefixBatch,
    PrefixRollout,
    PrefixValues,
    PromptItem,
    RolloutGroup,
    decode,
    encode,
)

_LABEL_WAIT_WINDOW = 8  # labelled requests behind `labelling_wait`'s mean


@dataclass
class Held:
    """A labelled group whose whole-solution pairs wait for its prefix values (step-level pDPO)."""

    group: RolloutGroup
    result: LabelledGroup
    pairs: list[PreferencePair]


@dataclass
class Request:
    """A generation request and, once sampled, its labelling request. `held` is None for rollouts,
    and names the waiting groups of a prefix request."""

    generator: int
    items: list[PromptItem]
    gen_ref: Any
    issued_version: int = 0  # the generator's weights when the request went out
    label_ref: Any = None
    labeller: int | None = None
    held: list[Held] | None = None
    issued_at: float = field(default_factory=time.time)  # for rollout/request_s: issue to labelled
    sampled_at: float | None = None  # when the generator answered (the labelling request went out)

    @property
    def pending_ref(self) -> Any:
        return self.gen_ref if self.label_ref is None else self.label_ref


@dataclass
class Labelled:
    """A request's groups and their labels."""

    request: Request
    groups: list[RolloutGroup]
    results: list[LabelledGroup]


@dataclass
class PrefixesValued:
    """A prefix request's continuations and each prefix's value, for the groups it held."""

    request: Request
    held: list[Held]
    rollouts: list[PrefixRollout]
    values: list[PrefixValues]


@dataclass
class GeneratorLost:
    """A generator died; the prompts it held must go out again."""

    generator: int
    prompt_ids: list[str]
    error: Exception


@dataclass
class OlderWeights:
    """A result was sampled by older weights than the generator was given: Ray restarted it."""

    generator: int


@dataclass
class LabellerLost:
    labeller: int


Event = Labelled | PrefixesValued | GeneratorLost | OlderWeights | LabellerLost


def _weights_incomplete(error: Exception) -> bool:
    """A generator refused to sample because its last weight swap failed (pfrl.generation)."""
    from pfrl.engine_weights import WeightsIncomplete

    return isinstance(getattr(error, "cause", None), WeightsIncomplete)


class RolloutRequests:
    def __init__(self, generators: list[Any], labellers: list[Any]):
        self.generators = generators
        self.labellers = labellers
        self.requests: list[Request] = []
        self._next_labeller = 0  # round robin over the labellers
        self._label_waits: deque[float] = deque(maxlen=_LABEL_WAIT_WINDOW)  # sampled -> labelled, seconds

    def inflight_prompts(self) -> int:
        return sum(len(r.items) for r in self.requests)

    def inflight_by_version(self) -> dict[int, int]:
        """Prompts in flight by the generator weights their request was issued under."""
        out: dict[int, int] = {}
        for r in self.requests:
            out[r.issued_version] = out.get(r.issued_version, 0) + len(r.items)
        return out

    def sampling_prompts(self, g: int) -> int:
        """Prompts of the requests generator g has not answered yet."""
        return sum(len(r.items) for r in self.requests if r.generator == g and r.label_ref is None)

    def labelling_wait(self) -> float:
        """How long sampled requests wait for their labels: the mean over the last few labelled, or
        the oldest one waiting now if that is longer (0 before any). A mean, because the queue itself
        empties and refills: the code preset's labeller was idle now and then between requests
        that each waited seconds."""
        now = time.time()
        waiting = [now - r.sampled_at for r in self.requests if r.sampled_at is not None]
        recent = sum(self._label_waits) / len(self._label_waits) if self._label_waits else 0.0
        return max([recent, *waiting])

    def issue(self, g: int, items: list[PromptItem], version: int) -> None:
        self.requests.append(Request(g, items, self.generators[g].generate.remote(encode(items)), version))

    def issue_prefixes(self, g: int, held: list[Held], batches: list[PrefixBatch], version: int) -> None:
        ref = self.generators[g].complete_prefixes.remote(encode(batches))
        self.requests.append(Request(g, [h.group.item for h in held], ref, version, held=held))

    def drop_generator(self, g: int) -> list[str]:
        """Forget generator g's unanswered requests; returns their prompt ids."""
        lost = [r for r in self.requests if r.generator == g and r.label_ref is None]
        for r in lost:
            self.requests.remove(r)
        return [it.problem.id for r in lost for it in r.items]

    def poll(self, timeout_s: float) -> list[Event]:
        import ray

        refs = [r.pending_ref for r in self.requests]
        if not refs:
            return []
        # Back at the first answer, with every other one ready by then. Waiting for all of them (or
        # the timeout) held each answer up to `timeout_s`, twice per request (sampled, labelled):
        # 0.1-0.2 s on requests of 0.3-0.5 s, with the learner waiting on them.
        if not ray.wait(refs, num_returns=1, timeout=timeout_s)[0]:
            return []
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
        events: list[Event] = []
        for req in [r for r in self.requests if r.pending_ref in ready]:
            if req not in self.requests:
                continue  # dropped while handling an earlier result (its generator died)
            if req.label_ref is None:
                self._on_generated(req, events)
            else:
                self._on_labelled(req, events)
        return events

    def _on_generated(self, req: Request, events: list[Event]) -> None:
        import ray

        try:
            ray.get(req.gen_ref)
        except ray.exceptions.RayActorError as e:
            events.append(GeneratorLost(req.generator, self.drop_generator(req.generator), e))
            return
        except ray.exceptions.RayTaskError as e:
            if _weights_incomplete(e):  # a staged swap failed: re-sync it, send its prompts again
                events.append(GeneratorLost(req.generator, self.drop_generator(req.generator), e))
                return
            raise RunFailed(f"generator {req.generator} failed: {e.cause!r}") from None
        req.sampled_at = time.time()
        req.labeller = self._next_labeller
        self._next_labeller = (self._next_labeller + 1) % len(self.labellers)
        labeller = self.labellers[req.labeller]
        method = labeller.label if req.held is None else labeller.value_prefixes
        req.label_ref = method.remote(req.gen_ref)

    def _on_labelled(self, req: Request, events: list[Event]) -> None:
        import ray

        self.requests.remove(req)
        try:
            sampled: list[Any] = decode(ray.get(req.gen_ref))  # RolloutGroup, or PrefixRollout
            answers: list[Any] = decode(ray.get(req.label_ref))  # LabelledGroup, or PrefixValues
        except ray.exceptions.RayActorError:
            events.append(LabellerLost(req.labeller if req.labeller is not None else -1))
            req.label_ref, req.labeller = None, None
            self.requests.append(req)
            self._on_generated(req, events)
            return
        except ray.exceptions.RayTaskError as e:
            raise RunFailed(f"labeller {req.labeller} failed: {e.cause!r}") from None
        if req.sampled_at is not None:
            self._label_waits.append(time.time() - req.sampled_at)
        if sampled and sampled[0].policy_version < req.issued_version:
            events.append(OlderWeights(req.generator))
        if req.held is None:
            events.append(Labelled(req, sampled, answers))
        else:
            events.append(PrefixesValued(req, req.held, sampled, answers))
