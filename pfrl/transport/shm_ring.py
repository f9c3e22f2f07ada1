"""Shared-memory ring: the ZMQ weight transport's fast path to receivers on the sender's host.

Over TCP on one host every byte is copied twice by the kernel (into the socket, out of it) and
once more into the model. With the ring, the sender copies a bucket once into a slot of a
shared-memory file made once per process and reused across buckets and syncs; the ZMQ message
then carries only the header and the slot's index, and the receiver reads the tensors straight out
of the slot (docs/benchmarks.md, `pfrl bench sync`).

Same host is proven, not assumed: every receiver creates a marker file in the ring directory named
after its own bound address (`marker_path`), so the address it already reports names the marker;
the sender uses the ring only for receivers whose marker it can see, i.e. that share its
/dev/shm. Everyone else gets the usual frames, and so does a bucket larger than a slot.

One ring is shared by every same-host receiver of a sender (not one per receiver): tensor-parallel
workers of one generator all read the whole model, so one copy into a slot serves them all, and a
slot is free again once every receiver it was lent to has released it. Releases travel back as
acks over an `ipc://` socket in the ring's directory (reachable exactly when the ring is).

A slot is released when the last tensor viewing it is freed (a finalizer on the slot's buffer), not
when the consumer asks for the next bucket: vLLM's layer-wise reload keeps a layer's tensors until
the layer is complete, which may be buckets later, and a slot overwritten under it would load wrong
weights silently. So that a consumer holding many buckets cannot starve the sender, a receiver
lends views only while it pins at most `slots - 2` other slots; past that it copies the bucket out
and releases the slot at once. Callers that keep a whole version (staging) always copy out.

Those copies go into memory the receiver keeps and reuses (`CopyPool`): a fresh 64 MB buffer per
bucket faults in (and zeroes) its pages on every sync, which halved a staged receiver's speed.
A pooled buffer is lent again only once the last tensor viewing it has been freed, found the same
way as for slots: a staged version still waiting for its swap holds its tensors, so its buffers
cannot be overwritten by the next sync's copies.

A sync starts with every slot free: the previous sync ended with every receiver's load done (or
failed), so nothing still reads the slots, and acks of an older sync are ignored. Every wait has a
timeout and ends in `SyncError`.
"""

from __future__ import annotations

import atexit
import collections
import logging
import mmap
import os
import re
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass

import msgpack
import numpy as np
import torch
import zmq

from pfrl.errors import SyncError
from pfrl.transport.buckets import ALIGN, Named, flat_size, pack_into, unpack
from pfrl.types import WeightsMeta

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
RING_TAG = b"pfrl-ring-v1"  # first frame of a ring message (a frames message starts with its msgpack header)
# Room for the 64-byte alignment of up to 1024 tensors on top of the bucket size, so a full
# bucket of small tensors still fits its slot.
SLOT_HEADROOM = 1024 * ALIGN


def marker_path(addr: str, directory: str = SHM_DIR) -> str:
    """The marker a receiver bound at `addr` (tcp://HOST:PORT) keeps while it lives."""
    return os.path.join(directory, "pfrl-rx-" + re.sub(r"[^A-Za-z0-9.]+", "_", addr))


def sees_marker(addr: str, directory: str = SHM_DIR) -> bool:
    return os.path.exists(marker_path(addr, directory))


