"""Before any actor starts: is `run.dir` the same directory on every node of the Ray cluster?

Checkpoints are written by the learner ranks and read back on resume wherever the driver runs, so
`run.dir` must be storage every node mounts (NFS, Lustre, a shared volume). The driver writes a probe
file with a random token into `run.dir`; a zero-CPU Ray task pinned to each alive node (hard
`NodeAffinitySchedulingStrategy`) reads it back. A node that reads nothing, or another token (a local
directory of the same name), is named in a one-line error before minutes go into engine start-up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pfrl.errors import UserError

PROBE_PREFIX = ".pfrl-node-check-"
# One zero-CPU task reading one small file per node: a node slower than this is not usable anyway.
PROBE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class NodeRead:
    """What one node found at the probe path: its text, or why it could not read it."""

    node: str  # "IP (node id prefix)": what a user can find in `ray status`
    text: str | None
    error: str = ""


def read_probe(path: str) -> tuple[str | None, str]:
    """Runs on a node: the probe's text, or None and the reason."""
    try:
        return Path(path).read_text(), ""
    except OSError as e:
        return None, e.strerror or type(e).__name__


def read_on_every_node(path: str, timeout_s: float) -> list[NodeRead]:
    """Read `path` once on each alive node of the connected Ray cluster."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(read_probe)
    names, refs = [], []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        names.append(f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})")
        strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
        refs.append(task.options(scheduling_strategy=strategy).remote(path))
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    done = set(ready)
    out = []
    for name, ref in zip(names, refs, strict=True):
        if ref in done:
            out.append(NodeRead(name, *ray.get(ref)))
        else:
            out.append(NodeRead(name, None, f"no answer within {timeout_s:.0f} s"))
    return out


def check_run_dir_shared(
    run_dir: str | Path,
    timeout_s: float = PROBE_TIMEOUT_S,
    read_all: Callable[[str, float], list[NodeRead]] = read_on_every_node,
) -> int:
    """Raise a one-line UserError naming the first node that cannot see `run_dir`'s probe file;
    returns the number of nodes checked. The probe is removed either way."""
    root = Path(run_dir).resolve()  # workers start in other directories than the driver
    root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = root / f"{PROBE_PREFIX}{token}"
    probe.write_text(token)
    try:
        reads = read_all(str(probe), timeout_s)
    finally:
        probe.unlink(missing_ok=True)
    for r in reads:
        if r.text != token:
            why = r.error or "found a different file (a local directory of the same name?)"
            raise UserError(
                f"run.dir {root} is not visible from node {r.node} ({why}): put run.dir on storage every node mounts"
            )
    return len(reads)
