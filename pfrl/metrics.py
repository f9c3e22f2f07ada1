"""Meters and sinks: one record per learner step to JSONL, TensorBoard, Prometheus, wandb, console.

`RUN_DIR/metrics.jsonl` is the source of truth (`pfrl status` and `pfrl plot` read it). Its line
count is stored in checkpoints; on resume the file is cut back to it so no step is written twice.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from pathlib import Path
from typing import Any

from pfrl.config import MetricsSection
from pfrl.errors import UserError


class RateMeter:
    """Events per second over a sliding window of wall time."""

    def __init__(self, window_s: float = 30.0):
        self.window_s = window_s
        self._events: deque[tuple[float, float]] = deque()

    def add(self, amount: float, now: float | None = None) -> None:
        self._events.append((now if now is not None else time.time(), amount))

    def rate(self, now: float | None = None) -> float:
        now = now if now is not None else time.time()
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()
        if not self._events:
            return 0.0
        span = max(now - self._events[0][0], 1e-3)
        return sum(a for _, a in self._events) / span


class JsonlSink:
    def __init__(self, path: Path):
        self.path = path
        self.path.touch(exist_ok=True)
        self.lines = sum(1 for _ in path.open())
        self._fh = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        self.lines += 1

    def truncate(self, lines: int) -> None:
        self._fh.close()
        kept = self.path.read_text().splitlines(keepends=True)[:lines]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, self.path)
        self.lines = len(kept)
        self._fh = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        self._fh.close()


class TensorBoardSink:
    def __init__(self, logdir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(logdir))

    def write(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if isinstance(value, int | float) and key not in ("step", "time"):
                self._writer.add_scalar(key, value, record["step"])
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class PrometheusSink:
    """Gauges named pfrl_<key> (non-alphanumerics become _), served on metrics.port."""

    def __init__(self, port: int):
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self._registry = CollectorRegistry()
        self._gauge_cls = Gauge
        self._gauges: dict[str, Any] = {}
        try:
            self._server, _ = start_http_server(port, registry=self._registry)
        except OSError as e:
            raise UserError(f"metrics.port={port}: cannot serve Prometheus metrics ({e.strerror})") from None

    def write(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if not isinstance(value, int | float):
                continue
            name = "pfrl_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)
            if name not in self._gauges:
                self._gauges[name] = self._gauge_cls(name, key, registry=self._registry)
            self._gauges[name].set(value)

    def close(self) -> None:
        self._server.shutdown()


class WandbSink:
    def __init__(self, project: str, run_dir: Path, config: dict):
        try:
            import wandb
        except ImportError:
            raise UserError("metrics.wandb_project is set but wandb is not installed (pip install wandb)") from None
        # The run id lives in RUN_DIR, so `pfrl train --resume` continues the same wandb run.
        id_file = run_dir / "wandb_run_id"
        if not id_file.exists():
            id_file.write_text(wandb.util.generate_id())
        run_id = id_file.read_text().strip()
        self._run = wandb.init(project=project, dir=str(run_dir), config=config, id=run_id, resume="allow")

    def write(self, record: dict[str, Any]) -> None:
        self._run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def close(self) -> None:
        self._run.finish()


class MetricsLogger:
    """Fans one record per step out to every configured sink."""

    def __init__(self, cfg: MetricsSection, run_dir: Path, resolved_config: dict):
        self.jsonl = JsonlSink(run_dir / "metrics.jsonl")
        self.sinks: list[Any] = [self.jsonl]
        if cfg.tensorboard:
            self.sinks.append(TensorBoardSink(run_dir / "tb"))
        if cfg.port is not None:
            self.sinks.append(PrometheusSink(cfg.port))
        if cfg.wandb_project:
            self.sinks.append(WandbSink(cfg.wandb_project, run_dir, resolved_config))

    def log(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise UserError(f"{run_dir}: no metrics.jsonl (not a pfrl run directory?)")
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    return out
