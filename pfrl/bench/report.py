"""`--json OUT` for every `pfrl bench` command: one flat JSON object a script can read.

Each bench builds a dict of its figures (numbers, ratios, a few strings naming the settings) and
hands it to `write_json`, which adds what the figures were measured on (bench name, UTC time,
host, CPU count, accelerator) so two files can be compared without the console output. The keys
of each bench are listed in docs/benchmarks.md ("Figures a script can read").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any


def add_json_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json", dest="json_out", type=_json_path, default=None, metavar="OUT",
        help="Also write the figures to OUT as JSON.",
    )


def _json_path(value: str) -> str:
    """Checked when parsed, so a bench that runs for minutes does not fail at its last line."""
    parent = Path(value).parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"{value}: directory {parent} does not exist or is not writable")
    return value


def machine() -> dict[str, Any]:
    """What the figures were measured on (the accelerator only if torch is already loaded)."""
    import sys

    info: dict[str, Any] = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return info


def write_json(out: str | os.PathLike | None, bench: str, figures: dict[str, Any]) -> None:
    """Write `figures` (plus bench name, time and machine) to `out`; nothing when `out` is None.

    Written to a temporary name then renamed, so a reader polling for OUT never sees half a file."""
    if out is None:
        return
    from pfrl.errors import UserError

    record = {"bench": bench, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **machine(), **figures}
    record = _finite(record)
    path = Path(out)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"--json {out}: cannot write ({e.strerror or e})") from None


def _finite(value: Any) -> Any:
    """NaN and infinities (a ratio over a zero time) as null: strict JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
