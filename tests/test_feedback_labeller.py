"""The labeller on realistic groups built from the synthetic generators (math and code; ground-truth,
reference and self-consistency sources), and the self-consistency rules themselves."""

from __future__ import annotations

import dataclasses
import random

import pytest
from helpers import group, wrong_math
from hypothesis import given
from hypothesis import strategies as st

from pfrl.config import LabellerSection, SandboxSection
from pfrl.feedback.labeller import Labeller
from pfrl.feedback.sandbox import TestResult, TestStatus
from pfrl.feedback.self_consistency import majority_answer, match_counts, pseudo_outputs
from pfrl.tasks import synthetic_code, synthetic_math
from pfrl.types import Problem

SANDBOX = SandboxSection(timeout_s=1.0, cpu_s=1, memory_mb=256)


# -- self-consistency rules ------------------------------------------------------------------------
@given(st.lists(st.one_of(st.none(), st.sampled_from("abc")), min_size=1, max_size=12))
def test_majority_vote_share_is_over_all_samples(answers):
    vote = majority_answer(answers, lambda a, b: a == b)
    counted = [a for a in answers if a is not None]
    if not counted:
        assert vote.label is None and vote.share == 0.0
        return
    top = max(counted.count(x) for x in set(counted))
    first_top = next(a for a in counted if counted.count(a) == top)
    assert vote.label == first_top and vote.share == top / len(answers)
    assert vote.agree == [a == first_top for a in answers]


def test_equivalent_answers_vote_together():
    vote = majority_answer(
        ["0.5", "1/2", "3", "\\frac{1}{2}", None],
        lambda a, b: a.replace(" ", "") == b or {a, b} <= {"0.5", "1/2", "\\frac{1}{2}"},
    )
    assert vote.label == "0.5" and vote.share == 3 / 5 and vote.agree == [True, True, False, True, False]


def r(status: str, output: str = "") -> TestResult:
    return TestResult(TestStatus(status), output)


def test_pseudo_outputs_majority_and_dropping():
    results = [
        [r("ok", "1"), r("ok", "5"), r("timeout")],
        [r("ok", "1"), r("ok", "6"), r("runtime_error")],
        [r("ok", "2"), r("ok", "6"), r("ok", "9")],
        [r("runtime_error"), r("ok", " 6 "), r("killed")],
    ]
    labels = pseudo_outputs(results, function_call=False, min_successful=2)
    assert labels == ["1", "6", None]  # input 3: 1 program ran, fewer than 2
    assert match_counts(results, labels, function_call=False) == [1, 2, 1, 1]


def test_only_successful_non_empty_outputs_vote():
    """PFPO's oss_combine_collect_pseudo_outputs_mp.py: failed runs and empty outputs do not vote,
    and an input needs `min_successful` votes (a count, not a share)."""
    results = [
        [r("ok", ""), r("ok", "")],
        [r("ok", "  \n"), r("ok", "")],
        [r("ok", "7"), r("ok", "3")],
        [r("runtime_error", "7"), r("ok", "3")],
        [r("timeout", "7"), r("ok", "")],
    ]
    # input 1: three empty outputs and two failed runs would win a vote of everything; here "7" has
    # the only real vote. input 2: "3" twice.
    assert pseudo_outputs(results, function_call=False, min_successful=1) == ["7", "3"]
    assert pseudo_outputs(results, function_call=False, min_successful=2) == [None, "3"]
    assert pseudo_outputs(results, function_call=False, min_successful=3) == [None, None]


# -- math ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gt_math():
    """Labels from the records' answers: asked for by name (the ground-truth baseline)."""
    with Labeller("math", LabellerSection(source="ground_truth", pair_strategy="all_chosen"), seed=0) as lab:
        yield lab


@pytest.fixture(scope="module")
def auto_math():
    with Labeller("math", LabellerSection(source="auto", pair_strategy="all_chosen"), seed=0) as lab:
        yield lab


