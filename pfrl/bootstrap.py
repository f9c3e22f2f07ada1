"""`pfrl bootstrap`: a tiny policy that has learned a synthetic task, but not perfectly.

Steps: generate seeded problems (an SFT corpus, the RL train split and a disjoint held-out split),
train a byte-level BPE tokenizer, then SFT a small Llama from scratch on the reference solutions
(loss on completion tokens only).

The SFT corpus teaches a habit that pseudo feedback can train out, the way a real SFT model inherits
the habits of its data: a share of its solutions (`shortcut_share`, the majority) do the arithmetic
in the head. In math they state the answer without working the steps; in code they fold the chain
of operations into one expression with the constants computed (`(x + 17) * 15` as `x * 15 + 255`).
A four-layer model cannot do several operations in its head, so the habit is usually wrong, and
wrong in scattered ways; greedy decoding follows it, while sampling works the steps (or copies the
operations) often enough that the policy's own majority vote is right, and DPO learns from labels
alone that the worked form is right more often.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pfrl.tasks.io import problem_to_dict, write_jsonl
from pfrl.tasks.synthetic_code import CodeDifficulty, folded_program
from pfrl.tasks.synthetic_math import MathDifficulty, answer_sentence
from pfrl.types import Problem


@dataclass(frozen=True)
class BootstrapSpec:
    """Sizes of one bootstrap; `pfrl bootstrap --small` uses `small()` (tests)."""

    sft_problems: int = 20000
    train_problems: int = 2000
    heldout_problems: int = 256
    hidden: int = 128
    layers: int = 4
    steps: int = 1200
    batch: int = 32
    lr: float = 3e-3
    warmup: int = 60
    # Share of SFT solutions that skip the worked steps (see the module docstring); 0 disables.
    shortcut_share: float = 0.6
    # Small numbers, 2-3 operations: a four-layer model works the steps reliably (~0.7 greedy) but
    # cannot add three numbers in its head (~0.5), so the habit costs it and feedback can tell.
    math_difficulty: MathDifficulty = MathDifficulty(min_steps=2, max_steps=3, max_start=9, max_operand=5, allow_double=False)
    # Code: 2-3 operations with constants up to 20, 80% on one integer and no modulo, so most problems
    # have a folded form (the habit above) that a four-layer model gets wrong. The pool is large
    # (tens of thousands of distinct problems), so SFT teaches copying the prompt rather than
    # memorising programs: with 1-2 operations and constants up to 9 the seeded pool held ~4,000
    # distinct problems and the model memorised them (every sample identical: no pairs to learn from).
    code_difficulty: CodeDifficulty = CodeDifficulty(min_ops=2, max_ops=3, max_k=20, int_share=0.8, allow_modulo=False)

    @staticmethod
    def small() -> BootstrapSpec:
        # The tests' code model keeps the task's default difficulty: it is weak and its samples differ
        # (pairs to test with); the habit touches only the few 2-operation problems without modulo.
        return BootstrapSpec(sft_problems=3000, train_problems=200, heldout_problems=64, layers=2, steps=300,
                             code_difficulty=CodeDifficulty())


def task_spec(spec: BootstrapSpec | dict, task: str) -> dict:
    """What of a spec shapes a `task` model, in the JSON form pfrl_bootstrap.json stores (so a cached
    model and today's spec compare; the other task's difficulty does not count)."""
    d = json.loads(json.dumps(asdict(spec) if isinstance(spec, BootstrapSpec) else spec))
    d.pop("code_difficulty" if task == "math" else "math_difficulty", None)
    return d


def _generator(task: str, spec: BootstrapSpec) -> Callable[[int, int], list[tuple[Problem, str]]]:
    if task == "math":
        from pfrl.tasks import synthetic_math

        return lambda n, seed: synthetic_math.generate(n, seed, spec.math_difficulty)
    from pfrl.tasks import synthetic_code

    return lambda n, seed: synthetic_code.generate(n, seed, spec.code_difficulty)


def make_splits(task: str, seed: int, spec: BootstrapSpec):
    """SFT corpus, RL train split and held-out split, with no prompt shared across them."""
    pool = _generator(task, spec)(spec.sft_problems + spec.train_problems + spec.heldout_problems * 2, seed)
    seen: set[str] = set()
    unique = []
    for problem, solution in pool:
        if problem.prompt not in seen:
            seen.add(problem.prompt)
            unique.append((problem, solution))
    heldout = unique[: spec.heldout_problems]
    train = unique[spec.heldout_problems : spec.heldout_problems + spec.train_problems]
    sft = unique[spec.heldout_problems + spec.train_problems :]
    return sft, train, heldout


def _shortcut(task: str, problem: Problem, solution: str) -> str | None:
    """The habit's form of one solution (None: the habit does not apply to it)."""
    if task == "code":
        return folded_program(solution)
    assert problem.answer is not None, "synthetic math problems carry their answer"
    return " " + answer_sentence(problem.answer)


