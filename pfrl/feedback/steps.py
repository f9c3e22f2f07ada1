"""Step-level pDPO (the paper's process variant): prefixes of sampled solutions, valued by sampling.

A solution is cut into steps: a step ends at a line break, or, for a solution written on one line
(the tiny task's "3 + 4 = 7. 7 * 2 = 14. ..."), at a sentence end: a period followed by white
space, so "3.5" is never cut. The generator samples `k` completions from each proper prefix
(prompt + prefix, no EOS); a prefix's value is how many of them reach the group's label. Each good
prefix (value >= 1) is paired with a random bad one (value 0) of the same problem, both sides left
open (no EOS), and a group gets at most `ratio` prefix pairs per whole-solution pair.

Everything here is pure: cuts work on the decoded text of each token (exact ids, no re-tokenising),
and every random choice comes from a per-prompt seeded generator.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence

from pfrl.config import StepPairsSection
from pfrl.types import (
    LabelledGroup,
    PreferencePair,
    PrefixBatch,
    PrefixRollout,
    PrefixValues,
    PromptItem,
    RolloutGroup,
    SampledIds,
)

_STEP_END = re.compile(r"\n+|\.(?=\s)")


def step_cuts(pieces: Sequence[str]) -> list[int]:
    """Token counts at which a step of the text `"".join(pieces)` ends: each step end is moved to
    the first token boundary at or after it. Only proper prefixes: 0 and len(pieces) never appear."""
    bounds, total = [], 0
    for piece in pieces:
        total += len(piece)
        bounds.append(total)  # bounds[i]: characters in pieces[: i + 1]
    text = "".join(pieces)
    cuts: list[int] = []
    for m in _STEP_END.finditer(text):
        end = m.end()
        t = next((i + 1 for i, b in enumerate(bounds) if b >= end), len(pieces))
        if 0 < t < len(pieces) and (not cuts or t > cuts[-1]):
            cuts.append(t)
    return cuts


def choose_prefixes(solutions: Sequence[Sequence[int]], cuts: Sequence[Sequence[int]], limit: int,
                    rng: random.Random) -> list[list[int]]:
    """Up to `limit` distinct prefixes (token ids) of the solutions, a seeded sample over all their cuts."""
    seen: dict[tuple[int, ...], None] = {}
    for ids, solution_cuts in zip(solutions, cuts, strict=True):
        for t in solution_cuts:
            seen.setdefault(tuple(ids[:t]), None)
    prefixes = list(seen)
    if len(prefixes) > limit:
        prefixes = rng.sample(prefixes, limit)
    return [list(p) for p in prefixes]


def prefix_rng(seed: int, item: PromptItem) -> random.Random:
    """Which prefixes are valued depends on the run seed and the prompt's attempt only."""
    return random.Random(f"prefixes:{seed}:{item.problem.id}:{item.attempt}")


def prefix_batch(group: RolloutGroup, result: LabelledGroup, cfg: StepPairsSection) -> PrefixBatch:
    assert result.label is not None
    return PrefixBatch(item=group.item, label=result.label, prompt_token_ids=list(group.prompt_token_ids),
                       solutions=[list(t) for t in group.token_ids], prefixes_per_problem=cfg.prefixes_per_problem,
                       completions_per_prefix=cfg.completions_per_prefix, source_version=group.policy_version)


def prefix_pairs(rollout: PrefixRollout, values: PrefixValues, max_pairs: int, rng: random.Random) -> list[PreferencePair]:
    """Each good prefix with a random bad one of the same problem, at most `max_pairs` (seeded)."""
    batch = rollout.batch
    good = [j for j, v in enumerate(values.values) if v >= 1]
    bad = [j for j, v in enumerate(values.values) if v == 0]
    if not good or not bad or max_pairs <= 0:
        return []
    chosen = [(g, rng.choice(bad)) for g in good]
    if len(chosen) > max_pairs:
        chosen = sorted(rng.sample(chosen, max_pairs))
    problem = batch.item.problem
    return [
        PreferencePair(
            prompt_id=problem.id, prompt=problem.prompt, chosen=rollout.prefix_texts[g], rejected=rollout.prefix_texts[b],
            policy_version=batch.source_version, iteration=batch.item.iteration,
            chosen_complete=False, rejected_complete=False,
            sampled=SampledIds(list(batch.prompt_token_ids), list(rollout.prefixes[g]), list(rollout.prefixes[b])),
        )
        for g, b in chosen
    ]


def max_prefix_pairs(ratio: float, whole_pairs: int) -> int:
    """The mix: `ratio` prefix pairs per whole-solution pair of the group (the paper: 1:1)."""
    return math.floor(ratio * whole_pairs + 1e-9)


def wants_prefixes(group: RolloutGroup, result: LabelledGroup, whole_pairs: int, ratio: float) -> bool:
    """Whether a labelled group's prefixes are worth valuing: the iteration mixes prefix pairs in,
    the group was kept (a label above the vote threshold) and made whole-solution pairs (so it has
    right and wrong solutions, whose prefixes can differ in value), and its sampled ids are known."""
    return (max_prefix_pairs(ratio, whole_pairs) > 0 and result.skipped is None and result.label is not None
            and bool(group.token_ids) and bool(group.prompt_token_ids))
