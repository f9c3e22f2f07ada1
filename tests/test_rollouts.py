"""RolloutRequests against stand-in actors on a local Ray: both kinds of request (rollouts and
step-level prefix requests) reach the right labeller method and come back as the right events, and a
generator whose weight swap failed loses its requests instead of ending the run."""

from __future__ import annotations

import sys

import pytest

from pfrl.errors import RunFailed
from pfrl.rollouts import GeneratorLost, Held, Labelled, PrefixesValued, RolloutRequests
from pfrl.types import (
    LabelledGroup,
    PrefixBatch,
    PrefixRollout,
    PrefixValues,
    Problem,
    PromptItem,
    RolloutGroup,
    decode,
    encode,
)


class StandInGenerator:
    """Answers like GeneratorActor; `mode` 'weights' refuses as after a failed swap, 'bug' crashes,
    'slow' takes 4 s to sample."""

    def __init__(self, mode: str = "ok"):
        self.mode = mode

    def _check(self) -> None:
        from pfrl.engine_weights import WeightsIncomplete

        if self.mode == "weights":
            raise WeightsIncomplete("generator 0: last weight swap failed")
        if self.mode == "bug":
            raise ValueError("a bug")

    def generate(self, raw: bytes) -> bytes:
        self._check()
        if self.mode == "slow":
            import time

            time.sleep(4.0)
        items = decode(raw)
        return encode([RolloutGroup(it, ["a", "b"], [[1], [2]], ["stop"] * 2, 1, 2, policy_version=3) for it in items])

    def complete_prefixes(self, raw: bytes) -> bytes:
        self._check()
        return encode([PrefixRollout(b, [[1]], ["a"], [["x", "y"]], 2, policy_version=3) for b in decode(raw)])


class StandInLabeller:
    def label(self, raw: bytes) -> bytes:
        return encode([LabelledGroup(g.item.problem.id, 0, g.policy_version, "4", [1.0, 0.0], [(0, 1)])
                       for g in decode(raw)])

    def value_prefixes(self, raw: bytes) -> bytes:
        return encode([PrefixValues(r.batch.item.problem.id, [1]) for r in decode(raw)])


def _items(n: int) -> list[PromptItem]:
    return [PromptItem(Problem(f"p{i}", "Q?"), iteration=0) for i in range(n)]


def _drain(rollouts: RolloutRequests) -> list:
    events: list = []
    while rollouts.requests:
        events += rollouts.poll(5.0)
    return events


def _requests(ray, mode: str = "ok") -> RolloutRequests:
    # Workers cannot import this test module: ship the stand-ins by value.
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    gen = ray.remote(StandInGenerator).remote(mode)
    return RolloutRequests([gen], [ray.remote(StandInLabeller).remote()])


def test_rollouts_and_prefix_requests_become_their_own_events(ray_local):
    rollouts = _requests(ray_local)
    rollouts.issue(0, _items(2), version=3)
    assert rollouts.sampling_prompts(0) == 2 and rollouts.inflight_prompts() == 2
    (labelled,) = _drain(rollouts)
    assert isinstance(labelled, Labelled) and [r.prompt_id for r in labelled.results] == ["p0", "p1"]
    held = [Held(g, r, []) for g, r in zip(labelled.groups, labelled.results, strict=True)]
    batches = [PrefixBatch(h.group.item, "4", [9], [[1, 2]], 4, 3, 3) for h in held]
    rollouts.issue_prefixes(0, held, batches, version=3)
    assert rollouts.inflight_prompts() == 2  # held prompts are still in flight
    (valued,) = _drain(rollouts)
    assert isinstance(valued, PrefixesValued) and valued.held == held
    assert [v.values for v in valued.values] == [[1], [1]] and valued.rollouts[0].completions == [["x", "y"]]


def test_poll_hands_back_an_answer_without_waiting_for_the_others(ray_local):
    """A request's labels reach the loop while another request is still sampling: poll used to wait
    for every request (or its timeout), holding each answer up to the timeout, twice a request."""
    rollouts = _requests(ray_local)
    rollouts.generators.append(ray_local.remote(StandInGenerator).remote("slow"))
    ray_local.get([a.__ray_ready__.remote() for a in rollouts.generators + rollouts.labellers])
    rollouts.issue(1, _items(1), version=3)
    rollouts.issue(0, _items(2), version=3)
    events: list = []
    while not events:
        events = rollouts.poll(5.0)
    assert isinstance(events[0], Labelled)
    assert rollouts.sampling_prompts(1) == 1  # the slow generator is still sampling


def test_a_failed_weight_swap_loses_the_requests_instead_of_ending_the_run(ray_local):
    rollouts = _requests(ray_local, "weights")
    rollouts.issue(0, _items(2), version=3)
    rollouts.issue(0, _items(1), version=3)
    events = _drain(rollouts)
    lost = [e for e in events if isinstance(e, GeneratorLost)]
    assert lost and sorted(pid for e in lost for pid in e.prompt_ids) == ["p0", "p0", "p1"]
    assert not rollouts.requests


def test_a_generator_bug_still_ends_the_run(ray_local):
    rollouts = _requests(ray_local, "bug")
    rollouts.issue(0, _items(1), version=3)
    with pytest.raises(RunFailed, match="a bug"):
        _drain(rollouts)
