"""Chosen/rejected pairs from per-sample scores (the paper's strategies), seeded per prompt, and
`build_pairs`, the one way a labelled group becomes DPO examples (`pfrl train` and `pfrl label`).

one_random   one random chosen x one random rejected (the paper's first round)
all_chosen   every chosen sample with one random rejected (later rounds)
margin       code: program i over program j when i passes at least `min_pass_ratio` of the kept test
             cases and at least `margin_tests` more of them than j (counts, as in the official code:
             PFPO/scripts/apps/pseudo_test_cases/oss_combine_collect_pseudo_outputs_mp.py and
             PFPO/scripts/apps/construct_prefer_pair_soft.py of microsoft/unilm)

For one_random / all_chosen a sample is chosen when its score is 1 (right answer, all tests passed)
and rejected otherwise. Groups that are all right or all wrong give no pairs. Every strategy is
capped at `max_pairs` (a seeded sample) unless that is None.

Given the samples' texts (`keys`), no two pairs of a group have the same two texts: a small policy
often samples one text several times, and a repeated pair is refused by the replay buffer anyway.
Drawn without the texts, a quarter to a third of the tiny math preset's pairs were such repeats
(docs/benchmarks.md, bench e2e run 8), each taking a place under the cap that a new pair could
have had. all_chosen still gives each chosen sample a random rejected one, drawn among the
rejected texts that sample's text is not yet paired with (none left: that sample gives no pair).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from pfrl.config import LabellerSection
from pfrl.types import LabelledGroup, PreferencePair, RolloutGroup, SampledIds

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class PairRule:
    """How one group's pairs are drawn: the iteration's strategy and its source's margin and floor."""

    strategy: str
    max_pairs: int | None
    margin_tests: int = 1
    min_pass_ratio: float = 0.0

    @classmethod
    def of(cls, cfg: LabellerSection, strategy: str, source: str) -> PairRule:
        """`source` resolved (not auto): it picks the margin and the pass-ratio floor."""
        return cls(strategy, cfg.max_pairs_per_prompt, getattr(cfg.margin, source), getattr(cfg.min_pass_ratio, source))


def pair_rng(seed: int, prompt_id: str) -> random.Random:
    """Pairing depends on the run seed and the prompt only, not on arrival order or worker."""
    return random.Random(f"pairs:{seed}:{prompt_id}")


def _binary_pairs(scores: list[float], strategy: str, rng: random.Random, keys: Sequence) -> list[tuple[int, int]]:
    chosen = [i for i, s in enumerate(scores) if s >= 1.0 - _EPS]
    rejected = [i for i, s in enumerate(scores) if s < 1.0 - _EPS]
    if not chosen or not rejected:
        return []
    if strategy == "one_random":
        return [(rng.choice(chosen), rng.choice(rejected))]
    pairs: list[tuple[int, int]] = []
    seen: set[tuple] = set()
    for c in chosen:
        fresh = [r for r in rejected if (keys[c], keys[r]) not in seen]
        if fresh:
            r = rng.choice(fresh)
            seen.add((keys[c], keys[r]))
            pairs.append((c, r))
    return pairs


def _distinct(pairs: list[tuple[int, int]], keys: Sequence) -> list[tuple[int, int]]:
    """The first pair of each (chosen text, rejected text), in order."""
    seen: set[tuple] = set()
    out = []
    for c, r in pairs:
        if (keys[c], keys[r]) not in seen:
            seen.add((keys[c], keys[r]))
            out.append((c, r))
    return out


def _margin_pairs(scores: list[float], rule: PairRule, n_tests: int) -> list[tuple[int, int]]:
    passed = [round(s * n_tests) for s in scores]  # scores are passed / n_tests: back to counts
    return [
        (i, j)
        for i, pi in enumerate(passed)
        if pi >= rule.min_pass_ratio * n_tests - _EPS
        for j, pj in enumerate(passed)
        if pi - pj >= rule.margin_tests
    ]


def select_pairs(
    scores: list[float],
    rule: PairRule,
    rng: random.Random,
    n_tests: int | None = None,
    keys: Sequence | None = None,
) -> list[tuple[int, int]]:
    """(chosen index, rejected index) pairs for one group. `n_tests`: the kept test cases the code
    scores are fractions of (margin pairs need it). `keys`: the samples' texts, so that no two pairs
    repeat the same two texts (None: every sample counts as distinct)."""
    keys = keys if keys is not None else range(len(scores))
    if rule.strategy == "margin":
        if n_tests is None:
            raise ValueError("margin pairs need the number of test cases")
        pairs = _distinct(_margin_pairs(scores, rule, n_tests), keys)
    else:
        pairs = _binary_pairs(scores, rule.strategy, rng, keys)
    if rule.max_pairs is not None and len(pairs) > rule.max_pairs:
        pairs = sorted(rng.sample(pairs, rule.max_pairs))
    return pairs


def no_pair_reason(scores: list[float]) -> str:
    """Why a group gave no pairs."""
    if scores and all(s >= 1.0 - _EPS for s in scores):
        return "all_correct"
    if all(s <= _EPS for s in scores):
        return "all_wrong"
    return "no_pairs"


def to_preference_pairs(group: RolloutGroup, labelled: LabelledGroup) -> list[PreferencePair]:
    """DPO examples for a labelled group's index pairs, tagged with the policy version that sampled it."""
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


def build_pairs(group: RolloutGroup, result: LabelledGroup, cfg: LabellerSection) -> list[PreferencePair]:
    """The whole-solution DPO examples of one labelled group: none for a skipped group, else its
    index pairs as texts with their sampled ids (step-level prefix pairs come later: feedback/steps.py)."""
    if result.skipped is not None:
        return []
    return to_preference_pairs(group, result)
