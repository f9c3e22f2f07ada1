"""One module per `pfrl` subcommand, each with `add_arguments(parser)` and `run(args) -> int`."""

from __future__ import annotations

import argparse

SET_HELP = "Override one config value (repeatable), e.g. --set learner.lr=1e-5."


def add_config_args(
    p: argparse.ArgumentParser,
    config_help: str = "YAML config file.",
    default: str | None = None,
    set_help: str = SET_HELP,
) -> None:
    """`--config FILE` and repeatable `--set section.key=value` (in `args.config`, `args.overrides`):
    every command and bench reads its settings through the one config schema."""
    p.add_argument("--config", default=default, help=config_help)
    add_set_arg(p, set_help)


def add_set_arg(p: argparse.ArgumentParser, set_help: str = SET_HELP) -> None:
    """`--set section.key=value`, repeatable, into `args.overrides` (for a command whose --config
    means something else, like `bench fidelity`'s per-task files)."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=set_help)
