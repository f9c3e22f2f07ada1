"""ZMQ PUSH/PULL streams of typed messages (msgpack-framed, see `pfrl.types.encode`).

A stream is bounded: ZMQ's high-water mark caps queued messages, and `send` waits at most
`timeout_s` for room, raising `StreamStalled` instead of blocking forever. That is the backpressure
of the data plane: when the consumer is slow, producers feel it within one HWM of messages.
"""

from __future__ import annotations

import socket
from typing import Any

import zmq

from pfrl.types import decode, encode


class StreamStalled(RuntimeError):
    """Nothing could be sent (or received) within the timeout: the other side is stuck or gone."""


def local_ip() -> str:
    """An address other Ray nodes can reach this process on (loopback when alone)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:
        pass
    return socket.gethostbyname(socket.gethostname()) or "127.0.0.1"


class _Stream:
    def __init__(self, kind: int, addr: str | None, bind: bool, hwm: int, host: str | None = None):
        self._ctx = zmq.Context.instance()
        self.sock = self._ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM if kind == zmq.PUSH else zmq.RCVHWM, hwm)
        if bind:
            host = host or local_ip()
            if addr is None:
                port = self.sock.bind_to_random_port(f"tcp://{host}")
                addr = f"tcp://{host}:{port}"
            else:
                self.sock.bind(addr)
        else:
            assert addr is not None, "a connecting stream needs an address"
            self.sock.connect(addr)
        self.addr = addr

    def close(self) -> None:
        self.sock.close(linger=0)


class PushStream(_Stream):
    def __init__(self, addr: str | None = None, bind: bool = False, hwm: int = 64, host: str | None = None):
        super().__init__(zmq.PUSH, addr, bind, hwm, host)

    def send(self, msg: Any, timeout_s: float | None = 30.0) -> None:
        """Send one message; wait up to `timeout_s` for room (None: forever)."""
        if timeout_s is not None and not self.sock.poll(int(timeout_s * 1000), zmq.POLLOUT):
            raise StreamStalled(f"no room to send on {self.addr} for {timeout_s:.0f}s")
        self.sock.send(encode(msg), copy=False)

    def try_send(self, msg: Any) -> bool:
        """Send without waiting; False when the stream is full."""
        try:
            self.sock.send(encode(msg), flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False


class PullStream(_Stream):
    def __init__(self, addr: str | None = None, bind: bool = False, hwm: int = 64, host: str | None = None):
        super().__init__(zmq.PULL, addr, bind, hwm, host)

    def recv(self, timeout_s: float | None = None) -> Any | None:
        """One message, or None after `timeout_s` (None: wait forever)."""
        if timeout_s is not None and not self.sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None
        return decode(self.sock.recv())

    def drain(self, limit: int) -> list[Any]:
        """Everything already queued, up to `limit` messages, without waiting."""
        out = []
        while len(out) < limit:
            try:
                out.append(decode(self.sock.recv(flags=zmq.NOBLOCK)))
            except zmq.Again:
                break
        return out
