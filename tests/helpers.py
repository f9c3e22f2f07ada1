"""Small builders shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pfrl.types import Problem, PromptItem, RolloutGroup


def group(problem: Problem, completions: list[str], version: int = 0, iteration: int = 0) -> RolloutGroup:
    """A rollout group of `completions` as a generator would send it (token fields left empty)."""
    return RolloutGroup(PromptItem(problem, iteration), completions, [], [], 0, 0, version)


def wrong_math(solution: str, delta: int = 1) -> str:
    """A synthetic math solution with its boxed answer moved by `delta`: a wrong completion."""
    head, _, tail = solution.rpartition("\\boxed{")
    return f"{head}\\boxed{{{int(tail.split('}')[0]) + delta}}}."
