"""Problem sources: JSONL files, parquet files and Hugging Face data sets, with a field mapping.

    data/train.jsonl              one JSON object per line (pfrl's schema, see pfrl.tasks)
    data/train.parquet            one row per problem
    hf:NAME[:CONFIG]:SPLIT        `datasets.load_dataset(NAME, CONFIG, split=SPLIT)`; NAME may be a
                                  hub name (cached or reachable) or a local data set directory

`data.fields` maps pfrl's fields to the data's columns ({prompt: question}); rows of a table
without an id get their row number. Every record goes through `pfrl.tasks.io.parse_problem`, and
bad records are skipped and counted up to `data.max_bad_records` like a JSONL file's, named by
row instead of line. Format-specific extraction (GSM8K's `####`, MATH's `\\boxed{}`, assert tests)
is `pfrl data convert`'s job, not the loader's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pfrl.errors import UserError
from pfrl.tasks.io import ProblemFile, iter_jsonl, parse_problem, read_records
from pfrl.types import Problem

_FIELDS = {f.name for f in dataclasses.fields(Problem)} - {"raw_prompt"}


def _check_fields(fields: dict[str, str]) -> None:
    unknown = sorted(set(fields) - _FIELDS)
    if unknown:
        raise UserError(f"data.fields.{unknown[0]}: not a problem field (one of {', '.join(sorted(_FIELDS))})")


def _opt_str(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _parser(fields: dict[str, str], default_ids: bool) -> Callable[[Any, int], Problem]:
    """Record -> Problem: columns renamed by `fields`, ids unique (a row number where the row has
    none and `default_ids`), the eval-only `eval_tests` kept."""
    seen: set[str] = set()

    def parse(obj: Any, number: int) -> Problem:
        if not isinstance(obj, dict):
            raise ValueError("record is not an object")
        record = dict(obj)
        for name, column in fields.items():
            if column not in obj:
                raise ValueError(f"no column {column!r} (data.fields.{name})")
            record[name] = obj[column]
        if default_ids and record.get("id") is None:
            record["id"] = str(number)
        problem = parse_problem(record)
        problem.eval_tests = _opt_str(record.get("eval_tests"), "eval_tests")
        if problem.id in seen:
            raise ValueError(f"duplicate id {problem.id!r}")
        seen.add(problem.id)
        return problem

    return parse


def _collect(source: str, rows: Iterable[Any], parse: Callable[[Any, int], Problem], max_bad: float) -> ProblemFile:
    """Parse table rows (numbered from 1) under the same bad-record rule as a JSONL file."""
    problems: list[Problem] = []
    bad: list[tuple[int, str]] = []
    for number, row in enumerate(rows, 1):
        try:
            problems.append(parse(row, number))
        except ValueError as e:
            bad.append((number, str(e)))
    if not problems:
        first = f" (row {bad[0][0]}: {bad[0][1]})" if bad else ""
        raise UserError(f"{source}: no valid problems{first}")
    if bad and len(bad) > max_bad * (len(problems) + len(bad)):
        raise UserError(f"{source}: row {bad[0][0]}: {bad[0][1]} ({len(bad)} bad of {len(problems) + len(bad)} rows)")
    return ProblemFile(source, problems, bad)


def _parquet_rows(path: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except FileNotFoundError:
        raise UserError(f"{path}: cannot read (No such file or directory)") from None
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None


def parse_hf_source(source: str) -> tuple[str, str | None, str]:
    """`hf:NAME[:CONFIG]:SPLIT` -> (name, config, split)."""
    parts = source.removeprefix("hf:").split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise UserError(f"{source}: expected hf:NAME[:CONFIG]:SPLIT")
    return parts[0], parts[1] if len(parts) == 3 else None, parts[-1]


def _hf_rows(source: str) -> Iterable[dict[str, Any]]:
    import datasets

    name, config, split = parse_hf_source(source)
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - hub, cache and builder errors alike end in one line
        raise UserError(f"{source}: cannot load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _jsonl_gz_rows(path: str) -> Iterator[tuple[int, Any]]:
    import gzip

    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield lineno, json.loads(line)
                    except json.JSONDecodeError as e:
                        yield lineno, ValueError(f"invalid JSON ({e.msg})")
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None


def read_rows(source: str) -> tuple[str, Iterator[tuple[int, Any]]]:
    """A source's raw records, numbered, with the unit they are numbered in ("line" for JSONL and
    JSONL.gz, "row" for parquet and hf:); a record that is not JSON comes as its ValueError."""
    if source.startswith("hf:"):
        return "row", enumerate(_hf_rows(source), 1)
    if Path(source).suffix == ".parquet":
        return "row", enumerate(_parquet_rows(source), 1)
    if source.endswith(".gz"):
        return "line", _jsonl_gz_rows(source)
    return "line", iter_jsonl(source)


def load_problems(source: str, fields: dict[str, str] | None = None, max_bad: float = 0.0) -> ProblemFile:
    """Problems from a JSONL file, a parquet file or `hf:NAME[:CONFIG]:SPLIT` (see the module doc)."""
    fields = fields or {}
    _check_fields(fields)
    if source.startswith("hf:"):
        return _collect(source, _hf_rows(source), _parser(fields, default_ids=True), max_bad)
    if Path(source).suffix == ".parquet":
        return _collect(source, _parquet_rows(source), _parser(fields, default_ids=True), max_bad)
    problems, bad = read_records(source, _parser(fields, default_ids=False), max_bad, "problems", "records")
    return ProblemFile(source, problems, bad)


def source_exists(source: str) -> bool:
    """Whether a data source is there to load (an hf: source is only known by loading it)."""
    return source.startswith("hf:") or Path(source).exists()
