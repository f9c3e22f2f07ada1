"""The run's ledger: one JSON line per prompt outcome, the proof that nothing was lost or repeated.

`RUN_DIR/ledger.jsonl` lines: {"iteration", "prompt_id", "outcome", "pairs", "step", "reason"} with
outcome trained (at least one of its pairs was trained) | no_pair (labelling made no pair; `reason`
says why, e.g. the labeller's skip reason) | stale (every pair was dropped before training; `reason`
names the drop). A checkpoint records how many lines existed; on resume the
file is cut back to that count (lines past the checkpoint are rolled back) and their prompts are
processed again. After an iteration completes, each prompt of its split appears exactly once.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path


class Outcome(StrEnum):
    """What became of a prompt. A str enum: it is written to JSON as its plain value."""

    TRAINED = "trained"
    NO_PAIR = "no_pair"
    STALE = "stale"


@dataclass(frozen=True)
class LedgerLine:
    iteration: int
    prompt_id: str
    outcome: Outcome
    pairs: int
    step: int
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", Outcome(self.outcome))  # read back from JSON as a str


class Ledger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self.lines = sum(1 for _ in self.path.open())
        self._fh = self.path.open("a", encoding="utf-8")

    def record(self, line: LedgerLine) -> None:
        self._fh.write(json.dumps({**asdict(line), "outcome": line.outcome.value}) + "\n")
        self.lines += 1

    def flush(self) -> None:
        """Make every recorded line durable (called before a checkpoint records `lines`)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def truncate(self, lines: int) -> int:
        """Cut the file back to its first `lines` lines; returns how many were rolled back."""
        self._fh.close()
        kept = self.path.read_text().splitlines(keepends=True)[:lines]
        rolled = self.lines - len(kept)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, self.path)
        self.lines = len(kept)
        self._fh = self.path.open("a", encoding="utf-8")
        return rolled

    def close(self) -> None:
        self._fh.close()


def read_ledger(path: str | Path) -> list[LedgerLine]:
    return [LedgerLine(**json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


def audit(lines: list[LedgerLine], splits: dict[int, list[str]]) -> dict:
    """Per iteration: prompts missing from the ledger, prompts recorded more than once, prompts
    recorded that are not in the split at all, and the outcomes."""
    report = {}
    for iteration, ids in splits.items():
        seen = Counter(line.prompt_id for line in lines if line.iteration == iteration)
        report[iteration] = {
            "prompts": len(ids),
            "missing": sorted(set(ids) - set(seen)),
            "repeated": sorted(p for p, n in seen.items() if n > 1),
            "unexpected": sorted(set(seen) - set(ids)),
            "outcomes": dict(Counter(line.outcome.value for line in lines if line.iteration == iteration)),
        }
    return report
