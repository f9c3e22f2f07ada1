"""Labelled groups into the replay buffer: whole-solution pairs at once, or, for the groups that
step-level pDPO values (`labeller.step_pairs`), held until their prefixes are valued.

A held group keeps its whole-solution pairs; its solutions go to the least busy ready generator as
a `complete_prefixes` request (pfrl/rollouts.py), and when the labeller has valued the prefixes,
the group enters the buffer with its prefix pairs added (at most `step_pair_ratio` per whole pair).
Groups of an iteration that has ended are dropped, like any late rollout. A group that arrives when
the steps able to train it are already covered goes back to be sampled again
(`issue_policy.wants_group`): the loop puts more prompts in flight than a step needs, and the
surplus would otherwise be dropped stale.
"""

from __future__ import annotations

from collections.abc import Callable

from pfrl import issue_policy
from pfrl.config import PfrlConfig
from pfrl.generator_pool import GeneratorPool
from pfrl.issue_policy import LoopSnapshot
from pfrl.rollouts import Held, Labelled, PrefixesValued, RolloutRequests
from pfrl.run_state import RunState
from pfrl.types import LabelledGroup, PreferencePair, RolloutGroup


class PairIntake:
    """The controller's hand-off from labelling to the buffer (`RunState.account`)."""

    def __init__(self, cfg: PfrlConfig, state: RunState, pool: GeneratorPool, rollouts: RolloutRequests,
                 snapshot: Callable[[], LoopSnapshot]):
        self.cfg, self.state, self.pool, self.rollouts = cfg, state, pool, rollouts
        self.snapshot = snapshot  # the loop as it stands now (the controller's)

    def on_labelled(self, event: Labelled) -> None:
        """Each current group's pairs go to the buffer, or wait for its prefix values (pDPO)."""
        from pfrl.feedback.pairs import build_pairs
        from pfrl.feedback.steps import wants_prefixes

        held: list[Held] = []
        for group, result in zip(event.groups, event.results, strict=True):
            if not self.state.scheduler.is_current(group.item):
                continue
            pairs = build_pairs(group, result, self.cfg.labeller)
            ratio = self.cfg.labeller.plan(group.item.iteration).step_pair_ratio
            if wants_prefixes(group, result, len(pairs), ratio) and self._wanted(group):
                held.append(Held(group, result, pairs))
            else:
                self._place(group, result, pairs)
        if held:
            self._issue_prefixes(held)

    def _issue_prefixes(self, held: list[Held]) -> None:
        """To the least busy ready generator; with none ready (all restarting), the groups keep
        their whole-solution pairs only."""
        from pfrl.feedback.steps import prefix_batch

        ready = self.pool.ready()
        if not ready:
            for h in held:
                self._place(h.group, h.result, h.pairs)
            return
        g = min(ready, key=self.rollouts.sampling_prompts)
        batches = [prefix_batch(h.group, h.result, self.cfg.labeller.step_pairs) for h in held]
        self.rollouts.issue_prefixes(g, held, batches, self.pool.states[g].version)

    def on_prefixes_valued(self, event: PrefixesValued) -> None:
        from pfrl.feedback.pairs import pair_rng
        from pfrl.feedback.steps import max_prefix_pairs, prefix_pairs

        for h, rollout, values in zip(event.held, event.rollouts, event.values, strict=True):
            if not self.state.scheduler.is_current(h.group.item):
                continue
            cap = max_prefix_pairs(self.cfg.labeller.plan(h.group.item.iteration).step_pair_ratio, len(h.pairs))
            extra = prefix_pairs(rollout, values, cap, pair_rng(self.cfg.run.seed, h.result.prompt_id))
            self.state.meters.on_prefixes(rollout, values, len(extra))
            self._place(h.group, h.result, h.pairs + extra)

    def _wanted(self, group: RolloutGroup) -> bool:
        s = self.snapshot()
        age = self.state.counters.published - group.policy_version
        return issue_policy.wants_group(s, age, self.state.buffer.count_at_least(group.policy_version))

    def _place(self, group: RolloutGroup, result: LabelledGroup, pairs: list[PreferencePair]) -> None:
        """Into the buffer, or back to be sampled again when no step can still use its pairs."""
        if pairs and not self._wanted(group):
            self.state.resample(group, len(pairs))
        else:
            self.state.account(group, result, pairs)
