"""Command lines that start the test harness under an isolation backend.

bwrap    bubblewrap: empty root with read-only system directories, private tmpfs scratch, new pid,
         network, IPC and UTS namespaces, dies with its parent.
unshare  util-linux unshare: new pid/network/IPC/UTS namespaces; files protected by uid only.
none     no namespaces: rlimits and (as root) an unprivileged uid only. Not a sandbox.

The harness itself applies the resource limits and, as root, drops to the slot's uid. Every backend
starts the harness with `ENV` only: nothing of the caller's environment (API keys, tokens) gets in.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path

from pfrl.config import SandboxSection
from pfrl.console import console

HARNESS = Path(__file__).with_name("_harness.py")
HARNESS_IN_SANDBOX = "/pfrl/harness.py"
# PYTHONHASHSEED fixed: equivalent programs must print sets/dicts in the same order, or the
# majority vote over outputs would split on hash randomisation alone.
ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
}
SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin")
# Reported as the `sandbox/isolation_level` metric: lower is weaker.
LEVELS = {"bwrap": 2, "unshare": 1, "none": 0}
WEAKNESS = {
    "unshare": "host files stay visible (protected by uid only) and the scratch is not size-limited",
    "none": "no namespaces: host files, network and other processes stay reachable; rlimits only",
}
# Slot uids: uid_base + pid * SLOTS_PER_PROCESS + slot. Every Sandbox of a process draws from one
# counter, so two sandboxes alive at once never share a uid (which kill(-1) and RLIMIT_NPROC rely on);
# PID_SPAN covers the largest pid_max, so two processes never share one either.
PID_SPAN, SLOTS_PER_PROCESS = 1 << 22, 512
_slot_counter = itertools.count()
_slot_lock = threading.Lock()
_announced: set[str] = set()
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")


@dataclass(frozen=True)
class Launch:
    """How to start one harness: argv, its working directory, whether it gets its own pid namespace."""

    argv: list[str]
    cwd: str
    pid_namespace: bool


def base_python(cfg: SandboxSection) -> str:
    """The interpreter programs run under: the configured one, or this Python's base interpreter
    (a venv's python would need the venv, which stays invisible inside the sandbox)."""
    if cfg.python is not None:
        return cfg.python
    ver = sysconfig.get_config_var("VERSION") or f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidate = Path(sys.base_prefix) / "bin" / f"python{ver}"
    return str(candidate) if candidate.exists() else os.path.realpath(sys.executable)


def slot_uid(uid_base: int) -> int:
    """A uid for one pool slot, distinct from every other slot of this process and of other processes."""
    with _slot_lock:
        slot = next(_slot_counter) % SLOTS_PER_PROCESS
    return uid_base + (os.getpid() % PID_SPAN) * SLOTS_PER_PROCESS + slot


def announce_weak(backend: str) -> None:
    """One console line (once per process and backend) when programs run less isolated than bwrap:
    a warning in a log file is easy to miss."""
    if backend in WEAKNESS and backend not in _announced:
        _announced.add(backend)
        console.print(
            f"[yellow]sandbox: backend {backend} isolates less than bwrap: {WEAKNESS[backend]}", soft_wrap=True
        )


def metrics(backend: str | None) -> dict[str, int]:
    """A run's sandbox in its step records: `sandbox/isolation_level` (2 bwrap, 1 unshare, 0 none)
    and `sandbox/backend_weak` (1 when weaker than bwrap). Empty without a sandbox (math runs)."""
    if backend is None:
        return {}
    level = LEVELS[backend]
    return {"sandbox/isolation_level": level, "sandbox/backend_weak": int(level < LEVELS["bwrap"])}


def tool_available(backend: str) -> bool:
    return backend == "none" or shutil.which(backend) is not None


def _system_mounts() -> list[str]:
    """Read-only system directories; merged-/usr symlinks (/bin -> usr/bin) stay symlinks."""
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in SYSTEM_FILES:
        args += ["--ro-bind-try", path, path]
    return args


def _interpreter_mounts(python: str, extra: list[str]) -> list[str]:
    """The interpreter's prefix (and extra paths) read-only. Their parent directories are created
    0755: bwrap copies the host's modes, and a 0700 /root would lock the dropped uid out."""
    args: list[str] = []
    prefixes = {os.path.realpath(sys.base_prefix), str(Path(os.path.realpath(python)).parents[1])}
    for path in sorted(prefixes | {os.path.realpath(p) for p in extra}):
        if path == "/usr" or path.startswith("/usr/"):
            continue  # already bound with the system directories
        for parent in reversed(Path(path).parents[:-1]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", path, path]
    return args


def bwrap_launch(cfg: SandboxSection, python: str) -> Launch:
    scratch = str(cfg.scratch_mb * 1024 * 1024)
    argv = [
        "bwrap",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",
    ]
    if os.geteuid() == 0:
        # As root bwrap keeps no user namespace; the harness needs exactly these two to drop to its uid.
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    argv += ["--tmpfs", "/", *_system_mounts(), *_interpreter_mounts(python, cfg.ro_binds)]
    argv += [
        "--ro-bind",
        str(HARNESS),
        HARNESS_IN_SANDBOX,
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        scratch,
        "--tmpfs",
        "/dev/shm",
        "--size",
        scratch,
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        # The root tmpfs holds only mount points, and has no size limit: read-only, so that without
        # root (where its owner is the program's own mapped uid) nothing can be written there.
        "--remount-ro",
        "/",
        "--chdir",
        "/tmp",
        "--clearenv",
    ]
    for key, value in ENV.items():
        argv += ["--setenv", key, value]
    argv += ["--", python, "-s", "-B", HARNESS_IN_SANDBOX]
    return Launch(argv, "/", pid_namespace=True)


def unshare_launch(python: str, scratch_dir: str) -> Launch:
    argv = ["unshare", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc"]
    if os.geteuid() != 0:
        argv.append("--map-current-user")
    argv += ["--", python, "-s", "-B", str(HARNESS)]
    return Launch(argv, scratch_dir, pid_namespace=True)


def bare_launch(python: str, scratch_dir: str) -> Launch:
    return Launch([python, "-s", "-B", str(HARNESS)], scratch_dir, pid_namespace=False)
