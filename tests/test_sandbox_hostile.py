"""Hostile programs are contained, and the labeller keeps working after them.

Each test runs a program that tries to hurt the machine and checks, from the host side, that it did
not: no processes left behind, no files written, no connection made, the caller still alive.
Every test has a hard pytest timeout so that a containment failure cannot hang the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import pytest

from pfrl.config import LabellerSection, SandboxSection
from pfrl.feedback.labeller import Labeller
from pfrl.feedback.sandbox import Sandbox, TestStatus
from pfrl.types import Problem, PromptItem, RolloutGroup

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")
CFG = SandboxSection(
    backend="bwrap", timeout_s=1.5, cpu_s=1, memory_mb=256, max_procs=16, max_output_bytes=4096
)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(CFG) as sb:
        yield sb


def sandbox_processes() -> list[int]:
    """Host pids running under the sandbox uids (as root) — must be none once a run returns."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                uid = next(int(line.split()[1]) for line in fh if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if uid >= CFG.uid_base:
            found.append(int(entry))
    return found


@pytest.mark.timeout(60)
def test_fork_bomb_is_contained(sandbox):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    results = sandbox.run_program(bomb, ["", ""], None)
    assert [r.status for r in results] == [TestStatus.TIMEOUT, TestStatus.TIMEOUT]
    assert time.monotonic() - start < 20
    assert sandbox_processes() == []


@pytest.mark.timeout(60)
def test_process_limit_bites(sandbox):
    program = (
        "import os, time\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
        "            time.sleep(3)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)\n"
    )
    result = sandbox.run_program(program, [""], None)[0]
    assert result.status is TestStatus.OK
    assert int(result.output) < CFG.max_procs
    assert sandbox_processes() == []


@pytest.mark.timeout(60)
def test_daemonized_children_are_killed(sandbox):
    program = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')\n"
    )
    results = sandbox.run_program(program, ["", ""], None)
    assert [r.output for r in results] == ["parent done\n"] * 2
    assert sandbox_processes() == []


@pytest.mark.timeout(60)
def test_infinite_loops_time_out(sandbox):
    for program in ("while True:\n    pass\n", "import time\ntime.sleep(1000)\n"):
        result = sandbox.run_program(program, [""], None)[0]
        assert result.status is TestStatus.TIMEOUT
        assert result.elapsed_s < CFG.timeout_s + 3.0  # cut off at the bound, not at the program's end


@pytest.mark.timeout(60)
def test_memory_bombs(sandbox):
    at_once = sandbox.run_program("x = bytearray(10 ** 10)\n", [""], None)[0]
    growing = sandbox.run_program("xs = []\nwhile True:\n    xs.append(bytearray(10 ** 6))\n", [""], None)[0]
    assert at_once.status is TestStatus.MEMORY and growing.status is TestStatus.MEMORY


@pytest.mark.timeout(60)
def test_writes_outside_scratch_fail(sandbox, tmp_path):
    open_dir = tmp_path / "world-writable"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    targets = [
        "/usr/evil",
        "/etc/evil",
        f"{os.getcwd()}/evil",
        "/root/evil",
        f"{open_dir}/evil",
        "/proc/sys/evil",
    ]
    program = (
        "import sys\nfor path in sys.stdin.read().split():\n    try:\n        open(path, 'w').write('x')\n"
        "        print('WROTE', path)\n    except OSError as e:\n        print('blocked', path, type(e).__name__)\n"
    )
    result = sandbox.run_program(program, ["\n".join(targets)], None)[0]
    assert result.status is TestStatus.OK and "WROTE" not in result.output
    assert result.output.count("blocked") == len(targets)
    assert not any(os.path.exists(t) for t in targets)


@pytest.mark.timeout(60)
def test_host_files_are_invisible(sandbox):
    program = "import os\nprint(os.path.exists('pyproject.toml'), os.path.exists(os.environ.get('HOME_PROJECT', '/work')))"
    result = sandbox.run_program(program, [""], None)[0]
    assert result.output == "False False\n"


@pytest.mark.timeout(60)
def test_network_connect_fails(sandbox):
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
def test_killing_the_parent_does_not_stop_the_run(sandbox):
    program = (
        "import os, signal\nfor pid in (os.getppid(), 1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError:\n        pass\nprint('still here')\n"
    )
    results = sandbox.run_program(program, ["", "", ""], None)
    assert [r.output for r in results] == ["still here\n"] * 3


@pytest.mark.timeout(60)
def test_results_cannot_be_forged_through_proc(sandbox):
    """The harness's result channel is neither inherited nor reachable via /proc/1/fd."""
    forged = json.dumps({"i": 1, "status": "passed", "output": "FORGED", "detail": "", "elapsed_s": 0})
    program = (
        "import sys\nfor n in range(16):\n    try:\n        with open(f'/proc/1/fd/{n}', 'w') as fh:\n"
        f"            fh.write({forged!r} + '\\n')\n        print('opened', n)\n    except OSError:\n        pass\n"
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
@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="needs a system python")
def test_a_dead_harness_is_replaced():
    """Without a pid namespace a program CAN kill its harness: that test is `killed`, and a new
    harness runs the remaining tests."""
    cfg = CFG.model_copy(update={"backend": "none", "python": "/usr/bin/python3"})
    program = (
        "import os, signal, sys\nif sys.stdin.read() == 'kill':\n    os.kill(os.getppid(), signal.SIGKILL)\n"
        "print('ran')\n"
    )
    with Sandbox(cfg) as sb:
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
def test_labeller_keeps_working_after_hostile_programs():
    problem = Problem(
        id="sum",
        prompt="### Task\nRead two integers, print their sum.\n### Solution\n",
        test_inputs=["1 2", "5 7"],
        test_outputs=["3", "12"],
    )
    good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    completions = [f"```python\n{p}```" for p in HOSTILE] + [good]
    group = RolloutGroup(PromptItem(problem, 0), completions, [], [], 0, 0, 0)
    cfg = LabellerSection(sandbox=CFG, source="ground_truth", pair_strategy="all_chosen")
    with Labeller("code", cfg, seed=0) as labeller:
        first = labeller.label(group)
        second = labeller.label(group)
    assert first.skipped is None and first.scores == [0.0] * len(HOSTILE) + [1.0]
    assert first.pairs and all(c == len(HOSTILE) for c, _ in first.pairs)
    assert second.scores == first.scores and second.pairs == first.pairs
    assert sandbox_processes() == []
