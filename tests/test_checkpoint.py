"""Checkpoint store: every instant of a save leaves a resumable LATEST; failed writes keep the previous one."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pfrl.checkpoint import CheckpointStore, CheckpointWriteError
from pfrl.config import PfrlConfig


def _save(store, step, marker="w"):
    return store.save(step, {"step": step, "marker": marker}, {"pairs": []}, PfrlConfig(),
                      lambda d: (d.mkdir(), (d / "weights").write_text(marker)))


class Crash(Exception):
    """Stands for the process dying at one filesystem operation."""


def _crash_at(monkeypatch, k):
    """Make the k-th rename/removal inside pfrl.checkpoint raise Crash."""
    import pfrl.checkpoint as ck

    calls = {"n": 0}

    def wrap(fn):
        def inner(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == k:
                raise Crash(fn.__name__)
            return fn(*args, **kwargs)
        return inner

    monkeypatch.setattr(ck.os, "replace", wrap(os.replace))
    monkeypatch.setattr(ck.shutil, "rmtree", wrap(shutil.rmtree))
    return calls


@pytest.mark.parametrize("k", range(1, 5))
def test_a_crash_at_any_point_of_resaving_a_step_leaves_a_resumable_latest(tmp_path, monkeypatch, k):
    """The same step saved twice (after the step, then at the iteration end) used to remove the
    first copy before renaming the second over it: a crash in between left LATEST naming nothing."""
    store = CheckpointStore(tmp_path, keep_last=1)
    _save(store, 3, "first")
    calls = _crash_at(monkeypatch, k)
    try:
        _save(store, 3, "second")
    except Crash:
        pass
    monkeypatch.undo()
    if calls["n"] < k:
        pytest.skip(f"a save makes only {calls['n']} renames/removals")
    path, controller, _ = CheckpointStore(tmp_path, keep_last=1).load(PfrlConfig())
    assert controller["step"] == 3 and controller["marker"] in ("first", "second")
    assert (path / "learner" / "weights").read_text() == controller["marker"]


def test_resaving_a_step_publishes_a_new_revision_and_prunes_the_old(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=1)
    assert _save(store, 3).name == "step-000003"
    assert _save(store, 3, "again").name == "step-000003.1"
    assert _save(store, 4).name == "step-000004"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-000004"]


def test_broken_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path, capsys):
    store = CheckpointStore(tmp_path, keep_last=3)
    _save(store, 1)
    _save(store, 2, "two")
    (tmp_path / "checkpoints" / "LATEST").write_text("step-000009")
    path, controller, _ = store.load(PfrlConfig())
    assert path.name == "step-000002" and controller["marker"] == "two"
    assert "not a complete checkpoint" in " ".join(capsys.readouterr().err.split())


def test_a_failed_write_is_one_clear_error_and_keeps_the_previous_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=2)
    _save(store, 1)

    def disk_full(d):
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointWriteError, match="cannot write checkpoint step-000002 .*No space left on device.*"
                       "previous checkpoint step-000001 is intact"):
        store.save(2, {"step": 2}, {}, PfrlConfig(), disk_full)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    assert store.load(PfrlConfig())[1]["step"] == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories anyway")
def test_an_unwritable_run_dir_is_one_clear_error(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=2)
    _save(store, 1)
    (tmp_path / "checkpoints").chmod(0o500)
    try:
        with pytest.raises(CheckpointWriteError, match="previous checkpoint step-000001 is intact"):
            _save(store, 2)
    finally:
        (tmp_path / "checkpoints").chmod(0o700)


_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pfrl.checkpoint import CheckpointStore
    from pfrl.config import PfrlConfig

    store = CheckpointStore(sys.argv[1], keep_last=1)
    def learner(d):
        d.mkdir()
        (d / "weights").write_text("w")
    store.save(5, {"step": 5}, {"pairs": []}, PfrlConfig(), learner)
    # arm the fault point: the second save holds right before its rename
    (Path(sys.argv[1]) / "faults").mkdir()
    (Path(sys.argv[1]) / "faults" / "checkpoint_rename.armed").touch()
    store.save(5, {"step": 5, "again": True}, {"pairs": []}, PfrlConfig(), learner)
""")


def test_kill_9_inside_a_second_save_of_the_same_step_resumes(tmp_path):
    """A real kill while the second copy of a step waits to be published (the fault-injection
    point sits right before the rename, where the old code had already removed the first copy)."""
    env = {**os.environ, "PFRL_FAULT_AT": "checkpoint_rename", "PFRL_FAULT_HOLD_S": "120"}
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(tmp_path)], env=env, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "faults" / "checkpoint_rename").exists():
            assert proc.poll() is None and time.time() < deadline, "the save never reached its fault point"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    path, controller, _ = CheckpointStore(tmp_path, keep_last=1).load(PfrlConfig())
    assert path.name == "step-000005" and controller == {"step": 5}
