"""Fault injection for `pfrl train`: kill it at chosen places, resume, and audit what survived.

A trial runs `pfrl train` in its own session and injects its faults one after another:

* kill -9 of the whole run (driver, Ray, actors) between steps, or held at a fault point inside a
  learner step, a weight sync, an evaluation, a checkpoint write, a checkpoint's rename or an
  iteration boundary (pfrl/faults.py: the run announces the point with a marker file and holds
  there; the harness arms the point once the run is `after_step` steps in, so it fires mid-run);
* SIGTERM to the driver (it must checkpoint and exit 0);
* kill -9 of the learner actor (the run must stop by itself with a resume hint, exit 1);
* kill -9 of a labeller actor, or of the generators twice in a row (the run must carry on).

After a fault that ends the run, the trial resumes it with `--resume`, until it completes. Then the
audit: every prompt of the scheduler's real splits exactly once in the ledger, steps 1..N without a
gap or repeat in metrics.jsonl, and the final model loads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from pfrl.faults import POINTS, marker
from pfrl.ledger import audit, read_ledger

# Faults after which the run goes on by itself (no resume), and what each expects of the process.
CARRY_ON = ("labeller_actor", "generator_twice")
KINDS = ("between_steps", *POINTS, "sigterm", "learner_actor", *CARRY_ON)
_ACTOR_TITLES = {"learner_actor": "ray::LearnerActor", "labeller_actor": "ray::LabellerActor",
                 "generator_twice": "ray::GeneratorActor"}


@dataclass
class Fault:
    """`kind` (one of KINDS), injected once the run has logged `after_step` learner steps."""

    kind: str
    after_step: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (one of {', '.join(KINDS)})")

    @property
    def description(self) -> str:
        return f"{self.kind} after step {self.after_step}"


@dataclass
class TrialReport:
    faults_injected: int = 0
    runs: int = 0
    completed: bool = False
    steps: list[int] = field(default_factory=list)
    ledger: dict = field(default_factory=dict)
    prompts_lost: int = 0
    prompts_repeated: int = 0
    step_gaps_or_repeats: bool = False
    final_loads: bool = False
    notes: list[str] = field(default_factory=list)  # faults the run did not take as it should
    log: str = ""

    @property
    def resumed_ok(self) -> bool:
        return (self.completed and not self.prompts_lost and not self.prompts_repeated
                and not self.step_gaps_or_repeats and self.final_loads and not self.notes)

    def to_dict(self) -> dict:
        return {**asdict(self), "resumed_ok": self.resumed_ok}


def _steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill
        if record["step"] > 0 and "dpo/loss" in record:
            out.append(record["step"])
    return out


def _session_pids(proc: subprocess.Popen, title: str) -> list[int]:
    """Processes of the run's session whose title starts with `title` (Ray names actors' processes)."""
    listing = subprocess.run(["ps", "-s", str(proc.pid), "-o", "pid=,args="], capture_output=True, text=True).stdout
    pids = []
    for line in listing.splitlines():
        pid, _, args = line.strip().partition(" ")
        if args.startswith(title):
            pids.append(int(pid))
    return pids


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL every process of the run's session: the driver, Ray's daemons and workers, the
    actors' vLLM processes. (Ray gives workers their own process groups, but not their own session.)"""
    subprocess.run(["pkill", "-9", "-s", str(proc.pid)], check=False)
    proc.wait()


def _kill_actors(proc: subprocess.Popen, kind: str) -> int:
    pids = _session_pids(proc, _ACTOR_TITLES[kind])
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return len(pids)


def _start(config: str, run_dir: Path, overrides: list[str], resume: bool, fault: Fault | None,
           log: IO[bytes]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pfrl.cli", "train", "--config", config, "--set", f"run.dir={run_dir}"]
    for o in overrides:
        cmd += ["--set", o]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ)
    if fault is not None and fault.kind in POINTS:
        env.update({"PFRL_FAULT_AT": fault.kind, "PFRL_FAULT_HOLD_S": "120"})
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


