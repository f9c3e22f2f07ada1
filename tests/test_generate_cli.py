"""`pfrl generate`: user errors end in one line + exit 2 before anything starts; end to end it
writes `pfrl label` input rows for every problem, in file order, with the reference fields kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pfrl.cli import main
from pfrl.tasks.io import problem_to_dict, write_jsonl
from pfrl.tasks.synthetic_math import generate


@pytest.fixture
def problems_file(tmp_path):
    path = tmp_path / "problems.jsonl"
    write_jsonl(path, (problem_to_dict(p) for p, _ in generate(5, seed=1)))
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_missing_model_dir_is_one_line_and_exit_2(tmp_path, problems_file, capsys):
    rc = main(
        [
            "generate",
            "--model",
            str(tmp_path / "nope"),
            "--prompts",
            str(problems_file),
            "--out",
            str(tmp_path / "o.jsonl"),
        ]
    )
    assert rc == 2 and "no config.json" in _error_line(capsys)


def test_bad_prompts_file_and_bad_n_are_user_errors(tiny_math_model, tmp_path, problems_file, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\nnot json\n')
    out = str(tmp_path / "o.jsonl")
    assert main(["generate", "--model", tiny_math_model, "--prompts", str(bad), "--out", out]) == 2
    assert "no valid problems" in _error_line(capsys)
    assert (
        main(
            [
                "generate",
                "--model",
                tiny_math_model,
                "--prompts",
                str(problems_file),
                "--out",
                out,
                "--n",
                "1",
            ]
        )
        == 2
    )
    assert "n_samples" in _error_line(capsys)
    assert (
        main(
            [
                "generate",
                "--model",
                tiny_math_model,
                "--prompts",
                str(problems_file),
                "--out",
                out,
                "--set",
                "model.max_length=4096",
            ]
        )
        == 2
    )
    assert "exceeds the model's 512 positions" in _error_line(capsys)
    assert not os.path.exists(out)


@pytest.mark.slow
def test_generate_end_to_end_writes_label_input_rows(tiny_math_model, tmp_path, problems_file):
    """From parquet, rendered with the shipped chat template, as training reads and renders problems."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "problems.parquet"
    pq.write_table(pa.Table.from_pylist([json.loads(line) for line in problems_file.read_text().splitlines()]), parquet)
    out = tmp_path / "rollouts.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "pfrl.cli",
        "generate",
        "--model",
        tiny_math_model,
        "--prompts",
        str(parquet),
        "--n",
        "3",
        "--out",
        str(out),
        "--generators",
        "1",
        "--no-progress",
        "--set",
        "generator.max_tokens=16",
        "--set",
        "generator.prompts_per_request=2",
        "--set",
        "cluster.num_cpus=2",
        "--set",
        "cluster.generator_cpus=0.5",
        "--set",
        "model.chat_template=configs/prompts/chat_template.jinja",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = [problem_to_dict(p) for p, _ in generate(5, seed=1)]
    assert [r["id"] for r in rows] == [w["id"] for w in want]
    for row, problem in zip(rows, want, strict=True):
        assert row["prompt"] == f"### User\n{problem['prompt']}\n### Assistant\n"  # what the model read
        assert {k: v for k, v in row.items() if k not in ("completions", "prompt")} == {
            k: v for k, v in problem.items() if k != "prompt"}
        assert len(row["completions"]) == 3 and all(isinstance(c, str) for c in row["completions"])
    last = done.stdout.strip().splitlines()[-1]
    assert "5 prompts, 15 completions" in last and "prompts/s" in last and "generated tokens/s" in last