def remove_file(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:  # gone already (another process's sweep), or not ours to remove
            pass


def _owner_pid(directory: str, name: str) -> int | None:
    """The process a ring (pid in its name) or a marker (pid inside) belongs to."""
    try:
        if name.startswith("pfrl-ring-"):
            return int(name.split("-")[2])
        if name.startswith("pfrl-rx-"):
            with open(os.path.join(directory, name)) as f:
                return int(f.read())
    except (OSError, ValueError, IndexError):
        pass
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def sweep_dead(directory: str = SHM_DIR) -> None:
    """Unlink the rings and markers of processes that died without closing them: Ray ends its
    actors without running `atexit`, and a ring left behind holds its slots' memory in /dev/shm.
    (A process in another pid namespace sharing this /dev/shm would look dead: its files would go,
    and its receivers not yet attached would fail their sync rather than read a wrong ring.)"""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        pid = _owner_pid(directory, name)
        if pid is not None and not _alive(pid):
            remove_file(os.path.join(directory, name))


def create_marker(addr: str, directory: str = SHM_DIR) -> str | None:
    """Create the receiver's marker; None where the directory cannot take it (the receiver then
    only ever gets frames)."""
    sweep_dead(directory)
    path = marker_path(addr, directory)
    try:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
    except OSError:
        return None
    return path


@dataclass(slots=True)
class SlotRef:
    """What a ring message says besides the bucket's header: where its bytes are and how to
    release them."""

    ring: str  # file name in the ring directory
    ack_addr: str
    slot_bytes: int
    slots: int
    sync: str  # the sender's id for this sync; acks of other syncs are ignored
    rx: int  # the receiver's index among the sender's receivers
    slot: int

    def encode(self) -> bytes:
        return msgpack.packb(astuple(self))

    @classmethod
    def decode(cls, raw: bytes) -> SlotRef:
        return cls(*msgpack.unpackb(raw))


def _map(path: str, size: int, access: int) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR if access == mmap.ACCESS_WRITE else os.O_RDONLY)
    try:
        return mmap.mmap(fd, size, access=access)
    finally:
        os.close(fd)


class SenderRing:
    """The sender's side: the shared file, its slots' owners and the ack socket."""

    def __init__(self, slot_bytes: int, slots: int, directory: str = SHM_DIR):
        self.slot_bytes, self.slots = slot_bytes, slots
        sweep_dead(directory)
        self.name = f"pfrl-ring-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = os.path.join(directory, self.name)
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            # Reserve the pages now: a sparse file on a full tmpfs would SIGBUS at the first write.
            os.posix_fallocate(fd, 0, slot_bytes * slots)
        except OSError:
            os.close(fd)
            os.unlink(self.path)
            raise
        os.close(fd)
        self._mm = _map(self.path, slot_bytes * slots, mmap.ACCESS_WRITE)
        self._flat = torch.frombuffer(self._mm, dtype=torch.uint8)
        self.ack_addr = f"ipc://{self.path}.ack"
        self._acks: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PULL)
        self._acks.setsockopt(zmq.LINGER, 0)
        self._acks.bind(self.ack_addr)
        self._owed: list[set[int]] = [set() for _ in range(slots)]
        self._sync = ""
        self.lock = threading.Lock()  # one sync at a time on the ring

    def begin(self) -> str:
        """Start a sync: every slot is free (see the module docstring), new id for its acks."""
        self._sync = uuid.uuid4().hex[:12]
        self._owed = [set() for _ in range(self.slots)]
        return self._sync

    def fits(self, meta: WeightsMeta) -> bool:
        return flat_size(meta) <= self.slot_bytes

    def _take_acks(self, timeout_ms: int) -> None:
        if not self._acks.poll(timeout_ms, zmq.POLLIN):
            return
        while True:
            try:
                raw = self._acks.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            sync, rx, slot = msgpack.unpackb(raw)
            if sync == self._sync and 0 <= slot < self.slots:
                self._owed[slot].discard(rx)

    def acquire(self, timeout_s: float) -> int:
        """A slot no receiver still reads; SyncError if none frees up within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._take_acks(0)
            free = [s for s, owed in enumerate(self._owed) if not owed]
            if free:
                return free[0]
            left = deadline - time.monotonic()
            if left <= 0:
                held = sorted({rx for owed in self._owed for rx in owed})
                raise SyncError(
                    f"weight receivers {held} released no shared-memory slot for {timeout_s:.0f}s"
                )
            self._take_acks(max(1, int(left * 1000)))

    def fill(self, slot: int, meta: WeightsMeta, bucket: Named, receivers: list[int]) -> None:
        """Copy a bucket into `slot` and lend it to `receivers` until they ack it."""
        pack_into(meta, bucket, self._flat.narrow(0, slot * self.slot_bytes, flat_size(meta)))
        self._owed[slot] = set(receivers)

    def ref(self, rx: int, slot: int) -> SlotRef:
        return SlotRef(self.name, self.ack_addr, self.slot_bytes, self.slots, self._sync, rx, slot)

    def close(self) -> None:
        self._acks.close(linger=0)
        del self._flat
        try:
            self._mm.close()
        except BufferError:  # a tensor still views it: the mapping goes with that tensor
            pass
        remove_file(self.path)
        remove_file(self.ack_addr.removeprefix("ipc://"))


_RING: SenderRing | None = None
_RING_LOCK = threading.Lock()


def _cached_ring(slot_bytes: int, slots: int) -> SenderRing | None:
    global _RING
    with _RING_LOCK:
        if _RING is not None and (_RING.slot_bytes, _RING.slots) == (slot_bytes, slots):
            return _RING
        if _RING is not None:
            if not _RING.lock.acquire(blocking=False):
                return None  # the old ring is in use: this sync goes as frames
            _RING.close()
            _RING = None
        try:
            _RING = SenderRing(slot_bytes, slots)
        except OSError as e:
            log.warning("no shared-memory ring for weight sync (%s): sending frames", e)
            return None
        return _RING


@contextmanager
def lease_ring(bucket_bytes: int, slots: int) -> Iterator[SenderRing | None]:
    """This process's ring for `slots` buckets of `bucket_bytes`, made once and kept across syncs,
    for one sync; None (send frames) when shared memory is unavailable or another sync holds it."""
    slot_bytes = (bucket_bytes + ALIGN - 1) // ALIGN * ALIGN + SLOT_HEADROOM
    ring = _cached_ring(slot_bytes, slots)
    if ring is None or not ring.lock.acquire(blocking=False):
        yield None
        return
    try:
        yield ring
    finally:
        ring.lock.release()


@atexit.register
def close_ring() -> None:
    """Unlink this process's ring (also at exit: the file would outlive the process)."""
    global _RING
    with _RING_LOCK:
        if _RING is not None:
            _RING.close()
            _RING = None


