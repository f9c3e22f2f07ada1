"""Console helpers shared by commands: rich progress bars, with plain progress lines off a terminal.

Off a TTY (CI logs, `... > log`) rich draws nothing until a bar stops, so long work would look
hung; there, every `PLAIN_EVERY_S` seconds (and at completion) a one-line status is printed instead.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
PLAIN_EVERY_S = 15.0


class _Progress(Progress):
    def __init__(self, *columns: Any, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self._last_line: dict[TaskID, float] = {}

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        if self.console.is_terminal or self.disable:
            return
        task = self._tasks[task_id]
        now = time.monotonic()
        finished = task.total is not None and task.completed >= task.total
        if finished or now - self._last_line.get(task_id, 0.0) >= PLAIN_EVERY_S:
            self._last_line[task_id] = now
            info = task.fields.get("info", "")
            self.console.print(f"{task.description}: {task.completed:.0f}/{task.total:.0f} "
                               f"({task.elapsed or 0:.0f}s) {info}", highlight=False)


def progress_bar() -> Progress:
    return _Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )
