"""`pfrl bench fidelity`: pseudo labels vs ground truth, in miniature, with baselines and seeds.

The paper's claim (../shared/METHOD.md): DPO on pseudo feedback (the policy's own votes) trains
reasoning nearly as well as DPO on ground truth. Per task, arms with the same budget of learner
steps, all from one bootstrap model (built once, or `--bootstrap DIR`), each seed a `run.seed`:

  sft      the bootstrap model, not trained (evaluated only)
  dpo-sc   self-consistency labels; the TRAIN records are copied without their labels (math:
           `answer`; code: `test_outputs`; and any frontier `reference`), so nothing but the
           policy's own votes can label them
  dpo-gt   ground-truth labels (`labeller.source=ground_truth`, records as they are): the upper
           reference
  pdpo-sc  dpo-sc plus step-level pDPO (`labeller.step_pairs.ratio=1.0`); math only
  pdpo-gt  dpo-gt plus step-level pDPO: separates what step pairs do from what the votes' label
           noise does to them (a wrong majority makes every correct prefix "bad"); math only

Every arm runs `pfrl train` on the task's preset with the same settings (ARM_KEYS are the only
keys that differ, checked by a unit test). The held-out set keeps its ground truth: every final
model is scored by `pfrl eval` (greedy accuracy, maj@K and pass@K over K samples at temperature 1).
Prints mean +- sd over seeds, writes a PNG, and with `--json OUT`
`{"math": {"sft": {"greedy": [per seed], "maj@8": [...], "pass@8": [...], ...}, ...}, "code": {...}}`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfrl.bench.launch import run_logged
from pfrl.bench.report import add_json_argument, write_json
from pfrl.commands import add_set_arg

CONFIGS = {"math": "configs/tiny-math.yaml", "code": "configs/tiny-code.yaml"}
TASK_ARMS = {"math": ("sft", "dpo-sc", "dpo-gt", "pdpo-sc", "pdpo-gt"), "code": ("sft", "dpo-sc", "dpo-gt")}
# What a self-consistency arm's train records lose: every label that is not the policy's own vote.
STRIP_KEYS = {
    "math": ("answer", "reference"),
    "code": ("test_outputs", "reference", "reference_test_inputs", "reference_test_outputs", "eval_tests"),
}
# The only config keys whose values differ between arms (besides run.dir and run.seed).
ARM_KEYS = ("labeller.source", "labeller.step_pairs.ratio", "data.train_file")


@dataclass(frozen=True)
class Arm:
    name: str
    source: str | None  # None: not trained
    strip: bool  # train on the records without their labels
    step_ratio: float = 0.0


ARMS = {
    "sft": Arm("sft", None, strip=False),
    "dpo-sc": Arm("dpo-sc", "self_consistency", strip=True),
    "dpo-gt": Arm("dpo-gt", "ground_truth", strip=False),
    "pdpo-sc": Arm("pdpo-sc", "self_consistency", strip=True, step_ratio=1.0),
    "pdpo-gt": Arm("pdpo-gt", "ground_truth", strip=False, step_ratio=1.0),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", default="math,code", help="Comma-separated: math, code (default both).")
    p.add_argument("--arms", default=None, help="Comma-separated subset of sft, dpo-sc, dpo-gt, pdpo-sc, "
                   "pdpo-gt (default: every arm of each task; the pdpo arms are math only).")
    p.add_argument("--seeds", default="0,1,2", help="run.seed of each repetition (default 0,1,2).")
    p.add_argument("--steps", type=int, default=60, help="Learner steps per trained arm (run.max_steps; default 60).")
    p.add_argument("--code-steps", type=int, default=None, help="Learner steps of the code arms (default: --steps).")
    p.add_argument("--code-prompts", type=int, default=640, help="data.prompts_per_iteration of the code arms "
                   "(default 640; the preset's 2 iterations give the 60 steps of 32 pairs at about 1.6 pairs per "
                   "prompt; every sample is a program run on every test in the sandbox).")
    p.add_argument("--bootstrap", action="append", default=[], metavar="TASK=DIR",
                   help="A bootstrap model to start from (e.g. math=/tmp/boot-math); default: built once "
                   "into model.bootstrap_dir (`pfrl bootstrap`), reused when there.")
    p.add_argument("--config", action="append", default=[], metavar="TASK=FILE",
                   help="The preset every arm of TASK runs (default: math=configs/tiny-math.yaml, "
                   "code=configs/tiny-code.yaml).")
    p.add_argument("--eval-prompts", type=int, default=256, help="Held-out problems scored per math model (default 256).")
    p.add_argument("--code-eval-prompts", type=int, default=128, help="Held-out problems scored per code model "
                   "(default 128: each of the K+1 samples is a program run on every test in the sandbox).")
    p.add_argument("--k", type=int, default=8, help="Samples per held-out problem for maj@K and pass@K (default 8).")
    add_set_arg(p, "Config override for every arm alike, after the bench's own (e.g. learner.lr=2e-4).")
    p.add_argument("--out", default=None, help="Directory for the runs and logs (default: a temp dir).")
    p.add_argument("--png", default=None, help="Write the figure here (default: OUT/fidelity.png).")
    p.add_argument("--timeout", type=float, default=1800, help="Seconds allowed per run.")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="Run nothing: print the table and plot (and with --json write) the arms of these "
                   "--json files of earlier runs, a later file's arm replacing an earlier one's.")
    add_json_argument(p)


# -- the pure parts -----------------------------------------------------------------------------
def strip_records(src: str | Path, dst: str | Path, task: str) -> int:
    """Copy a JSONL problem file without the labels a self-consistency arm must not see."""
    from pfrl.tasks.io import iter_jsonl, write_jsonl

    drop = STRIP_KEYS[task]

    def rows():
        for lineno, obj in iter_jsonl(src):
            if isinstance(obj, ValueError):
                raise ValueError(f"{src}: line {lineno}: {obj}")
            yield {k: v for k, v in obj.items() if k not in drop}

    return write_jsonl(dst, rows())


def common_settings(steps: int, seed: int) -> list[str]:
    """What every trained arm gets on top of the preset: the step budget, the seed, and nothing
    inside the run that the bench does not read (evaluation is `pfrl eval` afterwards)."""
    return [
        f"run.max_steps={steps}",
        f"run.seed={seed}",
        "metrics.eval_every_steps=null",
        f"checkpoint.every_steps={steps + 1}",
        "metrics.tensorboard=false",
    ]


def arm_overrides(arm: Arm, steps: int, seed: int, model: str, train_file: str, heldout_file: str,
                  run_dir: str | Path, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The `--set` list of one trained arm: the same for every arm but ARM_KEYS."""
    assert arm.source is not None, f"{arm.name} is not trained"
    return [
        *common_settings(steps, seed),
        f"model.path={model}",
        f"data.heldout_file={heldout_file}",
        f"run.dir={run_dir}",
        f"labeller.source={arm.source}",
        f"labeller.step_pairs.ratio={arm.step_ratio}",
        f"data.train_file={train_file}",
        *extra,
    ]


def mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample sd of the values that exist (sd 0 for one value; None for none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def metric_names(k: int) -> tuple[str, str, str]:
    return ("greedy", f"maj@{k}", f"pass@{k}")


def arm_figures(evals: list[dict | None], k: int) -> dict[str, list[float | None]]:
    """Per-seed lists of greedy, maj@K and pass@K from `pfrl eval` results (None: that run failed)."""
    keys = dict(zip(metric_names(k), ("accuracy", f"maj@{k}", f"pass@{k}"), strict=True))
    return {name: [None if e is None else e.get(key) for e in evals] for name, key in keys.items()}


def summary(results: dict[str, dict[str, dict[str, Any]]], k: int) -> dict[str, dict[str, dict[str, list]]]:
    """{task: {arm: {metric: [mean, sd]}}} from the per-seed lists."""
    return {task: {arm: {m: list(mean_sd(fig[m])) for m in metric_names(k)} for arm, fig in arms.items()}
            for task, arms in results.items()}


# -- the runs -------------------------------------------------------------------------------------
def _bootstrap(task: str, config: str, given: dict[str, str], overrides: list[str]) -> str:
    from pfrl.config import load_config
    from pfrl.preflight import resolve_model

    if task in given:
        return str(Path(given[task]).resolve())
    cfg = load_config(config, [o for o in overrides if not o.startswith("run.seed=")])
    cfg.run.seed = 0  # one bootstrap for every arm and seed
    return resolve_model(cfg)  # `pfrl bootstrap`, once, cached in model.bootstrap_dir


def _train(task: str, arm: Arm, seed: int, steps: int, model: str, files: dict[str, str], root: Path,
           args: argparse.Namespace) -> dict[str, Any]:
    """One `pfrl train` of an arm; its final model (None if it failed) and what the run did."""
    run_dir = root / task / f"{arm.name}-seed{seed}"
    train_file = files["stripped" if arm.strip else "train"]
    cmd = [sys.executable, "-m", "pfrl.cli", "train", "--config", args.task_configs[task]]
    extra = [f"data.prompts_per_iteration={args.code_prompts}"] if task == "code" else []
    for o in arm_overrides(arm, steps, seed, model, train_file, files["heldout"], run_dir, [*extra, *args.overrides]):
        cmd += ["--set", o]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    code = run_logged(cmd, run_dir.parent / f"{arm.name}-seed{seed}.train.log", args.timeout)
    wall = time.time() - start
    info: dict[str, Any] = {"run_dir": str(run_dir), "exit": code, "train_s": round(wall, 1)}
    info.update(_run_stats(run_dir))
    final = run_dir / "final"
    info["final"] = str(final) if code == 0 and (final / "config.json").exists() else None
    return info


def _run_stats(run_dir: Path) -> dict[str, Any]:
    """Steps made, pairs trained (prefix pairs among them) and the agreement with ground truth."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {"steps": 0, "pairs": 0}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = {r["step"]: r for r in records if "learner/step_s" in r}
    out: dict[str, Any] = {"steps": len(steps), "pairs": int(sum(r.get("learner/pairs", 0) for r in steps.values()))}
    prefix_pairs = [r["pdpo/pairs"] for r in records if "pdpo/pairs" in r]  # a running count
    if prefix_pairs:
        out["prefix_pairs"] = int(max(prefix_pairs))
    for key, name in (("label/agree_gt", "agree_gt"), ("label/pair_yield", "pair_yield"),
                      ("pdpo/good_frac", "prefix_good_frac")):
        vals = [r[key] for r in records if isinstance(r.get(key), int | float)]
        if vals:
            out[name] = round(statistics.fmean(vals), 4)
    return out


def _eval(task: str, model: str, heldout: str, seed: int, log: Path, args: argparse.Namespace) -> dict | None:
    """`pfrl eval` of one model on the held-out set (ground truth): greedy, maj@K, pass@K."""
    cmd = [sys.executable, "-m", "pfrl.cli", "eval", "--config", args.task_configs[task], "--model", model, "--data", heldout,
           "--limit", str(args.code_eval_prompts if task == "code" else args.eval_prompts), "--n", str(args.k), "--temperature", "1.0", "--seed", str(seed)]
    for o in args.overrides:
        cmd += ["--set", o]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        print(f"  held-out eval of {model} failed (exit {done.returncode}); see {log}", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_task(task: str, arms: list[str], seeds: list[int], steps: int, root: Path,
             args: argparse.Namespace, given: dict[str, str]) -> dict[str, dict[str, Any]]:
    model = _bootstrap(task, args.task_configs[task], given, args.overrides)
    files = {"train": str(Path(model) / "data" / "train.jsonl"), "heldout": str(Path(model) / "data" / "heldout.jsonl"),
             "stripped": str(root / task / "train-stripped.jsonl")}
    (root / task).mkdir(parents=True, exist_ok=True)
    n = strip_records(files["train"], files["stripped"], task)
    print(f"[{task}] bootstrap {model}; {n} train records stripped of {', '.join(STRIP_KEYS[task])} "
          f"for the self-consistency arms", flush=True)
    out: dict[str, dict[str, Any]] = {}
    for name in arms:
        arm = ARMS[name]
        evals, runs = [], []
        for seed in seeds:
            t0 = time.time()
            info: dict[str, Any] = {"final": model}
            if arm.source is not None:
                info = _train(task, arm, seed, steps, model, files, root, args)
            result = None
            if info["final"] is not None:
                log = root / task / f"{name}-seed{seed}.eval.log"
                result = _eval(task, info["final"], files["heldout"], seed, log, args)
            info["wall_s"] = round(time.time() - t0, 1)
            evals.append(result)
            runs.append(info)
            _print_progress(task, name, seed, result, info, args.k)
        out[name] = {**arm_figures(evals, args.k), "runs": runs}
    return out


def _print_progress(task: str, arm: str, seed: int, result: dict | None, info: dict, k: int) -> None:
    figs = "failed" if result is None else (f"greedy {result['accuracy']:.3f}  maj@{k} {result[f'maj@{k}']:.3f}  "
                                            f"pass@{k} {result[f'pass@{k}']:.3f}")
    trained = f"{info['steps']} steps, {info['pairs']} pairs, " if "steps" in info else ""
    print(f"[{task}] {arm:8s} seed {seed}: {figs}  ({trained}{info['wall_s']:.0f} s)", flush=True)


# -- the report -----------------------------------------------------------------------------------
def _cell(pair: list) -> str:
    mean, sd = pair
    return "-" if mean is None else f"{100 * mean:5.1f} +- {100 * sd:4.1f}"


def table(results: dict[str, dict[str, dict[str, Any]]], k: int) -> str:
    names = metric_names(k)
    lines = [f"{'task':5s} {'arm':8s} " + " ".join(f"{m:>13s}" for m in names) + f" {'steps':>8s} {'pairs':>6s}"]
    for task, arms in summary(results, k).items():
        for arm, figs in arms.items():
            steps = [r.get("steps") for r in results[task][arm]["runs"] if "steps" in r]
            pairs = [r["pairs"] for r in results[task][arm]["runs"] if "pairs" in r]
            made = "-" if not steps else "/".join(str(s) for s in steps)
            mean_pairs = "-" if not pairs else f"{statistics.fmean(pairs):.0f}"
            lines.append(f"{task:5s} {arm:8s} " + " ".join(f"{_cell(figs[m]):>13s}" for m in names)
                         + f" {made:>8s} {mean_pairs:>6s}")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, dict[str, Any]]], k: int, out: str | Path) -> None:
    """One panel per task: per arm, greedy / maj@K / pass@K as mean bars with sd whiskers and the
    per-seed values as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metric_names(k)
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.8), squeeze=False)
    for ax, (task, arms) in zip(axes[0], results.items(), strict=True):
        width = 0.8 / len(names)
        for j, m in enumerate(names):
            xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(arms))]
            stats = [mean_sd(arms[a][m]) for a in arms]
            means = [100 * (s[0] or 0) for s in stats]
            sds = [100 * (s[1] or 0) for s in stats]
            ax.bar(xs, means, width, yerr=sds, capsize=3, label=m, alpha=0.85)
            for x, a in zip(xs, arms, strict=True):
                vals = [100 * v for v in arms[a][m] if v is not None]
                ax.plot([x] * len(vals), vals, "k.", markersize=3)
        ax.set_xticks(range(len(arms)), list(arms))
        ax.set_ylim(0, 115)
        ax.set_ylabel("held-out %")
        ax.set_title(f"tiny {task}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", ncol=len(names))
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _task_paths(items: list[str], flag: str, example: str) -> dict[str, str]:
    from pfrl.errors import UserError

    out = {}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep or task not in CONFIGS or not Path(path).exists():
            raise UserError(f"{flag} {item}: expected TASK=PATH with TASK math or code and PATH existing ({example})")
        out[task] = path
    return out


