"""Seeded multi-step arithmetic word problems with step-by-step reference solutions.

Difficulty knobs: `min_steps`/`max_steps` (operations per problem) and `max_operand`. The solution
states each intermediate result and ends with `\\boxed{answer}`, the format pfrl's extraction reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pfrl.types import Problem

NAMES = ["Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Max", "Nia"]
ITEMS = ["apples", "books", "coins", "pens", "shells", "stamps", "cards", "marbles", "eggs", "cups"]
# (verb phrase, operator): each sentence changes the running count.
OPS = [
    ("buys {k} more", "+"),
    ("finds {k} more", "+"),
    ("gets {k} from a friend", "+"),
    ("gives away {k}", "-"),
    ("loses {k}", "-"),
    ("sells {k}", "-"),
    ("doubles them", "*2"),
]

PROMPT_TEMPLATE = "Question: {question}\nAnswer:"


@dataclass(frozen=True)
class MathDifficulty:
    min_steps: int = 1
    max_steps: int = 3
    max_start: int = 20
    max_operand: int = 9
    allow_double: bool = True


def _step(rng: random.Random, value: int, d: MathDifficulty) -> tuple[str, str, int]:
    """Pick one operation that keeps the count non-negative; return (sentence, equation, new value)."""
    while True:
        phrase, op = rng.choice(OPS)
        if op == "*2" and (not d.allow_double or value > 50):
            continue
        k = rng.randint(1, d.max_operand)
        if op == "-" and k > value:
            continue
        new = value + k if op == "+" else value - k if op == "-" else value * 2
        sym = {"+": f"+ {k}", "-": f"- {k}", "*2": "* 2"}[op]
        return phrase.format(k=k), f"{value} {sym} = {new}.", new


def answer_sentence(value: int | str) -> str:
    """The closing sentence of every reference solution (what answer extraction reads)."""
    return f"The answer is \\boxed{{{value}}}."


def make_problem(rng: random.Random, index: int, d: MathDifficulty) -> tuple[Problem, str]:
    """One problem and its reference solution (the SFT target)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(1, d.max_start)
    sentences = [f"{name} has {value} {item}."]
    steps = []
    for _ in range(rng.randint(d.min_steps, d.max_steps)):
        sentence, equation, value = _step(rng, value, d)
        sentences.append(f"Then {name} {sentence}.")
        steps.append(equation)
    question = " ".join(sentences) + f" How many {item} does {name} have now?"
    solution = " " + " ".join(steps + [answer_sentence(value)])
    problem = Problem(id=f"math-{index:06d}", prompt=PROMPT_TEMPLATE.format(question=question), answer=str(value))
    return problem, solution


def generate(n: int, seed: int, difficulty: MathDifficulty | None = None, start: int = 0) -> list[tuple[Problem, str]]:
    rng = random.Random(f"math:{seed}")
    d = difficulty or MathDifficulty()
    return [make_problem(rng, start + i, d) for i in range(n)]
