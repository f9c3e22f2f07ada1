"""Run model-written programs on test inputs, isolated and pooled.

`Sandbox.run_program` starts ONE isolated harness per program (see `_harness.py`) that runs all of
its tests, each in a fresh forked child under per-test limits, and streams back one typed result per
test. If a hostile program takes its harness down, the test it was on is `killed` and a new harness
runs the remaining tests: nothing a program does reaches the caller as an exception.
`run_many` keeps `workers` harnesses busy at once. Outputs are compared here, outside the sandbox.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, ClassVar

from pfrl.config import SandboxSection
from pfrl.errors import UserError
from pfrl.feedback import isolation
from pfrl.feedback.code import outputs_match

log = logging.getLogger(__name__)
# What `auto` tries, best first. `none` is not among them: it isolates nothing, so it runs only
# when the config names it.
AUTO_ORDER = ("bwrap", "unshare")
LINE_SLACK = 65536  # JSON escaping and fields around one test's output
PROBE_PROGRAM = "import decimal, fractions, heapq, socket\nprint(6 * 7)\n"


class TestStatus(StrEnum):
    PASSED = "passed"  # ran and matched the expected output
    OK = "ok"  # ran to completion; no expected output to compare with
    WRONG_OUTPUT = "wrong_output"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    KILLED = "killed"  # output cap, a signal, or the sandbox itself died

    __test__ = False  # a name pytest would otherwise try to collect (a dunder, so not a member)

    @property
    def ran(self) -> bool:
        """The program completed normally (its output means something)."""
        return self in (TestStatus.PASSED, TestStatus.OK, TestStatus.WRONG_OUTPUT)


@dataclass(slots=True)
class TestResult:
    status: TestStatus
    output: str = ""
    detail: str = ""
    elapsed_s: float = 0.0
    __test__: ClassVar[bool] = False  # not a test class, whatever pytest makes of its name


@dataclass(slots=True)
class SandboxJob:
    """One program and the inputs to run it on; `expected` turns ok into passed / wrong_output."""

    program: str | None
    test_inputs: list[str]
    entry_point: str | None = None
    expected: list[str] | None = None


class SandboxUnavailable(UserError):
    """The configured isolation backend cannot run here."""


def check_outputs(
    results: list[TestResult], expected: list[str], entry_point: str | None
) -> list[TestResult]:
    """Mark completed runs passed / wrong_output against expected outputs (JSON-normalised for calls)."""
    out = []
    for res, want in zip(results, expected, strict=True):
        if res.status.ran:
            ok = outputs_match(res.output, want, function_call=entry_point is not None)
            res = TestResult(
                TestStatus.PASSED if ok else TestStatus.WRONG_OUTPUT, res.output, res.detail, res.elapsed_s
            )
        out.append(res)
    return out


class _HarnessRun:
    """One harness process: send the job, read result lines under deadlines, kill the tree."""

    def __init__(self, launch: isolation.Launch, job: dict, cap: int):
        self._err: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            launch.argv,
            cwd=launch.cwd,
            env=isolation.ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            start_new_session=True,
            umask=0o022,  # bwrap-made dirs must stay traversable after the uid drop
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are pipes
        self._stdout = self.proc.stdout
        self._buf = bytearray()
        self._max_line = cap + LINE_SLACK
        try:
            self.proc.stdin.write(json.dumps(job).encode())
            self.proc.stdin.close()
        except BrokenPipeError:
            pass  # the harness died at start; next_line reports it
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._stdout, selectors.EVENT_READ)

    def next_line(self, timeout_s: float) -> dict | None:
        """The next result, or None if the harness ended, stalled or wrote garbage."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or len(self._buf) > self._max_line or not self._sel.select(left):
                return None
            chunk = os.read(self._stdout.fileno(), 1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        try:
            return json.loads(line)
        except ValueError:
            return None

    def stderr_tail(self) -> str:
        self._err.seek(0, os.SEEK_END)
        self._err.seek(max(0, self._err.tell() - 2000))
        return self._err.read().decode("utf-8", "replace").strip()

    def finish(self, grace_s: float) -> None:
        """Let a harness that reported everything exit by itself (its namespace empties before it
        does), then make sure the whole tree is gone."""
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def close(self) -> None:
        self._sel.close()
        self._stdout.close()
        self._err.close()


def _parse_result(line: dict | None, index: int) -> TestResult | None:
    """A harness line for test `index` as a TestResult; None if it is not exactly that."""
    if not isinstance(line, dict) or line.get("i") != index:
        return None
    try:
        status = TestStatus(line["status"])
        return TestResult(status, str(line["output"]), str(line["detail"]), float(line["elapsed_s"]))
    except (KeyError, ValueError, TypeError):
        return None


class Sandbox:
    """Isolated, pooled program runner. Thread-safe; `close()` stops the pool."""

    def __init__(self, cfg: SandboxSection):
        self.cfg = cfg
        self.python = isolation.base_python(cfg)
        # Each concurrent harness gets its own uid (as root): process limits count per uid.
        self._slots: queue.Queue[int] = queue.Queue()
        for _ in range(cfg.workers):
            self._slots.put(isolation.slot_uid(cfg.uid_base))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.backend = self._resolve_backend()

    # -- backend selection -------------------------------------------------------------------------
    @property
    def isolation_level(self) -> int:
        """How strongly programs are isolated: 2 bwrap, 1 unshare, 0 none (see `isolation.LEVELS`)."""
        return isolation.LEVELS[self.backend]

    def _resolve_backend(self) -> str:
        wanted = self.cfg.backend
        if wanted != "auto":
            problem = self._probe(wanted)
            if problem is not None:
                raise SandboxUnavailable(f"sandbox backend {wanted} does not work here: {problem}")
            isolation.announce_weak(wanted)
            return wanted
        problems = []
        for backend in AUTO_ORDER:
            problem = self._probe(backend)
            if problem is None:
                isolation.announce_weak(backend)
                return backend
            log.info("sandbox: backend %s unavailable: %s", backend, problem)
            problems.append(f"{backend}: {problem}")
        raise SandboxUnavailable(
            f"labeller.sandbox.backend=auto: no isolating backend works here ({'; '.join(problems)}); install "
            "bubblewrap, or set labeller.sandbox.backend: none to run programs with rlimits only, unisolated"
        )

    def _probe(self, backend: str) -> str | None:
        """Run a small program under `backend`; None if it worked, else why not. It imports stdlib
        modules the harness has not, so an interpreter the sandbox uid cannot read fails here."""
        if not isolation.tool_available(backend):
            return f"{backend} not found on PATH"
        uid = self._slots.get()
        try:
            (res,), died = self._run_batch(backend, uid, PROBE_PROGRAM, None, [""], [0])
        finally:
            self._slots.put(uid)
        if res is None:
            lines = [line for line in died.splitlines() if line.strip()]
            return lines[-1] if lines else "no output"
        if res.status is TestStatus.OK and res.output.strip() == "42":
            return None
        return f"{res.status.value}: {res.detail} (interpreter {self.python}; see sandbox.python)"

    # -- running -----------------------------------------------------------------------------------
    def _job(
        self,
        program: str,
        entry_point: str | None,
        inputs: list[str],
        indices: list[int],
        uid: int,
        pid_namespace: bool,
    ) -> dict:
        c = self.cfg
        return {
            "program": program,
            "entry_point": entry_point,
            "inputs": inputs,
            "indices": indices,
            "timeout_s": c.timeout_s,
            "cpu_s": c.cpu_s,
            "memory_mb": c.memory_mb,
            "max_procs": c.max_procs,
            "max_output_bytes": c.max_output_bytes,
            "max_file_bytes": c.scratch_mb * 1024 * 1024,
            "uid": uid if os.geteuid() == 0 else None,
            "pid_namespace": pid_namespace,
        }

    def _launch(self, backend: str, uid: int) -> tuple[isolation.Launch, str | None]:
        """The command for `backend`, and the host scratch directory it needs (bwrap has its own tmpfs)."""
        if backend == "bwrap":
            return isolation.bwrap_launch(self.cfg, self.python), None
        scratch = tempfile.mkdtemp(prefix="pfrl-sbx-")  # 0700: other users cannot look in
        if os.geteuid() == 0:
            os.chown(scratch, uid, uid)  # the dropped uid writes here; other slots' uids cannot read it
        if backend == "unshare":
            return isolation.unshare_launch(self.python, scratch), scratch
        return isolation.bare_launch(self.python, scratch), scratch

    def _run_batch(
        self,
        backend: str,
        uid: int,
        program: str,
        entry_point: str | None,
        inputs: list[str],
        indices: list[int],
    ) -> tuple[list[TestResult | None], str]:
        """One harness over `indices`; None for the tests it did not report (it died or stalled),
        and then the harness's last stderr words."""
        launch, scratch = self._launch(backend, uid)
        job = self._job(program, entry_point, inputs, indices, uid, launch.pid_namespace)
        results: list[TestResult | None] = [None] * len(indices)
        try:
            run = _HarnessRun(launch, job, self.cfg.max_output_bytes)
        except OSError as e:  # the isolation tool or interpreter cannot be started
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            return results, f"cannot start {launch.argv[0]}: {e.strerror}"
        try:
            wait = self.cfg.startup_timeout_s + self.cfg.timeout_s
            for k, index in enumerate(indices):
                results[k] = _parse_result(run.next_line(wait), index)
                if results[k] is None:
                    break
                wait = self.cfg.timeout_s + 2.0  # per test, with slack for the kill and reap
        finally:
            if results[-1] is not None:
                run.finish(grace_s=2.0)
            else:
                run.kill()
            died = "" if results[-1] is not None else run.stderr_tail() or "no output"
            run.close()
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        return results, died

    def _run_all(self, program: str, entry_point: str | None, inputs: list[str]) -> list[TestResult]:
        """Run every test; when a harness dies, the test it was on is `killed`, the rest rerun."""
        results: list[TestResult | None] = [None] * len(inputs)
        uid = self._slots.get()
        try:
            pending = list(range(len(inputs)))
            while pending:
                got, died = self._run_batch(
                    self.backend, uid, program, entry_point, [inputs[i] for i in pending], pending
                )
                for index, res in zip(pending, got, strict=True):
                    results[index] = res
                done = sum(r is not None for r in got)
                if done < len(pending):
                    log.debug("sandbox harness ended early: %s", died)
                    results[pending[done]] = TestResult(TestStatus.KILLED, detail="sandbox died or stalled")
                pending = pending[done + 1 :]
        finally:
            self._slots.put(uid)
        return [r for r in results if r is not None]

    def run_program(
        self,
        program: str | None,
        test_inputs: list[str],
        entry_point: str | None,
        expected: list[str] | None = None,
    ) -> list[TestResult]:
        """Run `program` on every input (one sandboxed process, per-test limits); never raises on it."""
        if program is None or not program.strip():
            results = [TestResult(TestStatus.RUNTIME_ERROR, detail="no program") for _ in test_inputs]
        elif not test_inputs:
            results = []
        else:
            results = self._run_all(program, entry_point, test_inputs)
        return check_outputs(results, expected, entry_point) if expected is not None else results

    def run_job(self, job: SandboxJob) -> list[TestResult]:
        return self.run_program(job.program, job.test_inputs, job.entry_point, job.expected)

    def run_many(self, jobs: list[SandboxJob]) -> list[list[TestResult]]:
        """Run jobs on the pool (`workers` at once), results in job order."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.cfg.workers, thread_name_prefix="sandbox")
            pool = self._pool
        return list(pool.map(self.run_job, jobs))

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
