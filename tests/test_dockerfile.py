"""The Dockerfile, parsed (no Docker engine runs where the tests do): its two variants, the extras
and paths it names, and the checks the image runs on itself at build time. The CPU variant's RUN
steps were also run in a scratch virtual environment (docs/deploy.md says what that showed)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(str(ROOT / "Dockerfile"))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def _stages(instructions) -> dict[str, list[dict]]:
    stages: dict[str, list[dict]] = {}
    current = None
    for ins in instructions:
        if ins["instruction"] == "FROM":
            current = ins["value"].split(" AS ")[-1].strip()
            stages[current] = [ins]
        elif current is not None:
            stages[current].append(ins)
    return stages


def _runs(instructions) -> str:
    return "\n".join(i["value"] for i in instructions if i["instruction"] == "RUN")


def test_a_build_arg_picks_the_cpu_or_the_cuda_base(instructions):
    assert {"instruction": "ARG", "value": "VARIANT=gpu"}.items() <= instructions[0].items()
    stages = _stages(instructions)
    assert list(stages) == ["base-cpu", "base-gpu", "pfrl"]
    assert stages["pfrl"][0]["value"] == "base-${VARIANT} AS pfrl"
    assert stages["base-gpu"][0]["value"].startswith("${CUDA_IMAGE}")
    for variant in ("cpu", "gpu"):
        envs = [i["value"] for i in stages[f"base-{variant}"] if i["instruction"] == "ENV"]
        assert f"PFRL_EXTRA={variant}" in envs


def test_every_extra_it_installs_is_in_pyproject(instructions):
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (spec,) = re.findall(r'pip install -e "\.\[([^\]]+)\]"', _runs(instructions))
    for variant in ("cpu", "gpu"):
        names = spec.replace("${PFRL_EXTRA}", variant).split(",")
        assert names and all(n in extras for n in names), (names, sorted(extras))


def test_it_copies_every_package_and_the_prompts(instructions):
    copied = {i["value"].split()[0] for i in instructions if i["instruction"] == "COPY"}
    assert all((ROOT / path).exists() for path in copied)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {p.rstrip("*") for p in packages["include"]} <= copied
    assert "configs" in copied  # prompt templates and presets live next to the package


def test_the_image_checks_itself_and_carries_bubblewrap(instructions):
    runs = _runs(instructions)
    assert re.search(r"apt-get install [^\n]*bubblewrap", runs)
    last = [i["value"] for i in instructions if i["instruction"] == "RUN"][-1]
    assert "bwrap --version" in last and "--dry-run" in last and "import deepspeed" in last
    (config,) = re.findall(r"pfrl train --config (\S+)", last)
    assert (ROOT / config).is_file()


def test_the_cpu_variant_removes_what_make_setup_removes(instructions):
    removed = "pip uninstall -y torchvision torchaudio torchcodec"
    assert removed in _runs(instructions)
    assert "uninstall -q -y torchvision torchaudio torchcodec" in (ROOT / "Makefile").read_text()
