"""The frozen reference model of DPO: the policy as it was at the start of the iteration.

It is evaluated without gradients. Under ZeRO-3 it is a DeepSpeed inference engine partitioned like
the policy (a second full copy per GPU is what ZeRO-3 exists to avoid); otherwise a plain module on
the learner's device.
"""

from __future__ import annotations

from pathlib import Path

import torch

from learner.weights import copy_module_weights, iter_weight_buckets, load_module_weights


def load_causal_lm(
    model_path: str,
    dtype: torch.dtype,
    grad_checkpointing: bool = False,
    attn_implementation: str | None = None,
) -> torch.nn.Module:
    """`attn_implementation` None: transformers' choice (sdpa where it can)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=dtype, attn_implementation=attn_implementation
    )
    model.config.use_cache = False  # training and scoring never decode step by step
    if grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


class ReferenceModel:
    def __init__(
        self,
        model_path: str,
        dtype: torch.dtype,
        device: torch.device,
        ds_config: dict | None,
        attn_implementation: str | None = None,
    ):
        """`ds_config` set: ZeRO-3 inference engine; None: a plain module on `device`."""
        model = load_causal_lm(model_path, dtype, attn_implementation=attn_implementation)
        model.requires_grad_(False)
        model.eval()
        if ds_config is not None:
            import deepspeed

            engine = deepspeed.initialize(model=model, config=ds_config)[0]
            engine.eval()
            self._forward = engine
            self.module = engine.module
        else:
            self.module = model.to(device)
            self._forward = self.module

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._forward(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def refresh_from(self, policy: torch.nn.Module, bucket_bytes: int) -> None:
        copy_module_weights(policy, self.module, bucket_bytes)

    def save(self, path: Path, rank: int, bucket_bytes: int) -> None:
        """Full tensors in one safetensors file, written by rank 0 (collective under ZeRO-3)."""
        from safetensors.torch import save_file

        state: dict[str, torch.Tensor] = {}
        for bucket in iter_weight_buckets(self.module, bucket_bytes, rank):
            state.update(bucket)
        if rank == 0:
            tmp = path.with_name(path.name + ".tmp")
            save_file(state, str(tmp))
            tmp.replace(path)

    def load(self, path: Path, bucket_bytes: int) -> None:
        from safetensors.torch import load_file

        load_module_weights(self.module, load_file(str(path)), bucket_bytes)
