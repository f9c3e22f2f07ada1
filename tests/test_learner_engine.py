"""The DeepSpeed DPO engine on one CPU rank (gloo): accumulation, learning, reference, saving.

Each engine build takes a few seconds (DeepSpeed + two tiny models), so the module shares one
trained engine; tests that change it say so and do not depend on its exact state.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from learner_util import make_engine, weights

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def hf_logps(model_dir: str, pairs) -> list[tuple[float, float]]:
    """log p(chosen | prompt) and log p(rejected | prompt) of each pair, with transformers alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def logp(prompt: str, completion: str) -> float:
        p = tok(prompt)["input_ids"]
        ids = p + tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        return sum(lp[t - 1, ids[t]].item() for t in range(len(p), len(ids)))

    return [(logp(x.prompt, x.chosen), logp(x.prompt, x.rejected)) for x in pairs]


def hf_margin(model_dir: str, pairs) -> float:
    """Mean log p(chosen | prompt) - log p(rejected | prompt)."""
    return sum(c - r for c, r in hf_logps(model_dir, pairs)) / len(pairs)


@pytest.fixture(scope="module")
def trained(tiny_math_model, pairs, tmp_path_factory):
    """An engine after 6 steps (3 epochs of 2 x 8 pairs), and the HF directory it saved then."""
    engine = make_engine(tiny_math_model, zero_stage=2)
    history = [engine.train_step(pairs[i : i + 8]) for _ in range(3) for i in (0, 8)]
    out = tmp_path_factory.mktemp("dpo-trained") / "model"
    engine.save_hf(out)
    return engine, str(out), history


