"""`pfrl bootstrap --task math|code --out DIR [--seed S] [--small]`."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=["math", "code"], required=True)
    p.add_argument("--out", required=True, help="Model directory to create (HF format, plus data/).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="A reduced size for tests (seconds, not minutes).")


def run(args: argparse.Namespace) -> int:
    from pfrl.bootstrap import BootstrapSpec, bootstrap
    from pfrl.console import console, progress_bar

    spec = BootstrapSpec.small() if args.small else BootstrapSpec()
    with progress_bar() as bar:
        task = bar.add_task(f"SFT tiny {args.task} model", total=spec.steps, info="")

        def on_step(step: int, loss: float) -> None:
            bar.update(task, completed=step + 1, info=f"loss {loss:.3f}")

        out = bootstrap(args.task, args.out, seed=args.seed, spec=spec, progress=on_step)
    console.print(f"model and data written to {out} (data/train.jsonl, data/heldout.jsonl)")
    return 0
