"""Labelling one math rollout group from one label source, then scores, pairs and `agree_gt`.

reference         the frontier model's `reference` (a full solution, whose final answer is taken, or
                  a bare answer)
ground_truth      the data set's `answer` (baselines only: asked for by name)
self_consistency  the majority answer; the group is kept only when its vote share is strictly above
                  `min_vote_share` (the official filter is `freq > top_p`:
                  PFPO/scripts/math_scale/construct_prefer_pair_sc.py of microsoft/unilm)
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pfrl.config import LabellerSection
from pfrl.feedback.answers import AnswerJudge, clean_answer, extract_answer
from pfrl.feedback.pairs import PairRule, no_pair_reason, pair_rng, select_pairs
from pfrl.feedback.self_consistency import majority_answer
from pfrl.types import LabelledGroup, PrefixRollout, PrefixValues, Problem, RolloutGroup

_MARKERS = re.compile(r"\\boxed|\\fbox|answer\s+is|####", re.IGNORECASE)
_BARE_MAX_WORDS = 6
_EPS = 1e-9

# A user's answer checker (labeller.scorer): (completion, label) -> bool | float.
Check = Callable[[str, str], "bool | float"]


def reference_answer(reference: str) -> str | None:
    """The label a reference gives: a full solution's extracted final answer, or a bare answer."""
    if _MARKERS.search(reference) or len(reference.split()) > _BARE_MAX_WORDS:
        return extract_answer(reference)
    return clean_answer(reference)


def has_reference(problem: Problem) -> bool:
    """A frontier reference (never the data set's answer: that is ground truth)."""
    return problem.reference is not None


def _result(group: RolloutGroup, label: str | None, scores: list[float], skipped: str | None,
            vote_share: float | None = None) -> LabelledGroup:
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


def _given_label(group: RolloutGroup, source: str) -> tuple[str | None, str | None]:
    """(label, skip reason) from the record's reference or ground-truth answer."""
    problem = group.item.problem
    text = problem.reference if source == "reference" else problem.answer
    if text is None:
        return None, "no_reference" if source == "reference" else "no_ground_truth"
    label = reference_answer(text)
    return label, None if label is not None else "bad_" + ("reference" if source == "reference" else "ground_truth")


def agree_with_ground_truth(problem: Problem, label: str, judge: AnswerJudge) -> float | None:
    """1.0 when the pseudo label is equivalent to the record's `answer`, 0.0 when not, None without one."""
    truth = reference_answer(problem.answer) if problem.answer is not None else None
    return None if truth is None else float(judge.equal(truth, label))


def label_math(group: RolloutGroup, source: str, rule: PairRule, judge: AnswerJudge, cfg: LabellerSection,
               seed: int, check: Check | None = None) -> LabelledGroup:
    """`source` is resolved (reference | ground_truth | self_consistency); `check` replaces the
    built-in answer comparison when the user configured a scorer."""
    answers = [extract_answer(c) for c in group.completions]
    vote_share = None
    if source == "self_consistency":
        vote = majority_answer(answers, judge.equal)
        label, vote_share = vote.label, vote.share
        scores = [float(v) for v in vote.agree]
        if label is None:
            return _result(group, None, scores, "no_answers", vote_share)
        if vote_share <= cfg.min_vote_share + _EPS:
            return _result(group, label, scores, "low_vote_share", vote_share)
    else:
        label, skipped = _given_label(group, source)
        if label is None:
            return _result(group, None, [0.0] * len(answers), skipped)
        scores = [float(a is not None and judge.equal(label, a)) for a in answers]
    if check is not None:
        scores = [float(check(c, label)) for c in group.completions]
    out = _result(group, label, scores, None, vote_share)
    if source != "ground_truth":
        out.agree_gt = agree_with_ground_truth(group.item.problem, label, judge)
    out.pairs = select_pairs(scores, rule, pair_rng(seed, out.prompt_id), keys=group.completions)
    if not out.pairs:
        out.skipped = no_pair_reason(scores)
    return out


def prefix_values(rollout: PrefixRollout, judge: AnswerJudge, check: Check | None = None) -> PrefixValues:
    """Step-level pDPO: how many continuations of each prefix reach the group's label (the prefix and
    its continuation read as one solution)."""
    label = rollout.batch.label

    def reaches(text: str) -> bool:
        if check is not None:
            return float(check(text, label)) >= 1.0 - _EPS
        answer = extract_answer(text)
        return answer is not None and judge.equal(label, answer)

    values = [sum(reaches(prefix + c) for c in comps) for prefix, comps in zip(rollout.prefix_texts, rollout.completions, strict=True)]
    return PrefixValues(prompt_id=rollout.batch.item.problem.id, values=values)
