"""`pfrl bench e2e --updates N`: the whole loop, side by side, to the same number of updates.

Three systems train the same model on the same prompt pool, with the same answer-checking score
and the same pairs per update, each for N optimizer updates, one after the other:

  online    `pfrl train` with `buffer.max_policy_lag: 1` (generation, labelling, learning overlap)
  lockstep  `pfrl train` with `buffer.max_policy_lag: 0` (sample -> label -> train -> sync)
  trl       TRL's `OnlineDPOTrainer` (the `bench` extra; pfrl/bench/trl_online.py)

The score: TRL's reward functions see one completion at a time, so it cannot vote over a group
(self-consistency); every system is scored against the records' answers instead (pfrl with
`labeller.source=ground_truth`). The pfrl runs use the config (default: the tiny math preset) with
BENCH_SETTINGS on top: no evaluations or checkpoints inside the timed part, `run.max_steps=N`.
Each system runs as its own process; times are epoch times, so start-up (imports, Ray, the vLLM
engine, DeepSpeed) counts in `wall_s`, launch to the N-th update, and not in `train_s`, from the
training loop's start (pfrl: RUN_DIR/placement.json written, actors up; TRL: `on_train_begin`).
Afterwards every final model, and the starting one, is scored greedily on the same held-out
problems by `pfrl eval`. Figures are printed, never asserted; `--json OUT` writes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pfrl.bench.launch import TIMED_OUT, run_logged
from pfrl.bench.report import add_json_argument, write_json
from pfrl.commands import add_config_args

SYSTEMS = ("online", "lockstep", "trl")
# Each pfrl system's settings on top of the shared ones. `online_unstaged` (opt-in, --systems) is
# online with the weights received inside the generator's swap (`sync.staged=false`): the sync
# before staged syncs, for a before/after in one run.
PFRL_SYSTEMS = {
    "online": ["buffer.max_policy_lag=1"],
    "lockstep": ["buffer.max_policy_lag=0"],
    "online_unstaged": ["buffer.max_policy_lag=1", "sync.staged=false"],
}


@dataclass
class SystemFigures:
    """One system's run to N updates."""

    name: str
    wall_s: float  # launch -> N-th update
    train_s: float  # training loop start -> N-th update
    s_per_update: float  # between the first and the N-th update
    tokens_per_s: float  # completion tokens generated per second of the training loop
    learner_idle_frac: float
    pairs_trained: int
    stale_dropped: int
    step_s: float | None  # median optimizer step (pfrl: learner/step_s)
    sync_ms: float | None  # median weight sync (pfrl: sync/ms)
    final: str
    accuracy: float | None = None
    # pfrl: learner idle over steps 2..N, the window s_per_update covers (step 1 waits out the first
    # rollouts of the run, which no loop can overlap: 0.97 of that step, 0.05 of a 20-step mean)
    learner_idle_after_first: float | None = None
    # pfrl: labelled prompts sent back to be sampled again because no step could use their pairs
    # (generation spent, no pair dropped); TRL samples exactly its batches: 0
    resampled_prompts: int = 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--updates", type=int, default=10, help="Optimizer updates per system (default 10).")
    add_config_args(p, "pfrl config (default: the tiny math preset).", "configs/tiny-math.yaml",
                    "Config override for every system, after BENCH_SETTINGS (e.g. model.path=DIR, "
                    "learner.pairs_per_step=16).")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="Comma-separated subset of online, lockstep, trl, "
                   "and online_unstaged (online with sync.staged=false: the weights received inside the swap).")
    p.add_argument("--eval-prompts", type=int, default=128, help="Held-out problems scored per model (default 128).")
    p.add_argument("--out", default=None, help="Directory for the runs and logs (default: a temp dir).")
    p.add_argument("--timeout", type=float, default=3600, help="Seconds allowed per system's run.")
    add_json_argument(p)


def bench_settings(updates: int) -> list[str]:
    """What every pfrl run gets on top of the config: the score TRL can express, N updates, and no
    evaluation or checkpoint inside the timed part (TRL saves and scores nothing while training)."""
    return [
        "labeller.source=ground_truth",
        f"run.max_steps={updates}",
        "metrics.eval_every_steps=null",
        f"checkpoint.every_steps={updates + 1}",
        "metrics.tensorboard=false",
    ]


