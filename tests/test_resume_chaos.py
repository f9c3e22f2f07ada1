"""Kill -9 the whole `pfrl train` process group at several points, resume, and audit the ledger."""

import json

import pytest
from e2e_config import short_run

from pfrl.chaos import Fault, run_trial

pytestmark = pytest.mark.slow


def test_kills_mid_run_and_during_checkpoint_lose_and_repeat_nothing(boot_math, tmp_path):
    run_dir = tmp_path / "run"
    # After step 3 a checkpoint exists (every 2 steps), so both restarts resume rather than start over;
    # the second kill lands inside a checkpoint write, which must leave the previous one loadable.
    faults = [Fault(after_step=3, description="after step 3"),
              Fault(during_checkpoint=True, description="during a checkpoint write")]
    report = run_trial("configs/tiny-math.yaml", run_dir, faults, short_run(boot_math, run_dir), timeout_s=900)
    full_log = (run_dir / "chaos.log").read_text()
    log = full_log[-4000:]
    assert report.completed, log
    assert report.faults_injected == 2 and report.runs == 3, log
    assert report.prompts_lost == 0 and report.prompts_repeated == 0, report.ledger
    assert not report.step_gaps_or_repeats, report.steps
    assert all(r["prompts"] == 24 for r in report.ledger.values())
    assert full_log.count("resuming from step-") == 2  # both restarts found a checkpoint


def test_generator_killed_mid_run_is_restarted(boot_math, tmp_path):
    run_dir = tmp_path / "run"
    report = run_trial("configs/tiny-math.yaml", run_dir, [Fault(after_step=1, target="generator")],
                       short_run(boot_math, run_dir, "run.iterations=1", "metrics.eval_every_steps=null"),
                       timeout_s=900)
    log = (run_dir / "chaos.log").read_text()[-4000:]
    assert report.completed and report.faults_injected == 1 and report.runs == 1, log
    assert report.prompts_lost == 0 and report.prompts_repeated == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["faults/generator_restarts"] >= 1, log
    # after the restart the generator was resynced: its served version keeps following the learner
    steps = [r for r in records if "sync/version" in r]
    assert steps[-1]["sync/version"] == steps[-1]["step"]


def test_sigterm_checkpoints_then_resume_finishes(boot_math, tmp_path):
    """SIGTERM: finish the current step, checkpoint, stop every actor, exit 0; --resume completes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "pfrl.cli", "train", "--config", "configs/tiny-math.yaml"]
    for o in short_run(boot_math, run_dir, "run.iterations=1", "metrics.eval_every_steps=null"):
        cmd += ["--set", o]
    log = (tmp_path / "log.txt").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.exists() and any('"dpo/loss"' in line for line in metrics.read_text().splitlines())):
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "log.txt").read_text()[-3000:]
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=300) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    assert json.loads((run_dir / "state.json").read_text())["state"] == "stopped"
    assert (run_dir / "checkpoints" / "LATEST").exists()
    leftovers = subprocess.run(["ps", "-s", str(proc.pid), "-o", "args="], capture_output=True, text=True).stdout
    assert "GeneratorActor" not in leftovers and "LearnerActor" not in leftovers
    subprocess.run(["pkill", "-9", "-s", str(proc.pid)], check=False)  # Ray's own daemons of that session
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"dpo/loss"' in line]
    assert steps == list(range(1, len(steps) + 1))
