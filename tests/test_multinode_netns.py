"""Two Ray nodes that are really apart: the second lives in its own network namespace, joined to the
first by a veth pair, with its own address. Its loopback is its own, so a socket bound to localhost
or a wrong node IP on either side breaks the run: weights, rollouts and metrics must cross the link.
`pfrl train` runs with the generator on the far node and the learner on the near one, syncs, stops
at a step bound, and resumes from its checkpoint.

Needs root and iproute2 (CI runs as root); skipped elsewhere. Each `ray start --block` runs in its
own session and is ended by its process group, so no other Ray on the machine is touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from e2e_config import short_run

pytestmark = pytest.mark.slow
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
# A line of `ray status`'s "Active:" list (custom resources such as node_b appear elsewhere in it).
ALIVE_NODE = re.compile(r"^\s*1 node_[0-9a-f]+\s*$", re.MULTILINE)


def _netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"pfrl-probe-{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _make_far_namespace(ns: str, near_if: str, far_if: str, near_ip: str, far_ip: str) -> None:
    """A namespace whose only link is a veth to the host; its default route goes through the host,
    so it reaches the host's main address (the head's node IP) across the link."""
    _sh("ip", "netns", "add", ns)
    _sh("ip", "link", "add", near_if, "type", "veth", "peer", "name", far_if)
    _sh("ip", "link", "set", far_if, "netns", ns)
    _sh("ip", "addr", "add", f"{near_ip}/24", "dev", near_if)
    _sh("ip", "link", "set", near_if, "up")
    for cmd in (
        ["ip", "addr", "add", f"{far_ip}/24", "dev", far_if],
        ["ip", "link", "set", far_if, "up"],
        ["ip", "link", "set", "lo", "up"],
        ["ip", "route", "add", "default", "via", near_ip],
    ):
        _sh("ip", "netns", "exec", ns, *cmd)


def _wait_for_nodes(address: str, env: dict, want: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run([RAY, "status", f"--address={address}"], env=env, capture_output=True, text=True)
        if len(ALIVE_NODE.findall(out.stdout)) >= want:
            return
        time.sleep(2)
    pytest.fail(f"only some of {want} Ray nodes joined {address}")


def _end(proc: subprocess.Popen) -> None:
    """SIGTERM to the `ray start --block` group (it stops its node), SIGKILL what is left."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def far_node_cluster():
    if not _netns_available():
        pytest.skip("needs root and iproute2 (network namespaces)")
    import ray

    tag = os.getpid() % 100_000
    ns, near_if, far_if = f"pfrl-far-{tag}", f"pfn{tag}", f"pff{tag}"
    subnet = f"10.213.{20 + tag % 200}"
    head_ip, port = ray.util.get_node_ip_address(), 20_000 + tag % 20_000
    temp = tempfile.mkdtemp(prefix="pfrl-ray-", dir="/tmp")  # Ray's socket paths stay under 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    common = ["--num-cpus=2", "--disable-usage-stats", "--block"]
    procs: list[subprocess.Popen] = []
    try:
        _make_far_namespace(ns, near_if, far_if, f"{subnet}.1", f"{subnet}.2")
        head = [RAY, "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false",
                '--resources={"node_a": 1}', *common]
        procs.append(subprocess.Popen(head, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        _wait_for_nodes(f"{head_ip}:{port}", env, 1)
        far = ["ip", "netns", "exec", ns, RAY, "start", f"--address={head_ip}:{port}",
               f"--node-ip-address={subnet}.2", '--resources={"node_b": 1}', *common]
        procs.append(subprocess.Popen(far, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        _wait_for_nodes(f"{head_ip}:{port}", env, 2)
        yield f"{head_ip}:{port}", env, f"{subnet}.2"
    finally:
        for proc in reversed(procs):
            _end(proc)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # takes the veth pair with it
        shutil.rmtree(temp, ignore_errors=True)


def _train(address: str, env: dict, overrides: list[str], *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pfrl.cli", "train", "--config", "configs/tiny-math.yaml",
           "--ray-address", address, *flags]
    for o in overrides:
        cmd += ["--set", o]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def test_generator_across_a_real_link_syncs_and_resumes(boot_math, tmp_path, far_node_cluster):
    address, env, far_ip = far_node_cluster
    run_dir = tmp_path / "run"
    overrides = short_run(boot_math, run_dir, "run.iterations=1", "metrics.eval_every_steps=null",
                          "cluster.generator_resources={node_b: 1}", "cluster.learner_resources={node_a: 1}")
    first = _train(address, env, [*overrides, "run.max_steps=2"])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    placement = json.loads((run_dir / "placement.json").read_text())
    ips = {node: info["ip"] for node, info in placement["nodes"].items()}
    assert [ips[n] for n in placement["generators"]] == [far_ip]  # the generator is across the link
    assert all(ips[n] != far_ip for n in placement["learners"])

    second = _train(address, env, [*overrides, "run.max_steps=4"], "--resume")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]  # resumed at 3: no step lost or written twice
    assert steps[-1]["sync/version"] == 4  # the last weights crossed to the far generator