def test_math_ground_truth_source_on_synthetic_problems(gt_math):
    for problem, solution in synthetic_math.generate(20, seed=11):
        completions = [solution, wrong_math(solution, 1), "I give up.", solution, wrong_math(solution, -3)]
        out = gt_math.label(group(problem, completions))
        assert out.label == problem.answer and out.skipped is None and out.agree_gt is None
        assert out.scores == [1.0, 0.0, 0.0, 1.0, 0.0]
        assert {c for c, _ in out.pairs} == {0, 3} and all(out.scores[rj] == 0.0 for _, rj in out.pairs)


def test_math_reference_solution_and_latex_equivalence(auto_math, gt_math):
    full = Problem(id="r1", prompt="Q", reference="We get 2 + 10 = 12, so the answer is \\boxed{12}.")
    out = auto_math.label(group(full, ["\\boxed{12}", "The answer is 12.0", "\\boxed{13}"]))
    assert out.label == "12" and out.scores == [1.0, 1.0, 0.0] and out.vote_share is None
    frac = Problem(id="r2", prompt="Q", answer="1/2")
    out = gt_math.label(
        group(frac, ["\\boxed{\\frac{1}{2}}", "so it is 0.5", "\\boxed{\\frac{2}{4}}", "\\boxed{1/4}"])
    )
    assert out.scores == [1.0, 1.0, 1.0, 0.0]


def test_auto_never_reads_ground_truth(auto_math):
    """A record with only the data set's answer is labelled by the policy's votes under auto, even
    when the votes are wrong; the answer is only compared (agree_gt)."""
    problem, solution = synthetic_math.generate(1, seed=5)[0]
    wrong = [wrong_math(solution, 1)] * 5 + [solution] * 3
    out = auto_math.label(group(problem, wrong))
    assert out.label != problem.answer and out.vote_share == 5 / 8
    assert out.scores == [1.0] * 5 + [0.0] * 3 and out.agree_gt == 0.0
    right = auto_math.label(group(problem, [solution] * 5 + [wrong_math(solution, 1)] * 3))
    assert right.label == problem.answer and right.agree_gt == 1.0
    # a frontier reference wins over the votes and the answer; the answer is still only compared
    ref = dataclasses.replace(problem, reference=f"... so the answer is \\boxed{{{int(problem.answer) + 1}}}")
    out = auto_math.label(group(ref, [solution] * 5 + [wrong_math(solution, 1)] * 3))
    assert out.vote_share is None and out.scores == [0.0] * 5 + [1.0] * 3 and out.agree_gt == 0.0


def test_math_vote_share_must_be_strictly_above_the_threshold(auto_math):
    """PFPO's construct_prefer_pair_sc.py keeps a problem when `freq > top_p`."""
    problem, solution = synthetic_math.generate(1, seed=5)[0]
    sc = dataclasses.replace(problem, answer=None)
    at = [solution] * 3 + [wrong_math(solution, 1)] * 2 + ["no answer"]  # 3 of 6 = exactly 0.5
    low = auto_math.label(group(sc, at))
    assert low.vote_share == 0.5 and low.skipped == "low_vote_share" and low.pairs == []
    above = auto_math.label(group(sc, [solution] * 4 + [wrong_math(solution, 1)] * 2))
    assert above.label == problem.answer and above.skipped is None and above.agree_gt is None
    assert above.scores == [1.0] * 4 + [0.0] * 2
    split = [solution, solution, wrong_math(solution, 1), wrong_math(solution, 2), "none", "none"]
    assert auto_math.label(group(sc, split)).skipped == "low_vote_share"


def test_math_groups_without_contrast_give_no_pairs(gt_math):
    problem, solution = synthetic_math.generate(1, seed=6)[0]
    assert gt_math.label(group(problem, [solution] * 4)).skipped == "all_correct"
    assert gt_math.label(group(problem, [wrong_math(solution, 1)] * 4)).skipped == "all_wrong"


