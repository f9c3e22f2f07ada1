"""Published data sets -> pfrl's problem schema (`pfrl data convert`).

gsm8k      question / answer ("... #### 72")       -> prompt, answer "72"
math       problem / solution ("... \\boxed{x}")   -> prompt, answer "x"
mbpp       text / code / test_list / task_id       -> prompt, entry_point, test cases, eval_tests
humaneval  task_id / prompt / test / entry_point   -> prompt, entry_point, test cases, eval_tests
apps       question / input_output / starter_code  -> prompt, test cases (stdin or fn_name calls)

`answer` is ground truth: it scores evaluation and baselines, and is a label only where a run asks
for it. Assert tests of the form `f(args) == value` with plain JSON-able literals become function-call
test cases (inputs: JSON argument arrays, outputs: JSON values); every assert is also kept whole in
`eval_tests`, which evaluation runs after the program in the sandbox.
"""

from __future__ import annotations

import ast
import builtins
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MATH_INSTRUCTION = "\n\nPut your final answer within \\boxed{}."
_BUILTINS = set(dir(builtins))
CODE_INSTRUCTION = "\n\nWrite the solution in Python, in one ```python code block."


@dataclass
class Converted:
    """One converted record, and how many of its assert tests became test cases."""

    record: dict[str, Any]
    asserts: int = 0
    cases: int = 0


@dataclass
class AssertCases:
    """`f(args) == value` asserts of one test suite, as JSON test cases for `entry_point`."""

    entry_point: str | None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    asserts: int = 0


def _json_literal(node: ast.expr, exact: bool) -> str | None:
    """JSON of a literal expression, or None. `exact`: only types that survive a JSON round trip
    unchanged (arguments are passed as decoded JSON, so a tuple would arrive as a list)."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if exact and not _json_exact(value):
        return None
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None


def _json_exact(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(_json_exact(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_exact(v) for k, v in value.items())
    return False


def _call_case(test: ast.expr, names: set[str]) -> tuple[str, str, str] | None:
    """(function, JSON args, JSON value) of `f(literals) == literal` (either side), else None."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return None
    left, right = test.left, test.comparators[0]
    call, value = (left, right) if isinstance(left, ast.Call) else (right, left)
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in names):
        return None
    if call.keywords or any(isinstance(a, ast.Starred) for a in call.args):
        return None
    parsed = [_json_literal(a, exact=True) for a in call.args]
    args = [a for a in parsed if a is not None]
    out = _json_literal(value, exact=False)
    if out is None or len(args) < len(parsed):
        return None
    return call.func.id, "[" + ", ".join(args) + "]", out


def _guess_entry_point(asserts: list[ast.Assert], defined: set[str]) -> str | None:
    """The function the asserts call most, preferring ones the solution defines (MBPP asserts often
    wrap the call: `set(f(x)) == set(y)`), never a builtin."""
    called = Counter(c.func.id for a in asserts for c in ast.walk(a.test)
                     if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id not in _BUILTINS)
    for name, _ in called.most_common():
        if name in defined:
            return name
    return called.most_common(1)[0][0] if called else None


def defined_functions(code: str) -> set[str]:
    """Top-level function names of a program (empty if it does not parse)."""
    try:
        return {n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)}
    except SyntaxError:
        return set()