def run(args: argparse.Namespace) -> int:
    from pfrl.config import load_config
    from pfrl.errors import UserError
    from pfrl.preflight import resolve_model

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := set(systems) - {*SYSTEMS, *PFRL_SYSTEMS}:
        raise UserError(f"--systems: unknown {sorted(unknown)} ({', '.join([*SYSTEMS, 'online_unstaged'])})")
    if args.updates < 2:
        raise UserError("--updates must be at least 2 (time per update is measured between updates)")
    overrides = [*bench_settings(args.updates), *args.overrides]
    cfg = load_config(args.config, overrides)
    model = resolve_model(cfg)  # the bootstrap is built here, once, outside every timed run
    overrides.append(f"model.path={model}")
    root = Path(args.out or tempfile.mkdtemp(prefix="pfrl-bench-e2e-"))
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, SystemFigures] = {}
    for name in systems:
        print(f"e2e bench: running {name} to {args.updates} updates (log: {root / (name + '.log')})", flush=True)
        if name == "trl":
            results[name] = _run_trl(cfg, model, args.updates, root, args.timeout)
        else:
            results[name] = _run_pfrl(name, args.config, overrides, args.updates, root, args.timeout)
    heldout = cfg.data.heldout_file or str(Path(model) / "data" / "heldout.jsonl")
    start_acc = _accuracy(args.config, overrides, model, heldout, args.eval_prompts, root / "eval-start.log")
    for fig in results.values():
        fig.accuracy = _accuracy(args.config, overrides, fig.final, heldout, args.eval_prompts,
                                 root / f"eval-{fig.name}.log")
    figures = summarise(results, args.updates, cfg.learner.pairs_per_step, start_acc)
    _print_table(figures)
    write_json(args.json_out, "e2e", figures)
    return 0


# -- the runs ---------------------------------------------------------------------------------
def _launch(name: str, cmd: list[str], log_path: Path, timeout_s: float) -> float:
    """Run `cmd` to its end in its own session (Ray's daemons with it); its launch epoch time."""
    from pfrl.errors import UserError

    launch = time.time()
    code = run_logged(cmd, log_path, timeout_s)
    if code == TIMED_OUT:
        raise UserError(f"{name}: not done in {timeout_s:.0f}s (--timeout); see {log_path}")
    if code != 0:
        raise UserError(f"{name}: exited {code}; see {log_path}")
    return launch


def _run_pfrl(name: str, config: str, overrides: list[str], updates: int, root: Path, timeout_s: float) -> SystemFigures:
    run_dir = root / name
    cmd = [sys.executable, "-m", "pfrl.cli", "train", "--config", config]
    for o in [*overrides, *PFRL_SYSTEMS[name], f"run.dir={run_dir}"]:
        cmd += ["--set", o]
    launch = _launch(name, cmd, root / f"{name}.log", timeout_s)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    loop_start = (run_dir / "placement.json").stat().st_mtime
    return pfrl_figures(name, records, updates, launch, loop_start, str(run_dir / "final"))


def pfrl_figures(name: str, records: list[dict], updates: int, launch: float, loop_start: float,
                 final: str) -> SystemFigures:
    """One pfrl run's figures from its metrics.jsonl step records (the last record of each step).
    A run that ended before N updates (its prompts ran out) is not comparable: a one-line error."""
    from pfrl.errors import UserError

    by_step = {r["step"]: r for r in records if "learner/step_s" in r and 1 <= r["step"] <= updates}
    if updates not in by_step:
        raise UserError(f"{name}: the run ended after {max(by_step, default=0)} of {updates} updates (its prompts "
                        "ran out: more data.prompts_per_iteration or run.iterations, or fewer --updates)")
    steps = [by_step[s] for s in sorted(by_step)]
    first, last = steps[0], steps[-1]
    syncs = [r["sync/ms"] for r in steps if r.get("sync/ms")]
    return SystemFigures(
        name=name,
        wall_s=last["time"] - launch,
        train_s=last["time"] - loop_start,
        s_per_update=(last["time"] - first["time"]) / max(1, last["step"] - first["step"]),
        tokens_per_s=statistics.fmean(r["gen/tokens_per_s"] for r in steps),  # each a 30 s window's rate
        learner_idle_frac=statistics.fmean(r["learner/idle_frac"] for r in steps),
        pairs_trained=int(sum(r["learner/pairs"] for r in steps)),
        stale_dropped=int(last["buffer/dropped_stale"]),
        step_s=statistics.median(r["learner/step_s"] for r in steps),
        sync_ms=statistics.median(syncs) if syncs else None,
        final=final,
        learner_idle_after_first=statistics.fmean(r["learner/idle_frac"] for r in steps[1:]) if updates > 1 else None,
        resampled_prompts=int(last.get("label/resampled", 0)),
    )