def test_named_sources_without_their_label_are_skipped():
    bare = group(Problem(id="x", prompt="Q", answer="1"), ["\\boxed{1}", "\\boxed{2}"])
    with Labeller("math", LabellerSection(source="reference"), seed=0) as lab:
        assert lab.label(bare).skipped == "no_reference"  # the answer is no reference
    with Labeller("math", LabellerSection(source="ground_truth"), seed=0) as lab:
        assert lab.label(group(Problem(id="y", prompt="Q", reference="1"), ["1"])).skipped == "no_ground_truth"


def test_the_schedule_picks_source_and_pairs_per_iteration():
    cfg = LabellerSection.model_validate({"schedule": [
        {"source": "reference", "pair_strategy": "one_random"},
        {"source": "self_consistency", "pair_strategy": "all_chosen"},
    ]})
    problem, solution = synthetic_math.generate(1, seed=7)[0]
    ref = dataclasses.replace(problem, reference=problem.answer)
    # five distinct right texts: all_chosen never pairs the same two texts twice
    completions = [solution + " " * i for i in range(5)] + [wrong_math(solution, 1)] * 3
    with Labeller("math", cfg, seed=0) as lab:
        first = lab.label(group(ref, completions, iteration=0))
        later = [lab.label(group(ref, completions, iteration=i)) for i in (1, 4)]
    assert first.vote_share is None and len(first.pairs) == 1  # reference, one random pair
    for out in later:  # self-consistency (the reference is not read), every chosen paired
        assert out.vote_share == 5 / 8 and len(out.pairs) == 4 and out.agree_gt == 1.0


def test_pairing_is_deterministic_across_labellers():
    problems = synthetic_math.generate(10, seed=2)
    rng = random.Random(0)
    groups = [
        group(p, [s if rng.random() < 0.5 else wrong_math(s, 1) for _ in range(8)]) for p, s in problems
    ]
    runs = []
    for _ in range(2):
        with Labeller("math", LabellerSection(source="ground_truth"), seed=3) as lab:
            runs.append([x.pairs for x in lab.label_many(groups)])
    assert runs[0] == runs[1] and any(runs[0])


# -- code ------------------------------------------------------------------------------------------
def code_cfg(**kw) -> LabellerSection:
    base = {"sandbox": SANDBOX, "pair_strategy": "margin", "min_successful_programs": 2,
            "margin": {"self_consistency": 3, "reference": 3, "ground_truth": 3}}
    return LabellerSection.model_validate({**base, **kw})


@pytest.fixture(scope="module")
def code_labeller():
    with Labeller("code", code_cfg(), seed=0) as lab:
        yield lab


def broken(solution: str) -> str:
    return solution.replace("return ", "return 1000 + ", 1)


def test_code_ground_truth_source_on_synthetic_problems():
    problems = synthetic_code.generate(6, seed=4)
    groups = [group(p, [s, broken(s), "```python\nraise SystemExit(1)\n```", s]) for p, s in problems]
    with Labeller("code", code_cfg(source="ground_truth"), seed=0) as lab:
        labelled = lab.label_many(groups)
    for (problem, _), out in zip(problems, labelled, strict=True):
        assert out.skipped is None and out.scores == [1.0, 0.0, 0.0, 1.0] and out.agree_gt is None
        assert out.pseudo_outputs == problem.test_outputs
        assert {c for c, _ in out.pairs} <= {0, 3} and out.pairs


def test_code_auto_uses_self_consistency_over_ground_truth_tests(code_labeller):
    """Under auto the data set's test_outputs are never the label: the programs vote, and the
    outputs are only compared (agree_gt = share of inputs where the vote found them)."""
    problem, solution = synthetic_code.generate(1, seed=8)[0]
    completions = [solution, solution, solution, broken(solution), broken(solution), "no code at all"]
    out = code_labeller.label(group(problem, completions))
    assert out.skipped is None and out.pseudo_outputs == problem.test_outputs and out.agree_gt == 1.0
    assert out.scores == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    misled = code_labeller.label(group(problem, [broken(solution)] * 3 + [solution] * 2))
    assert misled.scores == [1.0] * 3 + [0.0] * 2 and misled.agree_gt == 0.0


