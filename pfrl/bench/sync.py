"""`pfrl bench sync --size-mb S`: weight-sync throughput of each transport against a plain
in-memory copy of the same bytes (the machine's limit), as a ratio.

The payload is S MB of float32 tensors (4 MB each, like a model's matrices) sent as one policy
version in `sync.bucket_mb` buckets. Receivers run in separate processes (as vLLM workers do) and
copy every tensor into a preallocated destination, the same final write `load_weights` does, so
each transport is measured from the first byte sent to the last byte in place at every receiver
(`zmq_staged`: to the last byte held in the receiver's memory, what a staged sync waits for; each
round's staged version is freed before the next, as a swap frees it, so its copies reuse memory).
Receivers are on this host, so `zmq` and `zmq_staged` go through the shared-memory ring when
`sync.shm_ring` is on (the default); `zmq_frames` is ZMQ with the ring off, frames over TCP, as a
receiver on another host gets them.
The baseline copies the same tensors into such a destination within one process. Group setup and a
warm-up version are untimed; the best of `--repeats` rounds is reported. Figures are printed,
never asserted. Copies run on one thread everywhere (one stream, like one receiver's).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import uuid
from typing import Any

from pfrl.bench.report import add_json_argument, write_json
from pfrl.commands import add_config_args

TENSOR_MB = 4
ZMQ_TRANSPORTS = ("zmq", "zmq_frames", "zmq_staged")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size-mb", type=float, default=256.0, help="Payload per sync in MB (default 256).")
    p.add_argument("--receivers", type=int, default=1, help="Receiving processes (default 1).")
    p.add_argument("--repeats", type=int, default=3, help="Timed rounds per transport; the best counts.")
    p.add_argument(
        "--transports",
        default="zmq,zmq_frames,collective",
        help="Comma-separated: zmq (through the shared-memory ring when sync.shm_ring is on), zmq_frames "
        "(ZMQ frames over TCP, the ring off), collective, zmq_staged (ZMQ into a receiver that only holds the "
        "bytes, what a staged sync waits for: `sync.staged`; the copy into place happens later, at the swap).",
    )
    p.add_argument(
        "--bucket-mb",
        default=None,
        help="Comma-separated bucket sizes in MB, each measured in this run (default: sync.bucket_mb); "
        "the figures without a suffix are the first size's.",
    )
    add_config_args(
        p,
        "YAML config (its sync section applies).",
        set_help="Config override (repeatable), e.g. --set sync.shm_ring=false.",
    )
    add_json_argument(p)


def _payload(size_mb: float) -> list[tuple[str, Any]]:
    import torch

    per = TENSOR_MB * 2**20 // 4
    total = int(size_mb * 2**20) // 4
    g = torch.Generator().manual_seed(0)
    return [
        (f"layer{i}.weight", torch.randn(min(per, total - i * per), generator=g))
        for i in range((total + per - 1) // per)
    ]


def _receiver(transport: str, spec: dict, rank: int, rounds: int, sizes: list[int], q: Any) -> None:
    """One receiving process: take `rounds` versions, writing each tensor into place."""
    import torch

    torch.set_num_threads(1)  # like the baseline: one copy stream (threads thrash on a busy box)

    from pfrl.transport import collective
    from pfrl.transport.buckets import Received
    from pfrl.transport.zmq_weights import ZmqWeightReceiver

    dest = [torch.empty(n) for n in sizes]
    zmq_rx = ZmqWeightReceiver("127.0.0.1") if transport in ZMQ_TRANSPORTS else None
    q.put(("ready", rank, zmq_rx.addr if zmq_rx else None))
    pg = collective.join(collective.GroupSpec(**spec), rank, 120.0) if transport == "collective" else None
    for version in range(rounds):
        into = Received()
        if transport == "zmq_staged":  # what a staged sync waits for: every byte held, none in place yet
            assert zmq_rx is not None
            staged = list(zmq_rx.receive_buckets(version, 120.0, into))
            q.put(("done", rank, version))
            del staged
            continue
        if zmq_rx is not None:
            stream = zmq_rx.receive(version, 120.0, into)
        else:
            stream = collective.receive(pg, "gloo", version, into)
        for i, (_, t) in enumerate(stream):
            dest[i].copy_(t)
        q.put(("done", rank, version))


def _start_receivers(transport: str, n: int, rounds: int, sizes: list[int]) -> tuple[list, Any, dict]:
    import torch.distributed as dist

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    spec: dict = {}
    store = None
    if transport == "collective":
        store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
        spec = {
            "host": "127.0.0.1",
            "port": store.port,
            "group_id": uuid.uuid4().hex[:8],
            "world_size": n + 1,
            "backend": "gloo",
        }
    procs = [
        ctx.Process(target=_receiver, args=(transport, spec, r + 1, rounds, sizes, q), daemon=True)
        for r in range(n)
    ]
    for proc in procs:
        proc.start()
    addrs = sorted((msg[1], msg[2]) for msg in (q.get(timeout=120) for _ in procs))
    return procs, q, {"spec": spec, "store": store, "addrs": [a for _, a in addrs]}


def _sender_spec(transport: str, setup: dict, bucket_bytes: int, shm_slots: int):
    from pfrl.transport.collective import GroupSpec
    from pfrl.transport.weights import SenderSpec

    if transport in ZMQ_TRANSPORTS:
        slots = 0 if transport == "zmq_frames" else shm_slots
        return SenderSpec("zmq", bucket_bytes, 120.0, setup["addrs"], shm_slots=slots)
    return SenderSpec("collective", bucket_bytes, 120.0, group=GroupSpec(**setup["spec"]))


def _transport_seconds(
    transport: str, payload: list, receivers: int, repeats: int, bucket_bytes: int, shm_slots: int
) -> float:
    """Best time to get the whole payload into place at every receiver."""
    from pfrl.transport.buckets import split_buckets
    from pfrl.transport.weights import send_weights

    sizes = [t.numel() for _, t in payload]
    procs, q, setup = _start_receivers(transport, receivers, repeats + 1, sizes)
    spec = _sender_spec(transport, setup, bucket_bytes, shm_slots)
    best = float("inf")
    try:
        for version in range(repeats + 1):  # version 0 warms up (and forms the group)
            start = time.perf_counter()
            send_weights(spec, version, split_buckets(payload, bucket_bytes))
            for _ in range(receivers):
                q.get(timeout=300)
            if version:
                best = min(best, time.perf_counter() - start)
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
    return best


def _memcpy_seconds(payload: list, repeats: int) -> float:
    import torch

    torch.set_num_threads(1)  # one copy stream, as each receiver has
    dest = [torch.empty_like(t) for _, t in payload]
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for d, (_, t) in zip(dest, payload, strict=True):
            d.copy_(t)
        best = min(best, time.perf_counter() - start)
    return best


def run(args: argparse.Namespace) -> int:
    from pfrl.config import load_config
    from pfrl.errors import UserError

    cfg = load_config(args.config, args.overrides)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if unknown := set(transports) - {*ZMQ_TRANSPORTS, "collective"}:
        raise UserError(f"--transports: unknown {sorted(unknown)} (zmq, zmq_frames, zmq_staged, collective)")
    if args.size_mb <= 0 or args.receivers < 1 or args.repeats < 1:
        raise UserError("--size-mb, --receivers and --repeats must be positive")
    try:
        sizes = [float(b) for b in args.bucket_mb.split(",")] if args.bucket_mb else [cfg.sync.bucket_mb]
    except ValueError:
        raise UserError(f"--bucket-mb: not a list of numbers: {args.bucket_mb!r}") from None
    if any(b <= 0 for b in sizes):
        raise UserError("--bucket-mb: sizes must be positive")
    payload = _payload(args.size_mb)
    nbytes = sum(t.numel() * 4 for _, t in payload)
    base = nbytes / _memcpy_seconds(payload, args.repeats) / 1e9
    print(
        f"sync bench: {nbytes / 2**20:.0f} MB in {', '.join(f'{b:g}' for b in sizes)} MB buckets to "
        f"{args.receivers} receiver process(es), best of {args.repeats}"
    )
    print(f"  in-memory copy     : {base:8.2f} GB/s")
    figures: dict[str, Any] = {
        "size_mb": nbytes / 2**20,
        "bucket_mb": sizes[0],
        "receivers": args.receivers,
        "repeats": args.repeats,
        "copy_gb_per_s": base,
        "shm_ring": cfg.sync.shm_ring,
        "shm_slots": cfg.sync.shm_slots,
    }
    by_bucket: dict[str, dict[str, float]] = {}
    for size in sizes:
        row: dict[str, float] = {}
        for transport in transports:
            secs = _transport_seconds(
                transport, payload, args.receivers, args.repeats, int(size * 2**20), cfg.sync.ring_slots
            )
            gbps = nbytes / secs / 1e9
            label = {"collective": "collective (gloo)"}.get(transport, transport) + f" {size:g} MB"
            print(
                f"  {label:<19}: {gbps:8.2f} GB/s  ({secs * 1000:.0f} ms per sync, ratio to copy {gbps / base:.3f})"
            )
            row |= {
                f"{transport}_gb_per_s": gbps,
                f"{transport}_ms": secs * 1000,
                f"{transport}_vs_copy": gbps / base,
            }
        by_bucket[f"{size:g}"] = row
    figures |= by_bucket[f"{sizes[0]:g}"]
    if len(sizes) > 1:
        figures["by_bucket_mb"] = by_bucket
    write_json(args.json_out, "sync", figures)
    return 0