def _trl_spec(cfg: Any, model: str, updates: int, out_dir: Path) -> dict[str, Any]:
    """TRL's settings, each taken from the pfrl config the other two runs use."""
    from pfrl.prompting import render_problems
    from pfrl.tasks.loaders import load_problems

    train_file = cfg.data.train_file or str(Path(model) / "data" / "train.jsonl")
    problems = render_problems(load_problems(train_file, cfg.data.fields).problems, cfg.model, model)
    lc, g = cfg.learner, cfg.generator
    return {
        "model": model, "problems": [{"id": p.id, "prompt": p.prompt, "answer": p.answer} for p in problems],
        "pairs_per_update": lc.pairs_per_step, "updates": updates, "lr": lc.lr, "grad_clip": lc.grad_clip,
        "beta": lc.beta, "max_tokens": g.max_tokens, "max_length": cfg.model.max_length,
        "temperature": g.temperature, "top_p": g.top_p, "seed": cfg.run.seed, "out_dir": str(out_dir),
    }


def _run_trl(cfg: Any, model: str, updates: int, root: Path, timeout_s: float) -> SystemFigures:
    from pfrl.errors import UserError

    try:
        import trl  # noqa: F401
    except ImportError:
        raise UserError("TRL is not installed: pip install -e '.[bench]' (or pass --systems online,lockstep)") from None
    spec_path, result_path = root / "trl-spec.json", root / "trl-result.json"
    spec_path.write_text(json.dumps(_trl_spec(cfg, model, updates, root / "trl")))
    cmd = [sys.executable, "-m", "pfrl.bench.trl_online", str(spec_path), str(result_path)]
    launch = _launch("trl", cmd, root / "trl.log", timeout_s)
    return trl_figures(json.loads(result_path.read_text()), launch)


def trl_figures(result: dict[str, Any], launch: float) -> SystemFigures:
    updates, begin = result["updates"], result["train_begin"]
    train_s = updates[-1] - begin
    return SystemFigures(
        name="trl", wall_s=updates[-1] - launch, train_s=train_s,
        s_per_update=(updates[-1] - updates[0]) / max(1, len(updates) - 1),
        tokens_per_s=result["completion_tokens"] / train_s,
        learner_idle_frac=min(1.0, result["wait_s"] / train_s),  # its learner waits out generation and scoring
        pairs_trained=result["pairs_per_update"] * len(updates), stale_dropped=0, step_s=None, sync_ms=None,
        final=result["final"],
    )


