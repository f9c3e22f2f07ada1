"""The online loop: generate -> label -> buffer -> DPO step -> weight sync, all at once.

One loop on the main thread drives the parts, each the single owner of its state:

* `RunState` (pfrl/run_state.py): counters, prompt scheduler, replay buffer, ledger, metrics; what
  a checkpoint holds;
* `issue_policy` (pure functions): how many prompts to issue, how many pairs to train, how long
  the iteration's lr schedule is;
* `RolloutRequests` (pfrl/rollouts.py): generation and labelling requests in flight on the actors;
* `PairIntake` (pfrl/pair_intake.py): labelled groups into the buffer, held for prefix values (pDPO);
* `GeneratorPool` (pfrl/generator_pool.py): each generator READY at a version or BLANK after a restart;
* `LearnerThread` (pfrl/learner_thread.py): DPO steps and weight syncs on a background thread,
  whose results this loop applies.

Staleness is measured against the newest weights published to the generators (see issue_policy);
`max_policy_lag: 0` is the paper's strict sample -> label -> train -> sync lockstep.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from pfrl import faults, issue_policy
from pfrl.checkpoint import CheckpointStore, CheckpointWriteError
from pfrl.config import PfrlConfig
from pfrl.console import console
from pfrl.errors import RunFailed, SyncError
from pfrl.feedback import isolation
from pfrl.generator_pool import GeneratorPool
from pfrl.learner_thread import LearnerThread, StepResult
from pfrl.pair_intake import PairIntake
from pfrl.preflight import RunInputs
from pfrl.rollouts import (
    GeneratorLost,
    Labelled,
    LabellerLost,
    OlderWeights,
    PrefixesValued,
    RolloutRequests,
)
from pfrl.run_state import RunState, write_run_state

__all__ = ["Controller", "RunFailed"]

# How long the loop waits for a result before it looks at the learner again: a finished step is
# seen (and the next one started) up to this late. 0.1 s was a sixth of a CPU preset step.
_POLL_S = 0.02


class Controller:
    """The loop over started actors. `pfrl/training.py` builds the parts and hands them over."""

    def __init__(self, cfg: PfrlConfig, inputs: RunInputs, state: RunState, store: CheckpointStore,
                 learner_group: Any, pool: GeneratorPool, rollouts: RolloutRequests, learner: LearnerThread):
        self.cfg, self.inputs, self.state, self.store = cfg, inputs, state, store
        self.run_dir = state.run_dir
        self.learner_group = learner_group  # checkpoints, reference refresh, the final model
        self.pool, self.rollouts, self.learner = pool, rollouts, learner
        self.intake = PairIntake(cfg, state, pool, rollouts, self._snapshot)
        self.stop_requested = False
        self.all_done = False

    def begin(self) -> None:
        """A resumed run's generators get the checkpoint's weights; evaluate the start once."""
        if self.state.counters.version > 0:
            self._sync_all()
        if self.cfg.metrics.eval_every_steps and 0 not in self.state.counters.evals_done:
            self._eval_and_log(step=0)

    def checkpoint(self) -> None:
        learner, tag = self.learner_group, f"step{self.state.counters.step}"
        try:
            path = self.state.checkpoint(self.store, lambda d: learner.save_checkpoint(str(d), tag))
        except CheckpointWriteError as e:
            raise RunFailed(str(e)) from None
        console.print(f"checkpoint {path.name} written")

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        while not self._finished():
            self._issue_prompts()
            self._collect()
            self._apply_learner_result()
            if self.stop_requested and not self.learner.busy:
                self._stop()
                return
            self._maybe_train()
            self._maybe_end_iteration()
        self._finish()

    def _finished(self) -> bool:
        max_steps = self.cfg.run.max_steps
        at_max = max_steps is not None and self.state.counters.step >= max_steps
        return (at_max and not self.learner.busy) or self.all_done

    def _stop(self) -> None:
        self.checkpoint()
        write_run_state(self.run_dir, "stopped", self.state.counters.step, "stopped on request")
        console.print("stopped on request; resume with --resume")

    def _finish(self) -> None:
        counters = self.state.counters
        if self.cfg.metrics.eval_every_steps and counters.step not in counters.evals_done:
            self._eval_and_log(step=counters.step)
        self.checkpoint()
        final = self.run_dir / "final"
        self.learner_group.save_hf(str(final))
        if self.cfg.run.push_to:
            from pfrl.hub_push import push_final

            console.print(f"pushed {final} to {self.cfg.run.push_to}: {push_final(self.run_dir, self.cfg.run.push_to)}")
        write_run_state(self.run_dir, "finished", counters.step)
        console.print(f"done: {counters.step} steps, policy v{counters.version}; model in {final}")

    def _snapshot(self) -> issue_policy.LoopSnapshot:
        labels_behind = self.rollouts.labelling_wait() > issue_policy.LABELS_BEHIND_S
        snap = self.state.snapshot(self.rollouts.inflight_prompts(), self.learner.busy, self.stop_requested,
                                   labels_behind)
        published = self.state.counters.published
        by_age = {published - v: n for v, n in self.rollouts.inflight_by_version().items()}
        return replace(snap, doomed_prompts=issue_policy.doomed_prompts(snap, by_age))

    # -- generation and labelling ----------------------------------------------------------
    def _issue_prompts(self) -> None:
        """Requests to the least-loaded generator with room in its engine, while the policy asks
        for prompts."""
        scheduler, rollouts, gen = self.state.scheduler, self.rollouts, self.cfg.generator
        room = issue_policy.engine_room(gen.prompts_per_request, gen.max_num_seqs, gen.n_samples)
        ready = self.pool.ready()
        while ready and scheduler.has_unissued():
            g = min(ready, key=rollouts.sampling_prompts)
            if rollouts.sampling_prompts(g) >= room:
                return
            n = issue_policy.request_prompts(self._snapshot(), gen.prompts_per_request)
            if n == 0:
                return
            rollouts.issue(g, scheduler.next_items(n), self.pool.states[g].version)

    def _collect(self) -> None:
        if not self.rollouts.requests:
            time.sleep(_POLL_S if self.learner.busy else 0)
            return
        for event in self.rollouts.poll(_POLL_S):
            if isinstance(event, Labelled):
                self.state.meters.on_request(len(event.request.items), time.time() - event.request.issued_at)
                self.intake.on_labelled(event)
            elif isinstance(event, PrefixesValued):
                self.intake.on_prefixes_valued(event)
            elif isinstance(event, GeneratorLost):
                self._on_generator_lost(event)
            elif isinstance(event, OlderWeights):
                console.print(f"[yellow]generator {event.generator} was restarted by Ray; sending it the current weights")
                self._recover_generator(event.generator)
            elif isinstance(event, LabellerLost):
                self.state.counters.labeller_restarts += 1
                console.print(f"[yellow]labeller {event.labeller} died; its groups are labelled again")

    # -- generator faults ------------------------------------------------------------------
    def _on_generator_lost(self, event: GeneratorLost) -> None:
        """Re-issue what a dead generator (or one whose weight swap failed) held; once Ray has it
        back, it gets the current weights."""
        self.state.scheduler.reissue(event.prompt_ids)
        console.print(f"[yellow]generator {event.generator} lost its requests ({type(event.error).__name__}); "
                      f"{len(event.prompt_ids)} prompts re-issued, bringing it back to the current weights")
        self._recover_generator(event.generator)

    def _recover_generator(self, g: int) -> None:
        """Wait for Ray's restart; a new instance (counted once) or one on other weights is blanked
        and every generator is brought to the current weights, after the step in flight."""
        health = self.pool.wait_for_restart(g, self.cfg.generator.restart_timeout_s)
        restarted, stale = self.pool.check_health(g, health)
        self.state.counters.generator_restarts += restarted
        if not stale:
            return
        self.pool.blank(g)
        self._apply_learner_result(wait=True)  # the step's own sync may already reach the new instance
        if self.pool.blanks():
            self._sync_all()

    def _recover_sync(self, err: SyncError) -> None:
        """A step's own sync failed. Which generators took the new weights is unknown, so all are
        blanked (no prompts go out), any that died are waited for while Ray restarts them, then all
        get the current weights; failing again ends the run."""
        console.print(f"[yellow]weight sync after step {self.state.counters.step} failed; "
                      f"re-syncing every generator ({err})")
        self.pool.blank_all()
        for g in range(len(self.pool)):
            self.pool.wait_for_restart(g, self.cfg.generator.restart_timeout_s)
        self._sync_all()  # its prepare_sync answers name each instance: on_synced counts the restarts

    def _sync_all(self) -> None:
        """Publish the current version to every generator (the learner is idle)."""
        version, gens = self.state.counters.version, list(range(len(self.pool)))
        try:
            stats = self.learner.sync(gens, version)
        except SyncError as e:
            raise RunFailed(f"weight sync of version {version} to generators {gens} failed: {e}") from e
        self._on_synced(stats)

    def _on_synced(self, stats: dict) -> None:
        gens = list(range(len(self.pool)))
        self.state.counters.generator_restarts += self.pool.on_synced(gens, stats["version"], stats["instances"])
        self.state.counters.published = stats["version"]
        self.state.meters.on_sync(stats)

    # -- learning --------------------------------------------------------------------------
    def _maybe_train(self) -> None:
        self.state.drop_stale()
        snap = self._snapshot()
        n = issue_policy.pairs_to_train(snap)
        if n == 0:
            return
        from learner.optim import lr_at

        counters = self.state.counters
        horizon = counters.iteration_step + issue_policy.steps_left(snap)
        lr = lr_at(counters.iteration_step, horizon, self.cfg.learner)
        pairs = self.state.take(n)
        self.state.meters.on_step_start([counters.version - p.policy_version for p in pairs])
        sync_due = (counters.step + 1) % self.cfg.sync.every_steps == 0
        self.learner.start_step(pairs, lr, counters.version + 1 if sync_due else None)

    def _apply_learner_result(self, wait: bool = False) -> None:
        """Apply the step in flight once it is done (with `wait`, block until it is)."""
        if not self.learner.busy:
            return
        try:
            result = self.learner.wait() if wait else self.learner.finished()
        except Exception as e:
            raise RunFailed(f"learner failed at step {self.state.counters.step + 1}: {e}") from e
        if result is not None:
            self._apply(result)

    def _apply(self, result: StepResult) -> None:
        counters = self.state.counters
        counters.step += 1
        counters.version += 1
        counters.iteration_step += 1
        self.state.settle_trained(result.pairs)
        if isinstance(result.sync, SyncError):
            self._recover_sync(result.sync)
        elif result.sync is not None:
            self._on_synced(result.sync)
        every = self.cfg.metrics.eval_every_steps
        evaluation = self._evaluate(counters.step) if every and counters.step % every == 0 else {}
        self._log_step(result.metrics, evaluation)
        if counters.step % self.cfg.checkpoint.every_steps == 0:
            self.checkpoint()

    def _log_step(self, metrics: dict, evaluation: dict) -> None:
        c, sched = self.state.counters, self.state.scheduler
        record = self.state.meters.step_record(
            step=c.step, iteration=sched.iteration, version=c.version, learner=metrics,
            buffer=self.state.buffer.stats(), restarts=(c.generator_restarts, c.labeller_restarts),
            split_size=len(sched.split),
        )
        record["label/pairs_per_prompt"] = self.state.pairs_per_prompt
        record["sync/published_version"] = c.published
        record["rollout/label_wait_s"] = self.rollouts.labelling_wait()  # above LABELS_BEHIND_S: labels lag
        record.update(isolation.metrics(self.inputs.sandbox_backend))
        record.update(evaluation)
        self.state.metrics.log(record)
        if c.step % self.cfg.run.log_every == 0:
            console.print(self.state.meters.console_line(record))

    def _maybe_end_iteration(self) -> None:
        sched = self.state.scheduler
        if self.learner.busy or not sched.iteration_done():
            return
        self.learner_group.refresh_reference()
        faults.hold("iteration_boundary", self.run_dir)
        console.print(f"iteration {sched.iteration} complete: reference model refreshed to "
                      f"policy v{self.state.counters.version}")
        if not sched.advance_iteration():
            self.all_done = True
            return
        self.state.counters.iteration_step = 0
        self.state.meters.settled = 0
        self.checkpoint()

    # -- evaluation ------------------------------------------------------------------------
    def _evaluate(self, step: int) -> dict[str, float]:
        """Held-out figures under the current weights (generator 0). A generator 0 that dies
        meanwhile is handled like any dead generator, then asked again; twice ends the run."""
        import ray

        for attempt in range(2):
            try:
                return self._evaluate_once(step)
            except ray.exceptions.RayActorError as e:
                if attempt == 1:
                    raise RunFailed(f"generator 0 died twice during the evaluation at step {step}: {e}") from None
                self._on_generator_lost(GeneratorLost(0, self.rollouts.drop_generator(0), e))
        raise AssertionError("unreachable")

    def _evaluate_once(self, step: int) -> dict[str, float]:
        import ray

        from pfrl.evaluation import Scorer, eval_metrics, evaluate

        # Never evaluate a blank generator or weights older than the learner's (sparse syncs).
        gen_version = ray.get(self.pool.actors[0].policy_version.remote())
        if gen_version != self.pool.states[0].version:
            self._recover_generator(0)
        if self.pool.blanks() or self.state.counters.published != self.state.counters.version:
            self._sync_all()
        m = self.cfg.metrics
        problems = self.inputs.heldout[: m.eval_prompts]
        gen = self.pool.actors[0]

        def sample(prompts: list[str], n: int, temperature: float) -> list[list[str]]:
            return ray.get(gen.sample.remote(prompts, n, temperature))

        scorer = Scorer(self.cfg.run.task, self.cfg.labeller.verify_timeout_s, self.cfg.labeller.sandbox)
        faults.hold("evaluation", self.run_dir)
        result = evaluate(problems, sample, scorer, n=m.eval_samples, temperature=m.eval_temperature)
        self.state.counters.evals_done.append(step)
        console.print(f"[bold]eval[/] step {step}: held-out accuracy {result['accuracy']:.3f} on {len(problems)} problems")
        return eval_metrics(result)

    def _eval_and_log(self, step: int) -> None:
        """An evaluation outside a step (run start, run end): its own metrics line."""
        evaluation = self._evaluate(step)
        c = self.state.counters
        self.state.metrics.log({"step": step, "iteration": self.state.scheduler.iteration,
                                "policy_version": c.version, "time": time.time(), **evaluation})
