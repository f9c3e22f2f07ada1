"""Shared fixtures: tiny real model directories built locally (no hub)."""

from __future__ import annotations

import os

import pytest

# Keep vLLM-on-CPU and torch inside this 2-core, 24 GiB machine's means.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_math_model(tmp_path_factory) -> str:
    """A random-weight tiny Llama + BPE tokenizer over the synthetic math corpus (HF directory)."""
    from pfrl.tasks.synthetic_math import generate
    from pfrl.tiny import save_random_model

    out = tmp_path_factory.mktemp("tiny-math-random")
    texts = [p.prompt + s for p, s in generate(500, seed=0)]
    return str(save_random_model(out, texts, seed=0))


@pytest.fixture(scope="session")
def tiny_code_model(tmp_path_factory) -> str:
    """A random-weight tiny Llama + tokenizer over the synthetic code corpus (HF directory)."""
    from pfrl.tasks.synthetic_code import generate
    from pfrl.tiny import save_random_model

    out = tmp_path_factory.mktemp("tiny-code-random")
    texts = [p.prompt + s for p, s in generate(500, seed=0)]
    return str(save_random_model(out, texts, seed=0))


@pytest.fixture(scope="session")
def boot_math(tmp_path_factory) -> str:
    """A tiny math model that has learned the task a little (`pfrl bootstrap --small`), with data."""
    return _bootstrapped("math", tmp_path_factory)


@pytest.fixture(scope="session")
def boot_code(tmp_path_factory) -> str:
    """A tiny code model that has learned the task a little (`pfrl bootstrap --small`), with data."""
    return _bootstrapped("code", tmp_path_factory)


def _bootstrapped(task: str, tmp_path_factory) -> str:
    """`PFRL_TEST_BOOT_<TASK>` names one built before (`pfrl bootstrap --task T --small --out DIR`):
    a developer re-running slow tests skips the minutes of SFT; CI leaves it unset and builds it."""
    from pfrl.bootstrap import BootstrapSpec, bootstrap

    prebuilt = os.environ.get(f"PFRL_TEST_BOOT_{task.upper()}")
    if prebuilt:
        return prebuilt
    out = tmp_path_factory.mktemp(f"boot-{task}") / "model"
    return str(bootstrap(task, out, seed=0, spec=BootstrapSpec.small()))


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for one test module (2 CPUs, workers' logs kept out of the test output)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model training: a second gains nothing, and on a shared
    2-core box two OpenMP threads spinning against other processes made steps ~8x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs():
    """16 synthetic math preference pairs (right vs. wrong boxed answer), the same in every module."""
    from pfrl.bench.learner import synthetic_pairs

    return synthetic_pairs(16, seed=3)
