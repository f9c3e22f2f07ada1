"""`pfrl bench NAME ...`: benchmarks that print figures (side by side, as ratios), never assert."""

from __future__ import annotations

import argparse
import importlib

BENCHES = {
    "generate": "vLLM generator vs Hugging Face generate: tokens/s and ratio",
    "sync": "weight-sync transports vs an in-memory copy: GB/s and ratio",
    "learner": "DeepSpeed DPO vs a plain PyTorch loop: tokens/s and ratio",
    "sandbox": "sandboxed vs bare program execution: programs x tests/s and ratio",
    "chaos": "kill -9 / resume trials of `pfrl train`: faults injected, survived, prompts lost",
    "e2e": "pfrl online vs lockstep vs TRL online DPO to the same updates: wall time, idle, accuracy, ratios",
    "fidelity": "pseudo labels vs ground truth: sft, dpo-sc, dpo-gt, pdpo-sc, pdpo-gt over seeds: greedy, maj@K, pass@K",
    "prefixes": "step-level pDPO's prefix pairs checked against reference solutions: right way round, inverted",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench", required=True, metavar="NAME")
    for name, help_text in BENCHES.items():
        bp = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(f"pfrl.bench.{name}")
        module.add_arguments(bp)
        bp.set_defaults(_bench=module)


def run(args: argparse.Namespace) -> int:
    return int(args._bench.run(args) or 0)
