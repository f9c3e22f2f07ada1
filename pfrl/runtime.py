"""Where we run: CUDA or CPU, this host's address, and the engine settings that follow from them."""

from __future__ import annotations

import functools
import os
import socket
from typing import Literal

DtypeSetting = Literal["auto", "float32", "bfloat16", "float16"]  # `model.dtype`
DtypeName = Literal["float32", "bfloat16", "float16"]


@functools.cache
def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def resolve_dtype(setting: DtypeSetting) -> DtypeName:
    """`model.dtype` as a torch dtype name: `auto` is bfloat16 where CUDA runs the model, float32
    on CPU (whose kernels are float32)."""
    if setting != "auto":
        return setting
    return "bfloat16" if has_cuda() else "float32"


def node_ip() -> str:
    """This host's address as other nodes see it: Ray's node address inside a Ray process, else the
    interface of the default route, else loopback (a machine without a network)."""
    try:
        import ray

        if ray.is_initialized():
            return str(ray.util.get_node_ip_address())
    except ImportError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: UDP connect only picks a route
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def free_port() -> int:
    """A TCP port free on this host right now (for a rendezvous its caller binds soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def set_cpu_kvcache(gb: int) -> None:
    """vLLM's CPU backend sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (GiB), read when an engine
    starts (and inherited by the engine's worker processes): the one place pfrl sets it."""
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(gb)


def vllm_batching_kwargs(max_num_seqs: int, max_model_len: int) -> dict:
    """On CPU, a step budget that holds every running sequence's whole prompt. vLLM 0.32's CPU
    sampler cannot rewind the generator of a seeded request whose prompt chunked prefill split
    across steps ("CPU Generator does not use offset", a dead engine); with this budget no prompt
    is ever split. On GPUs vLLM's own budget stands (activation memory matters there)."""
    if has_cuda():
        return {"max_num_seqs": max_num_seqs}
    return {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max(4096, max_num_seqs * max_model_len)}


def vllm_process_kwargs(tensor_parallel_size: int, in_process: bool = True) -> dict:
    """Where vLLM runs its engine core and worker. In this process (the `uni` executor, no engine
    subprocess) when allowed and there is one worker: two fewer interpreters importing torch and vLLM
    make the engine start several times faster (docs/benchmarks.md has the figure). A
    tensor-parallel engine needs a process per worker, so it keeps vLLM's default. vLLM reads
    VLLM_ENABLE_V1_MULTIPROCESSING when the engine starts, hence it is set here."""
    if not in_process or tensor_parallel_size != 1:
        return {}
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return {"distributed_executor_backend": "uni"}


def vllm_engine_kwargs(gpu_memory_utilization: float = 0.3, kvcache_gb: int = 1, enforce_eager: bool = True) -> dict:
    """vLLM `LLM(...)` settings for this host's device. On CPU, gpu_memory_utilization is a share of host
    RAM and the KV cache is sized by VLLM_CPU_KVCACHE_SPACE (GiB), read when the engine starts."""
    if has_cuda():
        return {"gpu_memory_utilization": gpu_memory_utilization, "enforce_eager": enforce_eager}
    set_cpu_kvcache(kvcache_gb)
    return {"gpu_memory_utilization": gpu_memory_utilization, "enforce_eager": True, "dtype": "float32"}