def _accuracy(config: str, overrides: list[str], model: str, heldout: str, limit: int, log: Path) -> float | None:
    """Greedy held-out accuracy by `pfrl eval` (its own process: one vLLM engine per model)."""
    cmd = [sys.executable, "-m", "pfrl.cli", "eval", "--config", config, "--model", model, "--data", heldout,
           "--limit", str(limit)]
    for o in overrides:
        if not o.startswith("model.path="):
            cmd += ["--set", o]
    done = subprocess.run(cmd, capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        print(f"  held-out eval of {model} failed (exit {done.returncode}); see {log}")
        return None
    return float(json.loads(done.stdout.strip().splitlines()[-1])["accuracy"])


# -- the figures ------------------------------------------------------------------------------
def separate_devices(lockstep: SystemFigures) -> dict[str, float] | None:
    """What online / lockstep would be with generation and learning on separate devices, from the
    lockstep run's per-phase times (each phase runs alone there, so none is slowed by the other).

    Lockstep does them one after another: update = gen+label + learn + sync. Online with its own
    devices overlaps them, so an update takes the longer of gen+label and learn + sync."""
    if lockstep.step_s is None:
        return None
    sync_s = (lockstep.sync_ms or 0.0) / 1000
    learn_s = lockstep.step_s + sync_s
    gen_label_s = max(0.0, lockstep.s_per_update - learn_s)
    online_s = max(gen_label_s, learn_s)
    return {"gen_label_s": gen_label_s, "learn_s": lockstep.step_s, "sync_s": sync_s,
            "online_s_per_update": online_s, "lockstep_s_per_update": lockstep.s_per_update,
            "ratio": lockstep.s_per_update / online_s if online_s > 0 else float("nan")}


def summarise(results: dict[str, SystemFigures], updates: int, pairs_per_update: int,
              start_accuracy: float | None) -> dict[str, Any]:
    figures: dict[str, Any] = {"updates": updates, "pairs_per_update": pairs_per_update,
                               "score": "answer check against the records' answers (ground_truth)",
                               "start_accuracy": start_accuracy,
                               "systems": {name: asdict(fig) for name, fig in results.items()}}
    online = results.get("online")
    if online is not None:
        figures["learner_idle_frac"] = online.learner_idle_frac
        figures["learner_idle_frac_after_first"] = online.learner_idle_after_first
        for other in ("trl", "lockstep"):
            if other in results:
                figures[f"ratio_vs_{other}"] = results[other].wall_s / online.wall_s
                figures[f"ratio_vs_{other}_train"] = results[other].train_s / online.train_s
                figures[f"ratio_vs_{other}_per_update"] = results[other].s_per_update / online.s_per_update
    if "lockstep" in results:
        figures["separate_devices"] = separate_devices(results["lockstep"])
        base = results["lockstep"].sync_ms
        for name in ("online", "online_unstaged"):  # what a sync costs the learner online (target <= 2x)
            sync = results[name].sync_ms if name in results else None
            if sync is not None and base:
                figures[f"sync_{name}_vs_lockstep"] = sync / base
    return figures


def _print_table(figures: dict[str, Any]) -> None:
    def cell(v, fmt):
        return format(v, fmt) if v is not None else "-"

    print(f"\ne2e bench: {figures['updates']} updates x {figures['pairs_per_update']} pairs; score: {figures['score']} "
          "(TRL cannot vote over a group, so no system uses self-consistency here)")
    print(f"{'system':9s} {'wall s':>8s} {'train s':>8s} {'s/update':>9s} {'gen tok/s':>10s} {'idle':>6s} "
          f"{'pairs':>6s} {'stale':>6s} {'resampled':>9s} {'held-out acc':>12s}")
    for s in figures["systems"].values():
        print(f"{s['name']:9s} {s['wall_s']:8.1f} {s['train_s']:8.1f} {s['s_per_update']:9.2f} "
              f"{s['tokens_per_s']:10.0f} {s['learner_idle_frac']:6.2f} {s['pairs_trained']:6d} "
              f"{s['stale_dropped']:6d} {s.get('resampled_prompts', 0):9d} {cell(s['accuracy'], '12.3f')}")
    print(f"held-out accuracy of the starting model: {cell(figures['start_accuracy'], '.3f')}")
    if figures.get("learner_idle_frac_after_first") is not None:
        print(f"online learner idle: {figures['learner_idle_frac']:.3f} over all steps, "
              f"{figures['learner_idle_frac_after_first']:.3f} after the first (the window of s/update)")
    for key in ("ratio_vs_trl", "ratio_vs_lockstep"):
        if key in figures:
            print(f"{key:18s}: {figures[key]:.2f} to {figures['updates']} updates (launch included), "
                  f"{figures[key + '_train']:.2f} from the loop's start, {figures[key + '_per_update']:.2f} per update")
    for name in ("online", "online_unstaged"):
        if f"sync_{name}_vs_lockstep" in figures:
            print(f"sync {name} / lockstep: {figures[f'sync_{name}_vs_lockstep']:.2f} "
                  f"({figures['systems'][name]['sync_ms']:.0f} vs {figures['systems']['lockstep']['sync_ms']:.0f} ms, median)")
    sep = figures.get("separate_devices")
    if sep:
        print(f"separate devices  : online/lockstep {sep['ratio']:.2f} (from lockstep's phases: gen+label "
              f"{sep['gen_label_s']:.2f} s, learn {sep['learn_s']:.2f} s, sync {sep['sync_s']:.3f} s per update)")
