"""`pfrl generate`: sample N completions per prompt with G vLLM generator actors (local Ray).

Problems come from the same loaders as training (JSONL, parquet, `hf:NAME[:CONFIG]:SPLIT`, renamed by
`data.fields`) and are rendered with `model.chat_template` / `model.system_prompt` as in training.
Writes one row per problem in the `pfrl label` input schema: `id`, `prompt` (as the model read it,
so the pairs `pfrl label` writes train `pfrl dpo` on the same text), `completions`, plus
whatever reference fields the problem file had (answer, reference, entry_point, test_inputs,
test_outputs). Rows keep the problem file's order. Prompts too long for `model.max_length` get no
completions; they are counted and left out (a label input row needs at least one completion).
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from pfrl.commands import add_config_args

IN_FLIGHT_PER_GENERATOR = 2  # one batch sampling, one queued, so no generator idles between calls


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Hugging Face model directory.")
    p.add_argument("--prompts", required=True, help="Problems (id, prompt, references/tests): .jsonl, .parquet or "
                   "hf:NAME[:CONFIG]:SPLIT, fields renamed by data.fields.")
    p.add_argument("--out", required=True, help="Output JSONL (the `pfrl label --rollouts` input).")
    p.add_argument("--n", type=int, help="Completions per prompt (default: generator.n_samples).")
    p.add_argument("--generators", type=int, help="Generator actors (default: generator.num_generators).")
    add_config_args(p)
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")


@dataclass
class Tally:
    prompts: int = 0
    completions: int = 0
    tokens: int = 0
    too_long: int = 0


def _config(args: argparse.Namespace):
    from pfrl.config import load_config

    overrides = list(args.overrides)
    if args.n is not None:
        overrides.append(f"generator.n_samples={args.n}")
    if args.generators is not None:
        overrides.append(f"generator.num_generators={args.generators}")
    return load_config(args.config, overrides)


def _start_generators(cfg: Any, model: str) -> list[Any]:
    from actors.generator import spawn_generator

    g = cfg.generator
    return [
        # Offline sampling is idempotent, so a call lost to a restart is simply retried.
        spawn_generator(
            model,
            g,
            cfg.model,
            cfg.sync,
            cfg.run.seed,
            i,
            cfg.cluster.generator_cpus,
            cfg.cluster.generator_gpus,
            max_task_retries=g.max_restarts,
        )
        for i in range(g.num_generators)
    ]


def _sample(gens: list[Any], items: list, batch: int, on_groups) -> None:
    """Spread batches over the generators, keeping each one busy, until every item is sampled."""
    import ray

    from pfrl.types import decode, encode

    todo = deque(items[i : i + batch] for i in range(0, len(items), batch))
    running: dict[Any, Any] = {}
    free = [g for g in gens for _ in range(IN_FLIGHT_PER_GENERATOR)]
    while todo or running:
        while todo and free:
            gen = free.pop()
            running[gen.generate.remote(encode(todo.popleft()))] = gen
        done, _ = ray.wait(list(running), num_returns=1)
        free.append(running.pop(done[0]))
        on_groups(decode(ray.get(done[0])))


def _row(group) -> dict[str, Any]:
    from pfrl.tasks.io import problem_to_dict

    return {**problem_to_dict(group.item.problem), "completions": group.completions}


def _run_sampling(cfg: Any, model: str, problems: list, show_progress: bool) -> tuple[list, Tally, float]:
    """Sample every problem; returns the groups in file order, the tally and the sampling time
    (engine start excluded)."""
    import ray

    from pfrl.console import progress_bar
    from pfrl.types import PromptItem

    gens = _start_generators(cfg, model)
    ray.get([g.policy_version.remote() for g in gens])  # wait for every engine to be up
    groups: dict[str, Any] = {}
    tally = Tally()
    items = [PromptItem(problem=p, iteration=0) for p in problems]
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("generate", total=len(items), info="", visible=show_progress)

        def on_groups(batch: list) -> None:
            for g in batch:
                groups[g.item.problem.id] = g
                tally.prompts += 1
                tally.completions += len(g.completions)
                tally.tokens += g.completion_tokens
                tally.too_long += not g.completions
            elapsed = time.perf_counter() - start
            bar.update(task, completed=tally.prompts, info=f"{tally.tokens / max(elapsed, 1e-9):.0f} tok/s")

        _sample(gens, items, cfg.generator.prompts_per_request, on_groups)
    elapsed = time.perf_counter() - start
    ray.get([g.stop.remote() for g in gens])
    return [groups[p.id] for p in problems], tally, elapsed


def run(args: argparse.Namespace) -> int:
    from pfrl.model_dir import check_model_dir
    from pfrl.prompting import render_problems
    from pfrl.tasks.io import write_jsonl
    from pfrl.tasks.loaders import load_problems

    cfg = _config(args)
    check_model_dir(args.model, cfg.model.max_length)
    loaded = load_problems(args.prompts, cfg.data.fields, cfg.data.max_bad_records)
    problems = render_problems(loaded.problems, cfg.model, args.model)
    import ray

    from pfrl.fleet import start_ray

    # Every engine logs its start-up; forwarded here they would drown the progress bar and the
    # result line. They stay in Ray's session logs; failures still surface as exceptions.
    started_ray = start_ray(cfg, log_to_driver=False)
    try:
        groups, tally, elapsed = _run_sampling(cfg, args.model, problems, not args.no_progress)
    finally:
        if started_ray:
            ray.shutdown()
    write_jsonl(args.out, (_row(g) for g in groups if g.completions))
    if tally.too_long:
        print(
            f"{tally.too_long} prompt(s) longer than model.max_length={cfg.model.max_length} tokens: left out"
        )
    print(
        f"{tally.prompts} prompts, {tally.completions} completions, {tally.tokens} tokens in {elapsed:.1f}s "
        f"with {cfg.generator.num_generators} generator(s): {tally.prompts / elapsed:.2f} prompts/s, "
        f"{tally.tokens / elapsed:.1f} generated tokens/s -> {args.out}"
    )
    return 0
