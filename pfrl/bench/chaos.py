"""`pfrl bench chaos --trials N [--json OUT]`: kill `pfrl train` at every place it can die, resume, audit.

Trial i runs plan i (mod 10) of PLANS, which together cover every kill point once in 10 trials:
kill -9 of the driver between steps, inside a learner step, a weight sync, an evaluation, a
checkpoint write and its rename, at an iteration boundary; SIGTERM; the learner actor killed (the
run stops with its resume hint); a labeller actor killed and the generators killed twice in a row
(the run carries on). Each resumed run is audited (pfrl/chaos.py). Prints a table; `--json OUT`
writes the totals (trials, resumed_ok, prompts_lost, prompts_repeated) and one entry per trial.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from pfrl.chaos import Fault, TrialReport
from pfrl.commands import add_config_args

PLANS: list[list[Fault]] = [
    [Fault("between_steps", 3)],
    [Fault("learner_step", 2)],
    [Fault("weight_sync", 2)],
    [Fault("evaluation", 1)],  # the eval of step 4 (eval every 4 steps)
    [Fault("checkpoint_write", 3)],  # the checkpoint of step 4 (every 2 steps)
    [Fault("checkpoint_rename", 3)],
    [Fault("iteration_boundary", 1)],
    [Fault("sigterm", 2), Fault("learner_actor", 4)],
    [Fault("labeller_actor", 2)],
    [Fault("generator_twice", 2)],
]

# A short run of the preset: 2 iterations of 24 prompts, a checkpoint every 2 steps, an eval every 4.
SHORT_RUN = [
    "run.iterations=2", "data.prompts_per_iteration=24", "generator.n_samples=8", "generator.max_tokens=48",
    "generator.prompts_per_request=8", "learner.pairs_per_step=2", "learner.micro_batch_pairs=2",
    "checkpoint.every_steps=2", "metrics.eval_every_steps=4", "metrics.eval_prompts=16", "metrics.tensorboard=false",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, default=10, help="Trial i runs kill plan i mod 10 (10 cover every point).")
    p.add_argument("--first", type=int, default=0, help="Start at this plan (a short form: --first 5 --trials 3).")
    add_config_args(p, "pfrl config (default: the tiny math preset).", "configs/tiny-math.yaml",
                    "Overrides after the built-in short-run ones (e.g. model.path=DIR).")
    p.add_argument("--out", default=None, help="Directory for the trial runs (default: a temp dir).")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="Write the figures here.")
    p.add_argument("--timeout", type=float, default=1800, help="Seconds allowed per run of a trial.")


def run_trials(config: str, root: Path, plans: list[list[Fault]], overrides: list[str], timeout_s: float) -> dict:
    from pfrl.chaos import run_trial

    entries = []
    for i, plan in enumerate(plans):
        report = run_trial(config, root / f"trial-{i}", plan, [*SHORT_RUN, *overrides], timeout_s)
        entries.append(_entry(plan, report))
        _print_row(entries[-1])
    return {
        "trials": len(entries),
        "resumed_ok": sum(e["resumed_ok"] for e in entries),
        "prompts_lost": sum(e["prompts_lost"] for e in entries),
        "prompts_repeated": sum(e["prompts_repeated"] for e in entries),
        "per_trial": entries,
    }


def _entry(plan: list[Fault], report: TrialReport) -> dict:
    ok = report.resumed_ok and report.faults_injected == len(plan)
    return {"faults": [f.description for f in plan], "runs": report.runs, "faults_injected": report.faults_injected,
            "prompts_lost": report.prompts_lost, "prompts_repeated": report.prompts_repeated,
            "steps": len(report.steps), "step_gaps_or_repeats": report.step_gaps_or_repeats,
            "final_loads": report.final_loads, "notes": report.notes, "resumed_ok": ok, "log": report.log}


def _print_row(e: dict) -> None:
    print(f"{' + '.join(e['faults']):48s} {e['runs']:4d} {e['prompts_lost']:6d} {e['prompts_repeated']:8d} "
          f"{'yes' if e['resumed_ok'] else 'NO':>10s}  {'; '.join(e['notes'])}", flush=True)


def run(args: argparse.Namespace) -> int:
    root = Path(args.out or tempfile.mkdtemp(prefix="pfrl-chaos-"))
    plans = [PLANS[(args.first + i) % len(PLANS)] for i in range(args.trials)]
    print(f"{'kill point':48s} {'runs':>4s} {'lost':>6s} {'repeated':>8s} {'resumed ok':>10s}", flush=True)
    result = run_trials(args.config, root, plans, args.overrides, args.timeout)
    print(f"{result['resumed_ok']}/{result['trials']} trials resumed ok; {result['prompts_lost']} prompts lost, "
          f"{result['prompts_repeated']} repeated (runs under {root})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    return 0 if result["resumed_ok"] == result["trials"] else 1
