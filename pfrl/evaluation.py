"""Held-out evaluation: greedy accuracy, and with K samples maj@K, pass@1 and unbiased pass@k.

Scoring is ground truth: the record's `answer` for math; for code its `eval_tests` (the data set's
own assert tests, run after the program in the sandbox) when it has them, else its `test_outputs`.
Sampling is abstracted as a `Sampler` so the same code scores a standalone vLLM engine
(`pfrl eval`) and a live generator actor inside `pfrl train`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pfrl.types import Problem

if TYPE_CHECKING:
    from pfrl.config import SandboxSection

# prompts, n, temperature -> n completions per prompt
Sampler = Callable[[list[str], int, float], list[list[str]]]


@dataclass
class Scorer:
    """Ground-truth judgement of completions for one task."""

    task: str
    verify_timeout_s: float = 2.0
    sandbox_cfg: SandboxSection | None = None

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
        """The vote key is a program's outputs on the test inputs; correctness is the data set's own
        tests when the record has them, else the expected outputs."""
        from pfrl.feedback.code import extract_program
        from pfrl.feedback.sandbox import SandboxJob, TestStatus

        programs = [extract_program(c) for c in completions]
        jobs = [SandboxJob(p, problem.test_inputs, problem.entry_point, problem.test_outputs) for p in programs]
        if problem.eval_tests is not None:
            # Program then asserts, as one stdin-less script: it passes when it runs to the end.
            jobs += [SandboxJob(None if p is None else f"{p}\n\n{problem.eval_tests}\n", [""]) for p in programs]
        results = self._sandbox.run_many(jobs)
        out = []
        for i, program in enumerate(programs):
            on_inputs = results[i]
            key = None if program is None or not on_inputs else "\x1f".join(
                r.output if r.status.ran else f"<{r.status}>" for r in on_inputs)
            if problem.eval_tests is not None:
                ok = results[len(programs) + i][0].status == TestStatus.OK
            else:
                ok = bool(on_inputs) and all(r.status == TestStatus.PASSED for r in on_inputs)
            out.append((key, program is not None and ok))
        return out


def _majority(judged: list[tuple[str | None, bool]]) -> bool:
    """Whether the most common non-empty key is a correct one."""
    votes = Counter(k for k, _ in judged if k is not None)
    if not votes:
        return False
    top = votes.most_common(1)[0][0]
    return any(ok for k, ok in judged if k == top)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from n samples of which c are correct (Chen et al. 2021, the
    Codex paper): 1 - C(n-c, k) / C(n, k), as a running product so large n stays exact enough."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def sampled_metrics(judged: list[list[tuple[str | None, bool]]], ks: Sequence[int] = ()) -> dict[str, float]:
    """maj@n, pass@1 (mean correct share) and pass@k for k in `ks` (k <= n), over problems that
    each have n judged samples. pass@n is the share with any correct sample."""
    n = len(judged[0])
    correct = [sum(ok for _, ok in j) for j in judged]
    out = {f"maj@{n}": sum(_majority(j) for j in judged) / len(judged)}
    for k in sorted({1, n, *(k for k in ks if 1 <= k <= n)}):
        out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in correct) / len(judged)
    return out


def evaluate(
    problems: list[Problem], sample: Sampler, scorer: Scorer, n: int = 1, temperature: float = 1.0,
    ks: Sequence[int] = (),
) -> dict:
    """Greedy accuracy; with n > 1 also maj@n, pass@1 and unbiased pass@k (k in `ks` and n) over
    n samples at `temperature`."""
    prompts = [p.prompt for p in problems]
    greedy = sample(prompts, 1, 0.0)
    correct = sum(scorer.judge(p, c)[0][1] for p, c in zip(problems, greedy, strict=True))
    result = {"problems": len(problems), "accuracy": correct / len(problems)}
    if n > 1:
        judged = [scorer.judge(p, c) for p, c in zip(problems, sample(prompts, n, temperature), strict=True)]
        result.update(sampled_metrics(judged, ks))
    return result


def eval_metrics(result: dict) -> dict[str, float]:
    """An `evaluate` result as run metrics: every figure under `eval/`."""
    return {f"eval/{k}": v for k, v in result.items()}


def vllm_sampler(model_path: str, max_tokens: int, max_model_len: int, seed: int = 0, top_p: float = 1.0) -> Sampler:
    """A standalone vLLM engine as a Sampler (used by `pfrl eval`). Prompts are encoded with
    `prompt_ids`, as the generator and the learner encode them; greedy ignores `top_p`."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from pfrl.prompting import prompt_ids
    from pfrl.runtime import vllm_batching_kwargs, vllm_engine_kwargs, vllm_process_kwargs

    llm = LLM(model=model_path, seed=seed, max_model_len=max_model_len, **vllm_engine_kwargs(),
              **vllm_batching_kwargs(64, max_model_len), **vllm_process_kwargs(1))
    tokenizer = llm.get_tokenizer()

    def sample(prompts: list[str], n: int, temperature: float) -> list[list[str]]:
        params = SamplingParams(n=n, temperature=temperature, top_p=1.0 if temperature == 0 else top_p,
                                max_tokens=max_tokens, seed=seed)
        inputs = [TokensPrompt(prompt_token_ids=prompt_ids(tokenizer, p)) for p in prompts]
        outs = llm.generate(inputs, params, use_tqdm=False)
        return [[o.text for o in sorted(out.outputs, key=lambda o: o.index)] for out in outs]

    return sample
