"""Test runner that executes INSIDE the sandbox (stdlib only: it runs under the bare interpreter).

One harness process runs every test of one program: it reads a JSON job on stdin, compiles the
program once, then forks a fresh child per test (no interpreter start per test), feeds the test
input, enforces the per-test wall clock, CPU, memory and output limits, kills the child's whole
process tree, and writes one JSON line per test to its stdout. It never compares outputs: the
expected outputs never enter the sandbox.

Child exit codes are the harness-internal protocol: 0 ran to completion, 1 raised, 86 MemoryError.
"""

from __future__ import annotations

import builtins
import ctypes
import io
import json
import os
import resource
import selectors
import signal
import sys
import time
import traceback

EXIT_OK, EXIT_ERROR, EXIT_MEMORY = 0, 1, 86
STDERR_TAIL = 2000
PR_SET_DUMPABLE = 4


def _drop_privileges(uid: int | None) -> None:
    """As root, become an unprivileged uid of our own, so RLIMIT_NPROC bites (it exempts root)
    and the program cannot write anything root owns."""
    if uid is None or os.geteuid() != 0:
        return
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _harden(job: dict) -> None:
    # Non-dumpable: a same-uid child cannot open /proc/<harness>/fd/* to forge result lines.
    try:
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    # Counted per uid (per user namespace): caps the whole tree of one program, fork bombs included.
    n = job["max_procs"]
    resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child_limits(job: dict) -> None:
    mem = job["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = job["cpu_s"]
    # Soft limit sends SIGXCPU, the hard one a SIGKILL one second later.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    fsize = job["max_file_bytes"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))


def _fresh_std_streams() -> None:
    """Point sys.stdin/stdout/stderr at fds 0/1/2 with empty buffers (the harness consumed its own)."""
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", write_through=True)


def _execute(code, entry_point: str | None, test_input: str) -> None:
    """Run the program (as __main__ for stdin programs, or call entry_point with JSON args)."""
    scope = {"__name__": "__main__" if entry_point is None else "solution", "__builtins__": builtins}
    exec(code, scope)
    if entry_point is None:
        return
    fn = scope.get(entry_point)
    if not callable(fn):
        raise NameError(f"entry point {entry_point!r} is not defined")
    args = json.loads(test_input)
    if not isinstance(args, list):
        raise TypeError("a function-call test input must be a JSON array of arguments")
    data = json.dumps(fn(*args)).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(3, view) :]


def _child_main(job: dict, code, test_input: str, fds: dict[str, int]) -> None:
    """In the forked child: wire fds, apply limits, run, and leave through os._exit only."""
    status = EXIT_ERROR
    try:
        os.setpgid(0, 0)
        os.dup2(fds["stdin"], 0)
        os.dup2(fds["out"], 1)
        os.dup2(fds["err"], 2)
        os.dup2(fds["ret"], 3)
        os.closerange(4, 1 << 16)  # the result channel and every other harness fd
        _child_limits(job)
        _fresh_std_streams()
        try:
            _execute(code, job["entry_point"], test_input)
            status = EXIT_OK
        except SystemExit as e:
            status = EXIT_OK if e.code in (None, 0) else EXIT_ERROR
            if status != EXIT_OK:
                print(f"SystemExit: {e.code}"[:500], file=sys.stderr)
        sys.stdout.flush()
    except MemoryError:
        status = EXIT_MEMORY
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
    os._exit(status)


def _input_fd(text: str) -> int:
    # A memfd holds any input size without a writer thread (a pipe would block past 64 KiB).
    fd = os.memfd_create("stdin")
    data = text.encode()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _spawn(job: dict, code, test_input: str) -> tuple[int, dict[str, int]]:
    """Fork one test child; return its pid and the harness ends of its out/err/ret pipes."""
    in_fd = _input_fd(test_input)
    pipes = {name: os.pipe() for name in ("out", "err", "ret")}
    pid = os.fork()
    if pid == 0:
        fds = {"stdin": in_fd, **{name: w for name, (_, w) in pipes.items()}}
        _child_main(job, code, test_input, fds)
    os.close(in_fd)
    for _, w in pipes.values():
        os.close(w)
    return pid, {name: r for name, (r, _) in pipes.items()}


