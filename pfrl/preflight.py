"""Checks that run before any actor starts: every user mistake ends here in one line (exit 2).

A missing model directory, an unreadable or malformed data file (with line numbers), empty prompts
and prompts that leave no room to generate within the context are found now, not an engine start
and ten minutes later. A handful of bad records is skipped and counted (`data.max_bad_records`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pfrl.config import PfrlConfig
from pfrl.console import console
from pfrl.errors import UserError
from pfrl.hub import fetch_model, is_hub_id
from pfrl.model_dir import check_model_dir
from pfrl.prompting import render_problems
from pfrl.tasks.io import ProblemFile
from pfrl.tasks.loaders import load_problems, source_exists
from pfrl.types import Problem


@dataclass
class RunInputs:
    model_path: str
    train: list[Problem]
    heldout: list[Problem]
    skipped: int
    sandbox_backend: str | None = None  # code runs: the backend programs will run under


def resolve_model(cfg: PfrlConfig) -> str:
    """The policy's model directory; a hub id is fetched and the tiny bootstrap model built on first use."""
    if cfg.model.path is not None:
        path = Path(cfg.model.path)
        if is_hub_id(cfg.model.path):
            path = fetch_model(cfg.model.path, cfg.model.hub_cache_dir)
        check_model_dir(path, name=f"model.path={cfg.model.path}")
        return str(path.resolve())
    path = Path(cfg.model.bootstrap_dir) / f"tiny-{cfg.run.task}-seed{cfg.run.seed}"
    if not _bootstrap_current(path, cfg.run.task):
        _bootstrap(cfg.run.task, path, cfg.run.seed)
    return str(path.resolve())


def _bootstrap_current(path: Path, task: str) -> bool:
    """A cached bootstrap built with today's `BootstrapSpec` (a pfrl upgrade that changes the task or
    the SFT recipe, e.g. the code model's habit, must not leave users on the old model)."""
    import json

    from pfrl.bootstrap import BootstrapSpec, task_spec

    meta = path / "pfrl_bootstrap.json"
    if not meta.is_file():
        return False
    built = json.loads(meta.read_text()).get("spec") or {}
    if task_spec(built, task) == task_spec(BootstrapSpec(), task):
        return True
    console.print(f"{path} was built with another bootstrap spec than this pfrl's: rebuilding it")
    return False


def _bootstrap(task: str, path: Path, seed: int) -> None:
    from pfrl.bootstrap import BootstrapSpec, bootstrap
    from pfrl.console import progress_bar

    console.print(f"model.path is unset: building the tiny {task} model into {path} (once)")
    spec = BootstrapSpec()
    with progress_bar() as bar:
        task_id = bar.add_task(f"bootstrap {task}", total=spec.steps, info="")
        bootstrap(task, path, seed, spec, lambda s, loss: bar.update(task_id, completed=s + 1, info=f"loss {loss:.3f}"))


def _too_long(problems: list[Problem], model_path: str, room: int, max_length: int) -> set[str]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    # Counted as every consumer encodes a prompt (pfrl.prompting.prompt_ids): with the BOS, if any.
    lengths = tok([p.prompt for p in problems], add_special_tokens=True)["input_ids"]
    return {p.id for p, ids in zip(problems, lengths, strict=True) if len(ids) + room > max_length}


def _load(path: str, cfg: PfrlConfig, model_path: str) -> ProblemFile:
    loaded = load_problems(path, cfg.data.fields, cfg.data.max_bad_records)
    loaded.problems = render_problems(loaded.problems, cfg.model, model_path)  # what the model reads, once
    room = min(cfg.generator.max_tokens, 16)  # a prompt must leave at least this much to generate
    long_ids = _too_long(loaded.problems, model_path, room, cfg.model.max_length)
    if long_ids:
        total = len(loaded.problems) + len(loaded.bad)
        bad = len(loaded.bad) + len(long_ids)
        if bad > cfg.data.max_bad_records * total:
            first = next(p.id for p in loaded.problems if p.id in long_ids)
            raise UserError(
                f"{path}: problem {first[:60]!r}: prompt longer than the context (model.max_length="
                f"{cfg.model.max_length}) ({len(long_ids)} such prompts)"
            )
        loaded.problems = [p for p in loaded.problems if p.id not in long_ids]
        loaded.bad += [(0, f"prompt too long: {pid}") for pid in sorted(long_ids)]
    if loaded.bad:
        console.print(f"{path}: skipped {len(loaded.bad)} bad records (first: line {loaded.bad[0][0]}: {loaded.bad[0][1]})")
    return loaded


def check_sandbox(cfg: PfrlConfig) -> str | None:
    """The sandbox backend a code run's programs will run under (None for math). A backend that does
    not work here, or `auto` with nothing that isolates, stops the run now, before any actor; a
    weaker backend prints its one console line here, on the driver."""
    if cfg.run.task != "code":
        return None
    from pfrl.feedback.sandbox import Sandbox

    with Sandbox(cfg.labeller.sandbox) as sandbox:
        return sandbox.backend


def check_inputs(cfg: PfrlConfig) -> RunInputs:
    backend = check_sandbox(cfg)
    model_path = resolve_model(cfg)
    train_file = cfg.data.train_file or str(Path(model_path) / "data" / "train.jsonl")
    heldout_file = cfg.data.heldout_file or str(Path(model_path) / "data" / "heldout.jsonl")
    train = _load(train_file, cfg, model_path)
    heldout = _load(heldout_file, cfg, model_path) if source_exists(heldout_file) or cfg.data.heldout_file else None
    if cfg.metrics.eval_every_steps and heldout is None:
        raise UserError(f"metrics.eval_every_steps is set but {heldout_file} does not exist")
    return RunInputs(model_path, train.problems, heldout.problems if heldout else [], len(train.bad), backend)
