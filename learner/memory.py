"""Memory levers of the learner: DeepSpeed offload, and LoRA adapters merged whenever weights leave.

Offload is a post-processing of the DeepSpeed config (`learner/optim.deepspeed_config`), applied by
the engine. With offload, pfrl's torch AdamW runs on the CPU copy of the optimizer state
(`zero_force_ds_cpu_optimizer: false`): no JIT-built DeepSpeedCPUAdam is needed, at the price of
a slower step than that fused op.

LoRA (peft) wraps each target linear layer `X` so that its weight lives at `X.base_layer.weight`
next to `X.lora_A.<adapter>.weight` / `X.lora_B.<adapter>.weight`. vLLM, transformers and the
reference model know only `X.weight`, so every reader of full weights (`learner.weights`) goes
through `merged_buckets`: base-model names and shapes, each wrapped weight merged as
`W + scale * B @ A` (peft's `get_delta_weight`). The merge is computed, never written back into the
base weight, so the training state is not disturbed by rounding from repeated merge/unmerge.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from pfrl.config import LearnerSection, LoraSection

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ADAPTER = "default"  # peft's name for the one adapter pfrl trains


# -- offload -----------------------------------------------------------------------------------------
def with_offload(ds: dict[str, Any], cfg: LearnerSection, params_only: bool = False) -> dict[str, Any]:
    """`ds` with the offload sections `cfg` asks for (the schema has checked the ZeRO stage).
    `params_only`: for the frozen reference, which has no optimizer."""
    zero = ds["zero_optimization"]
    # Pinned host memory speeds up copies to a GPU; without one there is nothing to pin for.
    pin = torch.cuda.is_available()
    if cfg.offload_optimizer == "cpu" and not params_only:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
        ds["zero_force_ds_cpu_optimizer"] = False
    if cfg.offload_params == "cpu":
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    return ds


# -- LoRA --------------------------------------------------------------------------------------------
def with_lora(model: torch.nn.Module, cfg: LoraSection) -> torch.nn.Module:
    """`model` with trainable adapters on `cfg.target_modules` and everything else frozen;
    unchanged when `cfg.rank` is 0."""
    if cfg.rank == 0:
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def is_lora(module: torch.nn.Module) -> bool:
    return hasattr(module, "peft_config") and hasattr(module, "get_base_model")


def plain_model(module: torch.nn.Module) -> PreTrainedModel:
    """The transformers model under a peft wrapper (whose `save_pretrained` writes adapters only)."""
    base = _base_model(module) if is_lora(module) else module
    return cast("PreTrainedModel", base)  # the learner only ever trains transformers models


def _base_model(module: torch.nn.Module) -> torch.nn.Module:
    return cast(Any, module).get_base_model()


@dataclass(frozen=True)
class _Merged:
    """One tensor as the base model names it; `layer` set: add that LoRA layer's delta."""

    name: str
    param: torch.nn.Parameter
    layer: Any = None

    def tensors(self) -> list[torch.nn.Parameter]:
        if self.layer is None:
            return [self.param]
        return [self.param, self.layer.lora_A[ADAPTER].weight, self.layer.lora_B[ADAPTER].weight]

    def value(self) -> torch.Tensor:
        if self.layer is None:
            return self.param.detach()
        return self.param.detach() + self.layer.get_delta_weight(ADAPTER).to(self.param.dtype)


def _merged_entries(module: torch.nn.Module) -> list[_Merged]:
    from peft.tuners.lora import LoraLayer

    base = _base_model(module)
    layers = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    out = []
    for name, p in base.named_parameters():  # deduplicated: a tied embedding appears once
        if ".lora_" in name:
            continue
        owner, _, leaf = name.rpartition(".")
        if owner.endswith(".base_layer"):
            layer_name = owner.removesuffix(".base_layer")
            out.append(_Merged(f"{layer_name}.{leaf}", p, layers[layer_name] if leaf == "weight" else None))
        else:
            out.append(_Merged(name, p))
    return out


def merged_buckets(module: torch.nn.Module, bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Merged full tensors on the module's device, bucket by bucket, on every rank (under ZeRO-3 a
    collective: each bucket is gathered while the caller holds it, so use it before the next)."""
    from learner.weights import gathered, param_nbytes

    buckets: list[list[_Merged]] = [[]]
    size = 0
    for entry in _merged_entries(module):
        n = param_nbytes(entry.param)
        if buckets[-1] and size + n > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(entry)
        size += n
    for bucket in buckets:
        with gathered([t for e in bucket for t in e.tensors()]), torch.no_grad():
            yield [(e.name, e.value()) for e in bucket]
