"""`pfrl references`: write frontier-model labels into a problem file (the paper's first iteration).

Math records get `reference` (the frontier model's full solution; its final answer is the label).
Code records get frontier-written `reference_test_inputs`, `reference` (the frontier model's program)
and `reference_test_outputs` (that program's outputs, run in the sandbox); their own `test_inputs` /
`test_outputs` (ground truth) are kept. Records whose request failed are written
unchanged; the summary says how many were labelled. Replies are cached (`labeller.frontier.cache_dir`),
so an interrupted run costs nothing to repeat. The output is written atomically.
"""

from __future__ import annotations

import argparse
import sys

from pfrl.commands import add_config_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="Input JSONL problems (the problem schema).")
    parser.add_argument("--out", required=True, help="Output JSONL: the same problems with frontier labels.")
    parser.add_argument(
        "--task", choices=["math", "code"], help="Task family (default: run.task of the config)."
    )
    add_config_args(parser, "YAML config file (its labeller.frontier section is used).")


def run(args: argparse.Namespace) -> int:
    from pfrl.config import load_config
    from pfrl.feedback import frontier
    from pfrl.feedback.sandbox import Sandbox
    from pfrl.tasks.io import problem_to_dict, read_problems, write_jsonl

    cfg = load_config(args.config, args.overrides)
    task = args.task or cfg.run.task
    source = read_problems(args.data, cfg.data.max_bad_records)
    client = frontier.FrontierClient(cfg.labeller.frontier)
    try:
        if task == "math":
            written = frontier.write_references(client, source.problems, task)
        else:
            with Sandbox(cfg.labeller.sandbox) as sandbox:
                written = frontier.write_references(client, source.problems, task, sandbox)
    finally:
        client.close()
    write_jsonl(args.out, (problem_to_dict(p) for p in written))
    changed = sum(p != q for p, q in zip(written, source.problems, strict=True))
    print(
        f"{len(written)} problems, {changed} labelled by {cfg.labeller.frontier.model}, "
        f"{len(source.bad)} bad records skipped; {client.requests_sent} requests, "
        f"{client.cache_hits} cache hits -> {args.out}",
        file=sys.stderr,
    )
    return 0
