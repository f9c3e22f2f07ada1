"""Fault-injection points for `pfrl bench chaos` and the resume tests.

`hold(point, run_dir)` does nothing unless the environment names that point
(`PFRL_FAULT_AT=weight_sync`, say) and the harness has armed it (the file
`RUN_DIR/faults/<point>.armed`, written once the run is far enough in). Then, the first time the run
reaches the point, it writes a marker `RUN_DIR/faults/<point>` and holds for `PFRL_FAULT_HOLD_S`
seconds, so the harness, which watches for the marker, can kill the run at exactly that place. The
marker stays, so a resumed run passes the point without holding again. Production runs never set
these variables.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

POINTS = ("learner_step", "weight_sync", "evaluation", "checkpoint_write", "checkpoint_rename",
          "iteration_boundary")


def marker(run_dir: str | Path, point: str) -> Path:
    return Path(run_dir) / "faults" / point


def hold(point: str, run_dir: str | Path) -> None:
    if os.environ.get("PFRL_FAULT_AT") != point:
        return
    path = marker(run_dir, point)
    if path.exists() or not path.with_suffix(".armed").exists():
        return
    path.write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("PFRL_FAULT_HOLD_S", "30")))
