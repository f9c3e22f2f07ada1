"""Pair strategies: the paper's rules, caps, determinism, and the DPO pair rows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pfrl.config import LabellerSection
from pfrl.feedback.pairs import no_pair_reason, pair_rng, select_pairs, to_preference_pairs
from pfrl.types import LabelledGroup, Problem, PromptItem, RolloutGroup

binary = st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=12)
graded = st.lists(st.sampled_from([i / 10 for i in range(11)]), min_size=1, max_size=12)


def cfg(**kw) -> LabellerSection:
    return LabellerSection(**kw)


@given(binary, st.text(max_size=8))
def test_one_random_is_one_right_over_one_wrong(scores, pid):
    pairs = select_pairs(scores, cfg(pair_strategy="one_random"), pair_rng(0, pid))
    if 0.0 in scores and 1.0 in scores:
        ((c, r),) = pairs
        assert scores[c] == 1.0 and scores[r] == 0.0
    else:
        assert pairs == []


@given(binary)
def test_all_chosen_pairs_every_right_answer_up_to_the_cap(scores):
    c = cfg(pair_strategy="all_chosen", max_pairs_per_prompt=3)
    pairs = select_pairs(scores, c, pair_rng(0, "p"))
    right = [i for i, s in enumerate(scores) if s == 1.0]
    if 0.0 in scores and right:
        assert len(pairs) == min(len(right), 3)
        assert len({ch for ch, _ in pairs}) == len(pairs)
        assert all(scores[ch] == 1.0 and scores[rj] == 0.0 for ch, rj in pairs)
    else:
        assert pairs == []


@given(graded)
def test_margin_pairs_respect_threshold_and_margin(scores):
    c = cfg(pair_strategy="margin", chosen_min_score=0.5, margin=0.4, max_pairs_per_prompt=50)
    pairs = select_pairs(scores, c, pair_rng(0, "p"))
    assert all(scores[i] >= 0.5 - 1e-9 and scores[i] - scores[j] >= 0.4 - 1e-9 for i, j in pairs)
    expected = sum(1 for si in scores if si >= 0.5 - 1e-9 for sj in scores if si - sj >= 0.4 - 1e-9)
    assert len(pairs) == min(expected, 50)


@given(graded, st.integers(0, 5), st.text(max_size=6))
def test_pairing_is_deterministic_per_seed_and_prompt(scores, seed, pid):
    for strategy in ("one_random", "all_chosen", "margin"):
        c = cfg(pair_strategy=strategy, margin=0.3, max_pairs_per_prompt=2)
        assert select_pairs(scores, c, pair_rng(seed, pid)) == select_pairs(scores, c, pair_rng(seed, pid))


def test_different_prompts_draw_differently():
    scores = [1.0] * 5 + [0.0] * 5
    c = cfg(pair_strategy="one_random")
    draws = {tuple(select_pairs(scores, c, pair_rng(0, f"p{i}"))) for i in range(30)}
    assert len(draws) > 5


def test_no_pair_reasons():
    assert no_pair_reason([1.0, 1.0]) == "all_correct"
    assert no_pair_reason([0.0, 0.0]) == "all_wrong"
    assert no_pair_reason([0.5, 0.4]) == "no_pairs"


def test_preference_pairs_carry_texts_and_versions():
    problem = Problem(id="p1", prompt="Q?")
    group = RolloutGroup(
        PromptItem(problem, iteration=2), ["good", "bad", "meh"], [], [], 0, 0, policy_version=7
    )
    labelled = LabelledGroup("p1", 2, 7, "4", [1.0, 0.0, 0.0], [(0, 1), (0, 2)])
    pairs = to_preference_pairs(group, labelled)
    assert [(p.chosen, p.rejected) for p in pairs] == [("good", "bad"), ("good", "meh")]
    assert all(p.prompt == "Q?" and p.policy_version == 7 and p.iteration == 2 for p in pairs)
