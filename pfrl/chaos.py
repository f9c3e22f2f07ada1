"""Fault injection for `pfrl train`: kill -9 the whole process group, resume, and audit.

A trial runs `pfrl train` in its own session, waits for a trigger (a given step reached, or a
checkpoint write in progress), kills every process of the session with SIGKILL, and resumes with
`--resume`, until the run completes. Then the ledger and metrics are audited: every prompt of
every iteration exactly once, steps 1..N with no gap or repeat.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pfrl.ledger import audit, read_ledger


@dataclass
class Fault:
    """Kill when `metrics.jsonl` reaches `after_step` steps, or while a checkpoint is being written.
    target "run": kill -9 the whole run (then resume); "generator": kill -9 the generator actors'
    processes only (Ray restarts them; the run must carry on by itself)."""

    after_step: int = 0
    during_checkpoint: bool = False
    target: str = "run"
    description: str = ""


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
    log: str = ""


def _steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record["step"] > 0 and "dpo/loss" in record:
            out.append(record["step"])
    return out


def _checkpoint_writes(run_dir: Path) -> set[tuple[str, int]]:
    """Checkpoint directories being written now, by (name, inode): a killed run leaves its
    half-written one behind, and that stale one must not count as a write of the next run."""
    out = set()
    for path in (run_dir / "checkpoints").glob(".tmp-step-*"):
        try:
            out.add((path.name, path.stat().st_ino))
        except FileNotFoundError:
            continue  # renamed into place between glob and stat
    return out


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL every process of the run's session: the driver, Ray's daemons and workers, the
    actors' vLLM processes. (Ray gives workers their own process groups, but not their own session.)"""
    subprocess.run(["pkill", "-9", "-s", str(proc.pid)], check=False)
    proc.wait()


def _kill_generators(proc: subprocess.Popen) -> None:
    """SIGKILL the generator actors (and their vLLM engine processes) of this run's session."""
    listing = subprocess.run(["ps", "-s", str(proc.pid), "-o", "pid=,args="], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        pid, _, args = line.strip().partition(" ")
        if args.startswith("ray::GeneratorActor"):
            os.kill(int(pid), signal.SIGKILL)


def _start(config: str, run_dir: Path, overrides: list[str], resume: bool, log) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pfrl.cli", "train", "--config", config, "--set", f"run.dir={run_dir}"]
    for o in overrides:
        cmd += ["--set", o]
    if resume:
        cmd.append("--resume")
    env = {**os.environ, "PFRL_FAULT_CHECKPOINT_DELAY_S": "2"}  # lets a kill land inside a checkpoint write
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def _fired(run_dir: Path, fault: Fault, stale: set[tuple[str, int]]) -> bool:
    if fault.during_checkpoint:
        return bool(_checkpoint_writes(run_dir) - stale)
    return len(_steps(run_dir)) >= fault.after_step


def _wait_for(proc: subprocess.Popen, run_dir: Path, fault: Fault | None, timeout_s: float) -> tuple[bool, bool]:
    """Run until the process exits or the run is killed; returns (fault injected, run killed)."""
    deadline = time.time() + timeout_s
    injected = False
    stale = _checkpoint_writes(run_dir)
    while proc.poll() is None:
        if time.time() > deadline:
            _kill_session(proc)
            raise TimeoutError(f"pfrl train did not finish within {timeout_s:.0f}s")
        if fault is not None and not injected and _fired(run_dir, fault, stale):
            injected = True
            if fault.target == "run":
                _kill_session(proc)
                return True, True
            _kill_generators(proc)  # the run must now carry on by itself
        time.sleep(0.05 if fault is not None and fault.during_checkpoint else 0.5)
    return injected, False


def run_trial(config: str, run_dir: Path, faults: list[Fault], overrides: list[str] | None = None,
              timeout_s: float = 1800) -> TrialReport:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    report = TrialReport()
    pending = list(faults)
    with (run_dir / "chaos.log").open("ab") as log:
        while True:
            fault = pending.pop(0) if pending else None
            proc = _start(config, run_dir, overrides or [], resume=report.runs > 0, log=log)
            report.runs += 1
            injected, killed = _wait_for(proc, run_dir, fault, timeout_s)
            report.faults_injected += int(injected)
            if killed:
                continue
            report.completed = proc.returncode == 0
            break
    report.log = str(run_dir / "chaos.log")
    return _audit(report, run_dir)


def _audit(report: TrialReport, run_dir: Path) -> TrialReport:
    from pfrl.config import load_config
    from pfrl.preflight import check_inputs
    from pfrl.scheduler import make_splits

    cfg = load_config(run_dir / "config.yaml")
    problems = check_inputs(cfg).train
    splits = make_splits([p.id for p in problems], cfg.run.iterations, cfg.data.prompts_per_iteration,
                         cfg.run.seed, cfg.data.shuffle)
    report.ledger = audit(read_ledger(run_dir / "ledger.jsonl"), dict(enumerate(splits)))
    report.prompts_lost = sum(len(r["missing"]) for r in report.ledger.values())
    report.prompts_repeated = sum(len(r["repeated"]) for r in report.ledger.values())
    report.steps = _steps(run_dir)
    report.step_gaps_or_repeats = report.steps != list(range(1, len(report.steps) + 1))
    return report
