"""The labeller on realistic groups built from the synthetic generators (math and code; reference
and self-consistency modes), and the self-consistency rules themselves."""

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
from pfrl.feedback.self_consistency import majority_answer, match_scores, pseudo_outputs
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
    labels = pseudo_outputs(results, function_call=False, min_success_frac=0.5)
    assert labels == ["1", "6", None]  # input 3: 1 of 4 programs ran, below half
    assert match_scores(results, labels, function_call=False) == [0.5, 1.0, 0.5, 0.5]


# -- math ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def math_labeller():
    with Labeller("math", LabellerSection(pair_strategy="all_chosen"), seed=0) as lab:
        yield lab


def test_math_reference_mode_on_synthetic_problems(math_labeller):
    for problem, solution in synthetic_math.generate(20, seed=11):
        completions = [solution, wrong_math(solution, 1), "I give up.", solution, wrong_math(solution, -3)]
        out = math_labeller.label(group(problem, completions))
        assert out.label == problem.answer and out.skipped is None
        assert out.scores == [1.0, 0.0, 0.0, 1.0, 0.0]
        assert {c for c, _ in out.pairs} == {0, 3} and all(out.scores[rj] == 0.0 for _, rj in out.pairs)


def test_math_reference_solution_and_latex_equivalence(math_labeller):
    full = Problem(id="r1", prompt="Q", reference="We get 2 + 10 = 12, so the answer is \\boxed{12}.")
    out = math_labeller.label(group(full, ["\\boxed{12}", "The answer is 12.0", "\\boxed{13}"]))
    assert out.label == "12" and out.scores == [1.0, 1.0, 0.0]
    frac = Problem(id="r2", prompt="Q", answer="1/2")
    out = math_labeller.label(
        group(frac, ["\\boxed{\\frac{1}{2}}", "so it is 0.5", "\\boxed{\\frac{2}{4}}", "\\boxed{1/4}"])
    )
    assert out.scores == [1.0, 1.0, 1.0, 0.0]


def test_math_self_consistency(math_labeller):
    problem, solution = synthetic_math.generate(1, seed=5)[0]
    sc = dataclasses.replace(problem, answer=None)
    completions = [solution] * 3 + [wrong_math(solution, 1)] * 2 + ["no answer"]
    out = math_labeller.label(group(sc, completions))
    assert out.label == problem.answer and out.vote_share == 0.5 and out.skipped is None
    assert out.scores == [1.0] * 3 + [0.0] * 3
    split = [solution, solution, wrong_math(solution, 1), wrong_math(solution, 2), "none", "none"]
    low = math_labeller.label(group(sc, split))
    assert low.skipped == "low_vote_share" and low.pairs == []


def test_math_groups_without_contrast_give_no_pairs(math_labeller):
    problem, solution = synthetic_math.generate(1, seed=6)[0]
    assert math_labeller.label(group(problem, [solution] * 4)).skipped == "all_correct"
    assert math_labeller.label(group(problem, [wrong_math(solution, 1)] * 4)).skipped == "all_wrong"


def test_math_mode_reference_without_reference_is_skipped():
    with Labeller("math", LabellerSection(mode="reference"), seed=0) as lab:
        out = lab.label(group(Problem(id="x", prompt="Q"), ["\\boxed{1}", "\\boxed{2}"]))
    assert out.skipped == "no_reference"


def test_pairing_is_deterministic_across_labellers():
    problems = synthetic_math.generate(10, seed=2)
    rng = random.Random(0)
    groups = [
        group(p, [s if rng.random() < 0.5 else wrong_math(s, 1) for _ in range(8)]) for p, s in problems
    ]
    runs = []
    for _ in range(2):
        with Labeller("math", LabellerSection(), seed=3) as lab:
            runs.append([x.pairs for x in lab.label_many(groups)])
    assert runs[0] == runs[1]


# -- code ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def code_labeller():
    cfg = LabellerSection(sandbox=SANDBOX, pair_strategy="margin", chosen_min_score=0.5, margin=0.5)
    with Labeller("code", cfg, seed=0) as lab:
        yield lab


def broken(solution: str) -> str:
    return solution.replace("return ", "return 1000 + ", 1)


def test_code_reference_mode_on_synthetic_problems(code_labeller):
    problems = synthetic_code.generate(6, seed=4)
    groups = [group(p, [s, broken(s), "```python\nraise SystemExit(1)\n```", s]) for p, s in problems]
    for (problem, _), out in zip(problems, code_labeller.label_many(groups), strict=True):
        assert out.skipped is None and out.scores == [1.0, 0.0, 0.0, 1.0]
        assert out.pseudo_outputs == problem.test_outputs
        assert {c for c, _ in out.pairs} <= {0, 3} and out.pairs


def test_code_self_consistency_recovers_the_expected_outputs(code_labeller):
    problem, solution = synthetic_code.generate(1, seed=8)[0]
    sc = dataclasses.replace(problem, test_outputs=[])
    completions = [solution, solution, solution, broken(solution), broken(solution), "no code at all"]
    out = code_labeller.label(group(sc, completions))
    assert out.skipped is None
    assert out.pseudo_outputs == problem.test_outputs
    assert out.scores == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_code_self_consistency_drops_inputs_few_programs_run(code_labeller):
    problem = Problem(id="half", prompt="Q", entry_point="f", test_inputs=["[1]", "[2]"])
    picky = "```python\ndef f(x):\n    if x == 2:\n        raise ValueError\n    return x\n```"
    fine = "```python\ndef f(x):\n    return x\n```"
    out = code_labeller.label(group(problem, [picky, picky, picky, fine]))
    assert out.pseudo_outputs == ["1", None]  # only 1 of 4 programs ran on input 2
    assert out.skipped == "all_correct"
    nothing = code_labeller.label(group(problem, ["```python\nraise SystemExit(2)\n```"] * 3))
    assert nothing.skipped == "too_few_successful"


def test_code_reference_program_supplies_expected_outputs(code_labeller):
    problem, solution = synthetic_code.generate(1, seed=9)[0]
    frontier_style = dataclasses.replace(problem, test_outputs=[], reference=solution)
    out = code_labeller.label(group(frontier_style, [broken(solution), solution]))
    assert out.pseudo_outputs == problem.test_outputs and out.scores == [0.0, 1.0]


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
