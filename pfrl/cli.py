"""`pfrl` entry point.

Each subcommand lives in `pfrl.commands.<name>` with `add_arguments(parser)` and `run(args) -> int`.
Only the chosen command's module is imported, and command modules import torch/vllm/ray/deepspeed
inside `run`, so `pfrl --help` and config validation stay instant. A `UserError` anywhere ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pfrl.errors import UserError

COMMANDS: dict[str, str] = {
    "train": "Run the online loop: generate, label with pseudo feedback, train DPO, sync weights.",
    "label": "Label rollout groups with pseudo feedback and write DPO pairs (offline).",
    "references": "Write frontier-model labels (math references; code tests and outputs) into a problem file.",
    "generate": "Sample N completions per prompt with vLLM generator actors (offline).",
    "dpo": "Offline DPO on a pairs file with the DeepSpeed learner.",
    "eval": "Greedy accuracy, maj@K, pass@1 and pass@k of a model on problems, through vLLM.",
    "data": "Convert a published data set (GSM8K, MATH, MBPP, HumanEval, APPS) to pfrl's problem JSONL.",
    "bootstrap": "Build a tiny tokenizer + Llama model by SFT on a synthetic task, with its data.",
    "models": "Real models that run without a hub: list them, or write one as a Hugging Face directory.",
    "status": "Summarise a running or finished run directory.",
    "plot": "Plot throughput, loss, accuracy and lag of a run.",
    "bench": "Benchmarks that print figures: generate, sync, learner, sandbox, chaos.",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser for `command`; the other subcommands are listed but not imported."""
    parser = argparse.ArgumentParser(prog="pfrl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(f"pfrl.commands.{name}")
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    # stdout carries results (`pfrl eval` prints one JSON object); vLLM logs to stdout unless told.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except UserError as e:
        one_line = str(e).replace("\r", "\\r").replace("\n", "\\n")  # a value quoted in it may hold newlines
        print(f"pfrl {args.command}: error: {one_line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pfrl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
