"""Tiny Llama models and tokenizers built locally (no model hub is reachable).

`build_tokenizer` trains a byte-level BPE on a corpus, with digits split one by one so arithmetic is
learnable; `tiny_config` gives a Llama config vLLM's CPU backend accepts (head_dim 64: its attention
rejects 16). `save_random_model` writes a complete Hugging Face directory with random weights, which
tests use when they need a real model fast; `pfrl bootstrap` trains one properly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}


def build_tokenizer(texts: Iterable[str], vocab_size: int = 384):
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL["pad"], SPECIAL["bos"], SPECIAL["eos"], SPECIAL["unk"]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        pad_token=SPECIAL["pad"],
        unk_token=SPECIAL["unk"],
        model_max_length=1024,
    )


def tiny_config(tokenizer, hidden: int = 128, layers: int = 4, max_positions: int = 512):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        head_dim=64,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


def save_model(model, tokenizer, out_dir: str | Path) -> Path:
    """Write a Hugging Face model directory (config, safetensors, tokenizer) loadable by vLLM."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    return out


def save_random_model(out_dir: str | Path, texts: Iterable[str], seed: int = 0, hidden: int = 128, layers: int = 2) -> Path:
    """A randomly initialised tiny model + tokenizer trained on `texts`: for tests that need a real
    model directory quickly, not a trained one."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer(texts)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(tokenizer, hidden=hidden, layers=layers))
    return save_model(model, tokenizer, out_dir)
