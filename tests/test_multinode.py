"""A two-node Ray cluster on one machine (head + worker started with `ray start`), generators pinned
to one node and the learner to the other through custom resources, and a short run completing."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from e2e_config import short_run

from pfrl.runtime import free_port

pytestmark = pytest.mark.slow
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


@pytest.fixture
def two_node_cluster():
    import ray

    ip, port = ray.util.get_node_ip_address(), free_port()
    # A short temp dir (Ray's socket paths must stay under the 107-byte limit), and no token auth:
    # Ray 2.60's `ray start` otherwise expects every node and driver to share a generated token.
    temp = tempfile.mkdtemp(prefix="pfrl-ray-", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    common = ["--num-cpus=2", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false",
                        '--resources={"node_a": 1}', *common], check=True, env=env, capture_output=True)
        subprocess.run([RAY, "start", f"--address={ip}:{port}", '--resources={"node_b": 1}', *common],
                       check=True, env=env, capture_output=True)
        yield f"{ip}:{port}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


def test_run_across_two_nodes(boot_math, tmp_path, two_node_cluster):
    address, env = two_node_cluster
    run_dir = tmp_path / "run"
    # The engine in vLLM's own processes, as a tensor-parallel engine on a cluster runs it.
    overrides = short_run(boot_math, run_dir, "run.iterations=1", "metrics.eval_every_steps=null",
                          "generator.engine_in_process=false",
                          "cluster.generator_resources={node_a: 1}", "cluster.learner_resources={node_b: 1}")
    cmd = [sys.executable, "-m", "pfrl.cli", "train", "--config", "configs/tiny-math.yaml",
           "--ray-address", address]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    placement = json.loads((run_dir / "placement.json").read_text())
    assert len(placement["nodes"]) == 2
    gen_node, learner_node = placement["generators"][0], placement["learners"][0]
    assert gen_node != learner_node
    assert "node_a" in placement["nodes"][gen_node]["resources"]
    assert "node_b" in placement["nodes"][learner_node]["resources"]
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps and steps[-1]["sync/version"] == steps[-1]["step"]  # weights crossed to the other node
