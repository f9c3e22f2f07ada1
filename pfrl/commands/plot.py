"""`pfrl plot RUN_DIR --out FILE.png`: throughput, loss, accuracy and lag over steps."""

from __future__ import annotations

import argparse
from pathlib import Path

PANELS = [
    ("throughput (tokens/s)", ["gen/tokens_per_s", "learner/tokens_per_s"]),
    ("DPO", ["dpo/loss", "dpo/reward_acc"]),
    ("held-out accuracy", ["eval/accuracy"]),
    ("policy lag / stale drops", ["buffer/policy_lag", "buffer/dropped_stale"]),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="PNG file to write.")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pfrl.errors import UserError
    from pfrl.metrics import read_metrics

    records = read_metrics(args.run_dir)
    if not records:
        raise UserError(f"{args.run_dir}: metrics.jsonl has no steps yet")
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(8, 2.6 * len(PANELS)), sharex=True)
    for ax, (title, keys) in zip(axes, PANELS, strict=True):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if key.startswith("eval/") else None, label=key)
        ax.set_title(title)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("learner step")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out} ({len(records)} steps)")
    return 0
