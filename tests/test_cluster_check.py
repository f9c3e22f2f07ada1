"""`run.dir` visibility from every Ray node: a real check on the local Ray, and the reporting of a
node that cannot see the probe (a fake per-node reader: one machine cannot unmount a directory for
one Ray node only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfrl import cluster_check
from pfrl.cluster_check import NodeRead, check_run_dir_shared
from pfrl.errors import UserError


def _fake(answers):
    """A reader that answers per node: "same" reads the real probe, anything else is what it sees."""
    seen: list[str] = []

    def read_all(path: str, _timeout_s: float) -> list[NodeRead]:
        seen.append(path)
        return [
            NodeRead(
                node,
                Path(path).read_text() if what == "same" else None if what is None else what,
                "" if what is not None else "No such file or directory",
            )
            for node, what in answers
        ]

    return read_all, seen


def test_the_node_that_cannot_see_run_dir_is_named(tmp_path):
    read_all, seen = _fake([("10.0.0.1 (aaaa)", "same"), ("10.0.0.2 (bbbb)", None)])
    with pytest.raises(UserError, match=r"not visible from node 10\.0\.0\.2 \(bbbb\) \(No such file") as e:
        check_run_dir_shared(tmp_path / "run", 5.0, read_all)
    assert "\n" not in str(e.value)
    assert not Path(seen[0]).exists()  # the probe is removed even when the check fails


def test_a_local_directory_of_the_same_name_is_caught(tmp_path):
    read_all, _ = _fake([("10.0.0.1 (aaaa)", "same"), ("10.0.0.3 (cccc)", "someone else's token")])
    with pytest.raises(UserError, match=r"10\.0\.0\.3 \(cccc\).*different file"):
        check_run_dir_shared(tmp_path / "run", 5.0, read_all)


def test_every_node_seeing_the_probe_passes(tmp_path):
    read_all, seen = _fake([("a", "same"), ("b", "same")])
    assert check_run_dir_shared(tmp_path / "run", 5.0, read_all) == 2
    assert Path(seen[0]).parent == (tmp_path / "run").resolve() and not Path(seen[0]).exists()


@pytest.mark.slow
def test_local_ray_node_reads_the_probe(ray_local, tmp_path):
    assert check_run_dir_shared(tmp_path / "run", 60.0) == 1
    # The same pinned read of a file the driver never wrote reports the node and the reason.
    (read,) = cluster_check.read_on_every_node(str(tmp_path / "absent"), 60.0)
    assert read.text is None and read.error == "No such file or directory"