class _Collector:
    """Reads a test child's pipes until it exits, the wall clock runs out or output overflows."""

    def __init__(self, pid: int, fds: dict[str, int], cap: int):
        self.pid, self.fds, self.cap = pid, fds, cap
        self.data = {name: bytearray() for name in fds}
        self.sel = selectors.DefaultSelector()
        for name, fd in fds.items():
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, name)
        self.pidfd = os.pidfd_open(pid)
        self.sel.register(self.pidfd, selectors.EVENT_READ, "exit")

    def _read(self, name: str) -> bool:
        """Read what is there; False when the output cap is exceeded."""
        fd = self.fds[name]
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            self.sel.unregister(fd)
            return True
        buf = self.data[name]
        buf += chunk
        if name == "err" and len(buf) > STDERR_TAIL:
            del buf[: len(buf) - STDERR_TAIL]
        return name == "err" or len(buf) <= self.cap

    def collect(self, timeout_s: float) -> str | None:
        """Wait for exit; returns the overrun reason ('timeout' | 'output') or None."""
        deadline = time.monotonic() + timeout_s
        exited = False
        while not exited:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            for key, _ in self.sel.select(left):
                if key.data == "exit":
                    exited = True
                elif not self._read(key.data):
                    return "output"
        return None

    def drain(self) -> bool:
        """After exit and the sweep: take what is still buffered; False if that overflows."""
        for name, fd in self.fds.items():
            while fd in self.sel.get_map():
                before = len(self.data[name])
                if not self._read(name):
                    return False
                if len(self.data[name]) == before:
                    break
        return True

    def close(self) -> None:
        self.sel.close()
        for fd in (*self.fds.values(), self.pidfd):
            os.close(fd)


def _sweep(pid: int, job: dict) -> None:
    """Kill the test's whole process tree, including children that left its process group.

    kill(-1) reaches every process we may signal. Never as root. Without root it is safe inside our
    own pid namespace (where we are pid 1 or 2), and under the slot's private uid (dropped to as
    root, no namespace needed): then it reaches exactly this program's processes."""
    targets = [-pid]
    own_namespace = job["pid_namespace"] and os.getpid() <= 2
    private_uid = job["uid"] is not None and os.geteuid() == job["uid"]
    if (own_namespace or private_uid) and os.geteuid() != 0:
        targets.append(-1)
    for target in targets:
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(pid: int) -> tuple[int, float]:
    """Reap the test child; its wait status and CPU time. As pid 1 of our namespace, also wait for
    every orphan the sweep killed, so none outlives its test (they were adopted by us)."""
    _, status, usage = os.wait4(pid, 0)
    flags = 0 if os.getpid() == 1 else os.WNOHANG
    while True:
        try:
            if os.waitpid(-1, flags)[0] == 0:
                break
        except ChildProcessError:
            break
    return status, usage.ru_utime + usage.ru_stime


def _classify(overrun: str | None, status: int, cpu_used: float, job: dict) -> tuple[str, str]:
    if overrun == "timeout":
        return "timeout", f"wall clock over {job['timeout_s']}s"
    if overrun == "output":
        return "killed", f"output over {job['max_output_bytes']} bytes"
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if code == EXIT_OK:
            return "ok", ""
        return ("memory", "MemoryError") if code == EXIT_MEMORY else ("runtime_error", f"exit {code}")
    sig = os.WTERMSIG(status)
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_used >= job["cpu_s"]):
        return "timeout", f"CPU over {job['cpu_s']}s"
    if sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGFPE, signal.SIGBUS, signal.SIGILL, signal.SIGXFSZ):
        return "runtime_error", f"signal {signal.Signals(sig).name}"
    return "killed", f"signal {signal.Signals(sig).name}"


def run_test(job: dict, code, test_input: str) -> dict:
    start = time.monotonic()
    pid, fds = _spawn(job, code, test_input)
    col = _Collector(pid, fds, job["max_output_bytes"])
    try:
        overrun = col.collect(job["timeout_s"])
        _sweep(pid, job)
        if overrun is None and not col.drain():
            overrun = "output"
    finally:
        col.close()
    status, cpu_used = _reap(pid)
    kind, detail = _classify(overrun, status, cpu_used, job)
    out = col.data["out" if job["entry_point"] is None else "ret"][: job["max_output_bytes"]]
    err = bytes(col.data["err"]).decode("utf-8", "replace").strip()
    if kind == "runtime_error" and err:
        detail = err.splitlines()[-1][:500]
    return {
        "status": kind,
        "output": out.decode("utf-8", "replace"),
        "detail": detail,
        "elapsed_s": round(time.monotonic() - start, 6),
    }


def _emit(channel, index: int, result: dict) -> None:
    channel.write(json.dumps({"i": index, **result}) + "\n")
    channel.flush()


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # nothing but result lines may reach the host on our stdout
    _drop_privileges(job["uid"])
    _harden(job)
    try:
        code = compile(job["program"], "<solution>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        for i in job["indices"]:
            _emit(
                channel,
                i,
                {
                    "status": "runtime_error",
                    "output": "",
                    "detail": f"{type(e).__name__}: {e}"[:500],
                    "elapsed_s": 0.0,
                },
            )
        return
    for i, test_input in zip(job["indices"], job["inputs"], strict=True):
        _emit(channel, i, run_test(job, code, test_input))


if __name__ == "__main__":
    main()
