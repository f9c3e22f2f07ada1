"""JSONL rows of `pfrl label`: rollout records in, labelled rows and DPO pair rows out.

Input, one group per line:
    {"id", "prompt", "completions": [str], "reference"?, "answer"?, "entry_point"?, "test_inputs"?,
     "test_outputs"?, "reference_test_inputs"?, "reference_test_outputs"?}
Output, one row per input group:
    {"id", "label", "vote_share"?, "pseudo_outputs"?, "agree_gt"?, "scores", "pairs": [[chosen, rejected]],
     "skipped"}
Pairs: {"prompt", "chosen", "rejected", "id"}, the format DPO trainers read, built by `build_pairs`
(the same pair settings as `pfrl train`; step-level prefix pairs need generators, so only `pfrl train`
makes them).
"""

from __future__ import annotations

from typing import Any

from pfrl.config import LabellerSection
from pfrl.feedback.pairs import build_pairs
from pfrl.tasks.io import parse_problem
from pfrl.types import LabelledGroup, PromptItem, RolloutGroup


def parse_rollout_record(obj: Any, iteration: int = 0) -> RolloutGroup:
    """One JSON object -> RolloutGroup (labelled as `iteration` of the labeller's schedule), or
    ValueError naming what is wrong."""
    problem = parse_problem(obj)
    completions = obj.get("completions")
    if not isinstance(completions, list) or not completions:
        raise ValueError("completions must be a non-empty list")
    if not all(isinstance(c, str) for c in completions):
        raise ValueError("completions must be strings")
    return RolloutGroup(
        item=PromptItem(problem=problem, iteration=iteration),
        completions=completions,
        token_ids=[],
        finish_reasons=[],
        prompt_tokens=0,
        completion_tokens=0,
        policy_version=0,
    )


def labelled_row(labelled: LabelledGroup) -> dict[str, Any]:
    row: dict[str, Any] = {"id": labelled.prompt_id, "label": labelled.label}
    if labelled.vote_share is not None:
        row["vote_share"] = round(labelled.vote_share, 6)
    if labelled.pseudo_outputs is not None:
        row["pseudo_outputs"] = labelled.pseudo_outputs
    if labelled.agree_gt is not None:
        row["agree_gt"] = round(labelled.agree_gt, 6)
    row["scores"] = [round(s, 6) for s in labelled.scores]
    row["pairs"] = [[c, r] for c, r in labelled.pairs]
    row["skipped"] = labelled.skipped
    return row


def pair_rows(group: RolloutGroup, labelled: LabelledGroup, cfg: LabellerSection) -> list[dict[str, Any]]:
    rows = []
    for p in build_pairs(group, labelled, cfg):
        rows.append({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "id": p.prompt_id})
    return rows