def _parse(args: argparse.Namespace) -> tuple[list[str], list[int], dict[str, str]]:
    from pfrl.errors import UserError

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if unknown := set(tasks) - set(CONFIGS):
        raise UserError(f"--tasks: unknown {sorted(unknown)} (math, code)")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {args.seeds}: not a comma-separated list of integers") from None
    if not seeds:
        raise UserError("--seeds: none given")
    if args.arms and (unknown := {a.strip() for a in args.arms.split(",")} - set(ARMS)):
        raise UserError(f"--arms: unknown {sorted(unknown)} ({', '.join(ARMS)})")
    if args.steps < 1 or (args.code_steps is not None and args.code_steps < 1):
        raise UserError("--steps must be at least 1")
    given = _task_paths(args.bootstrap, "--bootstrap", "math=/tmp/boot-math")
    args.task_configs = {**CONFIGS, **_task_paths(args.config, "--config", "math=configs/tiny-math.yaml")}
    return tasks, seeds, given


def merge(paths: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The per-task arms and meta of several `--json` files, in order (a later arm replaces)."""
    figures: dict[str, dict[str, Any]] = {}
    meta: dict[str, Any] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        for task in CONFIGS:
            for arm, figs in data.get(task, {}).items():
                figures.setdefault(task, {})[arm] = figs
                meta.setdefault(task, {})[arm] = {"from": str(path), "utc": data.get("utc"),
                                                  **data.get("meta", {}).get(task, {})}
    for task in figures:  # the arms in the bench's own order
        figures[task] = {a: figures[task][a] for a in TASK_ARMS[task] if a in figures[task]}
    return figures, meta


def _report_merged(args: argparse.Namespace) -> int:
    figures, meta = merge(args.merge)
    print(f"fidelity bench, merged from {len(args.merge)} files: held-out %, mean +- sd over seeds")
    print(table(figures, args.k))
    png = args.png or "fidelity.png"
    plot(figures, args.k, png)
    print(f"wrote {png}")
    write_json(args.json_out, "fidelity", {**figures, "meta": meta, "summary": summary(figures, args.k), "k": args.k})
    return 0


def run(args: argparse.Namespace) -> int:
    if args.merge:
        return _report_merged(args)
    tasks, seeds, given = _parse(args)
    root = Path(args.out or tempfile.mkdtemp(prefix="pfrl-bench-fidelity-"))
    root.mkdir(parents=True, exist_ok=True)
    wanted = None if not args.arms else [a.strip() for a in args.arms.split(",")]
    results: dict[str, dict[str, Any]] = {}
    started = time.time()
    for task in tasks:
        arms = [a for a in TASK_ARMS[task] if wanted is None or a in wanted]
        steps = args.code_steps if task == "code" and args.code_steps is not None else args.steps
        t0 = time.time()
        results[task] = run_task(task, arms, seeds, steps, root, args, given)
        results[task]["_meta"] = {"steps": steps, "seeds": seeds, "wall_s": round(time.time() - t0, 1)}
    figures = {task: {a: v for a, v in arms.items() if a != "_meta"} for task, arms in results.items()}
    print(f"\nfidelity bench: held-out %, mean +- sd over seeds {seeds}; runs under {root}")
    print(table(figures, args.k))
    png = args.png or str(root / "fidelity.png")
    plot(figures, args.k, png)
    print(f"wrote {png}; {time.time() - started:.0f} s in all")
    meta = {task: results[task]["_meta"] for task in tasks}
    write_json(args.json_out, "fidelity", {**figures, "meta": meta, "summary": summary(figures, args.k), "k": args.k,
                                           "eval_prompts": {"math": args.eval_prompts, "code": args.code_eval_prompts},
                                           "wall_s": round(time.time() - started, 1)})
    return 0
