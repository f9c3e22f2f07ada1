"""Final-answer extraction (property tests) and bounded answer equivalence."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfrl.feedback.answers import AnswerJudge, as_number, clean_answer, extract_answer, quick_equal
from pfrl.tasks.synthetic_math import generate

# Prose that cannot itself look like an answer: no digits, braces, backslashes, '#', ':' or "answer".
prose = st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz ,;!?\n")), max_size=60).filter(
    lambda s: "answer" not in s
)
ints = st.integers(min_value=-(10**9), max_value=10**9)


def with_commas(n: int) -> str:
    return f"{n:,}"


@given(prose, ints, prose)
def test_last_boxed_wins(before, n, after):
    text = f"{before} \\boxed{{{n + 1}}} {before} so the result is \\boxed{{{n}}}{after}"
    assert extract_answer(text) == str(n)


@given(prose, st.integers(1, 999), st.integers(1, 999))
def test_boxed_nested_braces(before, a, b):
    assert extract_answer(f"{before}\\boxed{{\\frac{{{a}}}{{{b}}}}}.") == f"\\frac{{{a}}}{{{b}}}"


@given(
    prose,
    ints,
    st.sampled_from(["The answer is", "the answer is:", "So the final answer is", "#### ", "A: "]),
)
def test_answer_markers(before, n, marker):
    text = f"{before}\n{marker} {n}."
    assert extract_answer(text) == str(n)


@given(
    prose,
    st.integers(1000, 10**9),
    st.sampled_from(["", "$", "\\$"]),
    st.sampled_from(["", " dollars", " apples", "."]),
)
def test_presentation_is_stripped(before, n, dollar, unit):
    text = f"{before} The answer is {dollar}{with_commas(n)}{unit}"
    assert extract_answer(text) == str(n)


@given(prose, st.lists(ints, min_size=1, max_size=5))
def test_last_number_fallback(words, numbers):
    text = " ".join(f"{words} {n}" for n in numbers) + words
    assert extract_answer(text) == str(numbers[-1])


@given(prose)
def test_no_number_no_answer(text):
    assert extract_answer(text) is None


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_never_raises_and_is_bounded(text):
    answer = extract_answer(text)
    assert answer is None or (0 < len(answer) <= 200 and answer == answer.strip())


@given(ints)
def test_clean_is_idempotent_on_numbers(n):
    once = clean_answer(f"${with_commas(n)}$.")
    assert once == str(n) and clean_answer(once) == once


def test_truncated_boxed_falls_back():
    assert extract_answer("so 3 + 4 = 7 and \\boxed{7} then \\boxed{12") == "7"


def test_units_and_latex_forms():
    assert extract_answer("\\boxed{10\\text{ cm}}") == "10"
    assert extract_answer("\\boxed{90^\\circ}") == "90"
    assert extract_answer("\\boxed{50\\%}") == "50"
    assert extract_answer("The answer is 3.5. Done") == "3.5"


def test_synthetic_reference_solutions_extract_their_answer():
    for problem, solution in generate(200, seed=7):
        assert extract_answer(solution) == problem.answer


@pytest.mark.parametrize(
    "a, b, equal",
    [
        ("1/2", "0.5", True),
        ("\\frac{1}{2}", "0.50", True),
        ("\\dfrac{3}{4}", "3/4", True),
        ("-\\frac{1}{2}", "-0.5", True),
        ("2", "3", False),
        ("1,000", "1000", True),
        ("7", "7.0", True),
    ],
)
def test_quick_equal_numbers(a, b, equal):
    assert quick_equal(clean_answer(a), clean_answer(b)) is equal


def test_as_number_rejects_expressions():
    assert as_number("x+1") is None and as_number("\\sqrt{2}") is None and as_number("1/0") is None
    assert as_number("\\frac{6}{4}") == Fraction(3, 2)


@pytest.fixture(scope="module")
def judge():
    j = AnswerJudge(timeout_s=5.0)
    yield j
    j.close()


@pytest.mark.parametrize(
    "a, b, equal",
    [
        ("\\sqrt{4}", "2", True),
        ("x+1", "1+x", True),
        ("\\frac{\\pi}{2}", "\\pi/2", True),
        ("x^2", "x^3", False),
        ("(1,2)", "(1, 2)", True),
    ],
)
def test_math_verify_forms(judge, a, b, equal):
    assert judge.equal(a, b) is equal


def test_slow_comparison_is_cut_off():
    """A comparison past the bound counts as unequal, returns in about the bound, and the judge
    keeps working afterwards (its worker process is replaced)."""
    judge = AnswerJudge(timeout_s=1.0)
    try:
        assert judge.equal("x+1", "1+x")  # starts the worker outside the measured call
        start = time.monotonic()
        # sympy expands this for far longer than 20 s
        verdict = judge.equal("(x+y+z+w+1)^{30}", "(1+x+y+z+w)^{29}(x+y+z+w+2)")
        took = time.monotonic() - start
        assert verdict is False and took < 6.0
        assert judge.timeouts == 1
        assert judge.equal("\\sqrt{9}", "3")
    finally:
        judge.close()
