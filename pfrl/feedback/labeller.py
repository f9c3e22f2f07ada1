"""The labeller: rollout groups in, labelled groups (scores, pseudo label, pairs) out.

It owns the long-lived resources of one task: the math-verify judge (math) or the sandbox pool
(code), and the user's scorer when one is configured. Each group is labelled from the source and pair
rule of its iteration (`labeller.schedule`, or `labeller.source` / `pair_strategy` for every
iteration); `auto` resolves per record to the frontier reference when it has one, else
self-consistency, and never to ground truth. `label_many` is the batch entry point the Ray actor and
`pfrl label` use; a failure inside one batch is logged and becomes `skipped="error: ..."` on its
groups, so the labeller keeps serving.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from pfrl.config import LabellerSection
from pfrl.errors import UserError
from pfrl.feedback import code_label, math_label
from pfrl.feedback.answers import AnswerJudge
from pfrl.feedback.pairs import PairRule
from pfrl.feedback.sandbox import Sandbox
from pfrl.feedback.scorer import load_scorer
from pfrl.types import LabelledGroup, PrefixRollout, PrefixValues, Problem, RolloutGroup

log = logging.getLogger(__name__)
Task = Literal["math", "code"]


def resolve_source(task: Task, source: str, problem: Problem) -> str:
    """auto -> reference when the record carries a frontier reference, else self_consistency."""
    if source != "auto":
        return source
    has_ref = math_label.has_reference if task == "math" else code_label.has_reference
    return "reference" if has_ref(problem) else "self_consistency"


def _has_label(task: Task, source: str, problem: Problem) -> bool:
    if source == "reference":
        return (math_label.has_reference if task == "math" else code_label.has_reference)(problem)
    if source == "ground_truth":
        return problem.answer is not None if task == "math" else bool(problem.test_outputs)
    return task == "math" or bool(problem.reference_test_inputs or problem.test_inputs)  # code votes need inputs


def check_sources(task: Task, cfg: LabellerSection, problems: list[Problem], iterations: int) -> None:
    """Before a run: a source the schedule names for one of the run's `iterations` must find its label
    in at least one record, or every group of that iteration would be skipped and the run would wait
    for pairs that never come."""
    for iteration in range(min(iterations, len(cfg.plans()))):
        plan = cfg.plan(iteration)
        if plan.source == "auto" or any(_has_label(task, plan.source, p) for p in problems):
            continue
        need = {
            "reference": "a frontier reference (`reference`; code: `reference_test_outputs` or a reference "
            "program): write them with `pfrl references`",
            "ground_truth": "ground truth (`answer`; code: `test_outputs`)",
            "self_consistency": "test inputs (`reference_test_inputs` or `test_inputs`)",
        }[plan.source]
        raise UserError(f"labeller source {plan.source} (iteration {iteration}) needs {need}, "
                        f"and none of the {len(problems)} training records has it")


class Labeller:
    def __init__(self, task: Task, cfg: LabellerSection, seed: int):
        if task not in ("math", "code"):
            raise ValueError(f"unknown task {task!r}")
        self.task, self.cfg, self.seed = task, cfg, seed
        self.scorer = load_scorer(cfg.scorer) if cfg.scorer else None
        # The judge also runs the majority vote, so math keeps it with a user scorer; code does not
        # need the sandbox when the user's runner replaces it.
        self.judge = AnswerJudge(cfg.verify_timeout_s) if task == "math" else None
        self.sandbox = Sandbox(cfg.sandbox) if task == "code" and self.scorer is None else None

    def plan_for(self, group: RolloutGroup) -> tuple[str, PairRule]:
        """The resolved source of one group and the pair rule it is paired under."""
        plan = self.cfg.plan(group.item.iteration)
        source = resolve_source(self.task, plan.source, group.item.problem)
        return source, PairRule.of(self.cfg, plan.pair_strategy, source)

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
        source, rule = self.plan_for(group)
        return math_label.label_math(group, source, rule, self.judge, self.cfg, self.seed, self.scorer)

    def _runner(self) -> code_label.Runner:
        if self.scorer is not None:
            return self.scorer
        assert self.sandbox is not None
        return self.sandbox.run_many

    def _label_code(self, groups: list[RolloutGroup]) -> list[LabelledGroup]:
        plans = [self.plan_for(g) for g in groups]
        return code_label.label_code_many(groups, plans, self._runner(), self.cfg, self.seed)

    def value_prefixes(self, rollouts: list[PrefixRollout]) -> list[PrefixValues]:
        """Step-level pDPO (math): each prefix's value from its sampled continuations. A failure is
        logged and gives no values (so no prefix pairs); the groups keep their whole-solution pairs."""
        if self.judge is None:
            raise UserError("step-level pairs (labeller.step_pairs) are for math tasks")
        start = time.perf_counter()
        try:
            out = [math_label.prefix_values(r, self.judge, self.scorer) for r in rollouts]
        except Exception:
            log.exception("valuing the prefixes of %d groups failed", len(rollouts))
            out = [PrefixValues(prompt_id=r.batch.item.problem.id, values=[]) for r in rollouts]
        share = (time.perf_counter() - start) / max(1, len(rollouts))
        for values in out:
            values.label_s = share
        return out

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
