"""Step-level pDPO, the pure parts: step cuts in token space, prefix choice, prefix values and pairs,
the mix ratio, and which groups are valued. Hand-built groups, no engine."""

import random

from hypothesis import given
from hypothesis import strategies as st

from learner.batching import tokenize_pair
from pfrl.config import LabellerSection, StepPairsSection
from pfrl.feedback.answers import AnswerJudge
from pfrl.feedback.math_label import prefix_values
from pfrl.feedback.steps import (
    choose_prefixes,
    max_prefix_pairs,
    prefix_batch,
    prefix_pairs,
    step_cuts,
    wants_prefixes,
)
from pfrl.types import (
    LabelledGroup,
    PreferencePair,
    PrefixRollout,
    PrefixValues,
    Problem,
    PromptItem,
    RolloutGroup,
)


def _pieces(text: str, width: int = 3) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)]


def test_cuts_at_sentence_ends_and_line_breaks_never_inside_a_number():
    pieces = [" 3", ".5", " +", " 1", " =", " 4", ".5", ".", " So", "\n", "x", " =", " 2", "."]
    cuts = step_cuts(pieces)
    text = "".join(pieces)
    assert ["".join(pieces[:c]) for c in cuts] == [" 3.5 + 1 = 4.5.", " 3.5 + 1 = 4.5. So\n"]
    assert all(0 < c < len(pieces) for c in cuts) and text.endswith("2.")  # the full text is no prefix


def test_a_step_end_inside_a_token_cuts_after_that_token():
    # ". " merged into one token: the prefix keeps the space, the cut stays on a token boundary
    assert step_cuts([" 1 = 1", ". ", "2 = 2", "."]) == [2]


@given(st.lists(st.sampled_from([" 1", " =", ".", ". ", "\n", " x", "3.5", "\n\n"]), max_size=20))
def test_cuts_are_increasing_proper_token_counts(pieces):
    cuts = step_cuts(pieces)
    assert cuts == sorted(set(cuts)) and all(0 < c < len(pieces) for c in cuts)


def test_prefix_choice_is_distinct_seeded_and_capped():
    solutions = [[1, 2, 3, 4], [1, 2, 5, 6], [7, 8]]
    cuts = [[2, 3], [2], [1]]
    all_of = choose_prefixes(solutions, cuts, 10, random.Random(0))
    assert sorted(map(tuple, all_of)) == [(1, 2), (1, 2, 3), (7,)]  # [1, 2] is shared: valued once
    a = choose_prefixes(solutions, cuts, 2, random.Random(5))
    assert len(a) == 2 and a == choose_prefixes(solutions, cuts, 2, random.Random(5))


def _item() -> PromptItem:
    return PromptItem(Problem("p1", "Q?", answer="4"), iteration=1, attempt=0)


def _rollout(texts: list[str], completions: list[list[str]]) -> PrefixRollout:
    item = _item()
    batch = prefix_batch(
        RolloutGroup(item, ["x"], [[9, 9]], ["stop"], 1, 2, policy_version=5, prompt_token_ids=[100]),
        LabelledGroup("p1", 1, 5, "4", [1.0], []), StepPairsSection(completions_per_prefix=2),
    )
    return PrefixRollout(batch, [[10 + j] for j in range(len(texts))], texts, completions, 0, policy_version=7)


def test_prefix_values_count_continuations_that_reach_the_label():
    judge = AnswerJudge(2.0)
    try:
        rollout = _rollout([" 2 + 2 = 4.", " 2 + 2 = 5."],
                           [[" The answer is \\boxed{4}.", " The answer is \\boxed{5}."],
                            [" The answer is \\boxed{5}.", " 5 - 1 = 3."]])
        assert prefix_values(rollout, judge).values == [1, 0]
        # the prefix and its continuation are one solution: an answer inside the prefix counts
        done = _rollout([" The answer is \\boxed{4}."], [[""]])
        assert prefix_values(done, judge).values == [1]
    finally:
        judge.close()


