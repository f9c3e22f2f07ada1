"""Chosen/rejected pairs from per-sample scores (the paper's strategies), seeded per prompt.

one_random   one random chosen x one random rejected (the paper's first round)
all_chosen   every chosen sample with one random rejected (later rounds)
margin       code: i over j when score(i) >= chosen_min_score and score(i) - score(j) >= margin

For one_random / all_chosen a sample is chosen when its score is 1 (right answer, all tests passed)
and rejected otherwise. Groups that are all right or all wrong give no pairs. Every strategy is
capped at `max_pairs_per_prompt`.
"""

from __future__ import annotations

import random

from pfrl.config import LabellerSection
from pfrl.types import LabelledGroup, PreferencePair, RolloutGroup, SampledIds

_EPS = 1e-9


def pair_rng(seed: int, prompt_id: str) -> random.Random:
    """Pairing depends on the run seed and the prompt only, not on arrival order or worker."""
    return random.Random(f"pairs:{seed}:{prompt_id}")


def _binary_pairs(scores: list[float], strategy: str, rng: random.Random) -> list[tuple[int, int]]:
    chosen = [i for i, s in enumerate(scores) if s >= 1.0 - _EPS]
    rejected = [i for i, s in enumerate(scores) if s < 1.0 - _EPS]
    if not chosen or not rejected:
        return []
    if strategy == "one_random":
        return [(rng.choice(chosen), rng.choice(rejected))]
    return [(c, rng.choice(rejected)) for c in chosen]


def _margin_pairs(scores: list[float], cfg: LabellerSection) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i, si in enumerate(scores)
        if si >= cfg.chosen_min_score - _EPS
        for j, sj in enumerate(scores)
        if si - sj >= cfg.margin - _EPS
    ]


def select_pairs(scores: list[float], cfg: LabellerSection, rng: random.Random) -> list[tuple[int, int]]:
    """(chosen index, rejected index) pairs for one group under `cfg.pair_strategy`."""
    if cfg.pair_strategy == "margin":
        pairs = _margin_pairs(scores, cfg)
    else:
        pairs = _binary_pairs(scores, cfg.pair_strategy, rng)
    if len(pairs) > cfg.max_pairs_per_prompt:
        pairs = sorted(rng.sample(pairs, cfg.max_pairs_per_prompt))
    return pairs


def no_pair_reason(scores: list[float]) -> str:
    """Why a group gave no pairs."""
    if scores and all(s >= 1.0 - _EPS for s in scores):
        return "all_correct"
    if all(s <= _EPS for s in scores):
        return "all_wrong"
    return "no_pairs"


def to_preference_pairs(group: RolloutGroup, labelled: LabelledGroup) -> list[PreferencePair]:
    """DPO examples for a labelled group, tagged with the policy version that sampled it."""
    prompt = group.item.problem.prompt
    return [
        PreferencePair(
            prompt_id=labelled.prompt_id,
            prompt=prompt,
            chosen=group.completions[c],
            rejected=group.completions[r],
            policy_version=group.policy_version,
            iteration=group.item.iteration,
            sampled=sampled_ids(group, c, r),
        )
        for c, r in labelled.pairs
    ]


def sampled_ids(group: RolloutGroup, chosen: int, rejected: int) -> SampledIds | None:
    """The token ids the generator sampled for a pair (the learner trains on exactly these); None
    when the group carries no ids (`pfrl label` reads texts)."""
    if not group.prompt_token_ids or not group.token_ids:
        return None
    return SampledIds(list(group.prompt_token_ids), list(group.token_ids[chosen]), list(group.token_ids[rejected]))
