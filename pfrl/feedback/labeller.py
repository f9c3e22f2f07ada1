"""The labeller: rollout groups in, labelled groups (scores, pseudo label, pairs) out.

It owns the long-lived resources of one task: the math-verify judge (math) or the sandbox pool
(code). `label_many` is the batch entry point the Ray actor and `pfrl label` use; a failure inside
one batch is logged and becomes `skipped="error: ..."` on its groups, so the labeller keeps serving.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from pfrl.config import LabellerSection
from pfrl.feedback import code_label, math_label
from pfrl.feedback.answers import AnswerJudge
from pfrl.feedback.sandbox import Sandbox
from pfrl.types import LabelledGroup, Problem, RolloutGroup

log = logging.getLogger(__name__)
Task = Literal["math", "code"]


class Labeller:
    def __init__(self, task: Task, cfg: LabellerSection, seed: int):
        if task not in ("math", "code"):
            raise ValueError(f"unknown task {task!r}")
        self.task, self.cfg, self.seed = task, cfg, seed
        self.judge = AnswerJudge(cfg.verify_timeout_s) if task == "math" else None
        self.sandbox = Sandbox(cfg.sandbox) if task == "code" else None

    def mode_for(self, problem: Problem) -> str:
        """auto: the record's reference when it has one, self-consistency otherwise."""
        if self.cfg.mode != "auto":
            return self.cfg.mode
        has_ref = math_label.has_reference if self.task == "math" else code_label.has_reference
        return "reference" if has_ref(problem) else "self-consistency"

    def label(self, group: RolloutGroup) -> LabelledGroup:
        return self.label_many([group])[0]

    def label_many(self, groups: list[RolloutGroup]) -> list[LabelledGroup]:
        start = time.perf_counter()
        try:
            out = self._label_code(groups) if self.task == "code" else [self._label_math(g) for g in groups]
        except Exception as e:  # never take the caller down: report it on the groups instead
            log.exception("labelling a batch of %d groups failed", len(groups))
            out = [self._failed(g, e) for g in groups]
        share = (time.perf_counter() - start) / max(1, len(groups))
        for labelled in out:
            labelled.label_s = share
        return out

    def _label_math(self, group: RolloutGroup) -> LabelledGroup:
        assert self.judge is not None
        return math_label.label_math(
            group, self.mode_for(group.item.problem), self.judge, self.cfg, self.seed
        )

    def _label_code(self, groups: list[RolloutGroup]) -> list[LabelledGroup]:
        assert self.sandbox is not None
        modes = [self.mode_for(g.item.problem) for g in groups]
        return code_label.label_code_many(groups, modes, self.sandbox, self.cfg, self.seed)

    @staticmethod
    def _failed(group: RolloutGroup, error: Exception) -> LabelledGroup:
        return LabelledGroup(
            prompt_id=group.item.problem.id,
            iteration=group.item.iteration,
            policy_version=group.policy_version,
            label=None,
            scores=[0.0] * len(group.completions),
            pairs=[],
            skipped=f"error: {type(error).__name__}",
        )

    def close(self) -> None:
        if self.judge is not None:
            self.judge.close()
        if self.sandbox is not None:
            self.sandbox.close()

    def __enter__(self) -> Labeller:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
