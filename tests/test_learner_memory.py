"""Memory levers: DeepSpeed offload sections, their schema checks, the attention choice, and LoRA
weights merged before they leave the learner (names and shapes of the base model, outputs of the
adapted one)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from learner_util import make_engine, weights

from learner.memory import is_lora, with_lora, with_offload
from learner.optim import deepspeed_config, reference_deepspeed_config
from learner.weights import copy_module_weights, iter_weight_buckets, load_module_weights
from pfrl.bench.learner import synthetic_pairs
from pfrl.config import ConfigError, LearnerSection, LoraSection, load_config


def test_offload_sections_follow_the_config():
    cfg = LearnerSection(zero_stage=3, offload_optimizer="cpu", offload_params="cpu")
    ds = with_offload(deepspeed_config(cfg, torch.float32, 1), cfg)
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["zero_force_ds_cpu_optimizer"] is False  # pfrl's torch AdamW, no JIT-built CPU Adam
    ref = with_offload(reference_deepspeed_config(cfg, torch.float32, 1), cfg, params_only=True)
    assert "offload_optimizer" not in ref["zero_optimization"] and "offload_param" in ref["zero_optimization"]
    plain = LearnerSection()
    assert with_offload(deepspeed_config(plain, torch.float32, 1), plain) == deepspeed_config(
        plain, torch.float32, 1
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["learner.offload_params=cpu"], "offload_params needs learner.zero_stage 3"),
        (
            ["learner.zero_stage=0", "learner.offload_optimizer=cpu"],
            "offload_optimizer needs learner.zero_stage",
        ),
        (["learner.zero_stage=3", "learner.compile=true"], "learner.compile needs learner.zero_stage 0, 1 or 2"),
    ],
)
def test_offload_and_compile_need_a_zero_stage_that_allows_them(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    assert (
        load_config(None, ["learner.zero_stage=3", "learner.offload_params=cpu"]).learner.offload_params
        == "cpu"
    )


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_flash_attention_without_flash_attn_is_one_line():
    with pytest.raises(ConfigError, match="model.*flash_attention_2 needs the flash-attn package") as e:
        load_config(None, ["model.attn_implementation=flash_attention_2"])
    assert "\n" not in str(e.value)


def _lora_model(model_dir: str, seed: int = 0):
    """The tiny model with rank-4 adapters whose B is random (peft starts B at zero: a no-op)."""
    from transformers import AutoModelForCausalLM

    model = with_lora(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), LoraSection(rank=4)
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def test_merged_lora_weights_carry_base_names_and_the_adapted_outputs(tiny_math_model):
    from transformers import AutoModelForCausalLM

    lora = _lora_model(tiny_math_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_math_model, dtype=torch.float32).eval()
    assert is_lora(lora) and not is_lora(base)
    merged = {n: t for b in iter_weight_buckets(lora, 1 << 16, rank=0) for n, t in b}
    plain = {n: t for b in iter_weight_buckets(base, 1 << 16, rank=0) for n, t in b}
    assert list(merged) == list(plain)  # the names (and order) vLLM and transformers expect
    assert all(merged[n].shape == plain[n].shape and merged[n].dtype == plain[n].dtype for n in plain)
    assert not torch.equal(
        merged["model.layers.0.self_attn.q_proj.weight"], plain["model.layers.0.self_attn.q_proj.weight"]
    )

    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    adapted = _logits(lora, ids)
    assert not torch.allclose(adapted, _logits(base, ids), atol=1e-4)  # the adapters do change the model
    load_module_weights(base, merged, 1 << 16)  # a tied lm_head is the embedding, loaded once
    torch.testing.assert_close(_logits(base, ids), adapted, atol=1e-5, rtol=1e-5)

    fresh = AutoModelForCausalLM.from_pretrained(tiny_math_model, dtype=torch.float32).eval()
    copy_module_weights(lora, fresh, 1 << 16)  # how the reference is refreshed from a LoRA policy
    torch.testing.assert_close(_logits(fresh, ids), adapted, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "zero_stage, offload", [(2, {"offload_optimizer": "cpu"}), (3, {"offload_params": "cpu"})]
)
def test_lora_engine_trains_adapters_and_publishes_merged_weights(
    tiny_math_model, tmp_path, one_thread, zero_stage, offload
):
    from transformers import AutoModelForCausalLM

    engine = make_engine(tiny_math_model, zero_stage=zero_stage, lora=LoraSection(rank=4), **offload)
    trainable = [n for n, p in engine.engine.module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    before = weights(engine)
    pairs = synthetic_pairs(8, seed=3)
    for _ in range(2):
        engine.train_step(pairs)
    after = weights(engine)
    base = AutoModelForCausalLM.from_pretrained(tiny_math_model, dtype=torch.float32)
    assert list(after) == [n for n, _ in base.named_parameters()]
    assert any(not torch.equal(before[n], after[n]) for n in after)  # the merged adapters moved
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])  # frozen

    out = tmp_path / "model"
    engine.save_hf(out)
    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    engine.engine.module.eval()
    torch.testing.assert_close(_logits(saved, ids), _logits(engine.engine.module, ids), atol=1e-5, rtol=1e-5)

    engine.refresh_reference()  # the reference becomes the merged policy: rewards start again at 0
    metrics = engine.train_step(pairs)
    assert abs(metrics["learner/reward_chosen"]) < 1e-4 and abs(metrics["learner/reward_rejected"]) < 1e-4
