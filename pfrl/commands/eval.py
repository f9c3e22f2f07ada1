"""`pfrl eval`: score a model on problems with ground truth through vLLM; prints one JSON object.

Settings come from the same schema as `pfrl train` (`--config FILE`, `--set section.key=value`),
so a model is scored as it is trained (context, token budget, chat template); the flags below
override them. Code is scored with the data set's own tests in the sandbox where records have them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pfrl.commands import add_config_args

# flag -> (config section, key): each flag is a shorthand for one config setting.
FLAG_KEYS: dict[str, tuple[str, str]] = {
    "model": ("model", "path"),
    "data": ("data", "heldout_file"),
    "task": ("run", "task"),
    "seed": ("run", "seed"),
    "max_length": ("model", "max_length"),
    "max_tokens": ("generator", "max_tokens"),
    "chat_template": ("model", "chat_template"),
    "system_prompt": ("model", "system_prompt"),
    "top_p": ("generator", "top_p"),
    "n": ("metrics", "eval_samples"),
    "temperature": ("metrics", "eval_temperature"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p, "A pfrl config (model, data.heldout_file, budgets, template).")
    p.add_argument("--model", help="Hugging Face model directory (model.path).")
    p.add_argument("--data", help="Problems with ground truth: .jsonl, .parquet or hf:NAME[:CONFIG]:SPLIT "
                   "(data.heldout_file).")
    p.add_argument("--task", choices=["math", "code"], help="run.task")
    p.add_argument("--max-length", type=int, help="Prompt + completion tokens (model.max_length).")
    p.add_argument("--max-tokens", type=int, help="Completion tokens (generator.max_tokens).")
    p.add_argument("--chat-template", help="auto | none | FILE (model.chat_template).")
    p.add_argument("--system-prompt", help="model.system_prompt")
    p.add_argument("--n", type=int, help="Samples per problem besides the greedy one (metrics.eval_samples); "
                   "n > 1 reports maj@n, pass@1 and pass@k.")
    p.add_argument("--k", type=int, action="append", default=[], help="Also report pass@k (repeatable; k <= n).")
    p.add_argument("--temperature", type=float, help="Temperature of the n samples (metrics.eval_temperature).")
    p.add_argument("--top-p", type=float, help="Nucleus sampling of the n samples (generator.top_p).")
    p.add_argument("--limit", type=int, default=None, help="Evaluate only the first N problems.")
    p.add_argument("--seed", type=int, help="run.seed")


def build_config(args: argparse.Namespace) -> Any:
    """The config file and --set overrides, then the flags on top (validated like any config key)."""
    from pydantic import ValidationError

    from pfrl.config import ConfigError, load_config

    cfg = load_config(args.config, args.overrides)
    for flag, (section, key) in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            try:
                setattr(getattr(cfg, section), key, value)
            except ValidationError as e:
                raise ConfigError(f"--{flag.replace('_', '-')}: {e.errors()[0]['msg']}") from None
    return cfg


def _load(cfg: Any, model_path: str, limit: int | None) -> list:
    from pfrl.errors import UserError
    from pfrl.prompting import render_problems
    from pfrl.tasks.loaders import load_problems

    if cfg.data.heldout_file is None:
        raise UserError("no problems: give --data or data.heldout_file")
    problems = load_problems(cfg.data.heldout_file, cfg.data.fields).problems[:limit]
    code = cfg.run.task == "code"
    missing = [p.id for p in problems if not (p.eval_tests or p.test_outputs if code else p.answer)]
    if missing:
        raise UserError(f"{cfg.data.heldout_file}: problem {missing[0]} has no ground truth for task {cfg.run.task}")
    return render_problems(problems, cfg.model, model_path)


def run(args: argparse.Namespace) -> int:
    from pfrl.errors import UserError
    from pfrl.evaluation import Scorer, evaluate, vllm_sampler
    from pfrl.preflight import resolve_model

    cfg = build_config(args)
    if cfg.model.path is None:
        raise UserError("no model: give --model or model.path")
    model_path = resolve_model(cfg)
    problems = _load(cfg, model_path, args.limit)
    n = cfg.metrics.eval_samples
    if any(k > n for k in args.k):
        raise UserError(f"--k {max(args.k)}: larger than the samples per problem (--n {n})")
    sampler = vllm_sampler(model_path, cfg.generator.max_tokens, cfg.model.max_length, cfg.run.seed, cfg.generator.top_p)
    scorer = Scorer(cfg.run.task, cfg.labeller.verify_timeout_s, cfg.labeller.sandbox)
    result = evaluate(problems, sampler, scorer, n=n, temperature=cfg.metrics.eval_temperature, ks=args.k)
    print(json.dumps({"model": cfg.model.path, "data": cfg.data.heldout_file, "task": cfg.run.task, **result}))
    return 0
