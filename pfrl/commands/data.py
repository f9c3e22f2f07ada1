"""`pfrl data convert --format gsm8k|math|mbpp|humaneval|apps --in SOURCE --out OUT.jsonl`.

SOURCE is a JSONL (or .jsonl.gz) file, a parquet file or `hf:NAME[:CONFIG]:SPLIT`, in the data
set's published schema; OUT is pfrl's problem schema (see pfrl.tasks.convert for the mapping).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    convert = sub.add_parser("convert", help="Convert a published data set to pfrl's problem JSONL.")
    convert.add_argument("--format", required=True, choices=["gsm8k", "math", "mbpp", "humaneval", "apps"])
    convert.add_argument("--in", dest="source", required=True, help="JSONL(.gz), parquet or hf:NAME[:CONFIG]:SPLIT")
    convert.add_argument("--out", required=True, help="Output JSONL in pfrl's problem schema.")
    convert.add_argument("--max-bad", type=float, default=0.0,
                         help="Share of records that may fail to convert (skipped and counted); above it: error.")


def convert(fmt: str, source: str, max_bad: float) -> tuple[list[dict], list[tuple[int, str]], int, int]:
    """(records, bad (number, why), assert tests seen, test cases made)."""
    from pfrl.errors import UserError
    from pfrl.tasks.convert import FORMATS
    from pfrl.tasks.io import parse_problem
    from pfrl.tasks.loaders import read_rows

    unit, rows = read_rows(source)
    records, bad, asserts, cases, seen = [], [], 0, 0, set()
    for number, row in rows:
        try:
            if isinstance(row, ValueError):
                raise row
            if not isinstance(row, dict):
                raise ValueError("record is not an object")
            done = FORMATS[fmt](row, number - 1)
            parse_problem(done.record)  # what pfrl will read back must load
            if done.record["id"] in seen:
                raise ValueError(f"duplicate id {done.record['id']!r}")
        except ValueError as e:
            bad.append((number, str(e)))
            continue
        seen.add(done.record["id"])
        records.append(done.record)
        asserts, cases = asserts + done.asserts, cases + done.cases
    total = len(records) + len(bad)
    if not records or len(bad) > max_bad * total:
        first = f"{unit} {bad[0][0]}: {bad[0][1]} ({len(bad)} bad of {total} {unit}s)" if bad else "no records"
        raise UserError(f"{source}: {first}")
    return records, bad, asserts, cases


def run(args: argparse.Namespace) -> int:
    from pfrl.tasks.io import write_jsonl

    records, bad, asserts, cases = convert(args.format, args.source, args.max_bad)
    write_jsonl(args.out, records)
    line = f"wrote {len(records)} {args.format} problems to {args.out}"
    if asserts:
        line += f"; {cases} of {asserts} assert tests became test cases (all kept in eval_tests)"
    elif cases:
        line += f"; {cases} test cases"
    if bad:
        line += f"; skipped {len(bad)} (first: {bad[0][0]}: {bad[0][1]})"
    print(line)
    return 0
