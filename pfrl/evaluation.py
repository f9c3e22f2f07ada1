"""Held-out evaluation: greedy accuracy, and with K samples maj@K and pass@K.

Scoring is ground truth (the record's `answer`, or its `test_outputs` for code); sampling is
abstracted as a `Sampler` so the same code scores a standalone vLLM engine (`pfrl eval`) and a live
generator actor inside `pfrl train`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pfrl.types import Problem

# prompts, n, temperature -> n completions per prompt
Sampler = Callable[[list[str], int, float], list[list[str]]]


@dataclass
class Scorer:
    """Ground-truth judgement of completions for one task."""

    task: str
    verify_timeout_s: float = 2.0
    sandbox_cfg: object | None = None

    def __post_init__(self) -> None:
        if self.task == "math":
            from pfrl.feedback.answers import AnswerJudge

            self._judge = AnswerJudge(self.verify_timeout_s)
        else:
            from pfrl.config import SandboxSection
            from pfrl.feedback.sandbox import Sandbox

            self._sandbox = Sandbox(self.sandbox_cfg or SandboxSection())

    def judge(self, problem: Problem, completions: Sequence[str]) -> list[tuple[str | None, bool]]:
        """Per completion: what it 'says' (its answer, or its program's outputs: the majority-vote
        key; None if nothing could be extracted) and whether it is correct."""
        if self.task == "math":
            from pfrl.feedback.answers import extract_answer

            answers = [extract_answer(c) for c in completions]
            return [(a, a is not None and problem.answer is not None and self._judge.equal(a, problem.answer))
                    for a in answers]
        return self._judge_code(problem, completions)

    def _judge_code(self, problem: Problem, completions: Sequence[str]) -> list[tuple[str | None, bool]]:
        from pfrl.feedback.code import extract_program
        from pfrl.feedback.sandbox import SandboxJob, TestStatus

        programs = [extract_program(c) for c in completions]
        jobs = [SandboxJob(p, problem.test_inputs, problem.entry_point, problem.test_outputs) for p in programs]
        out = []
        for program, results in zip(programs, self._sandbox.run_many(jobs), strict=True):
            key = None if program is None else "\x1f".join(r.output if r.status.ran else f"<{r.status}>" for r in results)
            out.append((key, program is not None and all(r.status == TestStatus.PASSED for r in results)))
        return out


def _majority(judged: list[tuple[str | None, bool]]) -> bool:
    """Whether the most common non-empty key is a correct one."""
    votes = Counter(k for k, _ in judged if k is not None)
    if not votes:
        return False
    top = votes.most_common(1)[0][0]
    return any(ok for k, ok in judged if k == top)


def evaluate(problems: list[Problem], sample: Sampler, scorer: Scorer, n: int = 1, temperature: float = 1.0) -> dict:
    """Greedy accuracy; with n > 1 also maj@n and pass@n over n samples at `temperature`."""
    prompts = [p.prompt for p in problems]
    greedy = sample(prompts, 1, 0.0)
    correct = sum(scorer.judge(p, c)[0][1] for p, c in zip(problems, greedy, strict=True))
    result = {"problems": len(problems), "accuracy": correct / len(problems)}
    if n > 1:
        judged = [scorer.judge(p, c) for p, c in zip(problems, sample(prompts, n, temperature), strict=True)]
        result[f"maj@{n}"] = sum(_majority(j) for j in judged) / len(problems)
        result[f"pass@{n}"] = sum(any(ok for _, ok in j) for j in judged) / len(problems)
    return result


def vllm_sampler(model_path: str, max_tokens: int, max_model_len: int, seed: int = 0) -> Sampler:
    """A standalone vLLM engine as a Sampler (used by `pfrl eval`)."""
    from vllm import LLM, SamplingParams

    from pfrl.runtime import vllm_batching_kwargs, vllm_engine_kwargs, vllm_process_kwargs

    llm = LLM(model=model_path, seed=seed, max_model_len=max_model_len, **vllm_engine_kwargs(),
              **vllm_batching_kwargs(64, max_model_len), **vllm_process_kwargs(1))

    def sample(prompts: list[str], n: int, temperature: float) -> list[list[str]]:
        params = SamplingParams(n=n, temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=seed)
        outs = llm.generate(prompts, params, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outs]

    return sample
