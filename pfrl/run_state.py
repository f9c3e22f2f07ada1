"""The state a run checkpoints, and the bookkeeping that keeps it consistent.

Counters (steps, versions, restarts, evaluations), the prompt scheduler, the replay buffer, the
ledger, the metrics and the samples files move together: a pair that enters the buffer is tied to its prompt, a
pair that is trained or dropped settles that prompt, and a settled prompt gets exactly one ledger
line. The controller's main thread is the only writer.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pfrl.buffer import ReplayBuffer
from pfrl.checkpoint import CheckpointStore
from pfrl.config import PfrlConfig
from pfrl.issue_policy import LoopSnapshot
from pfrl.ledger import Ledger, LedgerLine, Outcome
from pfrl.metrics import MetricsLogger
from pfrl.preflight import RunInputs
from pfrl.run_meters import RunMeters
from pfrl.samples import SamplesLog
from pfrl.scheduler import PromptScheduler, make_splits
from pfrl.types import LabelledGroup, PreferencePair, RolloutGroup

_YIELD_WINDOW = 64  # labelled prompts behind the pairs-per-prompt estimate


@dataclass
class Counters:
    step: int = 0
    version: int = 0  # the learner's policy version (= its step count)
    published: int = 0  # the newest version sent to the generators: the staleness reference
    iteration_step: int = 0  # learner steps taken in the current iteration (its lr schedule's position)
    generator_restarts: int = 0
    labeller_restarts: int = 0
    evals_done: list[int] = field(default_factory=list)


class RunState:
    def __init__(self, cfg: PfrlConfig, inputs: RunInputs, run_dir: Path):
        splits = make_splits([p.id for p in inputs.train], cfg.run.iterations, cfg.data.prompts_per_iteration,
                             cfg.run.seed, cfg.data.shuffle)
        self.cfg = cfg
        self.run_dir = run_dir
        self.scheduler = PromptScheduler(inputs.train, splits)
        self.buffer = ReplayBuffer(cfg.buffer)
        self.ledger = Ledger(run_dir / "ledger.jsonl")
        self.metrics = MetricsLogger(cfg.metrics, run_dir, cfg.model_dump(mode="json"))
        self.meters = RunMeters(cfg.run.task)
        self.samples = SamplesLog(run_dir, cfg.metrics.samples_rate, cfg.metrics.sample_chars, cfg.run.seed)
        self.counters = Counters()
        self._pair_counts: deque[int] = deque(maxlen=_YIELD_WINDOW)

    @property
    def pairs_per_prompt(self) -> float:
        """Pairs buffered per labelled prompt over the recent ones (1 before any is labelled).
        Duplicates the buffer refuses do not count: on a confident model a third of the pairs
        repeat one already seen, and counting them had the loop expect pairs that never came."""
        return sum(self._pair_counts) / len(self._pair_counts) if self._pair_counts else 1.0

    def snapshot(self, inflight_prompts: int, learner_busy: bool, stopping: bool,
                 labels_behind: bool = False) -> LoopSnapshot:
        cfg = self.cfg
        return LoopSnapshot(
            max_policy_lag=cfg.buffer.max_policy_lag, pairs_per_step=cfg.learner.pairs_per_step,
            capacity=cfg.buffer.capacity, num_learners=cfg.learner.num_learners, buffered=len(self.buffer),
            inflight_prompts=inflight_prompts, unissued_prompts=self.scheduler.unissued(),
            pairs_per_prompt=self.pairs_per_prompt, learner_busy=learner_busy, stopping=stopping,
            steps_done=self.counters.step, max_steps=cfg.run.max_steps, sync_every_steps=cfg.sync.every_steps,
            expiring=self._expiring() if learner_busy else 0,
            yield_known=bool(self._pair_counts), num_generators=cfg.generator.num_generators,
            pairs_per_prompt_sd=statistics.pstdev(self._pair_counts) if len(self._pair_counts) > 1 else 0.0,
            labels_behind=labels_behind,
        )

    def _expiring(self) -> int:
        """Buffered pairs that go stale when the step in flight publishes its weights (none when it
        does not publish: sparse syncs)."""
        if (self.counters.step + 1) % self.cfg.sync.every_steps:
            return 0
        return self.buffer.count_older(self.counters.version + 1 - self.cfg.buffer.max_policy_lag)

    # -- prompts and pairs -----------------------------------------------------------------
    def account(self, group: RolloutGroup, result: LabelledGroup, pairs: list[PreferencePair]) -> None:
        """A labelled group of a prompt still in flight: its pairs go to the buffer, or its
        ledger line is written now when it made none."""
        pid = group.item.problem.id
        self.meters.on_labelled(group, result)
        self.samples.maybe_write(group, result, self.counters.step)
        if not pairs:
            self._pair_counts.append(0)
            entry = self.scheduler.finish(pid)
            self._record(pid, entry.iteration, Outcome.NO_PAIR, 0, result.skipped or "no chosen/rejected pair")
            return
        self.scheduler.buffered(pid, len(pairs))
        duplicates = self.buffer.drops["duplicate"]
        self.buffer.add(pairs, self.counters.published)
        self._pair_counts.append(len(pairs) - (self.buffer.drops["duplicate"] - duplicates))
        self.settle_dropped()

    def resample(self, group: RolloutGroup, pairs: int) -> None:
        """A labelled group whose pairs no step can still use: its prompt goes out again (nothing is
        buffered or settled). Its yield still counts: it says what the prompts in flight bring."""
        self._pair_counts.append(pairs)
        self.meters.on_resampled(group)
        self.scheduler.reissue([group.item.problem.id])

    def take(self, n: int) -> list[PreferencePair]:
        return self.buffer.take(n, self.counters.published)

    def drop_stale(self) -> None:
        self.buffer.drop_stale(self.counters.published)
        self.settle_dropped()

    def settle_dropped(self) -> None:
        for pair, reason in self.buffer.take_dropped():
            entry = self.scheduler.settle_pair(pair.prompt_id, trained=False)
            if entry is not None:
                outcome = Outcome.TRAINED if entry.pairs_trained else Outcome.STALE
                self._record(pair.prompt_id, entry.iteration, outcome, entry.pairs_trained,
                             None if entry.pairs_trained else reason)

    def settle_trained(self, pairs: list[PreferencePair]) -> None:
        for pair in pairs:
            entry = self.scheduler.settle_pair(pair.prompt_id, trained=True)
            if entry is not None:
                self._record(pair.prompt_id, entry.iteration, Outcome.TRAINED, entry.pairs_trained, None)

    def _record(self, pid: str, iteration: int, outcome: Outcome, pairs: int, reason: str | None) -> None:
        self.ledger.record(LedgerLine(iteration, pid, outcome, pairs, self.counters.step, reason))
        self.meters.settled += 1

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "counters": asdict(self.counters), "scheduler": self.scheduler.state_dict(),
            "pair_counts": list(self._pair_counts), "ledger_lines": self.ledger.lines,
            "metrics_lines": self.metrics.jsonl.lines, "samples_lines": self.samples.sink.lines,
            "meters": self.meters.state_dict(),
        }

    def checkpoint(self, store: CheckpointStore, save_learner) -> Path:
        self.ledger.flush()
        return store.save(self.counters.step, self.state_dict(), self.buffer.state_dict(), self.cfg, save_learner)

    def restore(self, state: dict[str, Any], buffer_state: dict) -> int:
        """Back to a checkpoint; returns how many ledger lines were rolled back."""
        self.counters = Counters(**state["counters"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.buffer.load_state_dict(buffer_state)
        self._pair_counts.extend(state["pair_counts"])
        self.meters.load_state_dict(state["meters"])
        self.metrics.jsonl.truncate(state["metrics_lines"])
        self.samples.sink.truncate(state["samples_lines"])
        return self.ledger.truncate(state["ledger_lines"])

    def start_over(self) -> None:
        """Step 0. A run killed before its first checkpoint leaves ledger and metrics lines
        behind: they describe work that is lost, so they go."""
        self.ledger.truncate(0)
        self.metrics.jsonl.truncate(0)
        self.samples.sink.truncate(0)

    def close(self) -> None:
        self.metrics.close()
        self.samples.sink.close()
        self.ledger.close()


def write_run_state(run_dir: Path, state: str, step: int, detail: str = "") -> None:
    """RUN_DIR/state.json: what `pfrl status` reports as the run's state."""
    record = {"state": state, "detail": detail, "pid": os.getpid(), "time": time.time(), "step": step}
    (Path(run_dir) / "state.json").write_text(json.dumps(record))
