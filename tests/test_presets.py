"""Every shipped preset trains: each `configs/*.yaml`, scaled down to this CPU machine, runs a few
learner steps with a weight sync and a checkpoint.

What is swapped, and only that: the model (the tiny bootstrap of the preset's task), the data
files (the bootstrap's, with a frontier `reference` written from each record's answer or tests so
reference-first schedules have one), sizes (prompts, samples, tokens, pairs, GPUs, ranks, TP) and
the cluster (a local Ray, no GPUs). Staleness, sync interval, ZeRO stage, transport, loss and the
labelling schedule stay the preset's: the GPU recipes' `sync.every_steps: 5` with
`max_policy_lag: 2` used to stall at step 3, and this is the test that runs them.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

PRESETS = sorted(p.name for p in Path("configs").glob("*.yaml"))

# 48 prompts per iteration: the self-consistency presets keep few of the weak bootstrap's groups,
# and the run stops at run.max_steps anyway.
# The synthetic code problems have 6 tests, not the paper's ~10: test-case margins scale with them
# (as configs/tiny-code.yaml does), else no program pair clears a margin of 6 and nothing trains.
_CODE_MARGINS = ["labeller.margin={self_consistency: 3, reference: 2}"]


def _with_references(src: Path, out: Path, task: str) -> Path:
    """The bootstrap's records with a frontier reference copied from their ground truth (standing in
    for what `pfrl references` would write), so a reference-first schedule can label them."""
    rows = []
    for line in src.read_text().splitlines():
        row = json.loads(line)
        if task == "math":
            row["reference"] = row["answer"]
        else:
            row["reference_test_inputs"], row["reference_test_outputs"] = row["test_inputs"], row["test_outputs"]
        rows.append(json.dumps(row))
    out.write_text("\n".join(rows) + "\n")
    return out


def scaled_down(preset: Path, model: str, tmp: Path) -> tuple[list[str], int, int]:
    """--set overrides that fit `preset` on a 2-core CPU; returns (overrides, max_steps, sync interval)."""
    cfg = yaml.safe_load(preset.read_text())
    task = cfg["run"]["task"]
    every = cfg.get("sync", {}).get("every_steps", 1)
    max_steps = max(every, 2)
    train = _with_references(Path(model) / "data" / "train.jsonl", tmp / "train.jsonl", task)
    overrides = [
        f"model.path={model}", f"run.dir={tmp / 'run'}", f"data.train_file={train}",
        f"data.heldout_file={Path(model) / 'data' / 'heldout.jsonl'}", "model.dtype=float32", "model.max_length=256",
        "model.chat_template=none", "data.prompts_per_iteration=48", f"run.max_steps={max_steps}",
        "generator.num_generators=1", "generator.tensor_parallel_size=1", "generator.n_samples=8",
        "generator.max_tokens=48", "generator.prompts_per_request=8", "generator.gpu_memory_utilization=0.3",
        "generator.max_num_seqs=64", "generator.enforce_eager=true", "labeller.num_labellers=1",
        "labeller.min_successful_programs=4", "labeller.sandbox.workers=2", "labeller.sandbox.memory_mb=512",
        "learner.num_learners=1", "learner.pairs_per_step=2", "learner.micro_batch_pairs=2",
        "learner.micro_batch_tokens=null", "learner.lr=1e-4", "buffer.capacity=64",
        f"checkpoint.every_steps={max_steps}", "metrics.eval_every_steps=null", "metrics.port=null",
        "cluster.ray_address=null", "cluster.generator_gpus=0", "cluster.learner_gpus=0", "cluster.num_cpus=2",
        "cluster.generator_cpus=0.5", "cluster.learner_cpus=0.5", "cluster.labeller_cpus=0.25",
    ]
    if task == "math":
        overrides.remove("labeller.min_successful_programs=4")  # a code-only key
        overrides.append("labeller.min_vote_share=0.25")  # the weak bootstrap rarely has a > 50% majority
    else:
        overrides += _CODE_MARGINS
    return overrides, max_steps, every


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_scaled_down(preset, request, tmp_path):
    path = Path("configs") / preset
    task = yaml.safe_load(path.read_text())["run"]["task"]
    model = request.getfixturevalue(f"boot_{task}")  # the tiny bootstrap of the preset's task
    overrides, max_steps, every = scaled_down(path, model, tmp_path)
    cmd = [sys.executable, "-m", "pfrl.cli", "train", "--config", str(path)]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "dpo/loss" in r]
    assert [r["step"] for r in steps] == list(range(1, max_steps + 1)), proc.stdout[-3000:]
    synced = [r["step"] for r in steps if r.get("sync/version") == r["step"]]
    assert synced and synced[0] == every  # the preset's own sync interval, reached
    assert all(r["learner/lr"] > 0 for r in steps)
    assert (run_dir / "checkpoints" / "LATEST").exists() and (run_dir / "final" / "config.json").exists()
