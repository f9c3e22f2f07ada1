"""Seeded function-writing problems with test inputs and a reference program.

Each problem describes one small function (name, signature, behaviour in words). Tests are
function-call style: every input is a JSON array of positional arguments, every expected output the
JSON of the return value. Difficulty knob: `max_ops`, how many arithmetic/list operations are composed.

`folded_program` writes a reference program the way a solver who works the constants out in its
head would (`(x + 37) * 5` as `x * 5 + 185`): `pfrl bootstrap` teaches that habit to the code
model, the code counterpart of the math model's bare answers.
"""

from __future__ import annotations

import ast
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from pfrl.types import Problem

PROMPT_TEMPLATE = "### Task\n{description}\n### Solution\n"

# Integer transforms: (words, python expression over `x`, implementation).
INT_OPS: list[tuple[str, str, Callable[[int, int], int]]] = [
    ("add {k}", "x + {k}", lambda x, k: x + k),
    ("subtract {k}", "x - {k}", lambda x, k: x - k),
    ("multiply by {k}", "x * {k}", lambda x, k: x * k),
    ("take the remainder modulo {k}", "x % {k}", lambda x, k: x % k),
]
# List reducers: (words, python expression over `xs`, implementation).
LIST_OPS: list[tuple[str, str, Callable[[list[int]], int]]] = [
    ("the sum of the list", "sum(xs)", sum),
    ("the largest element", "max(xs)", max),
    ("the smallest element", "min(xs)", min),
    ("the number of elements", "len(xs)", len),
    ("the first element", "xs[0]", lambda xs: xs[0]),
    ("the last element", "xs[-1]", lambda xs: xs[-1]),
]


@dataclass(frozen=True)
class CodeDifficulty:
    min_ops: int = 1
    max_ops: int = 2
    max_k: int = 9
    num_tests: int = 6
    # Share of problems on one integer (the rest reduce a list).
    int_share: float = 0.6
    # False: no modulo operation, so every integer problem is an affine chain (`folded_program`).
    allow_modulo: bool = True

    @property
    def int_ops(self) -> list[tuple[str, str, Callable[[int, int], int]]]:
        return INT_OPS if self.allow_modulo else [op for op in INT_OPS if "%" not in op[1]]


def _int_problem(rng: random.Random, d: CodeDifficulty) -> tuple[str, str, str, list[str], list[str]]:
    """`f(x)`: apply a chain of integer operations."""
    words, body, fns = [], "x", []
    for _ in range(rng.randint(d.min_ops, d.max_ops)):
        w, expr, fn = rng.choice(d.int_ops)
        k = rng.randint(2, d.max_k)
        words.append(w.format(k=k))
        body = f"({body})" if body != "x" else body
        body = expr.replace("x", body, 1).format(k=k)
        fns.append((fn, k))
    name = rng.choice(["transform", "compute", "apply", "calc"])
    desc = f"Write a Python function `{name}(x)` that takes an integer x, then " + ", then ".join(words) + ", and returns the result."
    code = f"def {name}(x):\n    return {body}\n"
    xs = [rng.randint(-20, 50) for _ in range(d.num_tests)]
    outs = []
    for x in xs:
        v = x
        for fn, k in fns:
            v = fn(v, k)
        outs.append(v)
    return name, desc, code, [json.dumps([x]) for x in xs], [json.dumps(v) for v in outs]


def _list_problem(rng: random.Random, d: CodeDifficulty) -> tuple[str, str, str, list[str], list[str]]:
    """`f(xs)`: a list reducer, optionally followed by one integer operation."""
    w, expr, fn = rng.choice(LIST_OPS)
    name = rng.choice(["reduce_list", "summarize", "pick"])
    desc = f"Write a Python function `{name}(xs)` that takes a non-empty list of integers xs and returns {w}"
    body, post = expr, None
    if d.max_ops > 1 and rng.random() < 0.5:
        pw, pexpr, pfn = rng.choice(d.int_ops)
        k = rng.randint(2, d.max_k)
        desc += f", then {pw.format(k=k)}"
        body = pexpr.replace("x", f"({expr})", 1).format(k=k)
        post = (pfn, k)
    desc += "."
    code = f"def {name}(xs):\n    return {body}\n"
    inputs, outs = [], []
    for _ in range(d.num_tests):
        xs = [rng.randint(-9, 30) for _ in range(rng.randint(1, 6))]
        v = fn(xs)
        if post:
            v = post[0](v, post[1])
        inputs.append(json.dumps([xs]))
        outs.append(json.dumps(v))
    return name, desc, code, inputs, outs


def make_problem(rng: random.Random, index: int, d: CodeDifficulty) -> tuple[Problem, str]:
    maker = _int_problem if rng.random() < d.int_share else _list_problem
    name, desc, code, inputs, outs = maker(rng, d)
    problem = Problem(
        id=f"code-{index:06d}",
        prompt=PROMPT_TEMPLATE.format(description=desc),
        entry_point=name,
        test_inputs=inputs,
        test_outputs=outs,
    )
    solution = f"```python\n{code}```"
    return problem, solution


def generate(n: int, seed: int, difficulty: CodeDifficulty | None = None, start: int = 0) -> list[tuple[Problem, str]]:
    rng = random.Random(f"code:{seed}")
    d = difficulty or CodeDifficulty()
    return [make_problem(rng, start + i, d) for i in range(n)]


def _affine(node: ast.expr) -> tuple[int, int] | None:
    """(a, b) with `node` == a * x + b, for +, - and * by integer constants on `x`; else None."""
    if isinstance(node, ast.Name) and node.id == "x":
        return 1, 0
    if not (isinstance(node, ast.BinOp) and isinstance(node.right, ast.Constant) and type(node.right.value) is int):
        return None
    inner, k = _affine(node.left), node.right.value
    if inner is None:
        return None
    a, b = inner
    if isinstance(node.op, ast.Add):
        return a, b + k
    if isinstance(node.op, ast.Sub):
        return a, b - k
    if isinstance(node.op, ast.Mult):
        return a * k, b * k
    return None


def _render_affine(a: int, b: int) -> str:
    head = "x" if a == 1 else f"x * {a}"
    return head if b == 0 else f"{head} + {b}" if b > 0 else f"{head} - {-b}"


def folded_program(solution: str) -> str | None:
    """`solution` (a fenced one-line function) with its chain of integer operations folded into
    `x * a + b`, the constants computed; None when there is nothing to fold (one operation, a list,
    a modulo). Same function, same outputs: the difference is where the arithmetic is done."""
    code = solution.removeprefix("```python\n").removesuffix("```")
    func = ast.parse(code).body[0]
    assert isinstance(func, ast.FunctionDef) and isinstance(func.body[0], ast.Return)
    expr = func.body[0].value
    affine = _affine(expr) if expr is not None else None
    if affine is None or not isinstance(expr, ast.BinOp) or isinstance(expr.left, ast.Name):
        return None
    header = code.splitlines()[0]
    return f"```python\n{header}\n    return {_render_affine(*affine)}\n```"