def with_shortcuts(examples: list[tuple[Problem, str]], share: float, seed: int,
                   task: str = "math") -> list[tuple[Problem, str]]:
    """Replace `share` of the solutions (chosen by seed) by their shortcut form, where they have one."""
    rng = random.Random(f"shortcut:{seed}")
    out = []
    for problem, solution in examples:
        if rng.random() < share:
            solution = _shortcut(task, problem, solution) or solution
        out.append((problem, solution))
    return out


def _encode_examples(tokenizer, examples: list[tuple[Problem, str]]):
    """Token ids and completion masks; EOS closes each completion so the model learns to stop."""
    prompts = tokenizer([p.prompt for p, _ in examples], add_special_tokens=False)["input_ids"]
    solutions = tokenizer([s for _, s in examples], add_special_tokens=False)["input_ids"]
    rows = []
    for p, c in zip(prompts, solutions, strict=True):
        c = c + [tokenizer.eos_token_id]
        rows.append((p + c, [0] * len(p) + [1] * len(c)))
    return rows


def _batch(rows, idx, pad_id):
    import torch

    width = max(len(rows[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    loss_mask = torch.zeros((len(idx), width), dtype=torch.float)
    for r, i in enumerate(idx):
        toks, lm = rows[i]
        ids[r, : len(toks)] = torch.tensor(toks)
        mask[r, : len(toks)] = 1
        loss_mask[r, : len(toks)] = torch.tensor(lm, dtype=torch.float)
    return ids, mask, loss_mask


def _lr_at(step: int, spec: BootstrapSpec) -> float:
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * 0.5 * (1 + math.cos(math.pi * progress))


def sft(model, tokenizer, examples, spec: BootstrapSpec, seed: int, on_step: Callable[[int, float], None]):
    """Plain PyTorch SFT on completion tokens only."""
    import torch

    rows = _encode_examples(tokenizer, examples)
    rng = random.Random(seed)
    # Tiny models trained from scratch drift into denormal floats, which are ~10x slower on CPU. The
    # flag is process-wide (it would break IEEE floats for everything after, e.g. hypothesis), so
    # it is switched off again after training.
    torch.set_flush_denormal(True)
    try:
        _sft_steps(model, rows, spec, rng, tokenizer.pad_token_id, on_step)
    finally:
        torch.set_flush_denormal(False)
    model.eval()


def _sft_steps(model, rows, spec: BootstrapSpec, rng: random.Random, pad_id: int,
               on_step: Callable[[int, float], None]) -> None:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    for step in range(spec.steps):
        ids, mask, loss_mask = _batch(rows, rng.sample(range(len(rows)), spec.batch), pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        loss = (nll * loss_mask[:, 1:]).sum() / loss_mask[:, 1:].sum()
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, spec)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        on_step(step, loss.item())


def bootstrap(task: str, out_dir: str | Path, seed: int = 0, spec: BootstrapSpec | None = None, progress=None) -> Path:
    """Build DIR: an HF model directory plus DIR/data/{train,heldout}.jsonl. Deterministic per seed."""
    import torch
    from transformers import LlamaForCausalLM

    from pfrl.tiny import build_tokenizer, save_model, tiny_config

    spec = spec or BootstrapSpec()
    out = Path(out_dir)
    torch.manual_seed(seed)
    sft_set, train, heldout = make_splits(task, seed, spec)
    if spec.shortcut_share:
        sft_set = with_shortcuts(sft_set, spec.shortcut_share, seed, task)
    tokenizer = build_tokenizer(p.prompt + s for p, s in sft_set)
    model = LlamaForCausalLM(tiny_config(tokenizer, hidden=spec.hidden, layers=spec.layers))
    on_step = progress or (lambda step, loss: None)
    started = time.time()
    sft(model, tokenizer, sft_set, spec, seed, on_step)
    save_model(model, tokenizer, out)
    write_jsonl(out / "data" / "train.jsonl", (problem_to_dict(p) for p, _ in train))
    write_jsonl(out / "data" / "heldout.jsonl", (problem_to_dict(p) for p, _ in heldout))
    meta = {"task": task, "seed": seed, "spec": asdict(spec), "sft_seconds": round(time.time() - started, 1)}
    (out / "pfrl_bootstrap.json").write_text(json.dumps(meta, indent=2))
    return out
