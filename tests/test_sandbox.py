"""The sandbox runs programs correctly: statuses, both test styles, per-test isolation, the pool."""

from __future__ import annotations

import os
import shutil

import pytest

from pfrl.config import SandboxSection
from pfrl.feedback import isolation
from pfrl.feedback.sandbox import Sandbox, SandboxJob, SandboxUnavailable, TestStatus

FAST = dict(timeout_s=1.0, cpu_s=1, memory_mb=256, max_output_bytes=4096)
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxSection(**FAST)) as sb:
        yield sb


def statuses(results):
    return [r.status.value for r in results]


def test_function_call_tests(sandbox):
    program = "def add(x, y):\n    return [x + y, {'s': str(x)}]\n"
    results = sandbox.run_program(
        program, ["[1, 2]", "[3, 4]"], "add", expected=['[3, {"s": "1"}]', "[0, {}]"]
    )
    assert statuses(results) == ["passed", "wrong_output"]
    assert results[0].output == '[3, {"s": "1"}]'


def test_stdin_tests(sandbox):
    program = (
        "import sys\nnums = [int(t) for t in sys.stdin.read().split()]\nprint(sum(nums))\nprint(max(nums))\n"
    )
    results = sandbox.run_program(program, ["1 2 3\n", "5\n-1"], None, expected=["6\n3", "4\n6"])
    assert statuses(results) == ["passed", "wrong_output"]
    assert results[1].output == "4\n5\n"


def test_without_expected_outputs_runs_are_ok(sandbox):
    assert statuses(sandbox.run_program("print(input()[::-1])", ["abc"], None)) == ["ok"]


def test_errors_are_runtime_errors_with_their_reason(sandbox):
    program = "def f(x):\n    if x == 0:\n        raise ValueError('zero!')\n    if x == 1:\n        import sys; sys.exit(3)\n    return 1 / (x - 2)\n"
    results = sandbox.run_program(program, ["[0]", "[1]", "[2]", "[3]"], "f")
    assert statuses(results) == ["runtime_error", "runtime_error", "runtime_error", "ok"]
    assert "ValueError: zero!" in results[0].detail
    assert "SystemExit: 3" in results[1].detail
    assert "ZeroDivisionError" in results[2].detail


def test_syntax_error_and_missing_entry_point(sandbox):
    assert statuses(sandbox.run_program("def f(:\n", ["[1]", "[2]"], "f")) == ["runtime_error"] * 2
    results = sandbox.run_program("def g(x):\n    return x\n", ["[1]"], "f")
    assert results[0].status is TestStatus.RUNTIME_ERROR and "entry point 'f'" in results[0].detail


def test_no_program_is_a_runtime_error_without_running(sandbox):
    results = sandbox.run_program(None, ["[1]", "[2]"], "f")
    assert statuses(results) == ["runtime_error"] * 2 and results[0].detail == "no program"


def test_each_test_gets_a_fresh_process(sandbox):
    """Module state does not leak from one test to the next (one fork per test)."""
    program = "calls = []\ndef f(x):\n    calls.append(x)\n    return len(calls)\n"
    results = sandbox.run_program(program, ["[1]", "[2]", "[3]"], "f")
    assert [r.output for r in results] == ["1", "1", "1"]


def test_a_timeout_does_not_spoil_the_other_tests(sandbox):
    program = "def f(x):\n    while x == 0:\n        pass\n    return x * 2\n"
    results = sandbox.run_program(program, ["[1]", "[0]", "[3]"], "f")
    assert statuses(results) == ["ok", "timeout", "ok"]
    assert [results[0].output, results[2].output] == ["2", "6"]


def test_large_stdin_input(sandbox):
    text = "x" * 300_000
    results = sandbox.run_program("import sys\nprint(len(sys.stdin.read()))", [text], None)
    assert results[0].status is TestStatus.OK and results[0].output.strip() == "300000"


def test_scratch_is_writable_and_private_to_one_program(sandbox):
    writer = "open('note.txt', 'w').write('hi')\nprint(open('note.txt').read())\n"
    assert sandbox.run_program(writer, [""], None)[0].output == "hi\n"
    reader = "import os\nprint(os.path.exists('note.txt'))\n"
    assert sandbox.run_program(reader, [""], None)[0].output == "False\n"


def test_set_printing_is_deterministic_across_programs(sandbox):
    program = "print({'apple', 'pear', 'fig', 'kiwi', 'plum'})"
    outs = {sandbox.run_program(program, [""], None)[0].output for _ in range(3)}
    assert len(outs) == 1


