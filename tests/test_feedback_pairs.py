"""Pair strategies: the paper's rules (margins in test-case counts, pass-ratio floors, optional cap),
determinism, and `build_pairs`, the one path from a labelled group to DPO examples."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pfrl.config import LabellerSection
from pfrl.feedback.pairs import (
    PairRule,
    build_pairs,
    no_pair_reason,
    pair_rng,
    select_pairs,
    to_preference_pairs,
)
from pfrl.types import LabelledGroup, Problem, PromptItem, RolloutGroup

binary = st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=12)
counts = st.lists(st.integers(0, 10), min_size=1, max_size=12)


def rule(strategy: str, max_pairs: int | None = 4, margin: int = 1, floor: float = 0.0) -> PairRule:
    return PairRule(strategy, max_pairs, margin, floor)


@given(binary, st.text(max_size=8))
def test_one_random_is_one_right_over_one_wrong(scores, pid):
    pairs = select_pairs(scores, rule("one_random"), pair_rng(0, pid))
    if 0.0 in scores and 1.0 in scores:
        ((c, r),) = pairs
        assert scores[c] == 1.0 and scores[r] == 0.0
    else:
        assert pairs == []


@given(binary)
def test_all_chosen_pairs_every_right_answer_up_to_the_cap(scores):
    pairs = select_pairs(scores, rule("all_chosen", max_pairs=3), pair_rng(0, "p"))
    right = [i for i, s in enumerate(scores) if s == 1.0]
    if 0.0 in scores and right:
        assert len(pairs) == min(len(right), 3)
        assert len({ch for ch, _ in pairs}) == len(pairs)
        assert all(scores[ch] == 1.0 and scores[rj] == 0.0 for ch, rj in pairs)
    else:
        assert pairs == []


texts = st.lists(st.tuples(st.sampled_from([0.0, 1.0]), st.sampled_from("abc")), min_size=1, max_size=12)


@given(texts)
def test_all_chosen_never_repeats_two_texts(samples):
    """A chosen text sampled m times gets min(m, distinct rejected texts) pairs, each with another
    rejected text; with no texts given every sample counts as distinct (the old draw, unchanged)."""
    scores = [s for s, _ in samples]
    keys = [("right-" if s else "wrong-") + t for s, t in samples]
    pairs = select_pairs(scores, rule("all_chosen", max_pairs=None), pair_rng(0, "p"), keys=keys)
    text_pairs = [(keys[c], keys[r]) for c, r in pairs]
    assert len(set(text_pairs)) == len(text_pairs)
    assert all(scores[c] == 1.0 and scores[r] == 0.0 for c, r in pairs)
    wrong_texts = {k for k, s in zip(keys, scores, strict=True) if s == 0.0}
    for text in {k for k, s in zip(keys, scores, strict=True) if s == 1.0}:
        expected = min(keys.count(text), len(wrong_texts))
        assert sum(c == text for c, _ in text_pairs) == expected
    unique = [f"s{i}" for i in range(len(scores))]
    assert select_pairs(scores, rule("all_chosen", 3), pair_rng(0, "p"), keys=unique) == select_pairs(
        scores, rule("all_chosen", 3), pair_rng(0, "p")
    )


def test_repeated_texts_leave_room_under_the_cap_for_new_pairs():
    # five samples of one right text, one of another; two wrong texts, one sampled twice
    keys = ["A"] * 5 + ["B", "x", "x", "y"]
    scores = [1.0] * 6 + [0.0] * 3
    pairs = select_pairs(scores, rule("all_chosen", max_pairs=4), pair_rng(0, "p"), keys=keys)
    assert sorted({(keys[c], keys[r]) for c, r in pairs}) == [("A", "x"), ("A", "y"), ("B", "x")] or sorted(
        {(keys[c], keys[r]) for c, r in pairs}
    ) == [("A", "x"), ("A", "y"), ("B", "y")]
    assert len(pairs) == 3
    margin = select_pairs([1.0, 1.0, 0.0, 0.0], rule("margin", None), pair_rng(0, "p"), 10, ["A", "A", "x", "x"])
    assert margin == [(0, 2)]


@given(counts, st.integers(1, 8), st.sampled_from([0.0, 0.3, 0.5, 1.0]))
def test_margin_pairs_count_test_cases(passed, margin, floor):
    """i over j when i passes >= floor of the 10 tests and at least `margin` more than j, as in the
    official construct_prefer_pair_soft.py; no cap when max_pairs is None."""
    scores = [p / 10 for p in passed]
    pairs = select_pairs(scores, rule("margin", None, margin, floor), pair_rng(0, "p"), n_tests=10)
    expected = [
        (i, j)
        for i, pi in enumerate(passed)
        if pi / 10 >= floor
        for j, pj in enumerate(passed)
        if pi - pj >= margin
    ]
    assert pairs == expected


def test_margin_is_a_count_not_a_share():
    # 6 of 10 over 0 of 10 is a margin of 6 tests; with only 5 kept tests no margin of 6 is possible.
    assert select_pairs([0.6, 0.0], rule("margin", None, 6, 0.5), pair_rng(0, "p"), n_tests=10) == [(0, 1)]
    assert select_pairs([1.0, 0.0], rule("margin", None, 6, 0.5), pair_rng(0, "p"), n_tests=5) == []
    # the floor is on the chosen side only: 4 of 10 is below 0.5 however weak the rejected one is
    assert select_pairs([0.4, 0.0], rule("margin", None, 1, 0.5), pair_rng(0, "p"), n_tests=10) == []


def test_the_pair_cap_can_be_switched_off():
    scores = [1.0] * 6 + [0.0] * 6
    capped = select_pairs(scores, rule("margin", 4, 1, 0.5), pair_rng(0, "p"), n_tests=10)
    free = select_pairs(scores, rule("margin", None, 1, 0.5), pair_rng(0, "p"), n_tests=10)
    assert len(capped) == 4 and len(free) == 36


def test_rules_come_from_the_source():
    cfg = LabellerSection.model_validate(
        {"margin": {"self_consistency": 6, "reference": 4}, "min_pass_ratio": {"reference": 0.3},
         "max_pairs_per_prompt": None}
    )
    assert PairRule.of(cfg, "margin", "self_consistency") == PairRule("margin", None, 6, 0.5)
    assert PairRule.of(cfg, "margin", "reference") == PairRule("margin", None, 4, 0.3)
    assert PairRule.of(cfg, "margin", "ground_truth") == PairRule("margin", None, 1, 1.0)


@given(st.lists(st.sampled_from([i / 10 for i in range(11)]), min_size=1, max_size=12), st.integers(0, 5),
       st.text(max_size=6))
def test_pairing_is_deterministic_per_seed_and_prompt(scores, seed, pid):
    for strategy in ("one_random", "all_chosen", "margin"):
        r = rule(strategy, 2, 3, 0.5)
        assert select_pairs(scores, r, pair_rng(seed, pid), 10) == select_pairs(scores, r, pair_rng(seed, pid), 10)


def test_different_prompts_draw_differently():
    scores = [1.0] * 5 + [0.0] * 5
    draws = {tuple(select_pairs(scores, rule("one_random"), pair_rng(0, f"p{i}"))) for i in range(30)}
    assert len(draws) > 5


def test_no_pair_reasons():
    assert no_pair_reason([1.0, 1.0]) == "all_correct"
    assert no_pair_reason([0.0, 0.0]) == "all_wrong"
    assert no_pair_reason([0.5, 0.4]) == "no_pairs"


def _group() -> tuple[RolloutGroup, LabelledGroup]:
    problem = Problem(id="p1", prompt="Q?")
    completions = ["2 + 2 = 4.\nThen 4 * 3 = 12.\nSo 12.", "2 + 2 = 4.\nThen 4 * 3 = 13.\nSo 13.", "meh"]
    group = RolloutGroup(PromptItem(problem, iteration=2), completions, [], [], 0, 0, policy_version=7)
    return group, LabelledGroup("p1", 2, 7, "4", [1.0, 0.0, 0.0], [(0, 1), (0, 2)])


def test_preference_pairs_carry_texts_and_versions():
    group, labelled = _group()
    pairs = to_preference_pairs(group, labelled)
    assert [(p.chosen, p.rejected) for p in pairs] == [(group.completions[0], group.completions[1]),
                                                        (group.completions[0], "meh")]
    assert all(p.prompt == "Q?" and p.policy_version == 7 and p.iteration == 2 for p in pairs)


def test_build_pairs_gives_whole_solution_pairs_of_kept_groups():
    group, labelled = _group()
    assert build_pairs(group, labelled, LabellerSection()) == to_preference_pairs(group, labelled)
    labelled.skipped = "low_vote_share"
    assert build_pairs(group, labelled, LabellerSection()) == []
