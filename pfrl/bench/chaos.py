"""`pfrl bench chaos`: kill -9 / resume trials of `pfrl train`, then audit ledger and steps."""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/tiny-math.yaml")
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--kills", type=int, default=2, help="Faults injected per trial.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--out", default=None, help="Directory for the trial runs (default: a temp dir).")
    p.add_argument("--seed", type=int, default=0)


def _faults(rng: random.Random, kills: int, max_step: int) -> list:
    from pfrl.chaos import Fault

    faults = []
    for k in range(kills):
        if k % 2 == 1:
            faults.append(Fault(during_checkpoint=True, description="during a checkpoint write"))
        else:
            step = rng.randint(1, max(1, max_step))
            faults.append(Fault(after_step=step, description=f"after step {step}"))
    return faults


def run(args: argparse.Namespace) -> int:
    from pfrl.chaos import run_trial

    rng = random.Random(args.seed)
    root = Path(args.out or tempfile.mkdtemp(prefix="pfrl-chaos-"))
    totals = {"faults_injected": 0, "runs_survived": 0, "prompts_lost": 0, "prompts_repeated": 0, "step_errors": 0}
    for trial in range(args.trials):
        faults = _faults(rng, args.kills, max_step=4 * (trial + 1))
        report = run_trial(args.config, root / f"trial-{trial}", faults, args.overrides)
        totals["faults_injected"] += report.faults_injected
        totals["runs_survived"] += int(report.completed)
        totals["prompts_lost"] += report.prompts_lost
        totals["prompts_repeated"] += report.prompts_repeated
        totals["step_errors"] += int(report.step_gaps_or_repeats)
        print(json.dumps({"trial": trial, "faults": [f.description for f in faults], "completed": report.completed,
                          "steps": len(report.steps), "prompts_lost": report.prompts_lost,
                          "prompts_repeated": report.prompts_repeated, "log": report.log}))
    print(json.dumps({"trials": args.trials, **totals}))
    return 0 if totals["runs_survived"] == args.trials and not totals["prompts_lost"] else 1
