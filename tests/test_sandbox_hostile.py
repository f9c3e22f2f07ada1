"""Hostile programs are contained, on every sandbox backend that runs here, and the labeller keeps
working after them.

Each test runs a program that tries to hurt the machine and checks, from the host side, that it did
not: no processes left behind, no files written, no connection made, no secret seen, the caller
still alive. Every test runs once per backend (bwrap, unshare, none); a backend that cannot run on
this machine is skipped with the reason its probe gave. Where a weaker backend cannot give a
guarantee, `WEAK` says so and the test is a strict xfail: it must fail there, and it is reported.
Every test has a hard pytest timeout so that a containment failure cannot hang the suite.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from pfrl.config import LabellerSection, SandboxSection
from pfrl.feedback import isolation
from pfrl.feedback.labeller import Labeller
from pfrl.feedback.sandbox import Sandbox, SandboxJob, SandboxUnavailable, TestStatus
from pfrl.types import Problem, PromptItem, RolloutGroup

CFG = SandboxSection(
    timeout_s=1.5, cpu_s=1, memory_mb=256, max_procs=16, max_output_bytes=4096, scratch_mb=4
)
BACKENDS = ("bwrap", "unshare", "none")
ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parent.parent
HOME = Path.home()
SYSTEM_PYTHON = "/usr/bin/python3"
PR_SET_CHILD_SUBREAPER = 36

_HOST_FS = "the host filesystem is visible (files are protected by uid only)"
_SAME_USER = "not root: programs run as the caller's own uid, with its permissions"
# (backend, property) -> why that backend does not guarantee it here. Derived from what each
# backend does (see pfrl/feedback/isolation.py and docs/feedback.md), not from test results.
WEAK: dict[tuple[str, str], str] = {
    ("unshare", "host_files"): _HOST_FS,
    ("none", "host_files"): _HOST_FS,
    ("unshare", "writes"): _HOST_FS + ": world-writable directories are writable",
    ("none", "writes"): _HOST_FS + ": world-writable directories are writable",
    ("unshare", "disk"): "the scratch is a host directory: only each file's size is limited",
    ("none", "disk"): "the scratch is a host directory: only each file's size is limited",
    ("none", "network"): "no network namespace",
    ("none", "parent"): "no pid namespace: a program can kill its harness (the test is `killed`, see "
    "test_a_dead_harness_is_replaced)",
}
if not ROOT:
    WEAK |= {
        ("unshare", "secrets"): _SAME_USER + ": the caller's private files are readable",
        ("none", "secrets"): _SAME_USER + ": the caller's private files are readable",
        ("unshare", "others"): _SAME_USER + ": other programs' scratch is readable",
        ("none", "others"): _SAME_USER + ": other programs' scratch is readable",
        ("none", "environ"): _SAME_USER + ": /proc/PID/environ of the caller's processes is readable",
        ("none", "daemons"): "not root, no pid namespace: processes that leave the process group survive",
    }


def _own_processes() -> int:
    uid, count = os.getuid(), 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            count += Path(f"/proc/{entry}").stat().st_uid == uid
    return count


if not ROOT and _own_processes() + 8 >= CFG.max_procs:
    WEAK[("none", "processes")] = (
        f"not root: the process limit ({CFG.max_procs}) counts all {_own_processes()} processes of the caller"
    )
# Too dangerous to run at all: the program would SIGKILL every process of the caller, pytest included.
NOT_RUN = set() if ROOT else {("none", "signals")}


def expect(request, backend: str, prop: str) -> None:
    """Mark this test a strict xfail where `backend` does not guarantee `prop` here."""
    if (backend, prop) in NOT_RUN:
        pytest.xfail(f"{backend}: not run, it would kill the test runner ({_SAME_USER})")
    reason = WEAK.get((backend, prop))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{backend}: {reason}"))


def backend_cfg(backend: str, **update) -> SandboxSection:
    # As root the weaker backends show the host filesystem to a dropped uid, which a 0700 /root
    # would lock out of a pyenv interpreter: they use the system interpreter.
    python = SYSTEM_PYTHON if backend != "bwrap" and ROOT and os.path.exists(SYSTEM_PYTHON) else None
    return CFG.model_copy(update={"backend": backend, "python": python, **update})


def open_sandbox(backend: str, **update) -> Sandbox:
    try:
        return Sandbox(backend_cfg(backend, **update))
    except SandboxUnavailable as e:
        pytest.skip(f"backend {backend} cannot run on this machine: {e}")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def sandbox(backend):
    with open_sandbox(backend) as sb:
        yield sb


# -- leftover processes ----------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def subreaper():
    """Orphans of the programs come back to this process instead of init, so `leftovers` finds them
    by ancestry: no root and no uid convention needed. A thread reaps the dead ones as init would
    (a zombie still counts against its uid's process limit), but never a process this one started
    itself (the sandbox's harnesses lead their own session): those belong to their Popen."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    stop = threading.Event()
    reaper = threading.Thread(target=_reap_orphans, args=(stop,), daemon=True)
    reaper.start()
    yield
    stop.set()
    reaper.join()
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _reap_orphans(stop: threading.Event) -> None:
    me = os.getpid()
    while not stop.wait(0.05):
        for pid, (ppid, state, session) in _process_table().items():
            if ppid == me and state == "Z" and session != pid:
                os.waitpid(pid, os.WNOHANG)


def _process_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, state, session id) for every process we can see."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session
        table[int(entry)] = (int(fields[1]), fields[0], int(fields[3]))
    return table


def descendants() -> set[int]:
    """Live (not zombie) processes below this one."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            if table[child][1] != "Z":
                found.add(child)
                todo.append(child)
    return found


def run_leaving_nothing(sandbox: Sandbox, *args):
    """`sandbox.run_program(*args)`, asserting that no process it started outlives it (a SIGKILL
    takes a moment to land, so allow a few seconds)."""
    before = descendants()
    results = sandbox.run_program(*args)
    deadline = time.monotonic() + 5.0
    while (left := descendants() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == set(), f"processes left behind: {sorted(left)}"
    return results


# -- processes, time, memory, disk -----------------------------------------------------------------
@pytest.mark.timeout(60)
def test_fork_bomb_is_contained(sandbox, backend, request):
    expect(request, backend, "processes")
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    results = run_leaving_nothing(sandbox, bomb, ["", ""], None)
    assert [r.status for r in results] == [TestStatus.TIMEOUT, TestStatus.TIMEOUT]
    assert time.monotonic() - start < 20


@pytest.mark.timeout(60)
def test_process_limit_bites(sandbox, backend, request):
    expect(request, backend, "processes")
    program = (
        "import os, time\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
        "            time.sleep(3)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)\n"
    )
    result = run_leaving_nothing(sandbox, program, [""], None)[0]
    assert result.status is TestStatus.OK
    assert int(result.output) < CFG.max_procs


@pytest.mark.timeout(60)
def test_daemonized_children_are_killed(sandbox, backend, request):
    expect(request, backend, "daemons")
    program = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')\n"
    )
    results = run_leaving_nothing(sandbox, program, ["", ""], None)
    assert [r.output for r in results] == ["parent done\n"] * 2


@pytest.mark.timeout(60)
def test_infinite_loops_time_out(sandbox):
    for program in ("while True:\n    pass\n", "import time\ntime.sleep(1000)\n"):
        result = sandbox.run_program(program, [""], None)[0]
        assert result.status is TestStatus.TIMEOUT
        assert result.elapsed_s < CFG.timeout_s + 3.0  # cut off at the bound, not at the program's end


@pytest.mark.timeout(60)
def test_ignoring_signals_does_not_escape_the_limits(sandbox):
    """A program that ignores every catchable signal still stops at the wall clock and CPU bound."""
    program = (
        "import signal\nfor s in (signal.SIGXCPU, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):\n"
        "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n"
    )
    result = run_leaving_nothing(sandbox, program, [""], None)[0]
    assert result.status is TestStatus.TIMEOUT
    assert result.elapsed_s < CFG.timeout_s + 3.0


@pytest.mark.timeout(60)
def test_memory_bombs(backend):
    # Faulting in 256 MB takes ~0.5 s of CPU, several seconds of wall clock on a loaded machine.
    with open_sandbox(backend, timeout_s=10.0) as sandbox:
        at_once = sandbox.run_program("x = bytearray(10 ** 10)\n", [""], None)[0]
        growing = sandbox.run_program("xs = []\nwhile True:\n    xs.append(bytearray(10 ** 7))\n", [""], None)[0]
    assert at_once.status is TestStatus.MEMORY and growing.status is TestStatus.MEMORY, growing


@pytest.mark.timeout(60)
def test_disk_use_is_bounded_by_the_scratch_size(sandbox, backend, request):
    """Many files, each under the per-file limit, together stop at `scratch_mb`."""
    expect(request, backend, "disk")
    program = (
        "chunk = b'x' * (1 << 20)\nwritten = 0\ntry:\n    for n in range(3 * int(input())):\n"
        "        with open(f'f{n}', 'wb') as fh:\n            fh.write(chunk)\n        written += 1\n"
        "except OSError as e:\n    print('stopped', e.errno)\nprint(written)\n"
    )
    result = sandbox.run_program(program, [str(CFG.scratch_mb)], None)[0]
    assert result.status is TestStatus.OK
    assert int(result.output.split()[-1]) <= CFG.scratch_mb


# -- files -----------------------------------------------------------------------------------------
@pytest.fixture
def open_dir():
    """A world-writable host directory any uid can reach (pytest's tmp_path sits under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="pfrl-test-open-"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path)


@pytest.mark.timeout(60)
def test_writes_outside_scratch_fail(sandbox, backend, request, open_dir):
    expect(request, backend, "writes")
    targets = ["/usr/evil", "/etc/evil", f"{REPO}/evil", f"{HOME}/evil", f"{open_dir}/evil", "/proc/sys/evil"]
    program = (
        "import sys\nfor path in sys.stdin.read().split():\n    try:\n        open(path, 'w').write('x')\n"
        "        print('WROTE', path)\n    except OSError as e:\n        print('blocked', path, type(e).__name__)\n"
    )
    try:
        result = sandbox.run_program(program, ["\n".join(targets)], None)[0]
        assert result.status is TestStatus.OK and result.output.count("blocked") == len(targets), result.output
        assert not any(os.path.exists(t) for t in targets)
    finally:
        for target in targets[2:4]:
            Path(target).unlink(missing_ok=True)


# The probe prints a file's first bytes, a directory's entries, or the error that stopped it.
UNREADABLE = ("FileNotFoundError", "PermissionError")
FILE_PROBE = (
    "import json, os, sys\nout = {}\nfor path in json.loads(sys.stdin.read()):\n    try:\n"
    "        out[path] = sorted(os.listdir(path)) if os.path.isdir(path) else open(path, 'rb').read(64).hex()\n"
    "    except OSError as e:\n        out[path] = type(e).__name__\nprint(json.dumps(out))\n"
)


def _home_entries_allowed() -> set[str]:
    """What bwrap may show of the home directory: the top of a read-only interpreter mount under it."""
    allowed = set()
    for prefix in (sys.base_prefix, str(Path(os.path.realpath(isolation.base_python(CFG))).parents[1])):
        path = Path(os.path.realpath(prefix))
        if path.is_relative_to(HOME.resolve()) and path != HOME.resolve():
            allowed.add(path.relative_to(HOME.resolve()).parts[0])
    return allowed


@pytest.mark.timeout(60)
def test_host_files_are_invisible(sandbox, backend, request):
    """The repo's own files by absolute path, /etc/shadow and the home directory are not there."""
    expect(request, backend, "host_files")
    repo_files = [str(REPO / "pyproject.toml"), str(Path(__file__).resolve()), str(REPO)]
    paths = [*repo_files, "/etc/shadow", "/etc/passwd", str(HOME)]
    result = sandbox.run_program(FILE_PROBE, [json.dumps(paths)], None)[0]
    seen = json.loads(result.output)
    assert all(seen[p] in UNREADABLE for p in paths if p != str(HOME)), seen
    home = seen[str(HOME)]
    assert home in UNREADABLE or set(home) <= _home_entries_allowed(), home


@pytest.mark.timeout(60)
def test_host_secrets_are_unreadable(sandbox, backend, request, tmp_path):
    """The weaker guarantee every backend gives as root: what the dropped uid may not read (the
    caller's private files, like a ~/.netrc, and /etc/shadow) stays unread even where the host
    filesystem is visible."""
    expect(request, backend, "secrets")
    private = tmp_path / "netrc"
    private.write_text("machine api password sk-test-secret\n")
    private.chmod(0o600)
    paths = ["/etc/shadow", str(private), str(tmp_path)]
    seen = json.loads(sandbox.run_program(FILE_PROBE, [json.dumps(paths)], None)[0].output)
    assert all(seen[p] in UNREADABLE for p in paths), seen


@pytest.mark.timeout(90)
def test_programs_cannot_read_each_others_files(backend, request):
    """Two programs at once: one writes its answer into its scratch, the other looks for it."""
    expect(request, backend, "others")
    writer = "import time\nopen('answer.txt', 'w').write('SECRET-ANSWER')\ntime.sleep(3)\n"
    reader = (
        "import glob, os, time\nend = time.time() + 3\nfound = []\nwhile time.time() < end and not found:\n"
        "    for path in glob.glob(os.path.dirname(os.getcwd()) + '/*/answer.txt') + glob.glob('/tmp/*/answer.txt'):\n"
        "        try:\n            found += [path] if 'SECRET' in open(path).read() else []\n"
        "        except OSError:\n            pass\n    time.sleep(0.05)\nprint(found)\n"
    )
    with open_sandbox(backend, timeout_s=5.0, workers=2) as sb:
        results = sb.run_many([SandboxJob(writer, [""]), SandboxJob(reader, [""])])
    assert results[0][0].status is TestStatus.OK
    assert results[1][0].status is TestStatus.OK and results[1][0].output == "[]\n", results[1][0].output


# -- environment -----------------------------------------------------------------------------------
ENV_PROBE = (
    "import json, os\nleaks = []\nfor pid in os.listdir('/proc'):\n    if pid.isdigit():\n        try:\n"
    "            data = open(f'/proc/{pid}/environ', 'rb').read()\n        except OSError:\n            continue\n"
    "        leaks += [pid] if b'PFRL_TEST_SECRET' in data or b'sk-test-secret' in data else []\n"
    "print(json.dumps({'env': dict(os.environ), 'leaks': leaks}))\n"
)


@pytest.mark.timeout(60)
def test_programs_never_see_the_callers_environment(sandbox, backend, request, monkeypatch):
    """Neither inherited (the caller's os.environ) nor read from /proc (another process of the
    caller, started with the keys, like a frontier client)."""
    expect(request, backend, "environ")
    monkeypatch.setenv("PFRL_TEST_SECRET", "sk-test-secret-1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-2")
    holder = subprocess.Popen(["sleep", "30"], env=dict(os.environ))
    try:
        result = sandbox.run_program(ENV_PROBE, [""], None)[0]
    finally:
        holder.kill()
        holder.wait()
    seen = json.loads(result.output)
    assert set(seen["env"]) <= {*isolation.ENV, "PWD"}, seen["env"]  # bwrap --chdir sets PWD
    assert "sk-test-secret" not in json.dumps(seen["env"]) and seen["leaks"] == [], seen


# -- network and signals ---------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_network_connect_fails(sandbox, backend, request):
    expect(request, backend, "network")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    program = (
        "import socket, sys\nfor host in ('127.0.0.1', '1.1.1.1'):\n    try:\n"
        "        socket.create_connection((host, int(sys.stdin.read() or 0) or 80), timeout=1)\n        print('CONNECTED')\n"
        "    except OSError as e:\n        print('refused', e.errno)\n"
    )
    result = sandbox.run_program(program, [str(port)], None)[0]
    try:
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert result.status is TestStatus.OK and "CONNECTED" not in result.output


@pytest.mark.timeout(60)
def test_killing_the_parent_does_not_stop_the_run(sandbox, backend, request):
    expect(request, backend, "parent")
    program = (
        "import os, signal\nfor pid in (os.getppid(), 1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError:\n        pass\nprint('still here')\n"
    )
    results = sandbox.run_program(program, ["", "", ""], None)
    assert [r.output for r in results] == ["still here\n"] * 3


@pytest.mark.timeout(60)
def test_signals_do_not_reach_the_host(sandbox, backend, request):
    """kill(-1) and a kill of the caller's pid reach nothing outside the program."""
    expect(request, backend, "signals")
    bystander = subprocess.Popen(["sleep", "30"])
    program = (
        "import os, signal\nfor pid in (-1, int(input()), int(input())):\n    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\nprint('sent')\n"
    )
    try:
        result = sandbox.run_program(program, [f"{os.getpid()}\n{bystander.pid}\n"], None)[0]
        time.sleep(0.2)
        assert bystander.poll() is None, "a host process was killed"
    finally:
        bystander.kill()
        bystander.wait()
    assert result.status is TestStatus.KILLED or result.output == "sent\n"


@pytest.mark.timeout(60)
def test_results_cannot_be_forged_through_proc(sandbox):
    """The harness's result channel is neither inherited nor reachable via /proc/1/fd or /proc/PPID/fd."""
    forged = json.dumps({"i": 1, "status": "passed", "output": "FORGED", "detail": "", "elapsed_s": 0})
    program = (
        "import os, sys\nfor n in range(16):\n    for pid in (1, os.getppid()):\n        try:\n"
        f"            with open(f'/proc/{{pid}}/fd/{{n}}', 'w') as fh:\n                fh.write({forged!r} + '\\n')\n"
        "            print('opened', pid, n)\n        except OSError:\n            pass\n"
    )
    results = sandbox.run_program(program, ["", ""], None)
    assert [r.status for r in results] == [TestStatus.OK, TestStatus.OK]
    assert all("opened" not in r.output and r.output != "FORGED" for r in results)


@pytest.mark.timeout(60)
def test_a_program_killing_itself_is_killed(sandbox):
    result = sandbox.run_program("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", [""], None)[0]
    assert result.status is TestStatus.KILLED


@pytest.mark.timeout(60)
def test_huge_output_is_cut_and_killed(sandbox):
    result = sandbox.run_program("while True:\n    print('y' * 1000)\n", [""], None)[0]
    assert result.status is TestStatus.KILLED and len(result.output) == CFG.max_output_bytes
    call = sandbox.run_program("def f():\n    return 'z' * 10 ** 6\n", ["[]"], "f")[0]
    assert call.status is TestStatus.KILLED


@pytest.mark.timeout(60)
def test_segfault_is_a_runtime_error(sandbox):
    result = sandbox.run_program("import ctypes\nctypes.string_at(0)\n", [""], None)[0]
    assert result.status is TestStatus.RUNTIME_ERROR and "SIGSEGV" in result.detail


@pytest.mark.timeout(60)
def test_a_dead_harness_is_replaced():
    """Without a pid namespace a program CAN kill its harness: that test is `killed`, and a new
    harness runs the remaining tests."""
    program = (
        "import os, signal, sys\nif sys.stdin.read() == 'kill':\n    os.kill(os.getppid(), signal.SIGKILL)\n"
        "print('ran')\n"
    )
    with open_sandbox("none") as sb:
        results = sb.run_program(program, ["a", "kill", "b"], None)
    assert [r.status for r in results] == [TestStatus.OK, TestStatus.KILLED, TestStatus.OK]


HOSTILE = [
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "while True:\n    pass\n",
    "x = bytearray(10 ** 10)\n",
    "open('/usr/evil', 'w').write('x')\n",
    "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\n",
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "while True:\n    print('y' * 1000)\n",
    "import ctypes\nctypes.string_at(0)\n",
]


@pytest.mark.timeout(120)
def test_labeller_keeps_working_after_hostile_programs(backend, request):
    """Hostile programs score 0 and the good one 1, twice, with nothing left running. Where all
    programs share one process limit (`none` without root), a fork bomb can starve the programs
    that run beside it: there only the weaker promise is checked (the labeller survives, hostile
    programs score 0)."""
    expect(request, backend, "processes")
    open_sandbox(backend).close()  # skips here, with the reason, where the backend cannot run
    problem = Problem(
        id="sum",
        prompt="### Task\nRead two integers, print their sum.\n### Solution\n",
        test_inputs=["1 2", "5 7"],
        test_outputs=["3", "12"],
    )
    good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    completions = [f"```python\n{p}```" for p in HOSTILE] + [good]
    group = RolloutGroup(PromptItem(problem, 0), completions, [], [], 0, 0, 0)
    cfg = LabellerSection(sandbox=backend_cfg(backend), source="ground_truth", pair_strategy="all_chosen")
    before = descendants()
    with Labeller("code", cfg, seed=0) as labeller:
        first = labeller.label(group)
        second = labeller.label(group)
    if backend == "none" and not ROOT:
        assert first.scores[:-1] == [0.0] * len(HOSTILE) and second.scores[:-1] == first.scores[:-1]
    else:
        assert first.skipped is None and first.scores == [0.0] * len(HOSTILE) + [1.0]
        assert first.pairs and all(c == len(HOSTILE) for c, _ in first.pairs)
        assert second.scores == first.scores and second.pairs == first.pairs
    deadline = time.monotonic() + 5.0
    while (left := descendants() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == set()


def test_every_backend_is_covered():
    """A backend added to the sandbox must be added to this suite (and to `WEAK` where it is weaker)."""
    assert set(BACKENDS) == set(isolation.LEVELS)
    assert {b for b, _ in WEAK} | {b for b, _ in NOT_RUN} <= set(BACKENDS)