class _Watch:
    """One run of a trial, watched until it exits or its fault has been dealt with."""

    def __init__(self, proc: subprocess.Popen, run_dir: Path, fault: Fault | None, timeout_s: float,
                 report: TrialReport):
        self.proc, self.run_dir, self.fault, self.report = proc, run_dir, fault, report
        self.deadline = time.time() + timeout_s
        self.injected = False
        self._generator_kills: list[int] = []  # restarts seen at each generator kill

    def run(self) -> bool:
        """Watch until the run exits; True when it ended because of its fault and must be resumed."""
        while self.proc.poll() is None:
            if time.time() > self.deadline:
                raise TimeoutError("pfrl train did not finish in time")
            fault = self.fault
            if fault is not None and not self.injected and len(_steps(self.run_dir)) >= fault.after_step:
                if self._inject(fault):
                    return True
            time.sleep(0.2)
        return False

    def _inject(self, fault: Fault) -> bool:
        """Act on the fault once its moment has come; True when the run ended because of it."""
        if fault.kind in POINTS:
            return self._at_point(fault.kind)
        if fault.kind in CARRY_ON:
            self._carry_on(fault)
            return False
        if fault.kind == "between_steps":
            _kill_session(self.proc)
        elif fault.kind == "sigterm":  # it must checkpoint and exit 0
            os.kill(self.proc.pid, signal.SIGTERM)
            self._expect_exit(0)
        else:  # the learner actor: the run must stop by itself, with its resume hint (exit 1)
            if not _kill_actors(self.proc, fault.kind):
                return False  # not started yet (a resumed run): try again
            self._expect_exit(1)
        self.injected = True
        return True

    def _expect_exit(self, code: int) -> None:
        """The run must end by itself with `code`, its state recorded and no actor left behind."""
        got = self.proc.wait(timeout=max(1.0, self.deadline - time.time()))
        left = [t for t in ("ray::GeneratorActor", "ray::LearnerActor") if _session_pids(self.proc, t)]
        subprocess.run(["pkill", "-9", "-s", str(self.proc.pid)], check=False)  # Ray's daemons of that session
        state = json.loads((self.run_dir / "state.json").read_text())["state"]
        want = "stopped" if code == 0 else "failed"
        what = self.fault.description if self.fault else ""
        if got != code or state != want:
            self.report.notes.append(f"{what}: exit {got} with state {state}, expected {code} and {want}")
        if left:
            self.report.notes.append(f"{what}: {', '.join(left)} still running after the driver exited")

    def _at_point(self, point: str) -> bool:
        armed = marker(self.run_dir, point).with_suffix(".armed")
        if not armed.exists():
            armed.parent.mkdir(parents=True, exist_ok=True)
            armed.touch()
        if not marker(self.run_dir, point).exists():
            return False
        _kill_session(self.proc)
        self.injected = True
        return True

    def _carry_on(self, fault: Fault) -> None:
        """A labeller killed once; or the generators killed, then, once the run has counted that
        restart, killed again."""
        if fault.kind == "labeller_actor":
            self.injected = _kill_actors(self.proc, fault.kind) > 0
            return
        restarts = _generator_restarts(self.run_dir)
        if self._generator_kills and restarts <= self._generator_kills[-1]:
            return  # the first restart is not handled yet
        if _kill_actors(self.proc, fault.kind):
            self._generator_kills.append(restarts)
        self.injected = len(self._generator_kills) == 2


def _generator_restarts(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    for line in reversed(lines):
        try:
            return int(json.loads(line).get("faults/generator_restarts", 0))
        except json.JSONDecodeError:
            continue
    return 0


def run_trial(config: str, run_dir: Path, faults: list[Fault], overrides: list[str] | None = None,
              timeout_s: float = 1800) -> TrialReport:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    report = TrialReport(log=str(run_dir / "chaos.log"))
    pending = list(faults)
    with (run_dir / "chaos.log").open("ab") as log:
        while True:
            fault = pending.pop(0) if pending else None
            proc = _start(config, run_dir, overrides or [], report.runs > 0, fault, log)
            report.runs += 1
            watch = _Watch(proc, run_dir, fault, timeout_s, report)
            try:
                ended = watch.run()
            except BaseException:  # a timeout, or the caller interrupted (a test timing out): leave nothing behind
                _kill_session(proc)
                raise
            report.faults_injected += int(watch.injected)
            if not ended:  # finished (or failed) by itself; faults still pending never got their moment
                report.completed = proc.returncode == 0
                break
    return _audit(report, run_dir)


def real_splits(run_dir: Path) -> dict[int, list[str]]:
    """The prompt splits the scheduler made for this run, rebuilt from its resolved config and data
    (what an audit must compare the ledger with, rather than anything read off the ledger)."""
    from pfrl.config import load_config
    from pfrl.preflight import check_inputs
    from pfrl.scheduler import make_splits

    cfg = load_config(Path(run_dir) / "config.yaml")
    problems = check_inputs(cfg).train
    splits = make_splits([p.id for p in problems], cfg.run.iterations, cfg.data.prompts_per_iteration,
                         cfg.run.seed, cfg.data.shuffle)
    return dict(enumerate(splits))


def _final_loads(run_dir: Path) -> bool:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the bench's table is the output
    try:
        AutoModelForCausalLM.from_pretrained(run_dir / "final")
    except (OSError, ValueError):
        return False
    return True


def _audit(report: TrialReport, run_dir: Path) -> TrialReport:
    report.ledger = audit(read_ledger(run_dir / "ledger.jsonl"), real_splits(run_dir))
    report.prompts_lost = sum(len(r["missing"]) for r in report.ledger.values())
    report.prompts_repeated = sum(len(r["repeated"]) + len(r["unexpected"]) for r in report.ledger.values())
    report.steps = _steps(run_dir)
    report.step_gaps_or_repeats = report.steps != list(range(1, len(report.steps) + 1))
    report.final_loads = report.completed and _final_loads(run_dir)
    return report
