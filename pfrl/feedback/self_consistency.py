"""Self-consistency pseudo labels: the policy's own samples vote.

Math: the label is the most common final answer; empty answers do not vote, equivalent answers vote
together, and the vote share is taken over ALL samples (ten samples with one stated answer do not
make a 100% consensus). Code (multi-test-case self-consistency): every program runs on every input;
per input, the most common output among the programs that ran successfully is the pseudo expected
output, and an input is dropped unless at least `min_success_frac` of all programs ran on it.
Ties go to the answer/output seen first, so labels are deterministic.
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
    results: list[list[TestResult]], function_call: bool, min_success_frac: float
) -> list[str | None]:
    """Per test input, the majority normalised output of the programs that ran (None: input dropped).
    `results[p][t]` is program p on input t."""
    if not results:
        return []
    n_programs, n_inputs = len(results), len(results[0])
    labels: list[str | None] = []
    for t in range(n_inputs):
        ran = [normalize_output(r[t].output, function_call) for r in results if r[t].status.ran]
        if not ran or len(ran) / n_programs < min_success_frac:
            labels.append(None)
        else:
            labels.append(Counter(ran).most_common(1)[0][0])
    return labels


def match_scores(
    results: list[list[TestResult]], labels: list[str | None], function_call: bool
) -> list[float]:
    """Per program, the fraction of kept inputs (label not None) whose output equals the label."""
    kept = [t for t, label in enumerate(labels) if label is not None]
    if not kept:
        return [0.0] * len(results)
    scores = []
    for r in results:
        hits = sum(
            r[t].status.ran and normalize_output(r[t].output, function_call) == labels[t] for t in kept
        )
        scores.append(hits / len(kept))
    return scores