def test_run_many_keeps_order_and_runs_in_parallel(sandbox):
    # Each program reports when it ran; parallelism shows as overlapping intervals, which a busy
    # machine can delay but not fake (a serial pool never overlaps).
    program = "import time\nstart = time.time()\ntime.sleep(0.5)\nprint({i}, start, time.time())"
    results = sandbox.run_many([SandboxJob(program.format(i=i), [""]) for i in range(4)])
    rows = [r[0].output.split() for r in results]
    assert [row[0] for row in rows] == ["0", "1", "2", "3"]
    spans = [(float(a), float(b)) for _, a, b in rows]
    assert any(s1 < e0 and s0 < e1 for k, (s0, e0) in enumerate(spans) for s1, e1 in spans[k + 1:]), spans


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")
def test_auto_prefers_bubblewrap(sandbox):
    assert (sandbox.backend, sandbox.isolation_level) == ("bwrap", 2)


def test_auto_never_falls_back_to_no_isolation(monkeypatch):
    """Where neither bwrap nor unshare works, auto stops with one line naming both ways out, even
    though `none` would run."""
    monkeypatch.setattr(isolation, "tool_available", lambda backend: backend == "none")
    with pytest.raises(SandboxUnavailable) as err:
        Sandbox(SandboxSection(**FAST))
    message = str(err.value)
    assert "\n" not in message and "install bubblewrap" in message
    assert "labeller.sandbox.backend: none" in message and "bwrap: bwrap not found" in message


@pytest.mark.skipif(
    not os.path.exists(SYSTEM_PYTHON) or shutil.which("unshare") is None, reason="needs unshare"
)
def test_auto_fallback_to_unshare_is_announced(monkeypatch, capsys):
    monkeypatch.setattr(isolation, "tool_available", lambda backend: backend != "bwrap")
    monkeypatch.setattr(isolation, "_announced", set())
    with Sandbox(SandboxSection(python=SYSTEM_PYTHON, **FAST)) as sb:
        assert (sb.backend, sb.isolation_level) == ("unshare", 1)
    with Sandbox(SandboxSection(python=SYSTEM_PYTHON, **FAST)):
        pass
    lines = [line for line in capsys.readouterr().err.splitlines() if "sandbox:" in line]
    assert len(lines) == 1 and lines[0].startswith("sandbox: backend unshare isolates less than bwrap")
    assert lines[0].endswith(isolation.WEAKNESS["unshare"])  # one line, once per process


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs a system python")
def test_none_runs_only_when_named_and_is_announced(monkeypatch, capsys):
    monkeypatch.setattr(isolation, "_announced", set())
    with Sandbox(SandboxSection(backend="none", python=SYSTEM_PYTHON, **FAST)) as sb:
        assert (sb.backend, sb.isolation_level) == ("none", 0)
    assert "sandbox: backend none isolates less than bwrap: no namespaces" in capsys.readouterr().err


def test_unusable_backend_is_a_user_error():
    with pytest.raises(SandboxUnavailable, match="does not work here"):
        Sandbox(SandboxSection(backend="none", python="/nonexistent/python3"))


@pytest.mark.skipif(
    not os.path.exists(SYSTEM_PYTHON) or shutil.which("unshare") is None, reason="needs unshare"
)
@pytest.mark.parametrize("backend", ["unshare", "none"])
def test_fallback_backends_run_programs(backend):
    # The system interpreter: the fallbacks show the host filesystem, where a 0700 /root would hide
    # a pyenv interpreter from the dropped uid.
    with Sandbox(SandboxSection(backend=backend, python=SYSTEM_PYTHON, **FAST)) as sb:
        results = sb.run_program("def f(x):\n    return x + 1\n", ["[1]", "[2]"], "f", expected=["2", "4"])
        assert sb.backend == backend and statuses(results) == ["passed", "wrong_output"]


def test_isolation_metrics_name_the_backend():
    assert isolation.metrics("bwrap") == {"sandbox/isolation_level": 2, "sandbox/backend_weak": 0}
    assert isolation.metrics("unshare") == {"sandbox/isolation_level": 1, "sandbox/backend_weak": 1}
    assert isolation.metrics("none") == {"sandbox/isolation_level": 0, "sandbox/backend_weak": 1}
    assert isolation.metrics(None) == {}


def test_a_code_run_without_isolation_stops_before_anything_starts(monkeypatch, capsys):
    """`pfrl train` on a code task where auto finds no isolating backend: one line, exit 2, before
    the model is even looked at."""
    from pfrl import preflight
    from pfrl.cli import main

    monkeypatch.setattr(isolation, "tool_available", lambda backend: backend == "none")
    monkeypatch.setattr(preflight, "resolve_model", lambda cfg: pytest.fail("went past the sandbox check"))
    assert main(["train", "--set", "run.task=code", "--set", "model.path=/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "install bubblewrap" in err, err


def test_preflight_reports_the_backend_of_code_runs_only():
    from pfrl.config import PfrlConfig
    from pfrl.preflight import check_sandbox

    assert check_sandbox(PfrlConfig.model_validate({"run": {"task": "math"}})) is None
    code = PfrlConfig.model_validate({"run": {"task": "code"}, "labeller": {"sandbox": FAST}})
    try:
        backend = check_sandbox(code)
    except SandboxUnavailable as e:
        pytest.skip(f"no isolating backend works on this machine: {e}")
    assert backend in ("bwrap", "unshare")
