"""`pfrl train` with self-consistency labels on records WITHOUT answers: the policy's own votes are
the only label there is, and the run still makes learner steps on pairs they labelled (slow)."""

import json
import subprocess
import sys

import pytest
from e2e_config import short_run

from pfrl.bench.fidelity import strip_records
from pfrl.tasks.io import read_problems

pytestmark = pytest.mark.slow


def test_self_consistency_trains_on_records_without_answers(boot_math, tmp_path):
    stripped = tmp_path / "train-no-answers.jsonl"
    strip_records(f"{boot_math}/data/train.jsonl", stripped, "math")
    assert all(p.answer is None and p.reference is None for p in read_problems(stripped).problems)
    run_dir = tmp_path / "run"
    overrides = short_run(boot_math, run_dir, f"data.train_file={stripped}", "labeller.source=self_consistency",
                          "run.iterations=1", "data.prompts_per_iteration=48", "run.max_steps=3",
                          "metrics.eval_every_steps=null", "metrics.tensorboard=false", "checkpoint.every_steps=4")
    cmd = [sys.executable, "-m", "pfrl.cli", "train", "--config", "configs/tiny-math.yaml"]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "dpo/loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert sum(r["learner/pairs"] for r in steps) > 0
    # Labels came from votes: groups were kept by vote share, and nothing compared them with an answer.
    assert any(r.get("label/vote_share", 0) > 0 for r in records)
    assert not any("label/agree_gt" in r for r in records)
    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert any(e.get("outcome") == "trained" for e in ledger), ledger[:3]
    assert (run_dir / "final" / "config.json").exists()
