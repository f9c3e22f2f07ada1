"""RUN_DIR/samples.jsonl: what the policy wrote and how it was labelled, for a share of the groups.

One line per sampled group: the step and iteration it arrived at, the prompt, the completions
(each cut to `metrics.sample_chars`), their scores, the pseudo label with its vote share (math) or
the pseudo outputs (code), agreement with ground truth where the record has some, why the group
made no pair, and the pairs made (chosen, rejected completion indices). Which groups are written is
a seeded function of the prompt id, so a resumed run writes the same ones; the file is cut back to
the checkpoint on resume like metrics.jsonl. `pfrl status` shows the most recent lines.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pfrl.metrics import JsonlSink
from pfrl.types import LabelledGroup, RolloutGroup


def _chosen(prompt_id: str, rate: float, seed: int) -> bool:
    digest = hashlib.blake2b(f"{seed}:{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


def sample_record(group: RolloutGroup, result: LabelledGroup, step: int, max_chars: int) -> dict[str, Any]:
    return {
        "step": step, "iteration": group.item.iteration, "prompt_id": group.item.problem.id,
        "policy_version": group.policy_version, "prompt": group.item.problem.prompt[:max_chars],
        "completions": [c[:max_chars] for c in group.completions], "scores": result.scores,
        "label": result.label, "vote_share": result.vote_share, "pseudo_outputs": result.pseudo_outputs,
        "agree_gt": result.agree_gt, "skipped": result.skipped, "pairs": [list(p) for p in result.pairs],
    }


class SamplesLog:
    def __init__(self, run_dir: Path, rate: float, max_chars: int, seed: int):
        self.sink = JsonlSink(Path(run_dir) / "samples.jsonl")
        self.rate, self.max_chars, self.seed = rate, max_chars, seed

    def maybe_write(self, group: RolloutGroup, result: LabelledGroup, step: int) -> None:
        if self.rate > 0 and _chosen(group.item.problem.id, self.rate, self.seed):
            self.sink.write(sample_record(group, result, step, self.max_chars))


def recent_samples(run_dir: Path, n: int) -> list[dict[str, Any]]:
    path = Path(run_dir) / "samples.jsonl"
    if not path.exists() or n <= 0:
        return []
    out = []
    for line in path.read_text().splitlines()[-n:]:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return out
