"""Labelling code rollout groups: run every program on every test input, then score against
expected outputs from one label source.

ground_truth      the data set's `test_outputs` on its `test_inputs` (baselines only: asked for by name)
reference         frontier tests: `reference_test_outputs` on `reference_test_inputs`, or the outputs of
                  the frontier's program (`reference`) on the frontier's inputs (else the data set's
                  inputs: inputs alone are no label)
self_consistency  multi-test-case self-consistency pseudo outputs on the same inputs as reference

A program's score is the share of kept test inputs it passes; margin pairs use the counts. Groups
are labelled in batches so that all their programs share one runner call (the sandbox pool, or the
user's `labeller.scorer`) and the workers stay busy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pfrl.config import LabellerSection
from pfrl.feedback.code import extract_program, normalize_output
from pfrl.feedback.pairs import PairRule, no_pair_reason, pair_rng, select_pairs
from pfrl.feedback.sandbox import SandboxJob, TestResult
from pfrl.feedback.self_consistency import match_counts, pseudo_outputs
from pfrl.types import LabelledGroup, Problem, RolloutGroup

# Runs programs on test inputs: Sandbox.run_many, or the user's scorer with the same signature.
Runner = Callable[[list[SandboxJob]], list[list[TestResult]]]


def has_reference(problem: Problem) -> bool:
    """Frontier tests: outputs it wrote, or a program to compute them (never `test_outputs`)."""
    return bool(problem.reference_test_outputs) or problem.reference is not None


@dataclass
class CodePlan:
    """What one group needs run, and what it found out before running anything."""

    group: RolloutGroup
    source: str
    rule: PairRule
    programs: list[str | None]
    inputs: list[str]
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


def _given_outputs(plan: CodePlan, outputs: list[str]) -> None:
    if len(outputs) != len(plan.inputs):
        plan.skipped = "bad_tests"
    else:
        plan.labels = [normalize_output(o, plan.function_call) for o in outputs]


def plan_group(group: RolloutGroup, source: str, rule: PairRule) -> CodePlan:
    """`source` is resolved (ground_truth | reference | self_consistency)."""
    p = group.item.problem
    inputs = p.test_inputs if source == "ground_truth" else (p.reference_test_inputs or p.test_inputs)
    plan = CodePlan(group, source, rule, [extract_program(c) for c in group.completions], inputs)
    if not inputs:
        plan.skipped = "no_tests"
    elif source == "ground_truth":
        if p.test_outputs:
            _given_outputs(plan, p.test_outputs)
        else:
            plan.skipped = "no_ground_truth"
    elif source == "reference" and p.reference_test_outputs:
        _given_outputs(plan, p.reference_test_outputs)
    elif source == "reference":
        plan.reference_program = extract_program(p.reference) if p.reference else None
        if plan.reference_program is None:
            plan.skipped = "no_reference" if p.reference is None else "bad_reference"
    return plan


def _run_reference_programs(plans: list[CodePlan], run: Runner) -> None:
    """Reference source without written outputs: the frontier program's outputs become the labels."""
    todo = [p for p in plans if p.skipped is None and p.reference_program is not None]
    jobs = [SandboxJob(p.reference_program, p.inputs, p.problem.entry_point) for p in todo]
    for plan, results in zip(todo, run(jobs) if jobs else [], strict=True):
        plan.labels = [
            normalize_output(r.output, plan.function_call) if r.status.ran else None for r in results
        ]
        if all(label is None for label in plan.labels):
            plan.skipped = "bad_reference"


def _job_key(job: SandboxJob) -> tuple:
    return job.program, tuple(job.test_inputs), job.entry_point, tuple(job.expected or ())


def run_distinct(jobs: list[SandboxJob], run: Runner) -> list[list[TestResult]]:
    """Results for `jobs`, each distinct job run once. A small policy samples the same program
    several times (in the code demo a third of the pairs drawn repeated two texts), and running
    programs is the slow part of the code loop: its learner waited for labels 0.7-0.9 of the time."""
    index: dict[tuple, int] = {}
    distinct: list[SandboxJob] = []
    for job in jobs:
        key = _job_key(job)
        if key not in index:
            index[key] = len(distinct)
            distinct.append(job)
    results = run(distinct) if distinct else []
    return [results[index[_job_key(job)]] for job in jobs]


def _run_programs(plans: list[CodePlan], run: Runner) -> None:
    todo = [p for p in plans if p.skipped is None]
    jobs = [SandboxJob(prog, p.inputs, p.problem.entry_point) for p in todo for prog in p.programs]
    results = iter(run_distinct(jobs, run))
    for plan in todo:
        plan.results = [next(results) for _ in plan.programs]


def agree_with_ground_truth(plan: CodePlan) -> float | None:
    """Share of the kept inputs that are also ground-truth test inputs on which the pseudo output
    equals the data set's output (None: no such input)."""
    p = plan.problem
    if plan.source == "ground_truth" or not p.test_outputs or len(p.test_outputs) != len(p.test_inputs):
        return None
    truth = {i: normalize_output(o, plan.function_call) for i, o in zip(p.test_inputs, p.test_outputs, strict=True)}
    compared = [
        label == truth[inp]
        for inp, label in zip(plan.inputs, plan.labels or [], strict=True)
        if label is not None and inp in truth
    ]
    return sum(compared) / len(compared) if compared else None


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
        plan.labels = pseudo_outputs(plan.results, plan.function_call, cfg.min_successful_programs)
    out.pseudo_outputs = plan.labels
    n_kept = sum(label is not None for label in plan.labels)
    if n_kept == 0:
        out.skipped = "too_few_successful"
        return out
    out.scores = [c / n_kept for c in match_counts(plan.results, plan.labels, plan.function_call)]
    out.agree_gt = agree_with_ground_truth(plan)
    out.pairs = select_pairs(out.scores, plan.rule, pair_rng(seed, out.prompt_id), n_tests=n_kept,
                             keys=group.completions)
    if not out.pairs:
        out.skipped = no_pair_reason(out.scores)
    return out


def label_code_many(groups: list[RolloutGroup], plans: list[tuple[str, PairRule]], run: Runner,
                    cfg: LabellerSection, seed: int) -> list[LabelledGroup]:
    """Label a batch of code groups, each with its resolved (source, pair rule)."""
    code_plans = [plan_group(g, source, rule) for g, (source, rule) in zip(groups, plans, strict=True)]
    _run_reference_programs(code_plans, run)
    _run_programs(code_plans, run)
    return [finish(p, cfg, seed) for p in code_plans]