def test_prefix_pairs_pair_good_with_bad_of_the_same_problem_open_ended():
    rollout = _rollout(["a", "b", "c", "d"], [[], [], [], []])
    pairs = prefix_pairs(rollout, PrefixValues("p1", [2, 0, 1, 0]), max_pairs=8, rng=random.Random(0))
    assert [p.chosen for p in pairs] == ["a", "c"] and {p.rejected for p in pairs} <= {"b", "d"}
    for p in pairs:
        assert not p.chosen_complete and not p.rejected_complete
        assert p.policy_version == 5  # the version that sampled the solutions, not the continuations (7)
        assert p.sampled is not None and p.sampled.prompt == [100] and p.iteration == 1
        assert p.sampled.chosen == [10 + "abcd".index(p.chosen)]
    assert len(prefix_pairs(rollout, PrefixValues("p1", [2, 0, 1, 0]), max_pairs=1, rng=random.Random(0))) == 1
    assert prefix_pairs(rollout, PrefixValues("p1", [1, 1, 1, 3]), 8, random.Random(0)) == []  # no bad prefix
    assert prefix_pairs(rollout, PrefixValues("p1", [0, 0, 0, 0]), 8, random.Random(0)) == []  # no good one


def test_mix_ratio_and_which_groups_are_valued():
    assert [max_prefix_pairs(r, 4) for r in (0.0, 0.5, 1.0, 2.0)] == [0, 2, 4, 8]
    item = _item()
    group = RolloutGroup(item, ["a", "b"], [[1], [2]], ["stop"] * 2, 1, 2, 0, prompt_token_ids=[3])
    kept = LabelledGroup("p1", 1, 0, "4", [1.0, 0.0], [(0, 1)])
    assert wants_prefixes(group, kept, 1, 1.0)
    assert not wants_prefixes(group, kept, 1, 0.0)  # outcome DPO only
    assert not wants_prefixes(group, kept, 0, 1.0)  # no whole pair: all right or all wrong
    low = LabelledGroup("p1", 1, 0, "4", [1.0, 0.0], [], skipped="low_vote_share")
    assert not wants_prefixes(group, low, 1, 1.0)  # the vote share filter drops its prefixes too
    texts_only = RolloutGroup(item, ["a", "b"], [], [], 0, 0, 0)
    assert not wants_prefixes(texts_only, kept, 1, 1.0)


def test_schedule_sets_the_ratio_per_iteration():
    cfg = LabellerSection(schedule=[{"source": "reference", "pair_strategy": "one_random"},
                                    {"source": "self_consistency", "pair_strategy": "all_chosen", "step_pair_ratio": 1.0}])
    assert [cfg.plan(i).step_pair_ratio for i in range(3)] == [0.0, 1.0, 1.0]
    assert LabellerSection(step_pairs={"ratio": 0.5}).plan(4).step_pair_ratio == 0.5


def test_learner_appends_eos_only_to_complete_sides(tiny_math_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_math_model)
    full = tokenize_pair(tok, PreferencePair("p", "Q:", "a.", "b.", 0), 512)
    open_ended = tokenize_pair(tok, PreferencePair("p", "Q:", "a.", "b.", 0, chosen_complete=False,
                                                   rejected_complete=False), 512)
    assert full.rejected[-1] == tok.eos_token_id == full.chosen[-1]
    assert open_ended.rejected[-1] != tok.eos_token_id and open_ended.chosen[-1] != tok.eos_token_id


def test_prefix_metrics_appear_only_when_prefixes_are_valued():
    from pfrl.run_meters import RunMeters

    meters = RunMeters("math")
    record = meters.step_record(1, 0, 1, {}, {"buffer/size": 0, "buffer/dropped_stale": 0}, (0, 0), 10)
    assert not any(k.startswith("pdpo/") for k in record) and "pdpo" not in RunMeters.console_line(record)
    rollout = _rollout(["a", "b", "c", "d"], [[], [], [], []])
    meters.on_prefixes(rollout, PrefixValues("p1", [2, 0, 1, 0]), pairs=2)
    meters.on_prefixes(rollout, PrefixValues("p1", [0, 0, 0, 0]), pairs=0)
    record = meters.step_record(2, 0, 2, {}, {"buffer/size": 0, "buffer/dropped_stale": 0}, (0, 0), 10)
    assert record["pdpo/pairs"] == 2 and record["pdpo/good_frac"] == 2 / 8 and record["pdpo/pair_yield"] == 0.5
    assert "pdpo 2 pairs" in RunMeters.console_line(record)
