"""Running one `pfrl` command of a bench to its end, logged, in a session of its own."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

TIMED_OUT = 124  # the exit code `timeout(1)` uses


def run_logged(cmd: list[str], log_path: Path, timeout_s: float) -> int:
    """Run `cmd` with its output in `log_path`; its exit code, or TIMED_OUT after the whole session
    (Ray's daemons with it) was killed at `timeout_s`."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return TIMED_OUT
