"""`pfrl bench generate`: sampling tokens/s of the vLLM generator against Hugging Face `generate`
on the same model, prompts and sampling settings, as a ratio.

Both sides sample `--n` completions per prompt (temperature / top_p from the generator config) of
at most `--max-tokens` tokens, stopping at EOS; tokens/s counts the completion tokens actually
generated. vLLM runs first (through `GeneratorEngine`, the code the generators run), is shut down,
then HF runs in batches of `--hf-batch` prompts. Each side gets one untimed warm-up call. On CPU,
HF gets as many torch threads as vLLM's CPU backend uses for its worker (all cores but one), so
neither side has more cores. Without `--model`, a random tiny Llama is built in a temporary
directory. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from pfrl.bench.report import add_json_argument, write_json
from pfrl.commands import add_config_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="HF model directory (default: a random tiny Llama).")
    p.add_argument("--prompts", type=int, default=32, help="Prompts per side (default 32).")
    p.add_argument("--n", type=int, default=4, help="Completions per prompt (default 4).")
    p.add_argument("--max-tokens", type=int, default=64, help="Maximum tokens per completion (default 64).")
    p.add_argument("--hf-batch", type=int, default=8, help="Prompts per HF generate call (default 8).")
    add_config_args(p, "YAML config (its generator and model sections apply).")
    add_json_argument(p)


def _prompts(count: int, cfg, model: str) -> list[str]:
    """Synthetic math questions, rendered as the model reads them in training (its chat template
    with `model.chat_template: auto`), so an instruct model answers and stops at its own EOS."""
    from pfrl.prompting import render_problems
    from pfrl.tasks.synthetic_math import generate

    return [p.prompt for p in render_problems([p for p, _ in generate(count, seed=7)], cfg.model, model)]


def _lengths(groups) -> dict[str, float]:
    """How natural the lengths were: mean, spread and the share of completions ended by EOS."""
    import statistics

    lengths = sorted(len(ids) for g in groups for ids in g.token_ids)
    reasons = [r for g in groups for r in g.finish_reasons]
    return {
        "vllm_len_mean": statistics.fmean(lengths),
        "vllm_len_min": lengths[0],
        "vllm_len_p50": lengths[len(lengths) // 2],
        "vllm_len_max": lengths[-1],
        "vllm_eos_frac": sum(r == "stop" for r in reasons) / len(reasons),
    }


def _random_model(out_dir: str) -> str:
    from pfrl.tasks.synthetic_math import generate
    from pfrl.tiny import save_random_model

    return str(save_random_model(out_dir, [p.prompt + s for p, s in generate(500, seed=0)], seed=0))


def _vllm_tokens_per_s(model: str, cfg, prompts: list[str]) -> tuple[float, int, float, dict[str, float]]:
    from pfrl.generation import GeneratorEngine
    from pfrl.types import Problem, PromptItem

    engine = GeneratorEngine(model, cfg.generator, cfg.model, cfg.sync, seed=cfg.run.seed)
    items = [PromptItem(Problem(id=f"b{i}", prompt=p), iteration=0) for i, p in enumerate(prompts)]
    try:
        engine.generate(items[:2])  # warm-up
        start = time.perf_counter()
        groups = engine.generate(items)
        elapsed = time.perf_counter() - start
    finally:
        engine.shutdown()
    tokens = sum(g.completion_tokens for g in groups)
    return tokens / elapsed, tokens, elapsed, _lengths(groups)


def _hf_generated(out, prompt_len: int, eos: int | None) -> int:
    """Completion tokens in one batch of HF outputs (up to and including the first EOS)."""
    count = 0
    for row in out[:, prompt_len:].tolist():
        count += row.index(eos) + 1 if eos is not None and eos in row else len(row)
    return count


def _hf_call(model, tok, batch: list[str], cfg) -> int:
    import torch

    enc = tok(batch, return_tensors="pt", padding=True).to(model.device)
    g = cfg.generator
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=g.temperature,
            top_p=g.top_p,
            max_new_tokens=g.max_tokens,
            num_return_sequences=g.n_samples,
            pad_token_id=tok.pad_token_id,
        )
    return _hf_generated(out, enc["input_ids"].shape[1], tok.eos_token_id)


def _hf_tokens_per_s(model_dir: str, cfg, prompts: list[str], batch: int) -> tuple[float, int, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    # transformers types the wrapped PreTrainedModel.to as taking a model as its first argument
    model = model.to(device).eval()  # type: ignore[arg-type]
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    torch.manual_seed(cfg.run.seed)
    _hf_call(model, tok, prompts[:2], cfg)  # warm-up
    start = time.perf_counter()
    tokens = sum(_hf_call(model, tok, prompts[i : i + batch], cfg) for i in range(0, len(prompts), batch))
    elapsed = time.perf_counter() - start
    return tokens / elapsed, tokens, elapsed


def _config(args: argparse.Namespace):
    from pfrl.config import load_config

    overrides = [*args.overrides, f"generator.n_samples={args.n}", f"generator.max_tokens={args.max_tokens}"]
    return load_config(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    import torch

    cfg = _config(args)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or _random_model(tmp)
        prompts = _prompts(args.prompts, cfg, model)
        vllm_tps, vllm_tok, vllm_s, lengths = _vllm_tokens_per_s(model, cfg, prompts)
        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # vLLM's CPU worker keeps one core free
        hf_tps, hf_tok, hf_s = _hf_tokens_per_s(model, cfg, prompts, args.hf_batch)
    where = "cuda" if torch.cuda.is_available() else f"cpu, HF torch threads {torch.get_num_threads()}"
    print(f"generate bench: {len(prompts)} prompts x {args.n} samples, <= {args.max_tokens} tokens ({where})")
    print(f"  vLLM generator   : {vllm_tps:10.1f} tokens/s  ({vllm_tok} tokens in {vllm_s:.2f}s)")
    print(f"  HF generate      : {hf_tps:10.1f} tokens/s  ({hf_tok} tokens in {hf_s:.2f}s)")
    print(f"  ratio vLLM/HF    : {vllm_tps / hf_tps:10.2f}")
    print(f"  vLLM completion lengths: mean {lengths['vllm_len_mean']:.0f}, min {lengths['vllm_len_min']}, "
          f"median {lengths['vllm_len_p50']}, max {lengths['vllm_len_max']}; ended by EOS {lengths['vllm_eos_frac']:.0%}")
    write_json(args.json_out, "generate", {
        "model": args.model or "random tiny Llama", "prompts": len(prompts), "n": args.n,
        "max_tokens": args.max_tokens, "hf_threads": None if torch.cuda.is_available() else torch.get_num_threads(),
        "vllm_tokens_per_s": vllm_tps, "vllm_tokens": vllm_tok, "vllm_s": vllm_s,
        "hf_tokens_per_s": hf_tps, "hf_tokens": hf_tok, "hf_s": hf_s, "vllm_vs_hf": vllm_tps / hf_tps,
        **lengths,
    })
    return 0
