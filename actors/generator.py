"""Ray actor hosting one vLLM generator (thin glue over `pfrl.generation.GeneratorEngine`).

Methods cross Ray as bytes (msgpack of typed messages) or plain dicts, never pickled tensors.
The actor is threaded: sampling calls have their own concurrency group (`SAMPLING_CONCURRENCY`
threads), because each waits while the engine's one stepper thread samples it together with the
others (pfrl/engine_stepper.py); syncs, health and stop keep the default group's threads, so no
number of requests in flight can hold them up. The engine's gate serialises sampling and swaps.

After Ray restarts the actor (`max_restarts`), it comes back with the base weights (version 0) and a
new `instance_id`: the controller notices through `health()`, calls `sync_weights(...)` again, and
re-issues the prompts the old instance held.
"""

from __future__ import annotations

import os
from typing import Any

import ray

from pfrl.config import GeneratorSection, ModelSection, SyncSection
from pfrl.generation import GeneratorEngine
from pfrl.types import decode, encode

MAX_CONCURRENCY = 4  # sync (prepare + receive), health and stop can all be in flight
# Sampling calls in flight per generator: the controller keeps about two learner steps' prompts out,
# in requests of `generator.prompts_per_request`; calls beyond this queue in Ray, not in the engine.
SAMPLING_CONCURRENCY = 64
SAMPLING = "sampling"


class GeneratorActor:
    def __init__(
        self,
        model_path: str,
        gen_cfg_dict: dict,
        model_cfg_dict: dict,
        sync_cfg_dict: dict,
        seed: int,
        generator_id: int,
    ):
        self._engine = GeneratorEngine(
            model_path,
            GeneratorSection(**gen_cfg_dict),
            ModelSection(**model_cfg_dict),
            SyncSection(**sync_cfg_dict),
            seed,
            generator_id,
        )

    @ray.method(concurrency_group=SAMPLING)
    def generate(self, items_bytes: bytes) -> bytes:
        """msgpack list of PromptItem -> msgpack list of RolloutGroup (same order)."""
        return encode(self._engine.generate(decode(items_bytes)))

    @ray.method(concurrency_group=SAMPLING)
    def complete_prefixes(self, batches_bytes: bytes) -> bytes:
        """msgpack list of PrefixBatch -> msgpack list of PrefixRollout (step-level pDPO)."""
        return encode(self._engine.complete_prefixes(decode(batches_bytes)))

    def health(self) -> dict[str, Any]:
        return {
            "generator_id": self._engine.generator_id,
            "instance_id": self._engine.instance_id,
            "version": self._engine.serving_version(),
            "pid": os.getpid(),
        }

    def policy_version(self) -> int:
        """The version the next engine call samples with (a staged sync counts once it answered)."""
        return self._engine.serving_version()

    def prepare_sync(self, transport: str | None = None) -> dict[str, Any]:
        return self._engine.receiver_info(transport).to_dict()

    def receive_weights(self, version: int, spec: dict[str, Any]) -> dict[str, Any]:
        return self._engine.receive_weights(version, spec)

    @ray.method(concurrency_group=SAMPLING)
    def sample(self, prompts: list[str], n: int, temperature: float) -> list[list[str]]:
        """Completion texts for evaluation (see `GeneratorEngine.sample_texts`)."""
        return self._engine.sample_texts(prompts, n, temperature)

    @ray.method(concurrency_group=SAMPLING)
    def logprobs(self, prompt: str, continuation: str) -> list[float]:
        return self._engine.logprobs(prompt, continuation)

    def stop(self) -> None:
        """End the engine's processes (call before killing the actor)."""
        self._engine.shutdown()


def spawn_generator(
    model_path: str,
    gen: GeneratorSection,
    model: ModelSection,
    sync: SyncSection,
    seed: int,
    generator_id: int,
    num_cpus: float,
    num_gpus: float = 0.0,
    **ray_options: Any,
) -> Any:
    """Start one GeneratorActor (Ray restarts it up to `generator.max_restarts` times).
    `num_gpus` is the engine's GPUs (`generator.tensor_parallel_size` on GPUs, 0 on CPU) unless a
    placement-group bundle provides them; extra `ray_options` (e.g. its `scheduling_strategy`) go
    to `.options(...)`."""
    # Ray's stubs lack the concurrency_groups overload of ray.remote (Ray 2.60 takes it there, not in .options).
    remote = ray.remote(concurrency_groups={SAMPLING: SAMPLING_CONCURRENCY})  # type: ignore[call-overload]
    cls = remote(GeneratorActor).options(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_restarts=gen.max_restarts,
        max_concurrency=MAX_CONCURRENCY,
        **ray_options,
    )
    return cls.remote(model_path, gen.model_dump(), model.model_dump(), sync.model_dump(), seed, generator_id)
