"""`pfrl train --config FILE [--set section.key=value ...] [--dry-run] [--resume] [--ray-address ADDR]`."""

from __future__ import annotations

import argparse
import sys

from pfrl.commands import add_config_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p, "YAML run config (configs/tiny-math.yaml is the CPU demo).")
    p.add_argument("--dry-run", action="store_true", help="Print the resolved config and exit.")
    p.add_argument("--resume", action="store_true", help="Continue the run in run.dir from its LATEST checkpoint.")
    p.add_argument("--ray-address", default=None, help="Join an existing Ray cluster (auto | HOST:PORT).")


def run(args: argparse.Namespace) -> int:
    from pfrl.config import load_config

    overrides = list(args.overrides)
    if args.ray_address:
        overrides.append(f"cluster.ray_address={args.ray_address}")
    cfg = load_config(args.config, overrides)
    if args.dry_run:
        sys.stdout.write(cfg.to_yaml())
        return 0
    from pfrl.training import train

    return train(cfg, resume=args.resume)
