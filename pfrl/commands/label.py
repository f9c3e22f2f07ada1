"""`pfrl label`: pseudo-label a JSONL file of rollout groups and write DPO pairs.

Streams the input in batches (constant memory; a batch of code groups shares the sandbox pool),
writes one output row per valid input line in input order, and prints a summary. Output files are
written under a temporary name and renamed at the end, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pfrl.commands import add_config_args
from pfrl.errors import UserError

if TYPE_CHECKING:
    from pfrl.feedback.labeller import Task

BATCH_PER_WORKER = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", choices=["math", "code"], help="Task family (default: run.task of the config)."
    )
    parser.add_argument(
        "--rollouts", required=True, help="Input JSONL: id, prompt, completions, references/tests."
    )
    parser.add_argument("--out", required=True, help="Output JSONL: one labelled row per input group.")
    parser.add_argument("--pairs-out", help="Also write DPO pairs {prompt, chosen, rejected, id} here.")
    parser.add_argument(
        "--source",
        choices=["auto", "self_consistency", "reference", "ground_truth"],
        help="Label source for every group (replaces labeller.source and labeller.schedule).",
    )
    parser.add_argument(
        "--iteration",
        type=int,
        default=0,
        help="Label the file as this iteration of labeller.schedule (default 0: its first entry).",
    )
    parser.add_argument(
        "--workers", type=int, help="Override labeller.sandbox.workers (programs run at once)."
    )
    add_config_args(parser)
    parser.add_argument("--strict", action="store_true", help="A malformed input line is fatal (exit 2).")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")


@dataclass
class Summary:
    groups: int = 0
    labelled: int = 0
    pairs: int = 0
    bad_lines: int = 0
    skipped: Counter = field(default_factory=Counter)
    shares: list[float] = field(default_factory=list)
    mean_scores: list[float] = field(default_factory=list)
    agree_gt: list[float] = field(default_factory=list)

    def add(self, labelled) -> None:
        self.groups += 1
        self.pairs += len(labelled.pairs)
        if labelled.skipped is None:
            self.labelled += 1
        else:
            self.skipped[labelled.skipped] += 1
        if labelled.vote_share is not None:
            self.shares.append(labelled.vote_share)
        if labelled.scores:
            self.mean_scores.append(sum(labelled.scores) / len(labelled.scores))
        if labelled.agree_gt is not None:
            self.agree_gt.append(labelled.agree_gt)

    def lines(self, elapsed_s: float) -> list[str]:
        skipped = ", ".join(f"{k} {v}" for k, v in self.skipped.most_common()) or "none"
        out = [
            f"groups {self.groups}  labelled (with pairs) {self.labelled}  pairs {self.pairs}  bad lines {self.bad_lines}",
            f"skipped: {skipped}",
        ]
        if self.shares:
            out.append(f"mean vote share {sum(self.shares) / len(self.shares):.3f}")
        if self.mean_scores:
            out.append(
                f"mean score (right answers / pass rate) {sum(self.mean_scores) / len(self.mean_scores):.3f}"
            )
        if self.agree_gt:
            out.append(
                f"pseudo labels agreeing with ground truth {sum(self.agree_gt) / len(self.agree_gt):.3f} "
                f"({len(self.agree_gt)} groups)"
            )
        out.append(f"{elapsed_s:.1f}s, {self.groups / max(elapsed_s, 1e-9):.2f} groups/s")
        return out


def _config(args: argparse.Namespace):
    from pfrl.config import load_config

    overrides = list(args.overrides)
    if args.task:
        overrides.insert(0, f"run.task={args.task}")
    if args.source:
        # Records in a file have no iteration: one source for all, whatever the config's schedule says.
        overrides += [f"labeller.source={args.source}", "labeller.schedule=null"]
    if args.workers is not None:
        overrides.append(f"labeller.sandbox.workers={args.workers}")
    return load_config(args.config, overrides)


def _groups(path: str, iteration: int, strict: bool, summary: Summary, warn) -> Iterator:
    """Valid rollout groups in file order; malformed lines are reported (or fatal with --strict)."""
    from pfrl.feedback.records import parse_rollout_record
    from pfrl.tasks.io import iter_jsonl

    for lineno, obj in iter_jsonl(path):
        try:
            if isinstance(obj, ValueError):
                raise obj
            yield parse_rollout_record(obj, iteration)
        except ValueError as e:
            if strict:
                raise UserError(f"{path}: line {lineno}: {e}") from None
            summary.bad_lines += 1
            warn(f"{path}: line {lineno}: {e} (skipped)")


def _batches(groups: Iterator, size: int) -> Iterator[list]:
    batch = []
    for group in groups:
        batch.append(group)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _count_lines(path: str) -> int | None:
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return None  # iter_jsonl reports it as a user error


def _open_tmp(stack: ExitStack, path: str | None) -> tuple[IO[str] | None, Path | None]:
    if path is None:
        return None, None
    final = Path(path)
    tmp = final.with_name(final.name + ".tmp")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fh = stack.enter_context(tmp.open("w", encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{final}: cannot write ({e.strerror})") from None
    stack.callback(lambda: tmp.unlink(missing_ok=True))
    return fh, tmp


def _label_file(args, cfg, task: Task, out_fh, pairs_fh, summary: Summary, console) -> None:
    from rich.progress import Progress

    from pfrl.feedback.labeller import Labeller
    from pfrl.feedback.records import labelled_row, pair_rows

    size = BATCH_PER_WORKER * cfg.labeller.sandbox.workers
    total = _count_lines(args.rollouts)
    with (
        Labeller(task, cfg.labeller, cfg.run.seed) as labeller,
        Progress(console=console, transient=True, disable=args.no_progress) as progress,
    ):
        bar = progress.add_task("labelling", total=total)

        def warn(msg: str) -> None:
            console.print(msg, markup=False, highlight=False, soft_wrap=True)

        for batch in _batches(_groups(args.rollouts, args.iteration, args.strict, summary, warn), size):
            for group, labelled in zip(batch, labeller.label_many(batch), strict=True):
                summary.add(labelled)
                out_fh.write(json.dumps(labelled_row(labelled), ensure_ascii=False) + "\n")
                for row in pair_rows(group, labelled, cfg.labeller) if pairs_fh else []:
                    pairs_fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            progress.update(bar, completed=summary.groups + summary.bad_lines)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.iteration < 0:
        raise UserError(f"--iteration {args.iteration}: iterations count from 0")
    cfg = _config(args)
    task: Task = args.task or cfg.run.task
    console = Console(stderr=True)
    summary = Summary()
    start = time.perf_counter()
    with ExitStack() as stack:
        out_fh, out_tmp = _open_tmp(stack, args.out)
        pairs_fh, pairs_tmp = _open_tmp(stack, args.pairs_out)
        _label_file(args, cfg, task, out_fh, pairs_fh, summary, console)
        if summary.groups == 0:
            raise UserError(f"{args.rollouts}: no valid rollout groups")
        for fh, tmp, final in ((out_fh, out_tmp, args.out), (pairs_fh, pairs_tmp, args.pairs_out)):
            if fh is not None and tmp is not None:
                fh.close()
                tmp.replace(final)
    for line in summary.lines(time.perf_counter() - start):
        print(line)
    return 0
