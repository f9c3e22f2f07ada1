"""Kill -9 the whole `pfrl train` process group at several points, resume, and audit the ledger."""

import json

import pytest
from e2e_config import short_run

from pfrl.chaos import Fault, run_trial

pytestmark = pytest.mark.slow


def test_kills_mid_run_and_during_checkpoint_lose_and_repeat_nothing(boot_math, tmp_path):
    run_dir = tmp_path / "run"
    faults = [Fault(after_step=2, description="after step 2"),
              Fault(during_checkpoint=True, description="during a checkpoint write")]
    report = run_trial("configs/tiny-math.yaml", run_dir, faults, short_run(boot_math, run_dir), timeout_s=900)
    log = (run_dir / "chaos.log").read_text()[-4000:]
    assert report.completed, log
    assert report.faults_injected == 2 and report.runs == 3, log
    assert report.prompts_lost == 0 and report.prompts_repeated == 0, report.ledger
    assert not report.step_gaps_or_repeats, report.steps
    assert all(r["prompts"] == 24 for r in report.ledger.values())
    assert "resuming from step-" in log


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