class CopyPool:
    """Buffers for a receiver's copies out of its slots, kept across buckets and syncs and keyed by
    their byte size (a bucket's flat layout: with the same model and bucket size every sync asks for
    the same sizes, and any buffer of the right size serves any layout of that size).

    `take` lends a buffer through a numpy array over it made for that loan alone, kept alive by
    every tensor made from it (torch.frombuffer holds it); its finalizer hands the buffer back
    when the last of them is freed, wherever the consumer kept them (a staged version, vLLM's
    layer-wise reload). Buffers handed back are reused only from then on: never while a tensor can
    still read them. The pool owns at most the most it ever had lent at once (a miss evicts free
    buffers of other sizes first), i.e. what receiving without the pool needed at its peak."""

    def __init__(self) -> None:
        self._free: dict[int, list[torch.Tensor]] = {}
        self._free_bytes = 0
        self._lent_bytes = 0
        self._peak = 0  # the most bytes lent at once so far: the pool's bound
        self._back: collections.deque[torch.Tensor] = collections.deque()  # from finalizers, any thread
        self._lock = threading.Lock()
        self.allocated = 0  # buffers made (the rest of the loans were reuses)

    def _take_back(self) -> None:
        while self._back:
            mem = self._back.popleft()
            self._lent_bytes -= mem.numel()
            self._free.setdefault(mem.numel(), []).append(mem)
            self._free_bytes += mem.numel()

    def _evict(self, need: int) -> None:
        """Free buffers of other sizes until `need` more bytes fit under the peak."""
        for size in sorted(self._free, reverse=True):
            bufs = self._free[size]
            while bufs and self._free_bytes + self._lent_bytes + need > self._peak:
                self._free_bytes -= bufs.pop().numel()
            if not bufs:
                del self._free[size]

    def take(self, nbytes: int) -> torch.Tensor:
        """A uint8 tensor of `nbytes` that nothing else reads or writes until it is freed."""
        if nbytes == 0:
            return torch.empty(0, dtype=torch.uint8)
        with self._lock:
            self._take_back()
            bufs = self._free.get(nbytes)
            if bufs:
                mem = bufs.pop()
                self._free_bytes -= nbytes
            else:
                self._evict(nbytes)
                # torch's allocator aligns to 64 bytes; np.empty's 16 made the copies ~15% slower.
                mem = torch.empty(nbytes, dtype=torch.uint8)
                self.allocated += 1
            self._lent_bytes += nbytes
            self._peak = max(self._peak, self._lent_bytes)
        loan = mem.numpy()  # an object of this loan's own: it dies with the last tensor made from it
        weakref.finalize(loan, self._back.append, mem)
        return torch.frombuffer(loan, dtype=torch.uint8)

    def owned_bytes(self) -> int:
        with self._lock:
            self._take_back()
            return self._free_bytes + self._lent_bytes


