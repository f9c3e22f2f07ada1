"""Kill `pfrl train` at several points (pfrl/chaos.py), resume, and audit ledger, steps and final model."""

import json
from pathlib import Path

import pytest
from e2e_config import short_run

from pfrl.chaos import Fault, run_trial

pytestmark = pytest.mark.slow


def test_chaos_bench_short_form(boot_math, tmp_path):
    """`pfrl bench chaos` in short: three of its ten kill plans, each resumed and audited against the
    scheduler's real splits. Killed before the rename of a checkpoint; at an iteration boundary;
    SIGTERM (checkpoint, exit 0, no actor left), then the learner actor killed in the resumed run
    (the run stops by itself with its resume hint, exit 1), then resumed to the end."""
    from pfrl.bench.chaos import PLANS, run_trials

    plans = [PLANS[5], PLANS[6], PLANS[7]]
    overrides = [o for o in short_run(boot_math, tmp_path / "unused") if not o.startswith("run.dir=")]
    result = run_trials("configs/tiny-math.yaml", tmp_path, plans, overrides, timeout_s=900)
    logs = "\n".join(Path(e["log"]).read_text()[-2000:] for e in result["per_trial"] if not e["resumed_ok"])
    assert result["resumed_ok"] == result["trials"] == 3, (result, logs)
    assert result["prompts_lost"] == 0 and result["prompts_repeated"] == 0
    for entry in result["per_trial"]:
        assert entry["faults_injected"] == len(entry["faults"]) and entry["runs"] == entry["faults_injected"] + 1
        assert not entry["step_gaps_or_repeats"] and entry["final_loads"]
    assert "resuming from step-" in Path(result["per_trial"][0]["log"]).read_text()


def test_generator_killed_mid_run_is_restarted(boot_math, tmp_path):
    run_dir = tmp_path / "run"
    report = run_trial("configs/tiny-math.yaml", run_dir, [Fault("generator_twice", after_step=1)],
                       short_run(boot_math, run_dir, "run.iterations=1", "metrics.eval_every_steps=null"),
                       timeout_s=900)
    log = (run_dir / "chaos.log").read_text()[-4000:]
    assert report.completed and report.faults_injected == 1 and report.runs == 1, log
    assert report.resumed_ok, (report.notes, log)
    assert report.prompts_lost == 0 and report.prompts_repeated == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["faults/generator_restarts"] >= 2, log  # killed twice in a row, both restarts counted
    # after the restart the generator was resynced: its served version keeps following the learner
    steps = [r for r in records if "sync/version" in r]
    assert steps[-1]["sync/version"] == steps[-1]["step"]
