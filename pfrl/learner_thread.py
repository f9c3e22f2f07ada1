"""The learner's side of the loop, on one background thread.

A step is a DPO update on the learner ranks followed, when due, by a weight sync to the
generators; sampling and labelling go on meanwhile. Syncs outside a step (resume, recovery, before
an evaluation) go through the same thread, so the learner is never asked to step and publish at
once. The thread only calls actors and returns what happened: the main thread applies every result
to the run's state, so each piece of state has one owner.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfrl import faults
from pfrl.config import SyncSection
from pfrl.errors import SyncError
from pfrl.types import PreferencePair


@dataclass
class StepResult:
    pairs: list[PreferencePair]
    metrics: dict[str, float]
    started: float
    # the step's own sync: its stats, the SyncError it raised (the step still counts), or None (not due)
    sync: dict[str, Any] | SyncError | None


class LearnerThread:
    def __init__(self, learner: Any, generators: list[Any], sync_cfg: SyncSection, run_dir: Path):
        from pfrl.transport.weights import WeightSync  # torch comes with it: not at module load

        self.learner = learner
        self.run_dir = run_dir  # for fault-injection markers only
        self.generators = generators
        self.sync_cfg = sync_cfg
        # The collective group and the ZMQ fallback, carried from sync to sync (all on this thread).
        self._weight_sync = WeightSync()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner")
        self._job: Future[StepResult] | None = None

    @property
    def busy(self) -> bool:
        return self._job is not None

    def start_step(self, pairs: list[PreferencePair], lr: float, publish_as: int | None) -> None:
        """Train on `pairs` at `lr`; then, with `publish_as` set, sync that version to every generator."""
        self._job = self._executor.submit(self._step, pairs, lr, publish_as)

    def finished(self) -> StepResult | None:
        """The step's result once it is done (None while it runs or when none was started).
        A learner failure re-raises here."""
        if self._job is None or not self._job.done():
            return None
        return self.wait()

    def wait(self) -> StepResult:
        job, self._job = self._job, None
        assert job is not None, "no learner step in flight"
        return job.result()

    def sync(self, gens: list[int], version: int) -> dict[str, Any]:
        """Publish the learner's current weights as `version` to these generators (blocking;
        the learner must be idle). Raises SyncError."""
        assert self._job is None, "a sync outside a step needs an idle learner"
        return self._executor.submit(self._publish, gens, version).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- on the thread ---------------------------------------------------------------------
    def _step(self, pairs: list[PreferencePair], lr: float, publish_as: int | None) -> StepResult:
        started = time.time()
        faults.hold("learner_step", self.run_dir)
        metrics = self.learner.train_step(pairs, lr)
        if publish_as is None:
            return StepResult(pairs, metrics, started, None)
        try:
            sync: dict[str, Any] | SyncError = self._publish(list(range(len(self.generators))), publish_as)
        except SyncError as e:  # most often a generator died; the learner and its step are fine
            sync = e
        return StepResult(pairs, metrics, started, sync)

    def _publish(self, gens: list[int], version: int) -> dict[str, Any]:
        from pfrl.transport.weights import sync_weights

        faults.hold("weight_sync", self.run_dir)
        # Learner rank 0 drives the other ranks' ZeRO-3 gathers itself (LearnerActor.set_peers).
        gen_handles = [self.generators[g] for g in gens]
        return sync_weights(self.learner.rank0, gen_handles, version, self.sync_cfg, self._weight_sync)
