"""Imports run one way: `pfrl` core <- `learner` <- `actors` <- the driver.

Every import counts, function-local ones included: heavy imports stay inside functions so the CLI
starts fast, but a module that imports upward at call time still depends on the layer above it.
Each module's layer is named in `LAYERS` (longest prefix wins); a module no entry covers fails the
test, so a new top-level module has to be placed on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pfrl", "learner", "actors")
CORE, LEARNER, ACTORS, DRIVER = 0, 1, 2, 3
NAMES = {CORE: "core", LEARNER: "learner", ACTORS: "actors", DRIVER: "driver"}

# Module (or package prefix) -> layer. The driver starts Ray, places actors and runs commands; the
# core is what actors and learner ranks build on, importable without either.
LAYERS: dict[str, int] = {
    "learner": LEARNER,
    "actors": ACTORS,
    # driver
    "pfrl.cli": DRIVER,
    "pfrl.commands": DRIVER,
    "pfrl.bench": DRIVER,
    "pfrl.controller": DRIVER,
    "pfrl.training": DRIVER,
    "pfrl.issue_policy": DRIVER,
    "pfrl.generator_pool": DRIVER,
    "pfrl.learner_thread": DRIVER,
    "pfrl.rollouts": DRIVER,
    "pfrl.pair_intake": DRIVER,
    "pfrl.run_state": DRIVER,
    "pfrl.samples": DRIVER,  # the run's samples.jsonl, written by the controller's run state
    "pfrl.fleet": DRIVER,
    "pfrl.learner_group": DRIVER,
    "pfrl.cluster_check": DRIVER,  # probes every Ray node with pinned tasks
    "pfrl.models": DRIVER,  # `pfrl models get`: builds a model directory with the learner's writer
    "pfrl.chaos": DRIVER,
    # core: subpackages
    "pfrl.feedback": CORE,
    "pfrl.tasks": CORE,
    "pfrl.transport": CORE,
    # core: top-level modules, one by one
    "pfrl.__init__": CORE,
    "pfrl.bootstrap": CORE,
    "pfrl.buffer": CORE,
    "pfrl.checkpoint": CORE,
    "pfrl.config": CORE,
    "pfrl.console": CORE,
    "pfrl.errors": CORE,
    "pfrl.evaluation": CORE,
    "pfrl.faults": CORE,  # fault-injection points the checkpoint store and the learner thread hold at
    "pfrl.generation": CORE,
    "pfrl.engine_weights": CORE,
    "pfrl.engine_stepper": CORE,
    "pfrl.hub": CORE,
    "pfrl.hub_push": CORE,
    "pfrl.ledger": CORE,
    "pfrl.metrics": CORE,
    "pfrl.model_dir": CORE,
    "pfrl.preflight": CORE,
    "pfrl.prompting": CORE,
    "pfrl.run_meters": CORE,
    "pfrl.runtime": CORE,
    "pfrl.scheduler": CORE,
    "pfrl.tiny": CORE,
    "pfrl.types": CORE,
}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    return None


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts.pop()  # pfrl/feedback/__init__.py is the package pfrl.feedback
    return ".".join(parts)


def imported_modules(tree: ast.Module, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for every import anywhere in the file, relative ones resolved."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts[: len(parts) - node.level + int(is_package)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pfrl.transport import collective` imports the module pfrl.transport.collective
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def wrong_way(path: Path, root: Path = ROOT) -> list[str]:
    """One message per import that reaches a layer above its own module's."""
    module = module_name(path, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    problems = []
    for line, target in imported_modules(tree, module, path.name == "__init__.py"):
        own, theirs = layer_of(module), layer_of(target)
        if target.split(".")[0] in PACKAGES and own is not None and theirs is not None and theirs > own:
            problems.append(
                f"{path.relative_to(root)}:{line}: {module} ({NAMES[own]}) imports {target} "
                f"({NAMES[theirs]}); imports run core <- learner <- actors <- driver"
            )
    return problems


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_module_has_a_layer():
    missing = [str(p.relative_to(ROOT)) for p in source_files() if layer_of(module_name(p)) is None]
    assert not missing, f"no layer for {missing}: add them to LAYERS in {Path(__file__).name}"


def test_imports_run_one_way():
    problems = [msg for path in source_files() for msg in wrong_way(path)]
    assert not problems, "imports running the wrong way:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("where", "source", "line", "reaches"),
    [
        ("learner/x.py", "def f():\n    from actors.learner import LearnerActor\n", 2, "actors.learner.LearnerActor"),
        ("pfrl/types.py", "import pfrl.fleet\n", 1, "pfrl.fleet"),
        ("actors/x.py", "import os\nfrom pfrl.commands import dpo\n", 2, "pfrl.commands.dpo"),
        ("pfrl/feedback/x.py", "from ..learner_group import LearnerGroup\n", 1, "pfrl.learner_group.LearnerGroup"),
        ("learner/__init__.py", "from actors import labeller\n", 1, "actors.labeller"),
    ],
)
def test_a_wrong_way_import_is_named(tmp_path, where, source, line, reaches):
    """The guard itself: an upward import, function-local or relative, is reported by file and line."""
    path = tmp_path / where
    path.parent.mkdir(parents=True)
    path.write_text(source)
    (problem,) = wrong_way(path, tmp_path)
    assert problem.startswith(f"{where}:{line}: ") and f"imports {reaches} " in problem


def test_downward_imports_pass(tmp_path):
    path = tmp_path / "pfrl" / "fleet.py"
    path.parent.mkdir(parents=True)
    path.write_text("from actors.generator import spawn_generator\nimport learner.engine\nfrom . import types\n")
    assert wrong_way(path, tmp_path) == []
