"""`pfrl status RUN_DIR [--json]`: where a run is and how fast it goes."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# Throughput keys averaged over the most recent steps.
RECENT_KEYS = ("gen/tokens_per_s", "gen/prompts_per_s", "label/groups_per_s", "learner/tokens_per_s",
               "learner/step_s", "learner/idle_frac", "sync/ms", "dpo/loss", "dpo/reward_acc")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="A pfrl run directory.")
    p.add_argument("--json", action="store_true", help="One JSON object, for scripts.")
    p.add_argument("--recent", type=int, default=10, help="Steps averaged for recent throughput.")
    p.add_argument("--samples", type=int, default=3, help="Recent samples.jsonl lines shown (0: none).")


def summarize(run_dir: Path, recent: int, samples: int = 3) -> dict:
    from pfrl.checkpoint import CheckpointStore
    from pfrl.metrics import read_metrics
    from pfrl.samples import recent_samples

    records = read_metrics(run_dir)
    # Evaluations at the run's start and end write lines of their own, without the step's
    # throughput and buffer figures: those come from the learner-step lines only.
    steps = [r for r in records if "learner/step_s" in r]
    last, last_step = (records[-1] if records else {}), (steps[-1] if steps else {})
    window = steps[-recent:]
    evals = [r for r in records if "eval/accuracy" in r]
    latest = CheckpointStore(run_dir, keep_last=1).latest()
    state_file = run_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    return {
        "run_dir": str(run_dir),
        "state": state.get("state", "unknown"),
        "step": last.get("step", 0),
        "iteration": last.get("iteration", 0),
        "policy_version": last.get("policy_version", 0),
        "seconds_since_last_step": round(time.time() - last["time"], 1) if last else None,
        "recent": _means(window, RECENT_KEYS),
        "policy_lag": last_step.get("buffer/policy_lag"),
        "dropped_stale": last_step.get("buffer/dropped_stale"),
        "first_eval": {"step": evals[0]["step"], "accuracy": evals[0]["eval/accuracy"]} if evals else None,
        "last_eval": {"step": evals[-1]["step"], "accuracy": evals[-1]["eval/accuracy"]} if evals else None,
        "latest_checkpoint": latest.name if latest else None,
        "samples": recent_samples(run_dir, samples),
    }


def _means(records: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """Each key's mean over the records that carry it (sync/ms is only there on sync steps)."""
    out = {}
    for key in keys:
        values = [r[key] for r in records if key in r]
        if values:
            out[key] = sum(values) / len(values)
    return out


def run(args: argparse.Namespace) -> int:
    from pfrl.console import console

    summary = summarize(Path(args.run_dir), args.recent, args.samples)
    if args.json:
        print(json.dumps(summary))
        return 0
    console.print(f"[bold]{summary['run_dir']}[/]: {summary['state']}, step {summary['step']}, "
                  f"iteration {summary['iteration']}, policy v{summary['policy_version']}, "
                  f"checkpoint {summary['latest_checkpoint']}")
    for key, value in summary["recent"].items():
        console.print(f"  {key:24s} {value:10.3f}")
    console.print(f"  policy lag {summary['policy_lag']}, dropped stale {summary['dropped_stale']}")
    for name in ("first_eval", "last_eval"):
        if summary[name]:
            console.print(f"  {name.replace('_', ' ')}: accuracy {summary[name]['accuracy']:.3f} at step {summary[name]['step']}")
    for s in summary["samples"]:
        _print_sample(console, s)
    return 0


def _print_sample(console, s: dict) -> None:
    label = f"label {s['label']!r}" + (f" (vote {s['vote_share']:.2f})" if s["vote_share"] is not None else "")
    outcome = f"no pair: {s['skipped']}" if s["skipped"] else f"{len(s['pairs'])} pairs"
    console.print(f"  sample step {s['step']} {s['prompt_id']}: {label}, scores {s['scores']}, {outcome}", markup=False)
    console.print(f"    {s['completions'][0][:120]!r}", markup=False)
