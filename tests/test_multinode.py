"""A two-node Ray cluster on one machine (head + worker started with `ray start`), generators pinned
to one node and the learner to the other through custom resources, and a short run completing."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from e2e_config import short_run

pytestmark = pytest.mark.slow
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_node_cluster(tmp_path):
    port = _free_port()
    temp = tmp_path / "ray"  # its own temp dir: this cluster never mixes with another local Ray
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    common = ["--num-cpus=2", "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
                    "--include-dashboard=false", '--resources={"node_a": 1}', *common], check=True, env=env,
                   capture_output=True)
    try:
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
                        '--resources={"node_b": 1}', *common], check=True, env=env, capture_output=True)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


def test_run_across_two_nodes(boot_math, tmp_path, two_node_cluster):
    run_dir = tmp_path / "run"
    overrides = short_run(boot_math, run_dir, "run.iterations=1", "metrics.eval_every_steps=null",
                          "cluster.generator_resources={node_a: 1}", "cluster.learner_resources={node_b: 1}")
    cmd = [sys.executable, "-m", "pfrl.cli", "train", "--config", "configs/tiny-math.yaml",
           "--ray-address", two_node_cluster]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    placement = json.loads((run_dir / "placement.json").read_text())
    assert len(placement["nodes"]) == 2
    gen_node, learner_node = placement["generators"][0], placement["learners"][0]
    assert gen_node != learner_node
    assert "node_a" in placement["nodes"][gen_node]["resources"]
    assert "node_b" in placement["nodes"][learner_node]["resources"]
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps and steps[-1]["sync/version"] == steps[-1]["step"]  # weights crossed to the other node
