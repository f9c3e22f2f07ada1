"""Which prompt goes out next, and what became of every prompt that went out.

Each iteration owns a disjoint split of the problem set (seeded shuffle, then consecutive slices).
A prompt is *pending* from the moment it is issued until its ledger outcome is final: while its
rollouts are being generated/labelled (`inflight`) and while its pairs wait in the replay buffer
(`buffered`). The whole state is plain data, so a checkpoint can carry it and a resume can re-issue
exactly the prompts that were in flight.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict, dataclass

from pfrl.errors import UserError
from pfrl.types import Problem, PromptItem


@dataclass
class Pending:
    iteration: int
    stage: str  # "inflight" | "buffered"
    attempt: int = 0
    pairs_left: int = 0
    pairs_trained: int = 0


def make_splits(problem_ids: list[str], iterations: int, per_iteration: int | None, seed: int, shuffle: bool) -> list[list[str]]:
    ids = list(problem_ids)
    if shuffle:
        random.Random(f"splits:{seed}").shuffle(ids)
    size = per_iteration if per_iteration is not None else len(ids) // iterations
    if size < 1 or size * iterations > len(ids):
        raise UserError(
            f"data: {len(ids)} problems cannot give {iterations} disjoint splits of {size} "
            "(lower data.prompts_per_iteration or run.iterations)"
        )
    return [ids[i * size : (i + 1) * size] for i in range(iterations)]


class PromptScheduler:
    def __init__(self, problems: list[Problem], splits: list[list[str]]):
        self.problems = {p.id: p for p in problems}
        self.splits = splits
        self.iteration = 0
        self.cursor = 0
        self.pending: dict[str, Pending] = {}
        self._reissue: deque[str] = deque()

    # -- issuing ---------------------------------------------------------------------------
    @property
    def split(self) -> list[str]:
        return self.splits[self.iteration]

    def has_unissued(self) -> bool:
        return self.unissued() > 0

    def unissued(self) -> int:
        """Prompts of the current iteration waiting to go out: re-issues and the rest of the split."""
        return len(self._reissue) + len(self.split) - self.cursor

    def next_items(self, k: int) -> list[PromptItem]:
        """Up to k prompts: first those to re-issue, then fresh ones from the current split."""
        items: list[PromptItem] = []
        while len(items) < k and self._reissue:
            pid = self._reissue.popleft()
            entry = self.pending[pid]
            entry.attempt += 1
            items.append(PromptItem(self.problems[pid], entry.iteration, entry.attempt))
        while len(items) < k and self.cursor < len(self.split):
            pid = self.split[self.cursor]
            self.cursor += 1
            self.pending[pid] = Pending(self.iteration, "inflight")
            items.append(PromptItem(self.problems[pid], self.iteration, 0))
        return items

    def reissue(self, prompt_ids: list[str]) -> None:
        """Send these in-flight prompts out again (their generator/labeller died or was lost)."""
        for pid in prompt_ids:
            if pid in self.pending and self.pending[pid].stage == "inflight" and pid not in self._reissue:
                self._reissue.append(pid)

    def is_current(self, item: PromptItem) -> bool:
        """Whether a returning result is the live attempt of a prompt still in flight."""
        entry = self.pending.get(item.problem.id)
        return entry is not None and entry.stage == "inflight" and entry.attempt == item.attempt

    def inflight_ids(self) -> list[str]:
        return [pid for pid, e in self.pending.items() if e.stage == "inflight"]

    # -- outcomes --------------------------------------------------------------------------
    def buffered(self, prompt_id: str, pairs: int) -> None:
        entry = self.pending[prompt_id]
        entry.stage, entry.pairs_left = "buffered", pairs

    def settle_pair(self, prompt_id: str, trained: bool) -> Pending | None:
        """One buffered pair was trained or dropped; returns the entry once the prompt is final."""
        entry = self.pending[prompt_id]
        entry.pairs_left -= 1
        entry.pairs_trained += int(trained)
        if entry.pairs_left > 0:
            return None
        return self.pending.pop(prompt_id)

    def finish(self, prompt_id: str) -> Pending:
        return self.pending.pop(prompt_id)

    def iteration_done(self) -> bool:
        return not self.has_unissued() and not self.pending

    def advance_iteration(self) -> bool:
        """Move to the next split; False when every iteration is done."""
        if self.iteration + 1 >= len(self.splits):
            return False
        self.iteration += 1
        self.cursor = 0
        return True

    # -- checkpoint ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration,
            "cursor": self.cursor,
            "pending": {pid: asdict(e) for pid, e in self.pending.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore; prompts that were in flight when the checkpoint was taken are re-issued."""
        self.iteration = state["iteration"]
        self.cursor = state["cursor"]
        self.pending = {pid: Pending(**e) for pid, e in state["pending"].items()}
        self._reissue = deque()
        self.reissue(self.inflight_ids())
