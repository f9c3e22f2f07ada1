"""Reading and writing JSONL problem files with line-numbered, user-facing errors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pfrl.errors import UserError
from pfrl.types import Problem

T = TypeVar("T")


@dataclass
class ProblemFile:
    """Problems read from a file, and the records that were skipped (line number, reason)."""

    path: str
    problems: list[Problem]
    bad: list[tuple[int, str]] = field(default_factory=list)


def _utf8(text: str, key: str) -> str:
    """A JSON string may hold lone surrogates ("\\ud800") that no tokenizer or file can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{key} is not valid UTF-8 text") from None
    return text


def _opt_text(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {type(value).__name__}")
    return _utf8(value, key)


def _as_str_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of strings")
    return [_utf8(v, key) for v in value]


def _id(value: Any) -> str:
    # Numbers are common ids in public data sets; anything else (null, a list, true) is a mistake.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"id must be a non-empty string or an integer, not {type(value).__name__}")
    return _utf8(value, "id")


def _answer(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"answer is not a finite number ({value})")
        return str(value)
    return _opt_text(value, "answer")


def _paired(inputs: list[str], outputs: list[str], key: str) -> list[str]:
    if outputs and len(outputs) != len(inputs):
        raise ValueError(f"{key} has {len(outputs)} items for {len(inputs)} inputs")
    return outputs


def parse_problem(obj: Any) -> Problem:
    """One JSON object -> Problem, or ValueError naming what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("record is not a JSON object")
    for key in ("id", "prompt"):
        if key not in obj:
            raise ValueError(f"missing {key!r}")
    prompt = _opt_text(obj["prompt"], "prompt")
    if prompt is None or not prompt.strip():
        raise ValueError("empty prompt")
    entry_point = _opt_text(obj.get("entry_point"), "entry_point") or None  # "" means none
    if entry_point is not None and not entry_point.isidentifier():
        raise ValueError(f"entry_point {entry_point[:40]!r} is not a Python identifier")
    test_inputs = _as_str_list(obj.get("test_inputs"), "test_inputs")
    ref_inputs = _as_str_list(obj.get("reference_test_inputs"), "reference_test_inputs")
    return Problem(
        id=_id(obj["id"]),
        prompt=prompt,
        answer=_answer(obj.get("answer")),
        reference=_opt_text(obj.get("reference"), "reference"),
        entry_point=entry_point,
        test_inputs=test_inputs,
        test_outputs=_paired(test_inputs, _as_str_list(obj.get("test_outputs"), "test_outputs"), "test_outputs"),
        reference_test_inputs=ref_inputs,
        reference_test_outputs=_paired(
            ref_inputs, _as_str_list(obj.get("reference_test_outputs"), "reference_test_outputs"),
            "reference_test_outputs",
        ),
    )


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any | ValueError]]:
    """Yield (line number, parsed object or the ValueError it raised); blank lines are skipped."""
    p = Path(path)
    try:
        fh = p.open("rb")  # decoded line by line: one bad byte is one bad record, not a crash
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror})") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                yield lineno, ValueError(f"not UTF-8 (byte {e.start})")
            except json.JSONDecodeError as e:
                yield lineno, ValueError(f"invalid JSON ({e.msg})")
            except RecursionError:
                yield lineno, ValueError("invalid JSON (nested too deeply)")


def _clip(reason: str, limit: int = 200) -> str:
    """A reason may quote a value (a megabyte-long id): the error line stays readable."""
    return reason if len(reason) <= limit else reason[:limit] + "..."


def read_records(
    path: str | Path, parse: Callable[[Any, int], T], max_bad: float, noun: str, unit: str, note: str = ""
) -> tuple[list[T], list[tuple[int, str]]]:
    """Parse every line with `parse(obj, lineno)` (ValueError = a bad record). Up to `max_bad` (a
    share) bad records are skipped and returned with their line numbers; more, or no good record,
    is a UserError naming the first bad line."""
    items: list[T] = []
    bad: list[tuple[int, str]] = []
    for lineno, obj in iter_jsonl(path):
        try:
            if isinstance(obj, ValueError):
                raise obj
            items.append(parse(obj, lineno))
        except ValueError as e:
            bad.append((lineno, _clip(str(e))))
    total = len(items) + len(bad)
    if not items:
        first = f" (line {bad[0][0]}: {bad[0][1]})" if bad else ""
        raise UserError(f"{path}: no valid {noun}{first}")
    if bad and len(bad) > max_bad * total:
        line, why = bad[0]
        raise UserError(f"{path}: line {line}: {why} ({len(bad)} bad of {total} {unit}{note})")
    return items, bad


def read_problems(path: str | Path, max_bad: float = 0.0) -> ProblemFile:
    """Read a problem file (see `read_records`); ids must be unique."""
    seen: set[str] = set()

    def parse(obj: Any, _lineno: int) -> Problem:
        problem = parse_problem(obj)
        if problem.id in seen:
            raise ValueError(f"duplicate id {problem.id!r}")
        seen.add(problem.id)
        return problem

    problems, bad = read_records(path, parse, max_bad, "problems", "records")
    return ProblemFile(str(path), problems, bad)


def problem_to_dict(problem: Problem) -> dict[str, Any]:
    out: dict[str, Any] = {"id": problem.id, "prompt": problem.prompt}
    for key in ("answer", "reference", "entry_point"):
        if getattr(problem, key) is not None:
            out[key] = getattr(problem, key)
    for key in ("test_inputs", "test_outputs", "reference_test_inputs", "reference_test_outputs"):
        if getattr(problem, key):
            out[key] = getattr(problem, key)
    return out


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically (temp file + rename), so a crash never leaves half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(p)
    return n