def test_gradient_accumulation_matches_one_big_batch(tiny_math_model, pairs):
    """1 x 8 pairs, 4 x 2 pairs (ZeRO-2) and token-budget packing (no ZeRO) make the same updates."""
    runs = {}
    setups = {
        "1x8": {"micro_batch_pairs": 8, "zero_stage": 2},
        "4x2": {"micro_batch_pairs": 2, "zero_stage": 2},
        "tokens": {"micro_batch_tokens": 600, "zero_stage": 0},
    }
    for name, overrides in setups.items():
        engine = make_engine(tiny_math_model, **overrides)
        metrics = [engine.train_step(pairs[:8]), engine.train_step(pairs[8:])]
        runs[name] = (metrics, weights(engine))
        del engine
    assert [m["learner/micro_batches"] for m in runs["1x8"][0]] == [1, 1]
    assert [m["learner/micro_batches"] for m in runs["4x2"][0]] == [4, 4]
    assert all(m["learner/micro_batches"] >= 3 for m in runs["tokens"][0])
    base_metrics, base_weights = runs["1x8"]
    for name in ("4x2", "tokens"):
        metrics, w = runs[name]
        for m, b in zip(metrics, base_metrics, strict=True):
            for key in ("learner/loss", "learner/margin", "learner/grad_norm", "learner/tokens"):
                assert m[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (name, key)
        # Adam divides by sqrt(v): on the few elements with near-zero gradients, float rounding of a
        # different summation order shows up magnified. So: nearly every element equal to 2e-6, none
        # off by 5% of the ~2e-3 per-element update. (A uniformly mis-scaled loss would not show in
        # Adam's update at all: the grad-norm check above is what catches that.)
        for key, t in base_weights.items():
            diff = (w[key] - t).abs()
            assert diff.max().item() < 1e-4, (name, key)
            assert (diff > 2e-6).float().mean().item() < 1e-3, (name, key)
    # and the step really moved the weights (a no-op would also "match")
    init = weights_of_dir(tiny_math_model)
    assert max((base_weights[k] - init[k]).abs().max().item() for k in init) > 1e-4


def test_pairs_sharing_a_sequence_score_it_once(tiny_math_model, pairs):
    """Pairs of one prompt that share sides: fewer rows scored, the same per-pair log-probs."""
    from dataclasses import replace

    a, b = pairs[0], pairs[1]
    shared = [a, replace(a, chosen=a.chosen + " Yes."), replace(a, rejected=b.rejected), b]
    engine = make_engine(tiny_math_model, zero_stage=0)
    m = engine.train_step(shared)  # metrics are of the weights before the step: the initial model
    assert (m["learner/pairs"], m["learner/rows"], m["learner/micro_batches"]) == (4, 6, 1)
    expected = hf_logps(tiny_math_model, shared)
    assert m["learner/logp_chosen"] == pytest.approx(sum(c for c, _ in expected) / 4, abs=1e-4)
    assert m["learner/logp_rejected"] == pytest.approx(sum(r for _, r in expected) / 4, abs=1e-4)


def test_compiled_engine_makes_the_same_updates(tiny_math_model, pairs):
    """`learner.compile`: the policy and the reference are compiled in place (same parameter names,
    so weight syncs and checkpoints are unchanged), and two steps match the eager engine's."""
    runs = {}
    for compiled in (False, True):
        engine = make_engine(tiny_math_model, zero_stage=2, compile=compiled)
        metrics = [engine.train_step(pairs[:8]), engine.train_step(pairs[8:])]
        runs[compiled] = (metrics, weights(engine))
        if compiled:  # really compiled, not silently eager
            assert engine.engine.module._compiled_call_impl is not None
            assert engine.reference.module._compiled_call_impl is not None
        del engine
    (eager_m, eager_w), (comp_m, comp_w) = runs[False], runs[True]
    assert comp_w.keys() == eager_w.keys()
    for m, b in zip(comp_m, eager_m, strict=True):
        for key in ("learner/loss", "learner/margin", "learner/grad_norm", "learner/logp_chosen"):
            assert m[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    for key, t in eager_w.items():
        assert (comp_w[key] - t).abs().max().item() < 1e-4, key


def weights_of_dir(model_dir: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(f"{model_dir}/model.safetensors")


def test_dpo_raises_margin(trained, tiny_math_model, pairs):
    _, out, history = trained
    before, after = hf_margin(tiny_math_model, pairs), hf_margin(out, pairs)
    assert after > before + 1.0, (before, after)
    assert history[-1]["learner/loss"] < math.log(2) - 0.05
    assert history[-1]["learner/reward_acc"] >= 0.75


def test_save_hf_matches_engine_weights(trained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    engine = trained[0]
    engine.save_hf(tmp_path / "m")
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32)
    current = weights(engine)
    saved_params = dict(saved.named_parameters())
    assert set(current) == set(saved_params)
    for name, t in current.items():
        assert torch.equal(saved_params[name].detach(), t), name
    assert AutoTokenizer.from_pretrained(tmp_path / "m").eos_token_id == engine.tokenizer.eos_token_id


def test_refresh_reference_zeroes_rewards(trained, pairs):
    """Changes the shared engine: one step after a refresh."""
    engine = trained[0]
    before = engine.train_step(pairs[:8])
    assert abs(before["learner/reward_chosen"]) > 1e-3  # policy had moved away from the reference
    engine.refresh_reference()
    after = engine.train_step(pairs[:8])
    assert after["learner/reward_chosen"] == pytest.approx(0.0, abs=1e-6)
    assert after["learner/reward_rejected"] == pytest.approx(0.0, abs=1e-6)
    assert after["learner/loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_checkpoint_roundtrip(trained, tiny_math_model, pairs, tmp_path):
    """A fresh engine loaded from a checkpoint takes exactly the step the saved one takes next:
    policy, Adam moments, lr schedule, reference weights and step count all came back.
    Changes the shared engine."""
    engine = trained[0]
    engine.refresh_reference()
    engine.train_step(pairs[:8])  # policy != reference at save time
    engine.save_checkpoint(tmp_path, "ck")
    expected = engine.train_step(pairs[8:])
    resumed = make_engine(tiny_math_model, zero_stage=2)
    resumed.load_checkpoint(tmp_path, "ck")
    assert resumed.step == engine.step - 1
    got = resumed.train_step(pairs[8:])
    for key in ("learner/loss", "learner/reward_chosen", "learner/margin", "learner/lr", "learner/grad_norm"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key
    w_expected, w_got = weights(engine), weights(resumed)
    assert all(torch.allclose(w_got[k], w_expected[k], atol=1e-6) for k in w_expected)


def test_missing_checkpoint_is_user_error(trained, tmp_path):
    from pfrl.errors import UserError

    with pytest.raises(UserError, match="not a complete learner checkpoint"):
        trained[0].load_checkpoint(tmp_path, "nope")


VLLM_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine in this process: starts ~25 s sooner
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    if __name__ == "__main__":
        model, ids = sys.argv[1], json.loads(sys.argv[2])
        llm = LLM(model=model, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.3,
                  max_model_len=256, seed=0, distributed_executor_backend="uni")
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        out = llm.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)[0]
        print("LOGPROBS" + json.dumps([out.prompt_logprobs[t][ids[t]].logprob for t in range(1, len(ids))]))
    """
)


def test_saved_model_loads_in_vllm(trained, pairs, tmp_path):
    """vLLM (CPU) serves the saved model with the log-probs transformers computes from it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = trained[1]
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok(pairs[0].prompt + pairs[0].chosen)["input_ids"]
    script = tmp_path / "vllm_logprobs.py"
    script.write_text(VLLM_SCRIPT)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, str(script), out, json.dumps(ids)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("LOGPROBS")), None)
    assert line is not None, proc.stderr[-3000:]
    served = json.loads(line[len("LOGPROBS") :])
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    expected = [lp[t - 1, ids[t]].item() for t in range(1, len(ids))]
    assert served == pytest.approx(expected, abs=2e-3)
