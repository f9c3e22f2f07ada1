"""One learner rank: the policy under DeepSpeed, its frozen reference, and DPO steps over pairs.

`train_step` is one optimizer step over this rank's share of a global batch. The share is packed
into micro-batches (by pair count or token budget) whose gradients accumulate; each micro-batch
loss is weighted by its share of the *global* batch, so the update equals that of one big batch no
matter how the pairs were split across micro-batches and ranks. Data-parallel ranks must run the
same number of forward/backward passes (ZeRO reduces gradients on every backward), so ranks agree
on a micro-batch count first and the short ones split batches or add zero-weight passes.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from learner.batching import (
    MicroBatch,
    collate,
    pack_micro_batches,
    pad_token_id,
    sequence_logps,
    split_to_count,
    tokenize_pairs,
)
from learner.dist import compute_dtype, init_distributed, quiet_deepspeed
from learner.loss import dpo_loss
from learner.memory import plain_model, with_lora, with_offload
from learner.optim import build_optimizer, deepspeed_config, reference_deepspeed_config
from learner.reference import ReferenceModel, load_causal_lm
from learner.weights import iter_weight_buckets
from pfrl.config import LearnerSection, ModelSection
from pfrl.errors import UserError
from pfrl.model_dir import check_model_dir
from pfrl.types import PreferencePair

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Bucket for internal gathers (saves, reference refresh): bounds their extra memory per rank.
GATHER_BUCKET_BYTES = 256 << 20
REFERENCE_FILE = "reference.safetensors"
LOSS_KEYS = (
    "loss",
    "reward_chosen",
    "reward_rejected",
    "reward_acc",
    "margin",
    "logp_chosen",
    "logp_rejected",
    "nll",
)


class DPOEngine:
    def __init__(
        self, model_path: str, cfg: LearnerSection, model_cfg: ModelSection, seed: int
    ):
        """The learning rate is the caller's: each `train_step` names its own (learner/optim.lr_at),
        because the online loop sizes each iteration's schedule from the pairs it really trains."""
        import deepspeed
        from transformers import AutoTokenizer

        check_model_dir(model_path)
        quiet_deepspeed()
        self.cfg, self.model_cfg = cfg, model_cfg
        self.rank, self.world_size = init_distributed()
        torch.manual_seed(seed)
        self.dtype = compute_dtype(model_cfg.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.pad_id = pad_token_id(self.tokenizer)
        attn = model_cfg.attn_implementation
        policy = with_lora(load_causal_lm(model_path, self.dtype, cfg.grad_checkpointing, attn), cfg.lora)
        if cfg.compile:
            policy.compile(dynamic=True)  # in place: parameter names (weight sync, checkpoints) unchanged
        self.engine = deepspeed.initialize(
            model=policy,
            optimizer=build_optimizer(policy, cfg),
            config=with_offload(deepspeed_config(cfg, self.dtype, self.world_size), cfg),
        )[0]
        self.device = self.engine.device
        ref_ds = None
        if cfg.zero_stage == 3:
            ref_ds = with_offload(reference_deepspeed_config(cfg, self.dtype, self.world_size), cfg, params_only=True)
        self.reference = ReferenceModel(model_path, self.dtype, self.device, ref_ds, attn)
        if cfg.compile:
            self.reference.module.compile(dynamic=True)
        self.step = 0
        self.reference_step = 0  # the policy step the reference model was copied from

    # ---- training -------------------------------------------------------------------------
    def train_step(self, pairs: list[PreferencePair], lr: float | None = None) -> dict[str, float]:
        """One optimizer step over this rank's pairs at learning rate `lr` (None: the peak
        `learner.lr`); metrics are prefixed `learner/`."""
        if not pairs:
            raise ValueError("train_step needs at least one pair per rank")
        start = time.perf_counter()
        for group in self.engine.optimizer.param_groups:
            group["lr"] = self.cfg.lr if lr is None else lr
        items = tokenize_pairs(self.tokenizer, pairs, self.model_cfg.max_length)
        plan, global_pairs = self._plan(items)
        self.engine.train()
        sums = dict.fromkeys(LOSS_KEYS, 0.0)
        tokens = rows = 0
        for i, (batch_items, real) in enumerate(plan):
            self.engine.set_gradient_accumulation_boundary(i == len(plan) - 1)
            mb = collate(batch_items, self.pad_id).to(self.device)
            loss, metrics = self._loss(mb)
            weight = mb.n_pairs * self.world_size / global_pairs if real else 0.0
            self.engine.backward(loss * weight, scale_wrt_gas=False)
            if real:
                tokens += mb.n_tokens
                rows += mb.n_rows
                for key in LOSS_KEYS:
                    sums[key] += metrics[key] * mb.n_pairs
        lr = float(self.engine.get_lr()[0])
        grad_norm = self._step_optimizer()
        out = {f"learner/{k}": v / len(items) for k, v in sums.items()}
        out.update(
            {
                "learner/grad_norm": grad_norm,
                "learner/lr": lr,
                "learner/reference_version": float(self.reference_step),
                "learner/pairs": float(len(items)),
                "learner/tokens": float(tokens),
                # Distinct sequences scored, against 2 x pairs: what pairs sharing a sequence saved.
                "learner/rows": float(rows),
                "learner/micro_batches": float(len(plan)),
                "learner/truncated": float(sum(t.truncated for t in items)),
                "learner/step_s": time.perf_counter() - start,
            }
        )
        return out

    def _loss(self, mb: MicroBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ln = self.cfg.length_normalize
        # Reference first: its activations are freed before the policy's graph is built.
        ref_logits = self.reference.logits(mb.input_ids, mb.attention_mask)
        ref_chosen, ref_rejected, _ = sequence_logps(ref_logits, mb, ln)
        del ref_logits
        logits = self.engine(input_ids=mb.input_ids, attention_mask=mb.attention_mask, use_cache=False).logits
        chosen, rejected, chosen_nll = sequence_logps(logits, mb, ln)
        return dpo_loss(
            chosen,
            rejected,
            ref_chosen,
            ref_rejected,
            beta=self.cfg.beta,
            loss_type=self.cfg.loss,
            label_smoothing=self.cfg.label_smoothing,
            chosen_nll=chosen_nll,
            nll_weight=self.cfg.nll_weight,
        )

    def _plan(self, items) -> tuple[list[tuple[list, bool]], int]:
        """Micro-batches as (pairs, counts-toward-the-loss), and the global pair count."""
        batches = pack_micro_batches(items, self.cfg.micro_batch_pairs, self.cfg.micro_batch_tokens)
        if self.world_size == 1:
            return [(b, True) for b in batches], len(items)
        import torch.distributed as dist

        stats = torch.tensor([len(batches), len(items)], dtype=torch.long, device=self.device)
        count, global_pairs = stats.clone(), stats.clone()
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        dist.all_reduce(global_pairs, op=dist.ReduceOp.SUM)
        batches = split_to_count(batches, int(count[0]))
        padding = [(batches[-1][:1], False)] * (int(count[0]) - len(batches))
        return [(b, True) for b in batches] + padding, int(global_pairs[1])

    def _step_optimizer(self) -> float:
        """Apply the accumulated gradients; returns the pre-clip global gradient norm."""
        pre_norm = self._unpartitioned_grad_norm() if self.cfg.zero_stage == 0 else None
        self.engine.step()
        self.step += 1
        norm = self.engine.get_global_grad_norm()
        return float(norm if norm is not None else pre_norm if pre_norm is not None else float("nan"))

    def _unpartitioned_grad_norm(self) -> float:
        # Without ZeRO, fp32 DeepSpeed clips but does not keep the norm; grads are already averaged.
        grads = [
            p.grad.detach().float().norm() for p in self.engine.module.parameters() if p.grad is not None
        ]
        return float(torch.stack(grads).norm()) if grads else 0.0

    # ---- weights ---------------------------------------------------------------------------
    def refresh_reference(self) -> None:
        """The reference becomes a copy of the current policy (at iteration boundaries)."""
        self.reference.refresh_from(self.engine.module, GATHER_BUCKET_BYTES)
        self.reference_step = self.step

    def named_weight_buckets(self, bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Full-named CPU tensors (rank 0; other ranks get empty buckets but must iterate too under
        ZeRO-3). A tied embedding is yielded once, under its input-embedding name, as vLLM expects."""
        return iter_weight_buckets(self.engine.module, bucket_bytes, self.rank)

    def save_hf(self, out_dir: str | Path) -> None:
        """A Hugging Face directory (weights, config, tokenizer) that transformers and vLLM load."""
        check_out_dir(out_dir)  # on every rank, before any collective: no rank is left waiting
        state: dict[str, torch.Tensor] = {}
        for bucket in self.named_weight_buckets(GATHER_BUCKET_BYTES):
            state.update(bucket)
        if self.rank == 0:
            write_hf_dir(plain_model(self.engine.module), self.tokenizer, state, Path(out_dir))
        self._barrier()

    # ---- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, ckpt_dir: str | Path, tag: str) -> None:
        """Model and optimizer (DeepSpeed), reference weights and the step counters."""
        client_state = {"pfrl_step": self.step, "pfrl_reference_step": self.reference_step}
        self.engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state)
        self.reference.save(Path(ckpt_dir) / tag / REFERENCE_FILE, self.rank, GATHER_BUCKET_BYTES)
        self._barrier()

    def load_checkpoint(self, ckpt_dir: str | Path, tag: str) -> None:
        ref_path = Path(ckpt_dir) / tag / REFERENCE_FILE
        if not ref_path.is_file():
            raise UserError(
                f"{Path(ckpt_dir) / tag}: not a complete learner checkpoint (no {REFERENCE_FILE})"
            )
        path, client_state = self.engine.load_checkpoint(
            str(ckpt_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if path is None:
            raise UserError(f"{Path(ckpt_dir) / tag}: DeepSpeed could not load this checkpoint")
        self.reference.load(ref_path, GATHER_BUCKET_BYTES)
        self.step = int(client_state["pfrl_step"])
        self.reference_step = int(client_state["pfrl_reference_step"])

    def _barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def check_out_dir(out: str | Path) -> None:
    """A model directory may replace an earlier model, never unrelated files."""
    p = Path(out)
    if p.exists() and (not p.is_dir() or (any(p.iterdir()) and not (p / "config.json").is_file())):
        raise UserError(f"{p}: exists and is not a model directory; refusing to replace it")


def write_hf_dir(module: PreTrainedModel, tokenizer, state: dict[str, torch.Tensor], out: Path) -> None:
    """Write into a sibling temp dir, then swap it in: a crash never leaves a half-written model."""
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
