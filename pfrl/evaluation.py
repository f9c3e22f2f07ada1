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
    """Ground-truth correctness of completions for one task."""

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

    def keys(self, problem: Problem, completions: Sequence[str]) -> list[str | None]:
        """What a completion 'says' (its answer, or its program's outputs), for majority voting."""
        if self.task == "math":
            from pfrl.feedback.answers import extract_answer

            return [extract_answer(c) for c in completions]
        from pfrl.feedback.code import extract_program

        programs = [extract_program(c) for c in completions]
        results = self._sandbox.run_many([(p or "", problem.test_inputs, problem.entry_point) for p in programs])
        return [
            None if prog is None else "\x1f".join(r.output if r.ok else f"<{r.status}>" for r in res)
            for prog, res in zip(programs, results, strict=True)
        ]

    def correct(self, problem: Problem, key: str | None) -> bool:
        if key is None:
            return False
        if self.task == "math":
            return problem.answer is not None and self._judge.equal(key, problem.answer)
        return key == "\x1f".join(problem.test_outputs)


def _majority(keys: list[str | None]) -> str | None:
    votes = Counter(k for k in keys if k is not None)
    return votes.most_common(1)[0][0] if votes else None


def evaluate(problems: list[Problem], sample: Sampler, scorer: Scorer, n: int = 1, temperature: float = 1.0) -> dict:
    """Greedy accuracy; with n > 1 also maj@n and pass@n over n samples at `temperature`."""
    prompts = [p.prompt for p in problems]
    greedy = sample(prompts, 1, 0.0)
    greedy_ok = [scorer.correct(p, scorer.keys(p, c)[0]) for p, c in zip(problems, greedy, strict=True)]
    result = {"problems": len(problems), "accuracy": sum(greedy_ok) / len(problems)}
    if n > 1:
        sampled = sample(prompts, n, temperature)
        maj = pass_ = 0
        for problem, comps in zip(problems, sampled, strict=True):
            keys = scorer.keys(problem, comps)
            maj += scorer.correct(problem, _majority(keys))
            pass_ += any(scorer.correct(problem, k) for k in set(keys))
        result.update({f"maj@{n}": maj / len(problems), f"pass@{n}": pass_ / len(problems)})
    return result


def vllm_sampler(model_path: str, max_tokens: int, max_model_len: int, seed: int = 0) -> Sampler:
    """A standalone vLLM engine as a Sampler (used by `pfrl eval`)."""
    from vllm import LLM, SamplingParams

    from pfrl.runtime import vllm_engine_kwargs

    llm = LLM(model=model_path, seed=seed, max_model_len=max_model_len, **vllm_engine_kwargs())

    def sample(prompts: list[str], n: int, temperature: float) -> list[list[str]]:
        params = SamplingParams(n=n, temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=seed)
        outs = llm.generate(prompts, params, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outs]

    return sample
