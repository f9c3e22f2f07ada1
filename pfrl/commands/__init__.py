"""One module per `pfrl` subcommand, each with `add_arguments(parser)` and `run(args) -> int`."""

from __future__ import annotations

import argparse


def add_config_args(p: argparse.ArgumentParser, config_help: str = "YAML config file.") -> None:
    """`--config FILE` and repeatable `--set section.key=value` (in `args.config`, `args.overrides`):
    every command reads its settings through the one config schema."""
    p.add_argument("--config", default=None, help=config_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="Override one config value (repeatable), e.g. --set learner.lr=1e-5.")
