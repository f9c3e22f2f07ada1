"""`pfrl bench learner`: DPO training tokens/s through the DeepSpeed engine against a plain PyTorch
loop over the same model and the same batches, as a ratio (the engine's overhead, or gain).

Both sides run the same tokenisation, micro-batch packing, log-prob and loss code, the same AdamW
and gradient clipping; only the optimizer/backward machinery differs. The two run batch by batch
in alternation, each after `--warmup` untimed steps. Without `--model`, a random tiny Llama is
built in a temporary directory. Synthetic pairs: a reference solution against one with a wrong
answer.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from pfrl.bench.report import add_json_argument, write_json
from pfrl.commands import add_config_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="HF model directory (default: a random tiny Llama).")
    p.add_argument("--hidden", type=int, default=256, help="Hidden size of the random model.")
    p.add_argument("--layers", type=int, default=4, help="Layers of the random model.")
    p.add_argument("--steps", type=int, default=6, help="Timed optimizer steps per side.")
    p.add_argument("--warmup", type=int, default=2, help="Untimed steps per side first.")
    add_config_args(p, "YAML config (its learner and model sections apply).",
                    set_help="Config override (repeatable), e.g. --set learner.zero_stage=3.")
    add_json_argument(p)


def synthetic_pairs(n: int, seed: int) -> list:
    from pfrl.tasks.synthetic_math import generate
    from pfrl.types import PreferencePair

    rng = random.Random(seed)
    pairs = []
    for problem, solution in generate(n, seed=seed):
        assert problem.answer is not None, "synthetic math problems carry their answer"
        wrong = str(int(problem.answer) + rng.randint(1, 9))
        rejected = solution.replace(f"\\boxed{{{problem.answer}}}", f"\\boxed{{{wrong}}}")
        pairs.append(PreferencePair(problem.id, problem.prompt, solution, rejected, 0))
    return pairs


class PlainDPOLoop:
    """The baseline: the same DPO step written directly against torch (one process, no DeepSpeed)."""

    def __init__(self, model_path: str, cfg, model_cfg, device):
        import torch
        from transformers import AutoTokenizer

        from learner.dist import compute_dtype
        from learner.optim import build_optimizer
        from learner.reference import load_causal_lm

        self.cfg, self.model_cfg, self.device = cfg, model_cfg, device
        self.amp_dtype = compute_dtype(model_cfg.dtype)  # master weights stay fp32, as in DeepSpeed
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.policy = load_causal_lm(model_path, torch.float32, cfg.grad_checkpointing).to(device)
        self.reference = load_causal_lm(model_path, self.amp_dtype).to(device).eval().requires_grad_(False)
        self.optimizer = build_optimizer(self.policy, cfg)

    def _autocast(self):
        import torch

        enabled = self.amp_dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=enabled)

    def train_step(self, pairs) -> int:
        import torch

        from learner.batching import collate, pack_micro_batches, pad_token_id, sequence_logps, tokenize_pairs
        from learner.loss import dpo_loss

        items = tokenize_pairs(self.tokenizer, pairs, self.model_cfg.max_length)
        tokens = 0
        for batch in pack_micro_batches(items, self.cfg.micro_batch_pairs, self.cfg.micro_batch_tokens):
            mb = collate(batch, pad_token_id(self.tokenizer)).to(self.device)
            with torch.no_grad(), self._autocast():
                ref = self.reference(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
                ref_c, ref_r, _ = sequence_logps(ref, mb, self.cfg.length_normalize)
            with self._autocast():
                logits = self.policy(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
                c, r, nll = sequence_logps(logits, mb, self.cfg.length_normalize)
                loss, _ = dpo_loss(
                    c,
                    r,
                    ref_c,
                    ref_r,
                    beta=self.cfg.beta,
                    loss_type=self.cfg.loss,
                    label_smoothing=self.cfg.label_smoothing,
                    chosen_nll=nll,
                    nll_weight=self.cfg.nll_weight,
                )
            (loss * mb.n_pairs / len(items)).backward()
            tokens += mb.n_tokens
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return tokens


def _time_interleaved(steps: dict, batches: list, warmup: int) -> dict[str, float]:
    """Tokens/s of each step function over the batches after `warmup`. The sides alternate batch
    by batch, so a change in machine load (a shared box) hits both alike."""
    for batch in batches[:warmup]:
        for fn in steps.values():
            fn(batch)
    seconds = dict.fromkeys(steps, 0.0)
    tokens = dict.fromkeys(steps, 0)
    for batch in batches[warmup:]:
        for name, fn in steps.items():
            start = time.perf_counter()
            tokens[name] += fn(batch)
            seconds[name] += time.perf_counter() - start
    return {name: tokens[name] / seconds[name] for name in steps}


def _random_model(tmp: str, hidden: int, layers: int) -> str:
    from pfrl.tasks.synthetic_math import generate
    from pfrl.tiny import save_random_model

    texts = [p.prompt + s for p, s in generate(500, seed=0)]
    return str(save_random_model(tmp, texts, seed=0, hidden=hidden, layers=layers))


def run(args: argparse.Namespace) -> int:
    import torch

    from learner.engine import DPOEngine
    from pfrl.config import load_config
    from pfrl.model_dir import check_model_dir

    cfg = load_config(args.config, [*args.overrides, "learner.num_learners=1"])
    lc = cfg.learner
    pairs = synthetic_pairs(lc.pairs_per_step * (args.steps + args.warmup), seed=cfg.run.seed)
    batches = [pairs[i : i + lc.pairs_per_step] for i in range(0, len(pairs), lc.pairs_per_step)]
    with tempfile.TemporaryDirectory(prefix="pfrl-bench-learner-") as tmp:
        model = args.model or _random_model(tmp, args.hidden, args.layers)
        check_model_dir(model)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(cfg.run.seed)
        plain = PlainDPOLoop(model, lc, cfg.model, device)
        engine = DPOEngine(model, lc, cfg.model, cfg.run.seed)
        tps = _time_interleaved(
            {"plain": plain.train_step, "engine": lambda b: int(engine.train_step(b)["learner/tokens"])},
            batches,
            args.warmup,
        )
    print(
        f"learner bench: ZeRO-{lc.zero_stage}, {device.type}, {lc.pairs_per_step} pairs/step, "
        f"{args.steps} timed steps"
    )
    print(f"  plain PyTorch loop : {tps['plain']:10.1f} tokens/s")
    print(f"  DeepSpeed engine   : {tps['engine']:10.1f} tokens/s")
    print(f"  ratio engine/plain : {tps['engine'] / tps['plain']:10.3f}")
    write_json(args.json_out, "learner", {
        "zero_stage": lc.zero_stage, "device": device.type, "pairs_per_step": lc.pairs_per_step, "steps": args.steps,
        "plain_tokens_per_s": tps["plain"], "engine_tokens_per_s": tps["engine"],
        "engine_vs_plain": tps["engine"] / tps["plain"],
    })
    return 0
