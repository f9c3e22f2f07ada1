"""Bootstrap (reduced size) gives a model transformers and vLLM load; `pfrl eval` scores it."""

import json
import subprocess
import sys
from dataclasses import asdict, replace

import pytest

from pfrl.bootstrap import BootstrapSpec, bootstrap, make_splits, with_shortcuts
from pfrl.tasks.io import read_problems
from pfrl.tasks.synthetic_code import CodeDifficulty, folded_program


def test_splits_are_disjoint():
    sft, train, heldout = make_splits("math", 0, BootstrapSpec.small())
    prompts = [{p.prompt for p, _ in part} for part in (sft, train, heldout)]
    assert not (prompts[0] & prompts[1]) and not (prompts[0] & prompts[2]) and not (prompts[1] & prompts[2])


def test_bootstrap_is_deterministic(tmp_path):
    spec = BootstrapSpec(sft_problems=300, train_problems=20, heldout_problems=10, layers=1, steps=4, batch=8)
    a = bootstrap("code", tmp_path / "a", seed=3, spec=spec)
    b = bootstrap("code", tmp_path / "b", seed=3, spec=spec)
    for name in ("model.safetensors", "tokenizer.json", "data/train.jsonl", "data/heldout.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert len(read_problems(a / "data" / "heldout.jsonl").problems) == 10


def test_shortcuts_keep_the_answer_and_hit_their_share():
    sft, _, _ = make_splits("math", 0, BootstrapSpec.small())
    mixed = with_shortcuts(sft, 0.6, seed=0)
    bare = [s for _, s in mixed if "=" not in s]
    assert 0.55 < len(bare) / len(mixed) < 0.65
    for (p, worked), (q, s) in zip(sft, mixed, strict=True):
        bare_answer = " " + worked[worked.rindex("The answer is"):]
        assert p is q and s.endswith(bare_answer) and s in (worked, bare_answer)
    assert with_shortcuts(sft, 0.6, seed=0) == mixed and with_shortcuts(sft, 0.0, seed=0) == sft


def test_code_shortcuts_fold_their_share_of_the_foldable_programs():
    spec = BootstrapSpec()
    sft, _, _ = make_splits("code", 0, replace(spec, sft_problems=2000))
    mixed = with_shortcuts(sft, 0.6, seed=0, task="code")
    foldable = [folded_program(s) is not None for _, s in sft]
    folded = [s != worked for (_, worked), (_, s) in zip(sft, mixed, strict=True)]
    assert 0.7 < sum(foldable) / len(sft) and 0.55 < sum(folded) / sum(foldable) < 0.65
    assert not any(f and not ok for f, ok in zip(folded, foldable, strict=True))


def test_a_cached_bootstrap_from_another_spec_is_rebuilt(tmp_path, monkeypatch):
    from pfrl import preflight
    from pfrl.config import load_config

    built = []
    monkeypatch.setattr(preflight, "_bootstrap", lambda task, path, seed: built.append(task))
    cfg = load_config(None, [f"model.bootstrap_dir={tmp_path}", "run.task=code"])
    cached = tmp_path / "tiny-code-seed0" / "pfrl_bootstrap.json"
    cached.parent.mkdir()
    spec = asdict(BootstrapSpec())
    cached.write_text(json.dumps({"spec": {**spec, "math_difficulty": {"min_steps": 9}}}))
    preflight.resolve_model(cfg)  # only the math difficulty differs: a code model stays
    assert built == []
    cached.write_text(json.dumps({"spec": {**spec, "code_difficulty": asdict(CodeDifficulty(max_k=99))}}))
    preflight.resolve_model(cfg)
    assert built == ["code"]


def test_bootstrap_math_problems_use_the_spec_difficulty():
    spec = BootstrapSpec.small()
    _, train, _ = make_splits("math", 0, spec)
    d = spec.math_difficulty
    for problem, solution in train:
        assert d.min_steps <= solution.count("=") <= d.max_steps
        assert "doubles" not in problem.prompt or d.allow_double


def test_bootstrapped_model_learned_the_format(boot_math):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(boot_math)
    model = AutoModelForCausalLM.from_pretrained(boot_math)
    problem = read_problems(f"{boot_math}/data/heldout.jsonl").problems[0]
    ids = tok(problem.prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=60, do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    # Either habit the SFT data teaches (worked steps or a bare answer), always ending boxed.
    assert text.strip().endswith("}.") and "\\boxed{" in text, text


@pytest.mark.slow
def test_eval_through_vllm(boot_math):
    proc = subprocess.run(
        [sys.executable, "-m", "pfrl.cli", "eval", "--model", boot_math, "--data", f"{boot_math}/data/heldout.jsonl",
         "--task", "math", "--n", "4", "--limit", "32", "--max-tokens", "64"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["problems"] == 32
    for key in ("accuracy", "maj@4", "pass@1", "pass@4"):
        assert 0.0 <= result[key] <= 1.0
    assert result["pass@4"] >= result["maj@4"]  # a correct majority implies a correct sample


def test_eval_user_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pfrl.cli", "eval", "--model", str(tmp_path), "--data", "x.jsonl",
                           "--task", "math"], capture_output=True, text=True)
    assert proc.returncode == 2 and "not a Hugging Face model directory" in proc.stderr


def test_pass_at_k_is_the_unbiased_estimator():
    """1 - C(n-c, k) / C(n, k), checked against brute force over every k-subset."""
    from itertools import combinations
    from math import isclose

    from pfrl.evaluation import pass_at_k

    for n, c, k in [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 1, 6), (4, 4, 2), (10, 3, 4)]:
        outcomes = [True] * c + [False] * (n - c)
        subsets = list(combinations(outcomes, k))
        assert isclose(pass_at_k(n, c, k), sum(any(s) for s in subsets) / len(subsets)), (n, c, k)


def test_evaluate_reports_greedy_maj_and_pass_at_k():
    from pfrl.evaluation import evaluate
    from pfrl.types import Problem

    class Judge:
        def judge(self, problem, completions):
            return [(c, c == problem.answer) for c in completions]

    problems = [Problem("a", "q1", answer="1"), Problem("b", "q2", answer="2")]
    samples = {"q1": ["1", "1", "1", "0"], "q2": ["2", "3", "3", "3"]}

    def sample(prompts, n, temperature):
        return [samples[p][:n] if temperature > 0 else [samples[p][1]] for p in prompts]

    result = evaluate(problems, sample, Judge(), n=4, temperature=1.0, ks=[2])
    assert result["accuracy"] == 0.5  # greedy: right on q1 only
    assert result["maj@4"] == 0.5  # q1's majority is right, q2's wrong
    assert result["pass@1"] == (3 / 4 + 1 / 4) / 2 and result["pass@4"] == 1.0
    assert result["pass@2"] == (1.0 + (1 - 3 / 6)) / 2  # q2: C(3,2)/C(4,2) of the pairs miss


def test_eval_settings_come_from_the_config_and_flags_override_them(tmp_path):
    import argparse

    from pfrl.commands import eval as eval_cmd
    from pfrl.config import ConfigError

    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("model: {path: m, max_length: 2048, chat_template: auto}\ndata: {heldout_file: h.jsonl}\n"
                        "generator: {max_tokens: 512}\nrun: {task: code}\n")
    parser = argparse.ArgumentParser()
    eval_cmd.add_arguments(parser)
    cfg = eval_cmd.build_config(parser.parse_args(["--config", str(cfg_file), "--max-tokens", "64", "--n", "4"]))
    assert (cfg.model.path, cfg.model.max_length, cfg.model.chat_template) == ("m", 2048, "auto")
    assert (cfg.data.heldout_file, cfg.run.task, cfg.generator.max_tokens, cfg.metrics.eval_samples) == (
        "h.jsonl", "code", 64, 4)
    with pytest.raises(ConfigError, match="--max-length: Input should be greater than or equal to 16"):
        eval_cmd.build_config(parser.parse_args(["--max-length", "8"]))


def test_sft_leaves_ieee_floats_on(monkeypatch):
    """Flush-to-zero is process-wide: left on, it broke hypothesis' float strategies in any test that
    ran after a bootstrap in the same process."""
    import torch

    import pfrl.bootstrap as boot

    monkeypatch.setattr(boot, "_encode_examples", lambda tokenizer, examples: [])
    monkeypatch.setattr(boot, "_sft_steps", lambda *args: torch.tensor([1e-40]).mul(1.0).item())

    class Model:
        def eval(self) -> None:
            pass

    class Tokenizer:
        pad_token_id = 0

    boot.sft(Model(), Tokenizer(), [], boot.BootstrapSpec.small(), 0, lambda step, loss: None)
    assert torch.tensor([1e-40]).mul(1.0).item() != 0.0
