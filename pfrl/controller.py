"""The online loop: generate -> label -> buffer -> DPO step -> weight sync, all at once.

One controller process owns the run's state (prompt scheduler, replay buffer, ledger, metrics,
checkpoints) and drives the actors over Ray:

* generation and labelling are request/response calls on actors, chained by object refs (a
  generator's output is handed to a labeller without passing through here), with at most
  `_REQUESTS_PER_GENERATOR` requests queued per generator. Knowing which prompts each request holds
  makes faults exact: a dead actor's prompts are re-issued, nothing else.
* the learner runs in one background thread (step, then weight sync every `sync.every_steps`), so
  sampling and labelling overlap training; the main thread never blocks on it.
* staleness: prompts are only issued while the generators' weights are within `max_policy_lag`
  versions of the learner; `max_policy_lag: 0` additionally waits for the learner and all rollouts,
  which is the paper's strict sample -> label -> train -> sync lockstep.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfrl.buffer import ReplayBuffer
from pfrl.checkpoint import CheckpointStore
from pfrl.config import PfrlConfig
from pfrl.console import console
from pfrl.errors import SyncError, UserError
from pfrl.fleet import Fleet, start_ray
from pfrl.ledger import Ledger, LedgerLine
from pfrl.metrics import MetricsLogger
from pfrl.preflight import RunInputs, check_inputs
from pfrl.run_meters import RunMeters
from pfrl.scheduler import PromptScheduler, make_splits
from pfrl.types import LabelledGroup, PreferencePair, PromptItem, RolloutGroup, decode, encode

log = logging.getLogger(__name__)
_REQUESTS_PER_GENERATOR = 2  # one running, one queued: the engine never waits for the controller
_POLL_S = 0.1
_YIELD_WINDOW = 64  # labelled prompts behind the pair-yield estimate


class RunFailed(Exception):
    """An actor failed in a way the run cannot survive; the message names it and the cause."""


@dataclass
class Request:
    """A generation request and, once sampled, its labelling request."""

    generator: int
    items: list[PromptItem]
    gen_ref: Any
    issued_version: int = 0  # the generator's weights when the request went out
    label_ref: Any = None
    labeller: int = -1


@dataclass
class LearnerJob:
    future: Future
    pairs: list[PreferencePair]
    started: float


@dataclass
class Counters:
    step: int = 0
    version: int = 0
    generator_restarts: int = 0
    labeller_restarts: int = 0
    evals_done: list[int] = field(default_factory=list)


def total_steps_hint(cfg: PfrlConfig, prompts_per_iteration: int) -> int:
    """The LR schedule's horizon: configured, or one pair per prompt as an estimate."""
    if cfg.learner.total_steps:
        return cfg.learner.total_steps
    if cfg.run.max_steps:
        return cfg.run.max_steps
    return max(1, cfg.run.iterations * prompts_per_iteration // cfg.learner.pairs_per_step)


class Controller:
    def __init__(self, cfg: PfrlConfig, inputs: RunInputs, resume: bool):
        self.cfg = cfg
        self.inputs = inputs
        self.run_dir = Path(cfg.run.dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        splits = make_splits([p.id for p in inputs.train], cfg.run.iterations, cfg.data.prompts_per_iteration,
                             cfg.run.seed, cfg.data.shuffle)
        self.scheduler = PromptScheduler(inputs.train, splits)
        self.buffer = ReplayBuffer(cfg.buffer)
        self.ledger = Ledger(self.run_dir / "ledger.jsonl")
        self.metrics = MetricsLogger(cfg.metrics, self.run_dir, cfg.model_dump(mode="json"))
        self.store = CheckpointStore(self.run_dir, cfg.checkpoint.keep_last)
        self.counters = Counters()
        self.meters = RunMeters(cfg.run.task)
        self.requests: list[Request] = []
        self.job: LearnerJob | None = None
        self.gen_versions: list[int] = []
        self.gen_instances: list[str | None] = []  # which actor instance each generator was last seen as
        self.yield_estimate = 1.0  # pairs per labelled prompt, over the recent groups
        self._yields: deque[int] = deque(maxlen=_YIELD_WINDOW)
        self.stop_requested = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner")
        self._resume_from = self._restore() if resume and self.store.latest() is not None else self._fresh(resume)
        (self.run_dir / "config.yaml").write_text(cfg.to_yaml())

    # -- state -----------------------------------------------------------------------------
    def _controller_state(self) -> dict:
        c = self.counters
        return {
            "step": c.step, "version": c.version, "generator_restarts": c.generator_restarts,
            "labeller_restarts": c.labeller_restarts, "evals_done": c.evals_done,
            "scheduler": self.scheduler.state_dict(), "yield_estimate": self.yield_estimate,
            "ledger_lines": self.ledger.lines, "metrics_lines": self.metrics.jsonl.lines,
            "meters": self.meters.state_dict(),
        }

    def _fresh(self, resume: bool) -> None:
        """Start from step 0. A run killed before its first checkpoint leaves ledger and metrics
        lines behind: they describe work that is lost, so they go."""
        if resume:
            console.print(f"[yellow]{self.store.root}: no checkpoint yet; starting the run from the beginning")
        self.ledger.truncate(0)
        self.metrics.jsonl.truncate(0)
        return None

    def _restore(self) -> Path:
        path, state, buffer_state = self.store.load(self.cfg)
        self.counters = Counters(state["step"], state["version"], state["generator_restarts"],
                                 state["labeller_restarts"], state["evals_done"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.buffer.load_state_dict(buffer_state)
        self.yield_estimate = state["yield_estimate"]
        self.meters.load_state_dict(state["meters"])
        rolled = self.ledger.truncate(state["ledger_lines"])
        self.metrics.jsonl.truncate(state["metrics_lines"])
        console.print(f"resuming from {path.name}: step {state['step']}, iteration {self.scheduler.iteration}, "
                      f"{len(self.scheduler.inflight_ids())} prompts re-issued, {rolled} ledger lines rolled back")
        return path

    def write_state(self, state: str, detail: str = "") -> None:
        """RUN_DIR/state.json: what `pfrl status` reports as the run's state."""
        record = {"state": state, "detail": detail, "pid": os.getpid(), "time": time.time(), "step": self.counters.step}
        (self.run_dir / "state.json").write_text(json.dumps(record))

    def checkpoint(self) -> None:
        self.ledger.flush()
        tag = f"step{self.counters.step}"
        path = self.store.save(self.counters.step, self._controller_state(), self.buffer.state_dict(), self.cfg,
                               lambda d: self.fleet.learner.save_checkpoint(str(d), tag))
        console.print(f"checkpoint {path.name} written")

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        start_ray(self.cfg)
        _install_signal_handlers(self)  # after ray.init, whose driver installs its own SIGTERM handler
        splits = self.scheduler.splits
        self.fleet = Fleet.start(self.cfg, self.inputs.model_path, total_steps_hint(self.cfg, len(splits[0])))
        self.gen_versions = [0] * len(self.fleet.generators)
        self.gen_instances = list(self.fleet.generator_instances)
        (self.run_dir / "placement.json").write_text(json.dumps(self.fleet.placement(), indent=1))
        if self._resume_from is not None:
            self.fleet.learner.load_checkpoint(str(self._resume_from / "learner"), f"step{self.counters.step}")
        if self.counters.version > 0:
            self._sync(list(range(len(self.fleet.generators))))
        if self.cfg.metrics.eval_every_steps and 0 not in self.counters.evals_done:
            self._eval_and_log(step=0)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if getattr(self, "fleet", None) is not None:
            self.fleet.shutdown()
        self.metrics.close()
        self.ledger.close()

    def run(self) -> None:
        while not self._finished():
            self._issue_prompts()
            self._collect()
            self._reap_learner()
            if self.stop_requested and self.job is None:
                self.checkpoint()
                self.write_state("stopped", "stopped on request")
                console.print("stopped on request; resume with --resume")
                return
            self._maybe_train()
            self._maybe_end_iteration()
        self._finish()

    def _finished(self) -> bool:
        max_steps = self.cfg.run.max_steps
        done_steps = max_steps is not None and self.counters.step >= max_steps and self.job is None
        return done_steps or getattr(self, "_all_done", False)

    def _finish(self) -> None:
        if self.cfg.metrics.eval_every_steps and self.counters.step not in self.counters.evals_done:
            self._eval_and_log(step=self.counters.step)
        self.checkpoint()
        final = self.run_dir / "final"
        self.fleet.learner.save_hf(str(final))
        self.write_state("finished")
        console.print(f"done: {self.counters.step} steps, policy v{self.counters.version}; model in {final}")

    # -- generation and labelling ----------------------------------------------------------
    def _prompt_deficit(self) -> int:
        """How many more prompts to put in flight: enough for `lag + 1` steps of pairs, counting
        what is buffered and what the prompts in flight are expected to yield, and nothing while
        new samples would be stale on arrival (or, in lockstep, while the policy is changing)."""
        lag = self.cfg.buffer.max_policy_lag
        if self.stop_requested or min(self.gen_versions) < self.counters.version - lag:
            return 0
        if lag == 0 and self.job is not None:
            return 0
        inflight = sum(len(r.items) for r in self.requests)
        target = min(self.cfg.learner.pairs_per_step * (lag + 1), self.cfg.buffer.capacity)
        missing = target - len(self.buffer) - inflight * self.yield_estimate
        return max(0, math.ceil(missing / max(self.yield_estimate, 0.1)))

    def _issue_allowed(self) -> bool:
        return self._prompt_deficit() > 0

    def _issue_prompts(self) -> None:
        for g, actor in enumerate(self.fleet.generators):
            while self.scheduler.has_unissued() and sum(
                r.generator == g and r.label_ref is None for r in self.requests
            ) < _REQUESTS_PER_GENERATOR:
                n = min(self.cfg.generator.prompts_per_request, self._prompt_deficit())
                if n == 0:
                    return
                items = self.scheduler.next_items(n)
                self.requests.append(Request(g, items, actor.generate.remote(encode(items)), self.gen_versions[g]))

    def _collect(self) -> None:
        import ray

        refs = [r.label_ref if r.label_ref is not None else r.gen_ref for r in self.requests]
        if not refs:
            time.sleep(_POLL_S if self.job is not None else 0)
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=_POLL_S)
        ready = set(ready)
        for req in [r for r in self.requests if (r.gen_ref if r.label_ref is None else r.label_ref) in ready]:
            if req not in self.requests:
                continue  # dropped while handling an earlier result (its generator died)
            if req.label_ref is None:
                self._on_generated(req)
            else:
                self._on_labelled(req)

    def _on_generated(self, req: Request) -> None:
        import ray

        try:
            ray.get(req.gen_ref)
        except ray.exceptions.RayActorError as e:
            self._generator_died(req.generator, e)
            return
        except ray.exceptions.RayTaskError as e:
            raise RunFailed(f"generator {req.generator} failed: {e.cause!r}") from None
        req.labeller = self.meters.labelled_groups % len(self.fleet.labellers)
        req.label_ref = self.fleet.labellers[req.labeller].label.remote(req.gen_ref)

    def _on_labelled(self, req: Request) -> None:
        import ray

        self.requests.remove(req)
        try:
            groups: list[RolloutGroup] = decode(ray.get(req.gen_ref))
            labelled: list[LabelledGroup] = decode(ray.get(req.label_ref))
        except ray.exceptions.RayActorError:
            self.counters.labeller_restarts += 1
            console.print(f"[yellow]labeller {req.labeller} died; its {len(req.items)} groups are labelled again")
            req.label_ref, req.labeller = None, -1
            self.requests.append(req)
            self._on_generated(req)
            return
        except ray.exceptions.RayTaskError as e:
            raise RunFailed(f"labeller {req.labeller} failed: {e.cause!r}") from None
        if groups and groups[0].policy_version < req.issued_version:
            # A generator's version only goes back when Ray restarted it (blank) between requests.
            self._generator_restarted(req.generator)
        for group, result in zip(groups, labelled, strict=True):
            if self.scheduler.is_current(group.item):
                self._account(group, result)

    def _account(self, group: RolloutGroup, result: LabelledGroup) -> None:
        from pfrl.feedback.pairs import to_preference_pairs
        from pfrl.feedback.steps import focus_on_first_error

        pid = group.item.problem.id
        self.meters.on_labelled(group, result)
        pairs = [] if result.skipped else to_preference_pairs(group, result)
        if self.cfg.labeller.pair_focus == "first_error":
            pairs = [focus_on_first_error(p) for p in pairs]
        self._yields.append(len(pairs))
        self.yield_estimate = sum(self._yields) / len(self._yields)
        if result.skipped or not pairs:
            entry = self.scheduler.finish(pid)
            self._ledger(pid, entry.iteration, "skipped" if result.skipped else "no_pair", 0)
            return
        self.scheduler.buffered(pid, len(pairs))
        self.buffer.add(pairs, self.counters.version)
        self._settle_dropped()

    def _settle_dropped(self) -> None:
        for pair, _reason in self.buffer.take_dropped():
            entry = self.scheduler.settle_pair(pair.prompt_id, trained=False)
            if entry is not None:
                outcome = "trained" if entry.pairs_trained else "stale"
                self._ledger(pair.prompt_id, entry.iteration, outcome, entry.pairs_trained)

    def _ledger(self, pid: str, iteration: int, outcome: str, pairs: int) -> None:
        self.ledger.record(LedgerLine(iteration, pid, outcome, pairs, self.counters.step))
        self.meters.settled += 1

    def _generator_died(self, g: int, err: Exception) -> None:
        """Re-issue what the dead generator held; Ray restarts it, then it gets the current weights
        (unless a failed step sync already found the restart and re-synced it)."""

        lost = [r for r in self.requests if r.generator == g and r.label_ref is None]
        for r in lost:
            self.requests.remove(r)
            self.scheduler.reissue([it.problem.id for it in r.items])
        console.print(f"[yellow]generator {g} died ({type(err).__name__}); {sum(len(r.items) for r in lost)} "
                      "prompts re-issued, waiting for its restart")
        self._resync_if_behind(g, self._wait_for_restart(g))

    def _note_instance(self, g: int, instance_id: str) -> bool:
        """Record the instance generator g answered as; a new one means Ray restarted it, which is
        counted here, once, whichever path (dead request, failed sync, plain sync) noticed it first."""
        known = self.gen_instances[g]
        self.gen_instances[g] = instance_id
        if known is None or known == instance_id:
            return False
        self.counters.generator_restarts += 1
        return True

    def _resync_if_behind(self, g: int, health: dict) -> None:
        restarted = self._note_instance(g, health["instance_id"])
        if restarted or health["version"] != self.gen_versions[g]:
            self._resync_restarted(g)

    def _wait_for_restart(self, g: int) -> dict:
        """Until Ray has the generator back (calls fail fast while it restarts), or give up; returns its health."""
        import ray

        deadline = time.time() + self.cfg.learner.start_timeout_s
        while True:
            try:
                return ray.get(self.fleet.generators[g].health.remote(), timeout=max(1.0, deadline - time.time()))
            except ray.exceptions.ActorUnavailableError:
                if time.time() > deadline:
                    raise RunFailed(f"generator {g} did not come back within {self.cfg.learner.start_timeout_s:.0f}s") from None
                time.sleep(1.0)
            except Exception as e:
                raise RunFailed(f"generator {g} did not come back after dying: {e}") from None

    def _generator_restarted(self, g: int) -> None:
        """A generator answered with older weights than it was given: Ray restarted it."""
        console.print(f"[yellow]generator {g} was restarted by Ray; sending it the current weights")
        self._resync_if_behind(g, self._wait_for_restart(g))

    def _resync_restarted(self, g: int) -> None:
        self.gen_versions[g] = -1  # blank: gets no prompts until it has the current weights
        if self.job is not None:
            self.job.future.result()  # the learner thread owns syncs; let its step finish first
            self._reap_learner()
        if self.gen_versions[g] < 0:  # the step's own sync may already have reached it
            self._sync([g])

    # -- learning --------------------------------------------------------------------------
    def _trainable_now(self) -> list[PreferencePair] | None:
        cfg = self.cfg
        if self.job is not None or self.stop_requested:
            return None
        if cfg.run.max_steps is not None and self.counters.step >= cfg.run.max_steps:
            return None
        self.buffer.drop_stale(self.counters.version)
        self._settle_dropped()
        if cfg.buffer.max_policy_lag == 0 and self.requests:
            return None  # lockstep: train on the complete batch sampled by this version
        tail = not self.scheduler.has_unissued() and not self.requests
        n = cfg.learner.pairs_per_step if len(self.buffer) >= cfg.learner.pairs_per_step else len(self.buffer) if tail else 0
        if n < cfg.learner.num_learners:
            return None
        return self.buffer.take(n, self.counters.version)

    def _maybe_train(self) -> None:
        pairs = self._trainable_now()
        if pairs:
            self.meters.on_step_start([self.counters.version - p.policy_version for p in pairs])
            sync_due = (self.counters.step + 1) % self.cfg.sync.every_steps == 0
            future = self._executor.submit(self._learner_work, pairs, sync_due)
            self.job = LearnerJob(future, pairs, time.time())

    def _learner_work(self, pairs: list[PreferencePair], sync_due: bool) -> tuple[dict, dict | SyncError | None]:
        """Runs on the learner thread: one DPO step, then (when due) publish the new weights.
        A failed publish does not undo the step: it comes back as the SyncError, for
        `_recover_sync` (most often a generator died, and the learner is fine)."""
        metrics = self.fleet.learner.train_step(pairs)
        if not sync_due:
            return metrics, None
        try:
            return metrics, self._sync_now(self.counters.version + 1, list(range(len(self.fleet.generators))))
        except SyncError as e:
            return metrics, e

    def _sync_now(self, version: int, gens: list[int]) -> dict:
        from pfrl.transport.weights import sync_weights

        # Learner rank 0 drives the other ranks' ZeRO-3 gathers itself (LearnerActor.set_peers).
        stats = sync_weights(self.fleet.learner.rank0, [self.fleet.generators[g] for g in gens], version, self.cfg.sync)
        for g in gens:
            self.gen_versions[g] = version
        return stats

    def _sync(self, gens: list[int]) -> None:
        try:
            stats = self._executor.submit(self._sync_now, self.counters.version, gens).result()
        except SyncError as e:
            raise RunFailed(f"weight sync of version {self.counters.version} to generators {gens} failed: {e}") from e
        self._on_synced(gens, stats)

    def _on_synced(self, gens: list[int], stats: dict) -> None:
        # A generator that Ray restarted while idle took these weights without anyone noticing it had died.
        for g, instance in zip(gens, stats["instances"], strict=True):
            self._note_instance(g, instance)
        self.meters.on_sync(stats)

    def _recover_sync(self, err: SyncError) -> None:
        """The step's own sync failed. Which generators took the new weights is unknown, so all
        are blanked (no prompts go out), any that died are waited for while Ray restarts them,
        then all get the current weights; failing again ends the run."""
        console.print(f"[yellow]weight sync after step {self.counters.step} failed; re-syncing every generator ({err})")
        gens = list(range(len(self.gen_versions)))  # one entry per generator
        self.gen_versions = [-1] * len(gens)
        for g in gens:
            self._wait_for_restart(g)
        self._sync(gens)  # its prepare_sync answers name each instance: _on_synced counts the restarts

    def _reap_learner(self) -> None:
        if self.job is None or not self.job.future.done():
            return
        job, self.job = self.job, None
        try:
            metrics, sync = job.future.result()
        except Exception as e:
            raise RunFailed(f"learner failed at step {self.counters.step + 1}: {e}") from e
        self.counters.step += 1
        self.counters.version += 1
        for pair in job.pairs:
            entry = self.scheduler.settle_pair(pair.prompt_id, trained=True)
            if entry is not None:
                self._ledger(pair.prompt_id, entry.iteration, "trained", entry.pairs_trained)
        if isinstance(sync, SyncError):
            self._recover_sync(sync)
        elif sync is not None:
            self._on_synced(list(range(len(self.fleet.generators))), sync)
        step = self.counters.step
        every = self.cfg.metrics.eval_every_steps
        evaluation = self._evaluate(step) if every and step % every == 0 else {}
        self._log_step(metrics, job, evaluation)
        if step % self.cfg.checkpoint.every_steps == 0:
            self.checkpoint()

    def _log_step(self, metrics: dict, job: LearnerJob, evaluation: dict) -> None:
        record = self.meters.step_record(
            step=self.counters.step, iteration=self.scheduler.iteration, version=self.counters.version,
            learner=metrics, buffer=self.buffer.stats(self.counters.version), restarts=(
                self.counters.generator_restarts, self.counters.labeller_restarts),
            split_size=len(self.scheduler.split),
        )
        record.update(evaluation)
        self.metrics.log(record)
        if self.counters.step % self.cfg.run.log_every == 0:
            console.print(self.meters.console_line(record))

    def _maybe_end_iteration(self) -> None:
        if self.job is not None or not self.scheduler.iteration_done():
            return
        it = self.scheduler.iteration
        self.fleet.learner.refresh_reference()
        console.print(f"iteration {it} complete: reference model refreshed to policy v{self.counters.version}")
        if not self.scheduler.advance_iteration():
            self._all_done = True
            return
        self.meters.settled = 0
        self.checkpoint()

    # -- evaluation ------------------------------------------------------------------------
    def _evaluate(self, step: int) -> dict[str, float]:
        """Greedy held-out accuracy under the generators' current weights (generator 0). A
        generator 0 that dies meanwhile is handled like any dead generator, then asked again."""
        import ray

        try:
            return self._evaluate_once(step)
        except ray.exceptions.RayActorError as e:
            self._generator_died(0, e)
        try:
            return self._evaluate_once(step)
        except ray.exceptions.RayActorError as e:
            raise RunFailed(f"generator 0 died twice during the evaluation at step {step}: {e}") from None

    def _evaluate_once(self, step: int) -> dict[str, float]:
        import ray

        from pfrl.evaluation import Scorer, evaluate

        problems = self.inputs.heldout[: self.cfg.metrics.eval_prompts]
        gen = self.fleet.generators[0]
        # Never evaluate a restarted generator's base weights.
        if self.gen_versions[0] < 0:
            self._sync([0])
        elif ray.get(gen.policy_version.remote()) != self.gen_versions[0]:
            self._generator_restarted(0)

        def sample(prompts: list[str], n: int, temperature: float) -> list[list[str]]:
            return ray.get(gen.sample.remote(prompts, n, temperature))

        scorer = Scorer(self.cfg.run.task, self.cfg.labeller.verify_timeout_s, self.cfg.labeller.sandbox)
        result = evaluate(problems, sample, scorer)
        self.counters.evals_done.append(step)
        console.print(f"[bold]eval[/] step {step}: held-out accuracy {result['accuracy']:.3f} on {len(problems)} problems")
        return {"eval/accuracy": result["accuracy"], "eval/problems": result["problems"]}

    def _eval_and_log(self, step: int) -> None:
        """An evaluation outside a step (run start, run end): its own metrics line."""
        evaluation = self._evaluate(step)
        self.metrics.log({"step": step, "iteration": self.scheduler.iteration, "policy_version": self.counters.version,
                          "time": time.time(), **evaluation})


def _install_signal_handlers(controller: Controller) -> None:
    def handler(signum, _frame):
        if controller.stop_requested:
            raise KeyboardInterrupt
        controller.stop_requested = True
        console.print(f"[yellow]{signal.Signals(signum).name}: finishing the current step, then checkpointing")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def train(cfg: PfrlConfig, resume: bool = False) -> int:
    """`pfrl train`: validate inputs, start actors, run the loop, always clean up."""
    inputs = check_inputs(cfg)
    if not resume and (Path(cfg.run.dir) / "checkpoints" / "LATEST").exists():
        raise UserError(f"run.dir={cfg.run.dir} already holds a run: pass --resume, or choose another run.dir")
    controller = Controller(cfg, inputs, resume)
    try:
        controller.write_state("starting")
        controller.start()
        controller.write_state("running")
        controller.run()
        return 0
    except RunFailed as e:
        latest = controller.store.latest()
        where = f"last checkpoint {latest.name}; resume with --resume" if latest else "no checkpoint yet"
        controller.write_state("failed", str(e))
        console.print(f"[red]run failed: {e} ({where})")
        return 1
    finally:
        controller.shutdown()
