"""`pfrl bench fidelity`: stripped records, arms that differ only where they should, the per-seed
figures and their JSON shape (fast, with the runs faked), and the whole bench at its tiniest (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pfrl.bench import fidelity
from pfrl.bench.fidelity import ARM_KEYS, ARMS, CONFIGS, TASK_ARMS, arm_overrides, mean_sd, strip_records
from pfrl.cli import main
from pfrl.config import load_config
from pfrl.tasks.io import read_problems

MATH = {"id": "m1", "prompt": "Question: 1+1?\nAnswer:", "answer": "2", "reference": "1+1 = 2. The answer is 2."}
CODE = {"id": "c1", "prompt": "### Task\nadd 1\n### Solution\n", "entry_point": "f", "test_inputs": ["[1]", "[2]"],
        "test_outputs": ["2", "3"], "reference": "def f(x): return x + 1", "reference_test_inputs": ["[5]"],
        "reference_test_outputs": ["6"], "eval_tests": "assert f(1) == 2"}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_strip_records_leaves_only_what_votes_can_label(tmp_path):
    src = _write(tmp_path / "math.jsonl", [MATH, {**MATH, "id": "m2", "extra": 1}])
    assert strip_records(src, tmp_path / "m.out.jsonl", "math") == 2
    rows = [json.loads(line) for line in (tmp_path / "m.out.jsonl").read_text().splitlines()]
    assert rows == [{"id": "m1", "prompt": MATH["prompt"]}, {"id": "m2", "prompt": MATH["prompt"], "extra": 1}]
    problems = read_problems(tmp_path / "m.out.jsonl").problems
    assert all(p.answer is None and p.reference is None for p in problems)

    strip_records(_write(tmp_path / "code.jsonl", [CODE]), tmp_path / "c.out.jsonl", "code")
    (problem,) = read_problems(tmp_path / "c.out.jsonl").problems
    assert problem.test_inputs == ["[1]", "[2]"] and problem.entry_point == "f"  # the programs still run on these
    assert not problem.test_outputs and problem.reference is None and not problem.reference_test_outputs
    assert problem.eval_tests is None


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("task", ["math", "code"])
def test_arms_differ_only_in_their_own_keys(task, tmp_path):
    """Same preset, same step budget, same seed: only the label source, the step-pair ratio and the
    train file (stripped or not) may differ between arms; never a tuned learning rate or the like."""
    configs = {}
    for name in TASK_ARMS[task]:
        arm = ARMS[name]
        if arm.source is None:
            continue
        train = f"/d/{'stripped' if arm.strip else 'train'}.jsonl"
        overrides = arm_overrides(arm, 7, 3, "/m", train, "/d/heldout.jsonl", "/runs/x", ["learner.lr=2e-4"])
        configs[name] = _flat(load_config(CONFIGS[task], overrides).model_dump())
    base = configs["dpo-sc"]
    assert base["run.max_steps"] == 7 and base["run.seed"] == 3 and base["learner.lr"] == 2e-4
    assert base["labeller.source"] == "self_consistency" and base["data.train_file"] == "/d/stripped.jsonl"
    diffs = {name: {k for k in cfg if cfg[k] != base[k]} for name, cfg in configs.items()}
    assert diffs["dpo-gt"] == {"labeller.source", "data.train_file"}
    assert configs["dpo-gt"]["labeller.source"] == "ground_truth"
    if task == "math":
        assert diffs["pdpo-sc"] == {"labeller.step_pairs.ratio"} and configs["pdpo-sc"]["labeller.step_pairs.ratio"] == 1.0
        assert diffs["pdpo-gt"] == diffs["dpo-gt"] | {"labeller.step_pairs.ratio"}
    else:
        assert "pdpo-sc" not in TASK_ARMS[task] and "pdpo-gt" not in TASK_ARMS[task]
    assert set().union(*diffs.values()) <= set(ARM_KEYS)


def test_mean_sd():
    assert mean_sd([0.5, 0.7, 0.9]) == (pytest.approx(0.7), pytest.approx(0.2))
    assert mean_sd([0.4]) == (0.4, 0.0)
    assert mean_sd([0.2, None, 0.4]) == (pytest.approx(0.3), pytest.approx(0.1414, abs=1e-4))  # a failed run left out
    assert mean_sd([None]) == (None, None)


def test_json_shape_and_table_with_faked_runs(tmp_path, monkeypatch, capsys):
    """The whole command with `pfrl train` / `pfrl eval` faked: every arm of each task, a list per
    metric with one value per seed, the stripped copy handed to the self-consistency arms only."""
    boots = {}
    for task, row in (("math", MATH), ("code", CODE)):
        boots[task] = tmp_path / f"boot-{task}"
        (boots[task] / "data").mkdir(parents=True)
        _write(boots[task] / "data" / "train.jsonl", [row])
        _write(boots[task] / "data" / "heldout.jsonl", [row])
    monkeypatch.setattr(fidelity, "_bootstrap", lambda task, config, given, overrides: str(boots[task]))
    trained = []

    def fake_train(task, arm, seed, steps, model, files, root, args):
        train_file = files["stripped" if arm.strip else "train"]
        has_label = "answer" in Path(train_file).read_text() or "test_outputs" in Path(train_file).read_text()
        trained.append((task, arm.name, seed, steps, has_label))
        return {"final": f"/runs/{task}/{arm.name}-{seed}", "steps": steps, "pairs": 32 * steps}

    def fake_eval(task, model, heldout, seed, log, args):
        base = 0.3 if model.startswith(str(tmp_path)) else 0.6
        return {"accuracy": base + seed / 100, "maj@4": base + 0.1, "pass@4": base + 0.3}

    monkeypatch.setattr(fidelity, "_train", fake_train)
    monkeypatch.setattr(fidelity, "_eval", fake_eval)
    out = tmp_path / "f.json"
    assert main(["bench", "fidelity", "--seeds", "0,1", "--steps", "5", "--code-steps", "3", "--k", "4",
                 "--out", str(tmp_path / "runs"), "--png", str(tmp_path / "f.png"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(TASK_ARMS) <= set(data)
    for task, arms in TASK_ARMS.items():
        assert list(data[task]) == list(arms)
        for arm in arms:
            for metric in ("greedy", "maj@4", "pass@4"):
                assert len(data[task][arm][metric]) == 2
    assert data["math"]["sft"]["greedy"] == [0.3, 0.31] and data["math"]["dpo-sc"]["greedy"] == [0.6, 0.61]
    assert data["summary"]["code"]["dpo-gt"]["maj@4"] == [pytest.approx(0.7), 0.0]
    assert {(t, a, s) for t, a, s, _, _ in trained} == {
        (t, a, s) for t, arms in TASK_ARMS.items() for a in arms if a != "sft" for s in (0, 1)}
    assert all(steps == (5 if t == "math" else 3) for t, _, _, steps, _ in trained)
    assert all(has_label == (not ARMS[a].strip) for _, a, _, _, has_label in trained)
    assert (tmp_path / "f.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert "dpo-sc" in table and "60.5 +-" in table


@pytest.mark.parametrize("argv,err", [
    (["--tasks", "vision"], "--tasks"), (["--arms", "ppo"], "--arms"), (["--seeds", "a,b"], "--seeds"),
    (["--bootstrap", "math"], "--bootstrap"), (["--config", "code=/nonexistent.yaml"], "--config"),
])
def test_bad_flags_are_one_line(argv, err, capsys):
    assert main(["bench", "fidelity", *argv]) == 2
    assert err in capsys.readouterr().err


@pytest.mark.slow
def test_fidelity_bench_end_to_end(boot_math, tmp_path):
    """The real command at its tiniest: math, one seed, 2 learner steps, the untrained and the
    self-consistency arm on stripped records; every figure a held-out score in [0, 1]."""
    out = tmp_path / "fidelity.json"
    cmd = [sys.executable, "-m", "pfrl.cli", "bench", "fidelity", "--tasks", "math", "--arms", "sft,dpo-sc",
           "--seeds", "0", "--steps", "2", "--eval-prompts", "16", "--bootstrap", f"math={boot_math}",
           "--set", "data.prompts_per_iteration=48", "--set", "labeller.min_vote_share=0.25",
           "--set", "learner.pairs_per_step=4", "--set", "learner.micro_batch_pairs=4",
           "--out", str(tmp_path / "runs"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert list(data["math"]) == ["sft", "dpo-sc"]
    for arm in ("sft", "dpo-sc"):
        for metric in ("greedy", "maj@8", "pass@8"):
            (value,) = data["math"][arm][metric]
            assert 0.0 <= value <= 1.0
    (run,) = data["math"]["dpo-sc"]["runs"]
    assert run["exit"] == 0 and run["steps"] == 2 and run["pairs"] > 0
    assert "agree_gt" not in run  # the records had no answers to agree with
    assert (tmp_path / "runs" / "fidelity.png").exists()


def test_merge_reports_the_arms_of_several_runs(tmp_path, capsys):
    from pfrl.cli import main

    def arm(v):
        return {"greedy": [v, v], "maj@8": [v, v], "pass@8": [v, v], "runs": [{"steps": 5, "pairs": 160}] * 2}

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"utc": "t1", "math": {"sft": arm(0.3), "dpo-sc": arm(0.5)}, "meta": {"math": {"steps": 5}}}))
    second.write_text(json.dumps({"utc": "t2", "math": {"pdpo-gt": arm(0.7), "dpo-sc": arm(0.6)},
                                  "code": {"sft": arm(0.2)}}))
    out = tmp_path / "m.json"
    assert main(["bench", "fidelity", "--merge", str(first), str(second), "--png", str(tmp_path / "m.png"),
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert list(data["math"]) == ["sft", "dpo-sc", "pdpo-gt"]  # the bench's arm order
    assert data["math"]["dpo-sc"]["greedy"] == [0.6, 0.6]  # the later file's arm
    assert data["meta"]["math"]["sft"] == {"from": str(first), "utc": "t1", "steps": 5}
    assert data["summary"]["code"]["sft"]["greedy"] == [0.2, 0.0]
    assert (tmp_path / "m.png").stat().st_size > 0 and "pdpo-gt" in capsys.readouterr().out