def test_code_self_consistency_needs_enough_successful_programs(code_labeller):
    problem = Problem(id="half", prompt="Q", entry_point="f", test_inputs=["[1]", "[2]"])
    picky = "```python\ndef f(x):\n    if x == 2:\n        raise ValueError\n    return x\n```"
    fine = "```python\ndef f(x):\n    return x\n```"
    out = code_labeller.label(group(problem, [picky, picky, picky, fine]))
    assert out.pseudo_outputs == ["1", None]  # only 1 program ran on input 2, fewer than 2
    assert out.skipped == "all_correct"
    nothing = code_labeller.label(group(problem, ["```python\nraise SystemExit(2)\n```"] * 3))
    assert nothing.skipped == "too_few_successful"


def test_code_margin_counts_kept_test_cases():
    """Margins are test-case counts per source: 3 with self-consistency here, 1 with the reference."""
    problem = Problem(id="m", prompt="Q", entry_point="f", test_inputs=[f"[{i}]" for i in range(4)])
    right = "```python\ndef f(x):\n    return x\n```"
    off_by = "```python\ndef f(x):\n    return x if x < {k} else -1\n```"
    completions = [right, right, right, off_by.format(k=2), off_by.format(k=3)]  # pass 4, 4, 4, 2, 3
    with Labeller("code", code_cfg(), seed=0) as lab:
        sc = lab.label(group(problem, completions))
    assert sc.pairs == [] and sc.skipped == "no_pairs"  # a gap of 2 tests is below the margin of 3
    written = dataclasses.replace(problem, reference_test_inputs=problem.test_inputs,
                                  reference_test_outputs=[str(i) for i in range(4)])
    cfg = code_cfg(margin={"reference": 1}, max_pairs_per_prompt=None)
    with Labeller("code", cfg, seed=0) as lab:
        ref = lab.label(group(written, completions))
    # the three right programs are one text: its pairs once each (the buffer refuses repeats anyway)
    assert ref.pairs == [(0, 3), (0, 4), (4, 3)]


def test_code_reference_program_supplies_expected_outputs(code_labeller):
    problem, solution = synthetic_code.generate(1, seed=9)[0]
    frontier_style = dataclasses.replace(problem, test_outputs=[], reference=solution)
    out = code_labeller.label(group(frontier_style, [broken(solution), solution]))
    assert out.pseudo_outputs == problem.test_outputs and out.scores == [0.0, 1.0]


def test_code_frontier_tests_are_their_own_inputs(code_labeller):
    """Frontier inputs and outputs label the programs; ground truth only compares where inputs coincide."""
    problem, solution = synthetic_code.generate(1, seed=9)[0]
    frontier = dataclasses.replace(
        problem,
        reference_test_inputs=[problem.test_inputs[0], "[12345]"],
        reference_test_outputs=[problem.test_outputs[0], "999"],  # the second is the frontier's own (unchecked)
    )
    out = code_labeller.label(group(frontier, [solution, broken(solution)]))
    assert out.pseudo_outputs == [problem.test_outputs[0], "999"] and out.agree_gt == 1.0
    assert out.scores == [0.5, 0.0]


def test_code_without_tests_is_skipped(code_labeller):
    out = code_labeller.label(
        group(Problem(id="n", prompt="Q", entry_point="f"), ["```python\ndef f(): pass\n```"])
    )
    assert out.skipped == "no_tests"


def test_a_broken_sandbox_does_not_raise(monkeypatch):
    with Labeller("code", LabellerSection(sandbox=SANDBOX), seed=0) as lab:

        def explode(jobs):
            raise RuntimeError("pool gone")

        monkeypatch.setattr(lab.sandbox, "run_many", explode)
        problem, solution = synthetic_code.generate(1, seed=1)[0]
        out = lab.label(group(problem, [solution, solution]))
    assert out.skipped == "error: RuntimeError" and out.pairs == []