def parse_asserts(
    code: str, entry_point: str | None = None, aliases: tuple[str, ...] = (), defined: set[str] | frozenset = frozenset()
) -> AssertCases:
    """Test cases from every `assert` in `code`: calls of `entry_point` (or of `aliases`, e.g.
    HumanEval's `candidate`); with no entry point, of the one the asserts call (`_guess_entry_point`)."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise ValueError(f"tests do not parse ({e.msg}, line {e.lineno})") from None
    asserts = [n for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    if entry_point is None:
        entry_point = _guess_entry_point(asserts, set(defined))
    names = {n for n in (entry_point, *aliases) if n is not None}
    cases = AssertCases(entry_point, asserts=len(asserts))
    for node in sorted(asserts, key=lambda n: (n.lineno, n.col_offset)):
        case = _call_case(node.test, names)
        if case is not None:
            cases.inputs.append(case[1])
            cases.outputs.append(case[2])
    return cases


def _str(row: dict[str, Any], *keys: str) -> str:
    """The first of `keys` the row has, as a non-empty string."""
    for key in keys:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value
    raise ValueError(f"missing {' or '.join(repr(k) for k in keys)}")


def gsm8k(row: dict[str, Any], index: int) -> Converted:
    solution = _str(row, "answer")
    if "####" not in solution:
        raise ValueError("answer has no '#### <final answer>'")
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise ValueError("empty final answer after '####'")
    return Converted({"id": str(row.get("id") or f"gsm8k-{index:05d}"),
                      "prompt": _str(row, "question") + MATH_INSTRUCTION, "answer": final})


def math_(row: dict[str, Any], index: int) -> Converted:
    from pfrl.feedback.answers import extract_answer

    solution = _str(row, "solution")
    answer = extract_answer(solution) if "\\boxed" in solution else None
    if answer is None:
        raise ValueError("solution has no \\boxed{} answer")
    return Converted({"id": str(row.get("unique_id") or row.get("id") or f"math-{index:05d}"),
                      "prompt": _str(row, "problem") + MATH_INSTRUCTION, "answer": answer})


def _code_record(pid: str, prompt: str, cases: AssertCases, eval_tests: str) -> Converted:
    record: dict[str, Any] = {"id": pid, "prompt": prompt, "entry_point": cases.entry_point, "eval_tests": eval_tests}
    if cases.inputs:
        record.update(test_inputs=cases.inputs, test_outputs=cases.outputs)
    return Converted(record, cases.asserts, len(cases.inputs))


def mbpp(row: dict[str, Any], index: int) -> Converted:
    tests = row.get("test_list")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError("test_list must be a non-empty list of strings")
    setup = row.get("test_setup_code") or ""
    eval_tests = (setup + "\n" if setup else "") + "\n".join(tests)
    cases = parse_asserts(eval_tests, defined=defined_functions(row.get("code") or ""))
    if cases.entry_point is None:
        raise ValueError("test_list calls no function")
    text = _str(row, "text", "prompt")
    prompt = f"{text}\nYour code should pass these tests:\n\n" + "\n".join(tests) + CODE_INSTRUCTION
    return _code_record(f"mbpp-{row.get('task_id', index)}", prompt, cases, eval_tests)


def humaneval(row: dict[str, Any], index: int) -> Converted:
    entry_point, test = _str(row, "entry_point"), _str(row, "test")
    cases = parse_asserts(test, entry_point, aliases=("candidate",))
    cases.entry_point = entry_point
    prompt = ("Complete the following Python function; reply with the whole function, imports included."
              f"\n\n```python\n{_str(row, 'prompt')}```" + CODE_INSTRUCTION)
    return _code_record(str(row.get("task_id") or f"humaneval-{index}"), prompt, cases, f"{test}\n\ncheck({entry_point})\n")


def _apps_text(value: Any) -> str:
    """APPS stores a stdin input / output as a string or a list of lines."""
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def apps(row: dict[str, Any], index: int) -> Converted:
    try:
        io = json.loads(_str(row, "input_output"))
        inputs, outputs = io["inputs"], io["outputs"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError("input_output is not JSON with inputs and outputs") from None
    if not inputs or len(inputs) != len(outputs):
        raise ValueError("input_output has no test cases, or unequal inputs and outputs")
    fn_name, starter = io.get("fn_name"), row.get("starter_code") or ""
    if fn_name and "class Solution" in starter:
        raise ValueError("class-based (LeetCode) starter code: pfrl calls top-level functions")
    record: dict[str, Any] = {"id": f"apps-{row.get('problem_id', index)}"}
    if fn_name:
        # Call-based outputs are mostly the return value wrapped in a one-element list.
        record.update(entry_point=fn_name, test_inputs=[json.dumps(a) for a in inputs],
                      test_outputs=[json.dumps(o[0] if isinstance(o, list) and len(o) == 1 else o) for o in outputs])
        how = f"Define a function `{fn_name}` (call-based format)."
    else:
        record.update(test_inputs=[_apps_text(i) for i in inputs], test_outputs=[_apps_text(o) for o in outputs])
        how = "Read from standard input and write to standard output."
    starter_block = f"\n\n```python\n{starter}\n```" if starter.strip() else ""
    record["prompt"] = f"{_str(row, 'question')}{starter_block}\n\n{how}{CODE_INSTRUCTION}"
    return Converted(record, cases=len(inputs))


FORMATS: dict[str, Callable[[dict[str, Any], int], Converted]] = {
    "gsm8k": gsm8k, "math": math_, "mbpp": mbpp, "humaneval": humaneval, "apps": apps,
}
