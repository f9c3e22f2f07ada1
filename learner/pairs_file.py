"""Reading a DPO pairs file: JSONL rows `{"prompt", "chosen", "rejected"[, "id", "policy_version"]}`,
as `pfrl label --pairs-out` writes them. Malformed rows are skipped and counted with their line
numbers, up to a share of the file; beyond it, or with no usable row, the user gets one line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfrl.tasks.io import read_records
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
    pairs, bad = read_records(path, parse_pair, max_bad, "pairs", "rows", ", above data.max_bad_records")
    return PairFile(str(path), pairs, bad)
