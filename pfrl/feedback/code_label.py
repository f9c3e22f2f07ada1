"""Labelling code rollout groups: run every program on every input, then score against
reference outputs (`test_outputs`, or the outputs of a reference program in `reference`) or against
multi-test-case self-consistency pseudo outputs.

Groups are labelled in batches so that all their programs share one `Sandbox.run_many` call and the
worker pool stays busy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pfrl.config import LabellerSection
from pfrl.feedback.code import extract_program, normalize_output
from pfrl.feedback.pairs import no_pair_reason, pair_rng, select_pairs
from pfrl.feedback.sandbox import Sandbox, SandboxJob, TestResult
from pfrl.feedback.self_consistency import match_scores, pseudo_outputs
from pfrl.types import LabelledGroup, Problem, RolloutGroup


def has_reference(problem: Problem) -> bool:
    return bool(problem.test_outputs) or problem.reference is not None


@dataclass
class CodePlan:
    """What one group needs run, and what it found out before running anything."""

    group: RolloutGroup
    mode: str
    programs: list[str | None]
    labels: list[str | None] | None = None  # normalised expected output per input; None: dropped
    skipped: str | None = None
    reference_program: str | None = None
    results: list[list[TestResult]] = field(default_factory=list)

    @property
    def problem(self) -> Problem:
        return self.group.item.problem

    @property
    def function_call(self) -> bool:
        return self.problem.entry_point is not None


def plan_group(group: RolloutGroup, mode: str) -> CodePlan:
    problem = group.item.problem
    plan = CodePlan(group, mode, [extract_program(c) for c in group.completions])
    if not problem.test_inputs:
        plan.skipped = "no_tests"
    elif mode == "reference" and problem.test_outputs:
        if len(problem.test_outputs) != len(problem.test_inputs):
            plan.skipped = "bad_tests"
        else:
            plan.labels = [normalize_output(o, plan.function_call) for o in problem.test_outputs]
    elif mode == "reference":
        plan.reference_program = extract_program(problem.reference) if problem.reference else None
        if plan.reference_program is None:
            plan.skipped = "no_reference" if problem.reference is None else "bad_reference"
    return plan


def _jobs(plan: CodePlan) -> list[SandboxJob]:
    p = plan.problem
    return [SandboxJob(program, p.test_inputs, p.entry_point) for program in plan.programs]


def _run_reference_programs(plans: list[CodePlan], sandbox: Sandbox) -> None:
    """Reference mode without test_outputs: the reference program's outputs become the labels."""
    todo = [p for p in plans if p.skipped is None and p.reference_program is not None]
    jobs = [SandboxJob(p.reference_program, p.problem.test_inputs, p.problem.entry_point) for p in todo]
    for plan, results in zip(todo, sandbox.run_many(jobs), strict=True):
        plan.labels = [
            normalize_output(r.output, plan.function_call) if r.status.ran else None for r in results
        ]
        if all(label is None for label in plan.labels):
            plan.skipped = "bad_reference"


def _run_programs(plans: list[CodePlan], sandbox: Sandbox) -> None:
    todo = [p for p in plans if p.skipped is None]
    jobs = [job for p in todo for job in _jobs(p)]
    results = iter(sandbox.run_many(jobs))
    for plan in todo:
        plan.results = [next(results) for _ in plan.programs]


def finish(plan: CodePlan, cfg: LabellerSection, seed: int) -> LabelledGroup:
    group = plan.group
    out = LabelledGroup(
        prompt_id=plan.problem.id,
        iteration=group.item.iteration,
        policy_version=group.policy_version,
        label=None,
        scores=[0.0] * len(group.completions),
        pairs=[],
        skipped=plan.skipped,
    )
    if plan.skipped is not None:
        return out
    if plan.labels is None:  # self-consistency
        plan.labels = pseudo_outputs(plan.results, plan.function_call, cfg.min_success_frac)
    out.pseudo_outputs = plan.labels
    if all(label is None for label in plan.labels):
        out.skipped = "too_few_successful"
        return out
    out.scores = match_scores(plan.results, plan.labels, plan.function_call)
    out.pairs = select_pairs(out.scores, cfg, pair_rng(seed, out.prompt_id))
    if not out.pairs:
        out.skipped = no_pair_reason(out.scores)
    return out


def label_code_many(
    groups: list[RolloutGroup], modes: list[str], sandbox: Sandbox, cfg: LabellerSection, seed: int
) -> list[LabelledGroup]:
    """Label a batch of code groups with `modes` resolved per group (reference | self-consistency)."""
    plans = [plan_group(g, m) for g, m in zip(groups, modes, strict=True)]
    _run_reference_programs(plans, sandbox)
    _run_programs(plans, sandbox)
    return [finish(p, cfg, seed) for p in plans]
