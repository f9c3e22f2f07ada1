"""`pfrl dpo --model DIR --pairs PAIRS.jsonl --out OUT [--config FILE] [--set learner.beta=0.5 ...]`

Offline DPO on a pairs file with the DeepSpeed learner: the training stage of the paper's offline
pipeline, and a way to debug the learner on fixed data. The reference model is the starting model.
One rank runs in this process; `learner.num_learners > 1` starts a local Ray (or joins
`cluster.ray_address`) and trains with a learner group.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pfrl.commands import add_config_args

if TYPE_CHECKING:
    from pfrl.config import LearnerSection


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="Hugging Face model directory: the policy and the reference."
    )
    p.add_argument(
        "--pairs", required=True, help='JSONL rows {"prompt", "chosen", "rejected"} (pfrl label --pairs-out).'
    )
    p.add_argument("--out", required=True, help="Where the trained Hugging Face model directory is written.")
    add_config_args(p, "YAML config file (the learner, model, data and run sections apply).")
    p.add_argument("--metrics-out", default=None, help="Also write each step's metrics here as JSON lines.")
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")


def epoch_batches(
    pairs: list, batch_size: int, epochs: int, seed: int, shuffle: bool, min_size: int
) -> list[list]:
    """Global batches for all epochs; each epoch reshuffled (seeded). A last batch too small to give
    every rank a pair is dropped."""
    batches: list[list] = []
    for epoch in range(epochs):
        order = list(pairs)
        if shuffle:
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        batches.extend(c for c in chunks if len(c) >= min_size)
    return batches


@contextmanager
def open_learner(cfg, model_path: str) -> Iterator:
    """A DPOEngine in this process for one rank; a Ray learner group for more."""
    if cfg.learner.num_learners == 1:
        from learner.engine import DPOEngine

        yield DPOEngine(model_path, cfg.learner, cfg.model, cfg.run.seed)
        return
    import ray

    from pfrl.fleet import start_ray
    from pfrl.learner_group import LearnerGroup

    started = start_ray(cfg)
    group = None
    try:
        group = LearnerGroup(cfg, model_path, cfg.run.seed)
        yield group
    finally:
        if group is not None:
            group.shutdown()
        if started:
            ray.shutdown()


def _train(
    learner, batches: list[list], cfg: LearnerSection, show_progress: bool, metrics_out: str | None
) -> list[dict[str, float]]:
    """All the batches as one schedule (warmup, cosine to the floor over exactly these steps)."""
    from learner.optim import lr_at
    from pfrl.console import progress_bar

    history: list[dict[str, float]] = []
    sink = open(metrics_out, "w", encoding="utf-8") if metrics_out else None  # noqa: SIM115
    try:
        bar = progress_bar()
        bar.disable = not show_progress  # read when the bar starts, so set before entering
        with bar:
            task = bar.add_task("dpo", total=len(batches), info="")
            for step, batch in enumerate(batches):
                m = learner.train_step(batch, lr_at(step, len(batches), cfg))
                history.append(m)
                if sink:
                    sink.write(json.dumps({"step": step + 1, **m}) + "\n")
                bar.update(
                    task,
                    advance=1,
                    info=(
                        f"loss {m['learner/loss']:.4f}  reward acc {m['learner/reward_acc']:.2f}  "
                        f"margin {m['learner/margin']:+.3f}"
                    ),
                )
    finally:
        if sink:
            sink.close()
    return history


def _summary(history: list[dict[str, float]], elapsed: float, steps_per_epoch: int) -> str:
    last = history[-steps_per_epoch:]
    pairs = sum(m["learner/pairs"] for m in last)

    def mean(key: str) -> float:
        return sum(m[key] * m["learner/pairs"] for m in last) / pairs

    tokens = sum(m["learner/tokens"] for m in history)
    return (
        f"{len(history)} steps, {tokens:.0f} tokens in {elapsed:.1f} s ({tokens / elapsed:.0f} tokens/s); "
        f"last epoch: loss {mean('learner/loss'):.4f}, reward acc {mean('learner/reward_acc'):.3f}, "
        f"margin {mean('learner/margin'):+.4f} (first step loss {history[0]['learner/loss']:.4f})"
    )


def _quiet_loading() -> None:
    """The progress bar is the run's output; per-file weight-loading bars would interleave with it."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def run(args: argparse.Namespace) -> int:
    from learner.engine import check_out_dir
    from learner.pairs_file import read_pairs
    from pfrl.config import load_config
    from pfrl.model_dir import check_model_dir

    cfg = load_config(args.config, args.overrides)
    _quiet_loading()
    check_model_dir(args.model)
    check_out_dir(args.out)
    pair_file = read_pairs(args.pairs, cfg.data.max_bad_records)
    for line, why in pair_file.bad[:5]:
        print(f"pfrl dpo: skipped {args.pairs} line {line}: {why}", file=sys.stderr)
    if len(pair_file.bad) > 5:
        print(f"pfrl dpo: ... {len(pair_file.bad)} bad rows skipped in all", file=sys.stderr)
    lc = cfg.learner
    batches = epoch_batches(
        pair_file.pairs, lc.pairs_per_step, lc.epochs, cfg.run.seed, cfg.data.shuffle, lc.num_learners
    )
    if not batches:
        from pfrl.errors import UserError

        raise UserError(
            f"{args.pairs}: {len(pair_file.pairs)} pairs cannot feed {lc.num_learners} learner ranks"
        )
    print(
        f"pfrl dpo: {len(pair_file.pairs)} pairs ({len(pair_file.bad)} bad rows skipped), "
        f"{lc.epochs} epoch(s), {len(batches)} steps of up to {lc.pairs_per_step} pairs",
        file=sys.stderr,
    )
    start = time.perf_counter()
    with open_learner(cfg, args.model) as learner:
        history = _train(learner, batches, lc, not args.no_progress, args.metrics_out)
        learner.save_hf(args.out)
    print(f"pfrl dpo: {_summary(history, time.perf_counter() - start, len(batches) // lc.epochs)}")
    print(f"pfrl dpo: model written to {args.out}")
    return 0
