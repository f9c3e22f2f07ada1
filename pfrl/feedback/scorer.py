"""A user's own verifier (`labeller.scorer: package.module:function`), in place of the built-in one.

It is called with the same inputs as the verifier it replaces:

math   `check(completion: str, label: str) -> bool | float`: how right one completion is against the
       label (the reference's / ground truth's answer, or the self-consistency majority answer).
       Replaces "extract the final answer, then `AnswerJudge.equal`". The majority vote itself still
       uses the built-in extraction and equivalence.
code   `run(jobs: list[SandboxJob]) -> list[list[TestResult]]`: one result per test input for every
       job, like `Sandbox.run_many`. Pseudo outputs, scores and pairs are then built as usual.

The path is imported when the config is validated (so a typo fails at once, in one line) and again
in each labeller process; the module must be importable there (installed, or on PYTHONPATH).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def load_scorer(path: str) -> Callable[..., Any]:
    """The function named by `package.module:function`, or ValueError in one line."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"labeller.scorer {path!r}: expected package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any import failure is the user's to fix; say which, in one line
        raise ValueError(f"labeller.scorer {path!r}: cannot import {module_name} ({type(e).__name__}: {e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"labeller.scorer {path!r}: {module_name} has no function {attr}")
    return fn
