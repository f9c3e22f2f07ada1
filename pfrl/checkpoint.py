"""Whole-run checkpoints: atomic save, keep-last-K, validated load.

Layout under RUN_DIR/checkpoints/:

    step-000012/            one complete checkpoint
    step-000012.1/          the same step saved again (e.g. after the step, then at the iteration end)
      controller.json       iteration, step, policy version, scheduler + pending prompts, offsets
      buffer.msgpack        the replay buffer's full state
      config.yaml           the resolved config it was written with
      learner/              DeepSpeed model/optimizer/scheduler + reference model (learner's own)
      COMPLETE              written last, inside the temporary directory
    LATEST                  name of the newest complete checkpoint

A checkpoint is built in `.tmp-NAME`, fsynced, renamed into place, then LATEST is replaced
atomically. Nothing LATEST may name is ever removed or overwritten before LATEST moves on: a step
saved twice gets a new revision name instead of replacing the first copy. So a crash at any instant
leaves LATEST naming a complete checkpoint; should LATEST still be unusable (a torn or hand-edited
file), `load` falls back to the newest complete checkpoint with a warning. A write that fails (full
disk, unwritable directory) raises `CheckpointWriteError` and leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import msgpack

from pfrl import faults
from pfrl.config import PfrlConfig
from pfrl.console import console
from pfrl.errors import UserError

# Changing any of these makes a run impossible to continue (different prompts, model or world).
RESUME_INVARIANTS = (
    ("run", "task"),
    ("run", "seed"),
    ("run", "iterations"),
    ("model", "path"),
    ("data", "train_file"),
    ("data", "prompts_per_iteration"),
    ("data", "shuffle"),
    ("learner", "num_learners"),
    ("learner", "zero_stage"),
)
REQUIRED = ("controller.json", "buffer.msgpack", "config.yaml", "learner", "COMPLETE")
_NAME = re.compile(r"step-(\d{6})(?:\.(\d+))?")


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (full disk, unwritable run directory); the previous one is intact."""


def _order(name: str) -> tuple[int, int] | None:
    """(step, revision) of a checkpoint directory name, None for anything else."""
    m = _NAME.fullmatch(name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class CheckpointStore:
    def __init__(self, run_dir: str | Path, keep_last: int):
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def save(
        self, step: int, controller: dict, buffer_state: dict, cfg: PfrlConfig, save_learner: Callable[[Path], None]
    ) -> Path:
        """Write a complete checkpoint for `step`; `save_learner(dir)` writes the learner's part."""
        name = self._free_name(step)
        final, tmp = self.root / name, self.root / f".tmp-{name}"
        try:
            self._write(tmp, name, controller, buffer_state, cfg, save_learner, self.root.parent)
            faults.hold("checkpoint_rename", self.root.parent)
            os.replace(tmp, final)
            _atomic_write(self.root / "LATEST", name)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            previous = self.latest()
            kept = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint"
            raise CheckpointWriteError(f"{self.root}: cannot write checkpoint {name} ({e}); {kept}") from None
        self._prune()
        return final

    def _free_name(self, step: int) -> str:
        """`step-N`, or `step-N.R` with the next free revision when step N was saved before."""
        base = f"step-{step:06d}"
        taken = [o[1] for p in self.root.glob(f"{base}*") if (o := _order(p.name)) is not None and o[0] == step]
        return base if not taken else f"{base}.{max(taken) + 1}"

    @staticmethod
    def _write(tmp: Path, name: str, controller: dict, buffer_state: dict, cfg: PfrlConfig,
               save_learner: Callable[[Path], None], run_dir: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_learner(tmp / "learner")
        faults.hold("checkpoint_write", run_dir)
        (tmp / "buffer.msgpack").write_bytes(msgpack.packb(buffer_state, use_bin_type=True))
        (tmp / "config.yaml").write_text(cfg.to_yaml())
        (tmp / "controller.json").write_text(json.dumps(controller))
        (tmp / "COMPLETE").write_text(name)
        _fsync_tree(tmp)

    def _complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        found = [(o, p) for p in self.root.glob("step-*") if (o := _order(p.name)) and _is_complete(p)]
        return [p for _, p in sorted(found)]

    def _prune(self) -> None:
        latest = self.latest()
        for old in self._complete()[: -self.keep_last]:
            if old != latest:
                shutil.rmtree(old, ignore_errors=True)
        for tmp in self.root.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def latest(self) -> Path | None:
        """What LATEST names; None when the run has no published checkpoint yet."""
        pointer = self.root / "LATEST"
        if not pointer.exists():
            return None
        return self.root / pointer.read_text().strip()

    def _resolve(self) -> Path:
        """LATEST when it names a complete checkpoint, else the newest complete one (warned)."""
        path = self.latest()
        if path is None:
            raise UserError(f"{self.root}: no checkpoint to resume from (no LATEST)")
        if _is_complete(path):
            return path
        complete = self._complete()
        if not complete:
            missing = [part for part in REQUIRED if not (path / part).exists()]
            raise UserError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
        console.print(f"[yellow]{self.root}/LATEST names {path.name}, which is not a complete checkpoint; "
                      f"resuming from the newest complete one, {complete[-1].name}")
        return complete[-1]

    def load(self, cfg: PfrlConfig) -> tuple[Path, dict, dict]:
        """Validate and read the checkpoint to resume from: (its directory, controller state, buffer state)."""
        path = self._resolve()
        check_resumable(PfrlConfig.model_validate(_load_yaml(path / "config.yaml")), cfg, path)
        controller = json.loads((path / "controller.json").read_text())
        buffer_state = msgpack.unpackb((path / "buffer.msgpack").read_bytes(), raw=False)
        return path, controller, buffer_state


def _is_complete(path: Path) -> bool:
    return all((path / part).exists() for part in REQUIRED)


def _load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def check_resumable(saved: PfrlConfig, current: PfrlConfig, where: Path) -> None:
    for section, key in RESUME_INVARIANTS:
        before, now = getattr(getattr(saved, section), key), getattr(getattr(current, section), key)
        if before != now:
            raise UserError(f"{where}: cannot resume: {section}.{key} changed from {before!r} to {now!r}")
