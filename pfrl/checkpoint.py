"""Whole-run checkpoints: atomic save, keep-last-K, validated load.

Layout under RUN_DIR/checkpoints/:

    step-000012/            one complete checkpoint
      controller.json       iteration, step, policy version, scheduler + pending prompts, offsets
      buffer.msgpack        the replay buffer's full state
      config.yaml           the resolved config it was written with
      learner/              DeepSpeed model/optimizer/scheduler + reference model (learner's own)
      COMPLETE              written last, inside the temporary directory
    LATEST                  name of the newest complete checkpoint

A checkpoint is built in `.tmp-step-N`, fsynced, renamed into place, then LATEST is replaced
atomically. A crash at any point leaves the previous LATEST loadable.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

from pfrl.config import PfrlConfig
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


def _injected_delay() -> None:
    """Fault injection (`pfrl bench chaos`, tests): hold a finished-but-unpublished checkpoint for
    PFRL_FAULT_CHECKPOINT_DELAY_S seconds, so a kill can land inside the write reliably."""
    delay = float(os.environ.get("PFRL_FAULT_CHECKPOINT_DELAY_S", "0"))
    if delay > 0:
        time.sleep(delay)


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
        name = f"step-{step:06d}"
        final, tmp = self.root / name, self.root / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_learner(tmp / "learner")
        (tmp / "buffer.msgpack").write_bytes(msgpack.packb(buffer_state, use_bin_type=True))
        (tmp / "config.yaml").write_text(cfg.to_yaml())
        (tmp / "controller.json").write_text(json.dumps(controller))
        (tmp / "COMPLETE").write_text(name)
        _fsync_tree(tmp)
        _injected_delay()
        if final.exists():  # re-checkpointing the same step (e.g. step then iteration boundary)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _atomic_write(self.root / "LATEST", name)
        self._prune()
        return final

    def _prune(self) -> None:
        done = sorted(p for p in self.root.glob("step-*") if (p / "COMPLETE").exists())
        for old in done[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        for tmp in self.root.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def latest(self) -> Path | None:
        pointer = self.root / "LATEST"
        if not pointer.exists():
            return None
        return self.root / pointer.read_text().strip()

    def load(self, cfg: PfrlConfig) -> tuple[Path, dict, dict]:
        """Validate and read LATEST: (its directory, controller state, buffer state)."""
        path = self.latest()
        if path is None:
            raise UserError(f"{self.root}: no checkpoint to resume from (no LATEST)")
        missing = [part for part in REQUIRED if not (path / part).exists()]
        if missing:
            raise UserError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
        check_resumable(PfrlConfig.model_validate(_load_yaml(path / "config.yaml")), cfg, path)
        controller = json.loads((path / "controller.json").read_text())
        buffer_state = msgpack.unpackb((path / "buffer.msgpack").read_bytes(), raw=False)
        return path, controller, buffer_state


def _load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def check_resumable(saved: PfrlConfig, current: PfrlConfig, where: Path) -> None:
    for section, key in RESUME_INVARIANTS:
        before, now = getattr(getattr(saved, section), key), getattr(getattr(current, section), key)
        if before != now:
            raise UserError(f"{where}: cannot resume: {section}.{key} changed from {before!r} to {now!r}")
