"""Self-consistency pseudo labels: the policy's own samples vote.

Math: the label is the most common final answer; empty answers do not vote, equivalent answers vote
together, and the vote share is taken over ALL samples (ten samples with one stated answer do not
make a 100% consensus). Code (multi-test-case self-consistency): every program runs on every input;
per input, the most common output among the programs that ran successfully AND printed something is
the pseudo expected output, and an input is dropped unless at least `min_successful` programs voted
(an absolute count, the paper's 5). Ties go to the answer/output seen first, so labels are
deterministic. The code rules follow the official worker in
PFPO/scripts/apps/pseudo_test_cases/oss_combine_collect_pseudo_outputs_mp.py (microsoft/unilm).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pfrl.feedback.code import normalize_output
from pfrl.feedback.sandbox import TestResult


@dataclass(slots=True)
class Vote:
    label: str | None  # the representative answer of the winning cluster
    share: float  # its votes / number of samples
    agree: list[bool]  # per sample: voted for the label


def majority_answer(answers: list[str | None], equal: Callable[[str, str], bool]) -> Vote:
    """Cluster answers by `equal` (first matching cluster wins) and return the largest cluster."""
    reps: list[str] = []
    counts: list[int] = []
    member: list[int | None] = []
    for answer in answers:
        if answer is None:
            member.append(None)
            continue
        index = next((c for c, rep in enumerate(reps) if equal(rep, answer)), None)
        if index is None:
            reps.append(answer)
            counts.append(0)
            index = len(reps) - 1
        counts[index] += 1
        member.append(index)
    if not reps:
        return Vote(None, 0.0, [False] * len(answers))
    best = max(range(len(reps)), key=lambda c: (counts[c], -c))
    return Vote(reps[best], counts[best] / len(answers), [m == best for m in member])


def pseudo_outputs(
    results: list[list[TestResult]], function_call: bool, min_successful: int
) -> list[str | None]:
    """Per test input, the majority normalised output of the programs that ran and printed something
    (None: input dropped, fewer than `min_successful` such programs). `results[p][t]` is program p
    on input t."""
    if not results:
        return []
    labels: list[str | None] = []
    for t in range(len(results[0])):
        votes = [normalize_output(r[t].output, function_call) for r in results if r[t].status.ran]
        votes = [v for v in votes if v]  # an empty output says nothing about the expected one
        labels.append(Counter(votes).most_common(1)[0][0] if len(votes) >= min_successful else None)
    return labels


def match_counts(results: list[list[TestResult]], labels: list[str | None], function_call: bool) -> list[int]:
    """Per program, how many kept inputs (label not None) it ran on with an output equal to the label."""
    kept = [t for t, label in enumerate(labels) if label is not None]
    return [
        sum(r[t].status.ran and normalize_output(r[t].output, function_call) == labels[t] for t in kept)
        for r in results
    ]
