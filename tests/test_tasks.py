import json

import pytest

from pfrl.errors import UserError
from pfrl.tasks.io import problem_to_dict, read_problems, write_jsonl
from pfrl.tasks.synthetic_code import CodeDifficulty, folded_program
from pfrl.tasks.synthetic_code import generate as gen_code
from pfrl.tasks.synthetic_math import MathDifficulty
from pfrl.tasks.synthetic_math import generate as gen_math


def _eval_steps(solution: str) -> int:
    """Re-check every equation of a math reference solution; return the boxed answer."""
    body, boxed = solution.split("\\boxed{")
    for eq in body.replace("The answer is", "").split(".")[:-1]:
        lhs, rhs = eq.split("=")
        assert eval(lhs) == int(rhs), eq  # noqa: S307 - our own generated arithmetic
    return int(boxed.rstrip("}."))


def test_math_is_deterministic_per_seed():
    assert gen_math(20, seed=3) == gen_math(20, seed=3)
    assert gen_math(20, seed=3) != gen_math(20, seed=4)


@pytest.mark.parametrize("difficulty", [MathDifficulty(), MathDifficulty(min_steps=3, max_steps=5, max_operand=20)])
def test_math_reference_reaches_stated_answer(difficulty):
    for problem, solution in gen_math(300, seed=1, difficulty=difficulty):
        assert _eval_steps(solution) == int(problem.answer)
        assert problem.prompt.endswith("Answer:")
        steps = solution.count("=")
        assert difficulty.min_steps <= steps <= difficulty.max_steps


def _run_reference(problem, solution):
    code = solution.removeprefix("```python\n").removesuffix("```")
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - our own generated reference program
    fn = scope[problem.entry_point]
    return [json.dumps(fn(*json.loads(x))) for x in problem.test_inputs]


@pytest.mark.parametrize("difficulty", [CodeDifficulty(), CodeDifficulty(min_ops=2, max_ops=3, num_tests=10)])
def test_code_reference_passes_its_tests(difficulty):
    problems = gen_code(200, seed=2, difficulty=difficulty)
    assert problems == gen_code(200, seed=2, difficulty=difficulty)
    for problem, solution in problems:
        assert len(problem.test_inputs) == difficulty.num_tests
        assert _run_reference(problem, solution) == problem.test_outputs


@pytest.mark.parametrize("difficulty", [CodeDifficulty(), CodeDifficulty(min_ops=2, max_ops=3, allow_modulo=False)])
def test_folded_program_is_the_same_function_with_the_constants_computed(difficulty):
    folded = 0
    for problem, solution in gen_code(300, seed=4, difficulty=difficulty):
        short = folded_program(solution)
        body = solution.splitlines()[2]
        if short is None:
            # Nothing to fold: a list, a modulo, or a single operation on x.
            assert "xs" in body or "%" in body or body.count("(") == 0
            continue
        folded += 1
        assert short.count("(") == 1 and _run_reference(problem, short) == problem.test_outputs
    # Without modulo every 2-3 operation integer problem folds (80% of these by int_share's default 0.6).
    assert folded > (0.5 * 300 if not difficulty.allow_modulo else 0)


def test_code_difficulty_knobs_shape_the_problems():
    d = CodeDifficulty(min_ops=2, max_ops=3, int_share=1.0, allow_modulo=False)
    for problem, solution in gen_code(200, seed=5, difficulty=d):
        assert "xs" not in solution and "%" not in solution and "remainder" not in problem.prompt
        assert folded_program(solution) is not None
    # The defaults draw the same problems as before the knobs existed (the tests' data is unchanged).
    assert gen_code(50, seed=1) == gen_code(50, seed=1, difficulty=CodeDifficulty(int_share=0.6, allow_modulo=True))


def test_problem_file_round_trip_and_bad_records(tmp_path):
    problems = [p for p, _ in gen_code(5, seed=0)]
    path = tmp_path / "p.jsonl"
    write_jsonl(path, (problem_to_dict(p) for p in problems))
    assert read_problems(path).problems == problems
    with path.open("a") as fh:
        fh.write("{not json\n")
        fh.write(json.dumps({"id": "x", "prompt": "  "}) + "\n")
    with pytest.raises(UserError, match=r"line 6: invalid JSON"):
        read_problems(path)
    loaded = read_problems(path, max_bad=0.5)
    assert len(loaded.problems) == 5 and [line for line, _ in loaded.bad] == [6, 7]
    assert "empty prompt" in loaded.bad[1][1]


def test_missing_and_empty_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_problems(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no valid problems"):
        read_problems(tmp_path / "empty.jsonl")
