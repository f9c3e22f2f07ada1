"""Weight buckets: how named tensors are grouped, described and framed for the wire.

A bucket is a list of `(name, tensor)`. On the wire it is a `WeightsMeta` header (msgpack) plus raw
bytes, never a pickle. Both transports share this framing:

- the collective transport sends one flat byte buffer per bucket; `TensorMeta.offset` is where each
  tensor starts in it (aligned, so every slice can be viewed as its dtype without a copy);
- the ZMQ transport sends one frame per tensor, in header order (offsets still describe the same
  flat layout, so the two are interchangeable), or, to a receiver on its own host, the flat layout
  inside a shared-memory slot (pfrl/transport/shm_ring.py).

A stream of buckets for one version ends with an *end marker*: a header with no tensors whose
`bucket` equals `num_buckets`, the count of data buckets sent. Data buckets carry `num_buckets=0`
because the sender streams them as the learner gathers them and does not know the count up front.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from pfrl.errors import SyncError
from pfrl.types import TensorMeta, WeightsMeta

Named = list[tuple[str, torch.Tensor]]

# 64-byte offsets: every dtype's alignment, and cache-line friendly for the copies into place.
ALIGN = 64


@dataclass(slots=True)
class Received:
    """What a receiver has taken in so far (filled while its tensor iterator is consumed)."""

    buckets: int = 0
    tensors: int = 0
    bytes: int = 0
    seconds: float = 0.0


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise SyncError(f"unknown dtype {name!r} in weight header")
    return dtype


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of a tensor (one copy only if it was not contiguous)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def describe(version: int, index: int, bucket: Named) -> WeightsMeta:
    """The header of one data bucket: names, dtypes, shapes and offsets in the flat layout."""
    metas, offset = [], 0
    for name, t in bucket:
        nbytes = t.numel() * t.element_size()
        metas.append(TensorMeta(name, dtype_name(t.dtype), list(t.shape), offset, nbytes))
        offset = _aligned(offset + nbytes)
    return WeightsMeta(version=version, bucket=index, num_buckets=0, tensors=metas)


def end_marker(version: int, count: int) -> WeightsMeta:
    return WeightsMeta(version=version, bucket=count, num_buckets=count, tensors=[])


def is_end(meta: WeightsMeta) -> bool:
    return not meta.tensors and meta.bucket == meta.num_buckets


def flat_size(meta: WeightsMeta) -> int:
    if not meta.tensors:
        return 0
    last = meta.tensors[-1]
    return last.offset + last.nbytes


def payload_bytes(meta: WeightsMeta) -> int:
    return sum(t.nbytes for t in meta.tensors)


def pack_into(meta: WeightsMeta, bucket: Named, flat: torch.Tensor) -> torch.Tensor:
    """Copy every tensor of a bucket into `flat`, a uint8 buffer of at least `flat_size(meta)`
    bytes, at the header's offsets (one copy each, from whatever device the tensor is on)."""
    for tm, (_, t) in zip(meta.tensors, bucket, strict=True):
        flat[tm.offset : tm.offset + tm.nbytes].copy_(as_bytes(t))
    return flat


def pack(meta: WeightsMeta, bucket: Named, device: torch.device | str) -> torch.Tensor:
    """The bucket's flat byte buffer on `device` (one copy of each tensor)."""
    return pack_into(meta, bucket, torch.empty(flat_size(meta), dtype=torch.uint8, device=device))


def view(tm: TensorMeta, raw: torch.Tensor) -> torch.Tensor:
    """The tensor described by `tm` over `raw`, a uint8 buffer of exactly its bytes (no copy)."""
    if raw.numel() != tm.nbytes:
        raise SyncError(f"{tm.name}: got {raw.numel()} bytes, header says {tm.nbytes}")
    return raw.view(dtype_from_name(tm.dtype)).reshape(tm.shape)


def unpack(meta: WeightsMeta, flat: torch.Tensor) -> Named:
    """Views of every tensor of a bucket inside its flat buffer."""
    return [(tm.name, view(tm, flat[tm.offset : tm.offset + tm.nbytes])) for tm in meta.tensors]


def check_order(meta: WeightsMeta, version: int, expected: int) -> None:
    """Buckets of one version arrive in order; anything else means frames were lost or mixed."""
    if meta.version != version:
        raise SyncError(f"weight bucket of version {meta.version} while receiving version {version}")
    if meta.bucket != expected:
        raise SyncError(f"weight bucket {meta.bucket} arrived, expected {expected}")


def split_buckets(named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[Named]:
    """Group tensors into buckets of at most `bucket_bytes` (a larger tensor travels alone)."""
    bucket: Named = []
    size = 0
    for name, t in named:
        n = t.numel() * t.element_size()
        if bucket and size + n > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, t))
        size += n
    if bucket:
        yield bucket


class ModuleWeights:
    """`named_weight_buckets` over a plain torch module: the learner-engine interface that
    `publish` reads, for tests, benchmarks and unpartitioned models. Tied tensors appear once."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def named_weight_buckets(self, bucket_bytes: int) -> Iterator[Named]:
        named = ((n, p.detach()) for n, p in self.module.named_parameters())
        return split_buckets(named, bucket_bytes)
