"""`pfrl dpo`: the pairs-file reader, user errors (one line, exit 2) and an end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from learner.pairs_file import read_pairs
from pfrl.bench.learner import synthetic_pairs
from pfrl.cli import main
from pfrl.errors import UserError


def write_pairs(path, n: int, bad_rows: list[str]) -> None:
    rows = [json.dumps({"id": p.prompt_id, "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected})
            for p in synthetic_pairs(n, seed=11)]  # fmt: skip
    path.write_text("\n".join(rows[:2] + bad_rows + rows[2:]) + "\n")


BAD = [
    "{not json",
    json.dumps({"prompt": "Q", "chosen": "a"}),
    json.dumps({"prompt": "Q", "chosen": "same", "rejected": "same"}),
    json.dumps(["a", "b"]),
]


def test_read_pairs_skips_and_counts_bad_rows(tmp_path):
    f = tmp_path / "pairs.jsonl"
    write_pairs(f, 12, BAD)
    pf = read_pairs(f, max_bad=0.5)
    assert len(pf.pairs) == 12
    assert [line for line, _ in pf.bad] == [3, 4, 5, 6]
    reasons = " | ".join(why for _, why in pf.bad)
    assert "invalid JSON" in reasons and "'rejected' missing" in reasons and "identical" in reasons
    assert pf.pairs[0].prompt_id.startswith("math-") and pf.pairs[0].chosen != pf.pairs[0].rejected


def test_read_pairs_too_many_bad_rows(tmp_path):
    f = tmp_path / "pairs.jsonl"
    write_pairs(f, 4, BAD)
    with pytest.raises(UserError, match=r"line 3: invalid JSON .*4 bad of 8 rows"):
        read_pairs(f, max_bad=0.05)


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err.strip()


def test_missing_model_dir_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text("")
    rc, err = _run_cli(
        ["dpo", "--model", str(tmp_path / "nope"), "--pairs", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o")],
        capsys,
    )
    assert rc == 2
    assert err.count("\n") == 0 and "nope: not a Hugging Face model directory" in err


def test_bad_pairs_file_is_one_line_exit_2(tiny_math_model, tmp_path, capsys):
    f = tmp_path / "p.jsonl"
    write_pairs(f, 2, BAD)
    rc, err = _run_cli(["dpo", "--model", tiny_math_model, "--pairs", str(f), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and err.count("\n") == 0 and "line 3" in err


def test_refuses_to_replace_a_non_model_dir(tiny_math_model, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    f = tmp_path / "p.jsonl"
    write_pairs(f, 4, [])
    rc, err = _run_cli(["dpo", "--model", tiny_math_model, "--pairs", str(f), "--out", str(out)], capsys)
    assert rc == 2 and "refusing to replace" in err
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_dpo_end_to_end(tiny_math_model, tmp_path):
    """2 epochs x 3 steps of 4 pairs; bad rows reported by line; the model loads in transformers."""
    from transformers import AutoModelForCausalLM

    f = tmp_path / "pairs.jsonl"
    write_pairs(f, 12, BAD[:2])
    out, metrics = tmp_path / "out", tmp_path / "metrics.jsonl"
    sets = ["learner.lr=1e-3", "learner.epochs=2", "learner.pairs_per_step=4", "data.max_bad_records=0.2"]
    cmd = [sys.executable, "-m", "pfrl.cli", "dpo", "--model", tiny_math_model, "--pairs", str(f),
           "--out", str(out), "--metrics-out", str(metrics), "--no-progress"]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "line 3: invalid JSON" in proc.stderr and "line 4:" in proc.stderr
    assert "12 pairs (2 bad rows skipped)" in proc.stderr
    steps = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6]
    assert steps[-1]["learner/loss"] < steps[0]["learner/loss"]
    assert f"model written to {out}" in proc.stdout
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size > 0
