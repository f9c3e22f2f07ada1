"""scripts/slurm/pfrl.sbatch run by bash against stand-ins for srun, scontrol, ray and pfrl (there
is no Slurm here): the Ray head starts on the first node, every other node joins it, and
`pfrl train` runs on the head against that address with the user's arguments."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIMS = {
    "scontrol": 'printf "%s\\n" gpu-a gpu-b gpu-c\n',
    # srun OPTIONS -w NODE CMD...: log "NODE: CMD" and run CMD as if on that node.
    "srun": (
        "node=\nwhile [[ $# -gt 0 ]]; do case $1 in -w) node=$2; shift 2;; -*) shift;; *) break;; esac; done\n"
        'echo "$node: $*" >> "$SHIM_LOG"\nexec "$@"\n'
    ),
    "hostname": "echo 10.1.2.3\n",
    "nvidia-smi": "exit 1\n",
    # ray status: one node line per `ray start` logged so far.
    "ray": (
        'if [[ $1 == status ]]; then grep -o "ray start" "$SHIM_LOG" | sed "s/.*/ 1 node_0a1b2c/"; exit 0; fi\n'
        'echo "ray $*" >> "$SHIM_LOG"\n'
    ),
    "pfrl": 'echo "pfrl $*" >> "$SHIM_LOG"\n',
}


def test_sbatch_starts_ray_on_every_node_and_trains_on_the_head(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in SHIMS.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_dir / name).chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    log = tmp_path / "calls.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SHIM_LOG": str(log),
        "SLURM_JOB_NODELIST": "gpu-[a-c]",
        "SLURM_SUBMIT_DIR": str(ROOT),
        "SLURM_CPUS_ON_NODE": "16",
        "PFRL_VENV": str(venv),
    }
    cmd = [
        "bash",
        str(ROOT / "scripts/slurm/pfrl.sbatch"),
        "configs/multinode-math.yaml",
        "--set",
        "run.dir=/shared/r 1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    starts = [c for c in calls if c.startswith("ray start")]
    assert starts[0].startswith(
        "ray start --head --node-ip-address=10.1.2.3 --port=6379 --num-cpus=16 --num-gpus=0"
    )
    assert (
        sorted(starts[1:])
        == ["ray start --address=10.1.2.3:6379 --num-cpus=16 --num-gpus=0 --disable-usage-stats --block"] * 2
    )
    nodes = [c.split(":")[0] for c in calls if ": bash -c" in c and "ray start" in c]
    assert sorted(nodes) == ["gpu-a", "gpu-b", "gpu-c"] and nodes[0] == "gpu-a"
    assert calls[-1] == (
        "pfrl train --config configs/multinode-math.yaml --ray-address 10.1.2.3:6379 --set run.dir=/shared/r 1"
    )
    assert any(c.startswith("gpu-a: bash -c") and "pfrl train" in c for c in calls)  # on the head node
