"""End-to-end `pfrl label` on both tasks, with inputs built from the synthetic generators."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import wrong_math

from pfrl.cli import main
from pfrl.tasks import synthetic_code, synthetic_math


def write_jsonl(path: Path, rows: list, extra_lines: list[str] = ()) -> Path:
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines)
    )
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def math_rollouts(tmp_path) -> tuple[Path, list]:
    problems = synthetic_math.generate(12, seed=21)
    rows = []
    for i, (p, sol) in enumerate(problems):
        row = {"id": p.id, "prompt": p.prompt, "completions": [sol, wrong_math(sol), sol, "no idea", sol],
               "answer": p.answer}  # ground truth: compared, never the label under auto
        if i % 2 == 0:
            row["reference"] = p.answer  # half frontier reference, half self-consistency under auto
        rows.append(row)
    bad = ['{"id": "x", "prompt": "Q", "completions": "not a list"}', "{broken json"]
    return write_jsonl(tmp_path / "math.jsonl", rows, bad), problems


def test_label_math_end_to_end(math_rollouts, tmp_path, capsys):
    path, problems = math_rollouts
    out, pairs = tmp_path / "out.jsonl", tmp_path / "pairs.jsonl"
    code = main(
        [
            "label",
            "--task",
            "math",
            "--rollouts",
            str(path),
            "--out",
            str(out),
            "--pairs-out",
            str(pairs),
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [p.id for p, _ in problems]  # same order, bad lines left out
    for row, (problem, _) in zip(rows, problems, strict=True):
        assert (
            row["label"] == problem.answer
            and row["scores"] == [1.0, 0.0, 1.0, 0.0, 1.0]
            and row["skipped"] is None
            and row["agree_gt"] == 1.0
        )
        assert len(row["pairs"]) == 1 and row["scores"][row["pairs"][0][0]] == 1.0
    assert rows[1]["vote_share"] == 0.6 and "vote_share" not in rows[0]
    pair_rows = read_jsonl(pairs)
    assert len(pair_rows) == len(rows)
    assert set(pair_rows[0]) == {"prompt", "chosen", "rejected", "id"}
    assert pair_rows[0]["prompt"] == problems[0][0].prompt and pair_rows[0]["chosen"] == problems[0][1]
    assert "line 13" in captured.err and "line 14" in captured.err
    assert "groups 12" in captured.out and "pairs 12" in captured.out and "bad lines 2" in captured.out
    assert "agreeing with ground truth 1.000 (12 groups)" in captured.out


def test_label_pairs_follow_the_pair_settings(math_rollouts, tmp_path):
    """--pairs-out goes through build_pairs, as training does: here one random pair per prompt."""
    path, problems = math_rollouts
    out, pairs = tmp_path / "out.jsonl", tmp_path / "pairs.jsonl"
    args = ["label", "--task", "math", "--rollouts", str(path), "--out", str(out), "--pairs-out", str(pairs),
            "--no-progress", "--set", "labeller.pair_strategy=one_random"]
    assert main(args) == 0
    rows = read_jsonl(pairs)
    prompts = {p.id: p.prompt for p, _ in problems}
    assert len(rows) == len({r["id"] for r in rows}) == 12  # one pair per labelled prompt
    assert all(r["prompt"] == prompts[r["id"]] and r["chosen"] != r["rejected"] for r in rows)

def test_label_source_ground_truth_only_by_name(tmp_path):
    problems = synthetic_math.generate(4, seed=5)
    # Every group votes for a wrong answer: self-consistency follows it, ground truth does not.
    rows = [{"id": p.id, "prompt": p.prompt, "answer": p.answer,
             "completions": [wrong_math(sol)] * 3 + [sol]} for p, sol in problems]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    for source, scores in (("auto", [1.0, 1.0, 1.0, 0.0]), ("ground_truth", [0.0, 0.0, 0.0, 1.0])):
        out = tmp_path / f"{source}.jsonl"
        assert main(["label", "--task", "math", "--rollouts", str(path), "--out", str(out), "--no-progress",
                     "--source", source]) == 0
        assert all(r["scores"] == scores for r in read_jsonl(out)), source


def test_label_strict_stops_at_a_bad_line(math_rollouts, tmp_path, capsys):
    path, _ = math_rollouts
    out = tmp_path / "out.jsonl"
    code = main(
        ["label", "--task", "math", "--rollouts", str(path), "--out", str(out), "--strict", "--no-progress"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "line 13: completions must be a non-empty list" in err[0]
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_label_user_errors_are_one_line(tmp_path, capsys):
    code = main(
        [
            "label",
            "--task",
            "math",
            "--rollouts",
            str(tmp_path / "missing.jsonl"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "cannot read" in capsys.readouterr().err
    code = main(
        [
            "label",
            "--rollouts",
            str(tmp_path / "x"),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "labeller.bogus=1",
        ]
    )
    assert code == 2 and "labeller.bogus: unknown key" in capsys.readouterr().err


def test_label_code_end_to_end_reference_and_self_consistency(tmp_path, capsys):
    problems = synthetic_code.generate(6, seed=31)
    rows = []
    for i, (p, sol) in enumerate(problems):
        broken = sol.replace("return ", "return 7 + ", 1)
        # Two groups carry a program that never ends (each of its tests costs a full timeout).
        hopeless = "while True:\n    pass\n" if i < 2 else "raise SystemExit(1)\n"
        row = {
            "id": p.id,
            "prompt": p.prompt,
            "entry_point": p.entry_point,
            "test_inputs": p.test_inputs,
            "completions": [sol, broken, f"```python\n{hopeless}```", sol],
        }
        row["test_outputs"] = p.test_outputs  # ground truth: only compared
        if i % 2 == 0:  # frontier tests (here the same inputs, outputs from a correct program)
            row["reference_test_inputs"], row["reference_test_outputs"] = p.test_inputs, p.test_outputs
        rows.append(row)
    path = write_jsonl(tmp_path / "code.jsonl", rows)
    out, pairs = tmp_path / "out.jsonl", tmp_path / "pairs.jsonl"
    code = main(
        [
            "label",
            "--task",
            "code",
            "--rollouts",
            str(path),
            "--out",
            str(out),
            "--pairs-out",
            str(pairs),
            "--workers",
            "2",
            "--no-progress",
            "--set",
            "labeller.sandbox.timeout_s=1.0",
            "--set",
            "labeller.pair_strategy=margin",
            "--set",
            "labeller.min_successful_programs=2",
            "--set",
            "labeller.margin.self_consistency=3",
        ]
    )
    assert code == 0
    labelled = read_jsonl(out)
    for row, (problem, _) in zip(labelled, problems, strict=True):
        assert row["skipped"] is None and row["pseudo_outputs"] == problem.test_outputs
        assert row["scores"] == [1.0, 0.0, 0.0, 1.0] and row["agree_gt"] == 1.0
        assert row["pairs"] and all(c in (0, 3) and r in (1, 2) for c, r in row["pairs"])
    assert len(read_jsonl(pairs)) == sum(len(r["pairs"]) for r in labelled)
    assert "mean score" in capsys.readouterr().out


def test_label_iteration_picks_the_schedule_entry(tmp_path):
    """A file has no iteration: --iteration says which entry of labeller.schedule applies."""
    problem, sol = synthetic_math.generate(1, seed=9)[0]
    row = {"id": problem.id, "prompt": problem.prompt, "reference": problem.answer,
           "completions": [sol, sol + " ", sol + "  "] + [wrong_math(sol)] * 2}  # three right texts
    path = write_jsonl(tmp_path / "in.jsonl", [row])
    schedule = ("labeller.schedule=[{source: reference, pair_strategy: one_random}, "
                "{source: self_consistency, pair_strategy: all_chosen}]")
    rows = {}
    for iteration in (0, 1):
        out = tmp_path / f"it{iteration}.jsonl"
        assert main(["label", "--task", "math", "--rollouts", str(path), "--out", str(out), "--no-progress",
                     "--set", schedule, "--iteration", str(iteration)]) == 0
        (rows[iteration],) = read_jsonl(out)
    assert "vote_share" not in rows[0] and len(rows[0]["pairs"]) == 1  # the frontier reference, one pair
    assert rows[1]["vote_share"] == 0.6 and len(rows[1]["pairs"]) == 3  # votes, every chosen paired
    assert main(["label", "--rollouts", str(path), "--out", str(tmp_path / "x"), "--iteration", "-1"]) == 2
