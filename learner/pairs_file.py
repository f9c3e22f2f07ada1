"""Reading a DPO pairs file: JSONL rows `{"prompt", "chosen", "rejected"[, "id", "policy_version"]}`,
as `pfrl label --pairs-out` writes them. Malformed rows are skipped and counted with their line
numbers, up to a share of the file; beyond it, or with no usable row, the user gets one line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfrl.errors import UserError
from pfrl.tasks.io import iter_jsonl
from pfrl.types import PreferencePair


@dataclass
class PairFile:
    path: str
    pairs: list[PreferencePair]
    bad: list[tuple[int, str]] = field(default_factory=list)


def parse_pair(obj: Any, lineno: int) -> PreferencePair:
    """One JSON row -> PreferencePair, or ValueError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("row is not a JSON object")
    for key in ("prompt", "chosen", "rejected"):
        if not isinstance(obj.get(key), str):
            raise ValueError(f"{key!r} missing or not a string")
    if not obj["prompt"].strip():
        raise ValueError("empty prompt")
    if obj["chosen"] == obj["rejected"]:
        raise ValueError("chosen and rejected are identical")
    version = obj.get("policy_version", 0)
    if not isinstance(version, int):
        raise ValueError("'policy_version' is not an integer")
    pair_id = str(obj["id"]) if obj.get("id") is not None else f"line-{lineno}"
    return PreferencePair(pair_id, obj["prompt"], obj["chosen"], obj["rejected"], version)


def read_pairs(path: str | Path, max_bad: float) -> PairFile:
    pairs: list[PreferencePair] = []
    bad: list[tuple[int, str]] = []
    for lineno, obj in iter_jsonl(path):
        try:
            if isinstance(obj, ValueError):
                raise obj
            pairs.append(parse_pair(obj, lineno))
        except ValueError as e:
            bad.append((lineno, str(e)))
    total = len(pairs) + len(bad)
    if not pairs:
        first = f" (line {bad[0][0]}: {bad[0][1]})" if bad else ""
        raise UserError(f"{path}: no valid pairs{first}")
    if bad and len(bad) > max_bad * total:
        line, why = bad[0]
        raise UserError(
            f"{path}: line {line}: {why} ({len(bad)} bad of {total} rows, above data.max_bad_records)"
        )
    return PairFile(str(path), pairs, bad)