class RingReader:
    """The receiver's side: the mapped ring, the slots its tensors still pin, and its acks."""

    def __init__(self, directory: str = SHM_DIR):
        self._dir = directory
        self._name = ""
        self._mm: mmap.mmap | None = None
        self._ack: zmq.Socket[bytes] | None = None
        self._ack_addr = ""
        self._sync = ""
        self._rx = 0  # this receiver's index at the sender, for its acks
        self._pinned: set[int] = set()  # slots of the current sync that tensors still view
        self._released: collections.deque[tuple[str, int]] = collections.deque()  # from finalizers
        self.copies = CopyPool()  # memory for the buckets copied out of their slots

    def _attach(self, ref: SlotRef) -> mmap.mmap:
        """Map the ring once by name (again only if the sender made a new one)."""
        if self._mm is None or self._name != ref.ring:
            try:
                self._mm = _map(
                    os.path.join(self._dir, ref.ring), ref.slot_bytes * ref.slots, mmap.ACCESS_READ
                )
            except (OSError, ValueError) as e:
                raise SyncError(f"shared-memory ring {ref.ring} is not visible to this receiver: {e}") from e
            self._name = ref.ring
        if self._ack_addr != ref.ack_addr:
            if self._ack is not None:
                self._ack.close(linger=0)
            self._ack = zmq.Context.instance().socket(zmq.PUSH)
            self._ack.setsockopt(zmq.LINGER, 0)
            self._ack.connect(ref.ack_addr)
            self._ack_addr = ref.ack_addr
        if self._sync != ref.sync:
            self._sync, self._pinned = ref.sync, set()
        self._rx = ref.rx
        return self._mm

    def _ack_slot(self, slot: int) -> None:
        assert self._ack is not None, "acks follow _attach"
        try:
            self._ack.send(msgpack.packb((self._sync, self._rx, slot)), zmq.NOBLOCK)
        except zmq.Again:  # the sender is gone or stuck: it times out on its own
            pass

    def flush(self) -> None:
        """Ack every slot of the current sync whose last tensor has been freed since."""
        while self._released:
            sync, slot = self._released.popleft()
            if sync == self._sync and slot in self._pinned:
                self._pinned.discard(slot)
                self._ack_slot(slot)

    def bucket(self, ref: SlotRef, meta: WeightsMeta, borrow: bool) -> Named:
        """The bucket's tensors: views of its slot when `borrow` (released when they are freed),
        else a private copy, in memory of the receiver's `CopyPool` (the slot is released at once)."""
        mm = self._attach(ref)
        self.flush()
        raw = np.frombuffer(mm, dtype=np.uint8, count=flat_size(meta), offset=ref.slot * ref.slot_bytes)
        with warnings.catch_warnings():
            # The mapping is read-only; consumers only read (copying into the model).
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.frombuffer(raw, dtype=torch.uint8) if raw.size else torch.empty(0, dtype=torch.uint8)
        if not borrow or not raw.size or len(self._pinned - {ref.slot}) > ref.slots - 2:
            named = unpack(meta, self.copies.take(flat.numel()).copy_(flat))
            self._ack_slot(ref.slot)
            return named
        # torch.frombuffer keeps `raw` alive as long as any view of the slot: its finalizer runs
        # when the last one is freed, wherever the consumer kept them.
        weakref.finalize(raw, self._released.append, (ref.sync, ref.slot))
        self._pinned.add(ref.slot)
        return unpack(meta, flat)

    def close(self) -> None:
        if self._ack is not None:
            self._ack.close(linger=0)
            self._ack = None
        self._mm = None  # unmapped once no tensor views it any more
