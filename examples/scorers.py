"""Example scorers for `labeller.scorer` (see docs/feedback.md, "Your own scorer").

Put this directory on PYTHONPATH (on every node that runs labellers) and set, for math,

    labeller:
      scorer: scorers:within_one_percent

or, for code,

    labeller:
      scorer: scorers:run_patiently
"""

from __future__ import annotations

import functools
import re

from pfrl.config import SandboxSection
from pfrl.feedback.sandbox import Sandbox, SandboxJob, TestResult

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def within_one_percent(completion: str, label: str) -> bool:
    """Math: the completion's last number is within 1% of the label (measured quantities, where the
    built-in exact equivalence is too strict). Non-numeric labels must match as text."""
    numbers = _NUMBER.findall(completion.replace(",", ""))
    if not numbers:
        return False
    try:
        want = float(label)
    except ValueError:
        return numbers[-1] == label.strip()
    got = float(numbers[-1])
    return abs(got - want) <= 0.01 * max(abs(want), 1e-12)


@functools.cache
def _patient_sandbox() -> Sandbox:
    # One pool per labeller process, kept for its lifetime (closed when the process ends).
    return Sandbox(SandboxSection(timeout_s=10.0, cpu_s=10))


def run_patiently(jobs: list[SandboxJob]) -> list[list[TestResult]]:
    """Code: the built-in sandbox with 10 s per test instead of labeller.sandbox's limits (slow
    reference solutions, heavily loaded machines). Any runner with this signature works: a remote
    judge, a container pool, a language other than Python."""
    return _patient_sandbox().run_many(jobs)
