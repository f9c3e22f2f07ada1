"""Pure parts of the learner group: merging per-rank metrics, local ranks (no Ray started)."""

from __future__ import annotations

import pytest

from pfrl.learner_group import local_ranks, merge_metrics, rank_shares
from pfrl.types import PreferencePair


def _m(pairs: float, loss: float, acc: float, tokens: float, step_s: float, lr: float) -> dict[str, float]:
    return {
        "learner/loss": loss, "learner/reward_acc": acc, "learner/pairs": pairs, "learner/tokens": tokens,
        "learner/step_s": step_s, "learner/lr": lr, "learner/grad_norm": 2.0, "learner/truncated": 1.0,
        "learner/micro_batches": 3.0,
    }  # fmt: skip


def test_merge_weights_means_by_pairs_and_sums_counts():
    merged = merge_metrics([_m(3, 0.6, 1.0, 300, 1.5, 1e-6), _m(1, 0.2, 0.0, 90, 2.5, 9.9)])
    assert merged["learner/loss"] == pytest.approx((3 * 0.6 + 1 * 0.2) / 4)
    assert merged["learner/reward_acc"] == pytest.approx(0.75)
    assert merged["learner/pairs"] == 4 and merged["learner/tokens"] == 390 and merged["learner/truncated"] == 2
    assert merged["learner/step_s"] == 2.5  # the step lasts as long as its slowest rank
    assert merged["learner/lr"] == 1e-6 and merged["learner/micro_batches"] == 3.0


def test_local_ranks_count_per_node():
    assert local_ranks(["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.1", "10.0.0.2"]) == [0, 0, 1, 2, 1]


def _pair(prompt_id: str, k: int) -> PreferencePair:
    return PreferencePair(prompt_id=prompt_id, prompt=prompt_id, chosen=f"c{k}", rejected=f"r{k}", policy_version=0)


def test_rank_shares_keep_one_prompts_pairs_together_and_balance_the_ranks():
    # Arrival interleaves prompts a and b; round robin put a's pairs on both ranks.
    pairs = [_pair("a", 0), _pair("b", 1), _pair("a", 2), _pair("b", 3), _pair("c", 4)]
    shares = rank_shares(pairs, 2)
    assert [[p.chosen for p in s] for s in shares] == [["c0", "c2", "c1"], ["c3", "c4"]]
    assert [len(s) for s in rank_shares(pairs, 3)] == [2, 2, 1]
    assert sorted(p.chosen for s in rank_shares(pairs, 4) for p in s) == sorted(p.chosen for p in pairs)
