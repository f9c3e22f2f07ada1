"""Process-group setup for one learner rank, with or without a launcher.

The Ray learner group exports MASTER_ADDR/PORT, RANK, WORLD_SIZE and LOCAL_RANK before building an
engine; a single process (`pfrl dpo`, tests, benchmarks) gets a world of one on a free local port.
"""

from __future__ import annotations

import os
import socket

import torch


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def node_ip() -> str:
    """This host's address as other nodes see it (the interface of the default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: UDP connect only picks a route
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def ensure_env() -> None:
    """Fill in a world of one where no launcher set the rendezvous variables."""
    if "MASTER_ADDR" not in os.environ:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        if key not in os.environ:
            os.environ[key] = value


def init_distributed() -> tuple[int, int]:
    """Join (or create) the default process group; returns (rank, world_size)."""
    import deepspeed
    import torch.distributed as dist

    ensure_env()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def compute_dtype(dtype_name: str) -> torch.dtype:
    """`model.dtype` -> torch dtype; auto means bf16 where CUDA runs the model, fp32 on CPU."""
    if dtype_name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype_name]
