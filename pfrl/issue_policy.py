"""The online loop's decisions, as pure functions of one snapshot of the run.

How many prompts to put in flight, how many pairs to train now, and how many steps an iteration
is expected to take (its learning-rate horizon). Nothing here touches Ray, threads or files, so
every rule is unit-tested on hand-built snapshots.

Staleness with sparse syncs. A pair carries the version of the weights that sampled it. It may be
trained while it is at most `buffer.max_policy_lag` versions older than the newest weights the
generators have been *sent* (`published`), not the learner's own version: with
`sync.every_steps: k` the generators cannot hold anything newer between syncs, so measuring
against the learner would make every pair stale k steps after a sync and, with `k > lag + 1`,
stop the run (nothing trains, so no sync comes). Measured against `published`, fresh samples are
always trainable and every valid combination makes progress; the learner then trains on pairs at
most `lag + k - 1` of its own steps old (reported as `buffer/policy_lag`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LoopSnapshot:
    """What the decisions read, taken from the run state at one instant."""

    max_policy_lag: int
    pairs_per_step: int
    capacity: int
    num_learners: int
    buffered: int  # trainable pairs in the replay buffer
    inflight_prompts: int  # prompts out for sampling or labelling
    unissued_prompts: int  # prompts of the current iteration not yet sent out
    pairs_per_prompt: float  # recent pair yield per labelled prompt
    learner_busy: bool
    stopping: bool
    steps_done: int
    max_steps: int | None

    @property
    def lockstep(self) -> bool:
        return self.max_policy_lag == 0

    @property
    def at_max_steps(self) -> bool:
        return self.max_steps is not None and self.steps_done >= self.max_steps

    @property
    def tail(self) -> bool:
        """Nothing more will arrive in this iteration: what is buffered is all there is."""
        return self.unissued_prompts == 0 and self.inflight_prompts == 0


def prompt_deficit(s: LoopSnapshot) -> int:
    """Prompts to put in flight now: enough for `lag + 1` steps of pairs, counting what is buffered
    and what the prompts in flight are expected to yield; none while stopping and, in lockstep,
    none while the policy is changing (each batch is sampled by one version)."""
    if s.stopping or (s.lockstep and s.learner_busy):
        return 0
    yield_ = max(s.pairs_per_prompt, 0.1)
    target = min(s.pairs_per_step * (s.max_policy_lag + 1), s.capacity)
    missing = target - s.buffered - s.inflight_prompts * s.pairs_per_prompt
    return max(0, math.ceil(missing / yield_))


def pairs_to_train(s: LoopSnapshot) -> int:
    """Pairs to train on now (0: wait). A full step when the buffer has one; at an iteration's tail
    whatever is left (when every rank gets a pair); in lockstep only once every rollout of this
    version is in."""
    if s.learner_busy or s.stopping or s.at_max_steps:
        return 0
    if s.lockstep and s.inflight_prompts:
        return 0
    if s.buffered >= s.pairs_per_step:
        return s.pairs_per_step
    if s.tail and s.buffered >= s.num_learners:
        return s.buffered
    return 0


def steps_left(s: LoopSnapshot) -> int:
    """Learner steps this iteration is still expected to take, this one included: what is buffered
    plus what the prompts in flight and not yet issued should yield, capped by `run.max_steps`."""
    expected = s.buffered + s.pairs_per_prompt * (s.inflight_prompts + s.unissued_prompts)
    left = max(1, math.ceil(expected / s.pairs_per_step))
    if s.max_steps is not None:
        left = min(left, max(1, s.max_steps - s.steps_done))
    return left
