"""Process-group setup for one learner rank, with or without a launcher.

The Ray learner group exports MASTER_ADDR/PORT, RANK, WORLD_SIZE and LOCAL_RANK before building an
engine; a single process (`pfrl dpo`, tests, benchmarks) gets a world of one on an in-process store.
"""

from __future__ import annotations

import logging
import os
import warnings

import torch

from pfrl.runtime import DtypeSetting, resolve_dtype


def init_distributed() -> tuple[int, int]:
    """Join (or create) the default process group; returns (rank, world_size).

    With launcher variables (the Ray learner group sets them) the group forms over TCP. Without
    them this process is a world of one, formed on an in-process store: no port is taken and no
    MASTER_* variable is exported, so child processes (vLLM workers, a nested `pfrl` run) never
    inherit a rendezvous that is not theirs. DeepSpeed itself insists on LOCAL_RANK being set."""
    import deepspeed
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    launched = all(k in os.environ for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"))
    os.environ.setdefault("LOCAL_RANK", "0")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized() and not launched:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    deepspeed.init_distributed(dist_backend=backend)  # adopts an existing group
    return dist.get_rank(), dist.get_world_size()


def quiet_deepspeed() -> None:
    """DeepSpeed logs every config detail at INFO, and under ZeRO-3 it calls torch.distributed
    functions that torch 2.13 deprecates (a FutureWarning per call): nothing a user can act on."""
    import deepspeed

    deepspeed.utils.logger.setLevel(logging.WARNING)
    warnings.filterwarnings(
        "ignore",
        message=r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated",
        category=FutureWarning,
    )


def compute_dtype(dtype_name: DtypeSetting) -> torch.dtype:
    """`model.dtype` -> torch dtype (`auto` resolved as everywhere else, by pfrl.runtime)."""
    dtype: torch.dtype = getattr(torch, resolve_dtype(dtype_name))  # "float32" -> torch.float32
    return dtype
