"""`pfrl train`: from a validated config to a finished, stopped or failed run.

This module owns the run's lifecycle: the run state (fresh, or restored from the newest
checkpoint), the actors (Ray, the fleet, the parts the loop drives), signal handling, and the
clean-up that always runs. The loop itself is `pfrl/controller.py`.
"""

from __future__ import annotations

import signal
from pathlib import Path

from pfrl.checkpoint import CheckpointStore
from pfrl.config import PfrlConfig
from pfrl.console import console
from pfrl.controller import Controller
from pfrl.errors import RunFailed, UserError
from pfrl.fleet import Fleet, start_ray
from pfrl.generator_pool import GeneratorPool
from pfrl.learner_thread import LearnerThread
from pfrl.preflight import RunInputs, check_inputs
from pfrl.rollouts import RolloutRequests
from pfrl.run_state import RunState, write_run_state


class RunSession:
    """One `pfrl train` process: its state, its actors, and their orderly end."""

    def __init__(self, cfg: PfrlConfig, inputs: RunInputs, resume: bool):
        self.cfg, self.inputs = cfg, inputs
        self.run_dir = Path(cfg.run.dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state = RunState(cfg, inputs, self.run_dir)
        self.store = CheckpointStore(self.run_dir, cfg.checkpoint.keep_last)
        self.resume_from: Path | None = None
        if resume and self.store.latest() is not None:
            self.resume_from = self._restore()
        else:
            self._fresh(resume)
        (self.run_dir / "config.yaml").write_text(cfg.to_yaml())
        self.fleet: Fleet | None = None
        self.learner: LearnerThread | None = None

    def _fresh(self, resume: bool) -> None:
        if resume:
            console.print(f"[yellow]{self.store.root}: no checkpoint yet; starting the run from the beginning")
        self.state.start_over()

    def _restore(self) -> Path:
        path, saved, buffer_state = self.store.load(self.cfg)
        rolled = self.state.restore(saved, buffer_state)
        sched = self.state.scheduler
        console.print(f"resuming from {path.name}: step {self.state.counters.step}, iteration {sched.iteration}, "
                      f"{len(sched.inflight_ids())} prompts re-issued, {rolled} ledger lines rolled back")
        return path

    def start(self) -> Controller:
        """Ray, a shared run.dir on every node, the actors, then the loop over them."""
        start_ray(self.cfg)
        from pfrl.cluster_check import check_run_dir_shared

        check_run_dir_shared(self.run_dir)  # learner ranks on any node write their checkpoints there
        self.fleet = Fleet.start(self.cfg, self.inputs.model_path)
        (self.run_dir / "placement.json").write_text(_placement_json(self.fleet))
        if self.resume_from is not None:
            self.fleet.learner.load_checkpoint(str(self.resume_from / "learner"), f"step{self.state.counters.step}")
        self.learner = LearnerThread(self.fleet.learner, self.fleet.generators, self.cfg.sync, self.run_dir)
        controller = Controller(
            self.cfg, self.inputs, self.state, self.store, self.fleet.learner,
            GeneratorPool(self.fleet.generators, list(self.fleet.generator_instances)),
            RolloutRequests(self.fleet.generators, self.fleet.labellers), self.learner,
        )
        _install_signal_handlers(controller)  # after ray.init, whose driver installs its own SIGTERM handler
        return controller

    def shutdown(self) -> None:
        if self.learner is not None:
            self.learner.shutdown()
        if self.fleet is not None:
            self.fleet.shutdown()
        self.state.close()


def _placement_json(fleet: Fleet) -> str:
    import json

    return json.dumps(fleet.placement(), indent=1)


def _install_signal_handlers(controller: Controller) -> None:
    def handler(signum, _frame):
        if controller.stop_requested:
            raise KeyboardInterrupt
        controller.stop_requested = True
        console.print(f"[yellow]{signal.Signals(signum).name}: finishing the current step, then checkpointing")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def train(cfg: PfrlConfig, resume: bool = False) -> int:
    """Validate inputs, start actors, run the loop, always clean up."""
    inputs = check_inputs(cfg)
    if not resume and (Path(cfg.run.dir) / "checkpoints" / "LATEST").exists():
        raise UserError(f"run.dir={cfg.run.dir} already holds a run: pass --resume, or choose another run.dir")
    session = RunSession(cfg, inputs, resume)
    try:
        write_run_state(session.run_dir, "starting", session.state.counters.step)
        controller = session.start()
        controller.begin()
        write_run_state(session.run_dir, "running", session.state.counters.step)
        controller.run()
        return 0
    except RunFailed as e:
        latest = session.store.latest()
        where = f"last checkpoint {latest.name}; resume with --resume" if latest else "no checkpoint yet"
        write_run_state(session.run_dir, "failed", session.state.counters.step, str(e))
        console.print(f"[red]run failed: {e} ({where})")
        return 1
    except Exception as e:  # a bug: the traceback follows, but state.json must not say "running"
        write_run_state(session.run_dir, "failed", session.state.counters.step, f"{type(e).__name__}: {e}")
        raise
    finally:
        session.shutdown()
