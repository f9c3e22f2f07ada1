"""`pfrl eval --model DIR --data FILE --task math|code [--n K]`: prints one JSON object."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Hugging Face model directory.")
    p.add_argument("--data", required=True, help="JSONL problems with ground truth (answer / test_outputs).")
    p.add_argument("--task", choices=["math", "code"], required=True)
    p.add_argument("--n", type=int, default=1, help="Samples per problem for maj@K and pass@K (K > 1).")
    p.add_argument("--limit", type=int, default=None, help="Evaluate only the first N problems.")
    p.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature for K > 1.")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from pfrl.errors import UserError
    from pfrl.evaluation import Scorer, evaluate, vllm_sampler
    from pfrl.tasks.io import read_problems

    if not (Path(args.model) / "config.json").is_file():
        raise UserError(f"{args.model}: not a Hugging Face model directory (no config.json)")
    if args.n < 1:
        raise UserError("--n must be at least 1")
    problems = read_problems(args.data).problems[: args.limit]
    missing = [p.id for p in problems if (p.answer if args.task == "math" else p.test_outputs) in (None, [])]
    if missing:
        raise UserError(f"{args.data}: problem {missing[0]} has no ground truth for --task {args.task}")
    sampler = vllm_sampler(args.model, args.max_tokens, max_model_len=512, seed=args.seed)
    result = evaluate(problems, sampler, Scorer(args.task), n=args.n, temperature=args.temperature)
    print(json.dumps({"model": args.model, "data": args.data, "task": args.task, **result}))
    return 0
