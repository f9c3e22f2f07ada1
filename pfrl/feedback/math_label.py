"""Labelling one math rollout group: reference answer or self-consistency vote, scores, pairs."""

from __future__ import annotations

import re

from pfrl.config import LabellerSection
from pfrl.feedback.answers import AnswerJudge, clean_answer, extract_answer
from pfrl.feedback.pairs import no_pair_reason, pair_rng, select_pairs
from pfrl.feedback.self_consistency import majority_answer
from pfrl.types import LabelledGroup, Problem, RolloutGroup

_MARKERS = re.compile(r"\\boxed|\\fbox|answer\s+is|####", re.IGNORECASE)
_BARE_MAX_WORDS = 6


def reference_answer(reference: str) -> str | None:
    """The label a reference gives: a full solution's extracted final answer, or a bare answer."""
    if _MARKERS.search(reference) or len(reference.split()) > _BARE_MAX_WORDS:
        return extract_answer(reference)
    return clean_answer(reference)


def has_reference(problem: Problem) -> bool:
    return problem.reference_label is not None


def _result(
    group: RolloutGroup,
    label: str | None,
    scores: list[float],
    skipped: str | None,
    vote_share: float | None = None,
) -> LabelledGroup:
    return LabelledGroup(
        prompt_id=group.item.problem.id,
        iteration=group.item.iteration,
        policy_version=group.policy_version,
        label=label,
        scores=scores,
        pairs=[],
        skipped=skipped,
        vote_share=vote_share,
    )


def label_math(
    group: RolloutGroup, mode: str, judge: AnswerJudge, cfg: LabellerSection, seed: int
) -> LabelledGroup:
    """`mode` is "reference" or "self-consistency" (already resolved from auto)."""
    answers = [extract_answer(c) for c in group.completions]
    vote_share = None
    if mode == "reference":
        ref = group.item.problem.reference_label
        label = reference_answer(ref) if ref is not None else None
        if label is None:
            return _result(
                group, None, [0.0] * len(answers), "no_reference" if ref is None else "bad_reference"
            )
        scores = [float(a is not None and judge.equal(label, a)) for a in answers]
    else:
        vote = majority_answer(answers, judge.equal)
        label, vote_share = vote.label, vote.share
        scores = [float(v) for v in vote.agree]
        if label is None:
            return _result(group, None, scores, "no_answers", vote_share)
        if vote_share < cfg.min_vote_share:
            return _result(group, label, scores, "low_vote_share", vote_share)
    out = _result(group, label, scores, None, vote_share)
    out.pairs = select_pairs(scores, cfg, pair_rng(seed, out.prompt_id))
    if not out.pairs:
        out.skipped = no_pair_reason(scores)
    return out
