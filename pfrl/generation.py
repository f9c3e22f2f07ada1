"""The generator engine: one vLLM engine that samples rollout groups and takes new weights.

`GeneratorEngine` is a plain class (the Ray actor in `actors/generator.py` is thin glue over it).
It samples `n_samples` completions per prompt with the configured sampling parameters and a
per-request seed derived from (run seed, prompt id, attempt, policy version), so a run is
reproducible. Every sampling call is a round of `EngineStepper` (pfrl/engine_stepper.py), whose
one thread steps the engine for all concurrent calls (continuous batching across requests) and
holds the `SwapGate` of its `EngineWeights` (pfrl/engine_weights.py), which serves one policy
version at a time and takes new weights from the learner between engine calls.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

from pfrl.config import GeneratorSection, ModelSection, SyncSection
from pfrl.engine_stepper import EngineStepper, Round
from pfrl.engine_weights import EngineWeights, SwapGate
from pfrl.model_dir import check_model_dir
from pfrl.prompting import prompt_ids
from pfrl.transport.weights import ReceiverInfo
from pfrl.types import PrefixBatch, PrefixRollout, PromptItem, RolloutGroup

WORKER_EXTENSION = "pfrl.transport.vllm_worker.WeightSyncExtension"


def request_seed(run_seed: int, prompt_id: str, attempt: int, version: int) -> int:
    """A stable 31-bit sampling seed per (run, prompt, attempt, policy version)."""
    key = f"{run_seed}/{prompt_id}/{attempt}/{version}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little") & 0x7FFFFFFF


def _build_llm(model_path: str, gen: GeneratorSection, model: ModelSection, seed: int) -> Any:
    # Checked before the engine starts: one line for the user instead of an engine traceback.
    check_model_dir(model_path, model.max_length)
    from pfrl.runtime import resolve_dtype, set_cpu_kvcache, vllm_batching_kwargs, vllm_process_kwargs

    set_cpu_kvcache(gen.cpu_kvcache_gb)  # before vLLM loads: it reads the variable from the environment
    from vllm import LLM

    return LLM(
        model=model_path,
        dtype=resolve_dtype(model.dtype),
        seed=seed,
        max_model_len=model.max_length,
        tensor_parallel_size=gen.tensor_parallel_size,
        gpu_memory_utilization=gen.gpu_memory_utilization,
        enforce_eager=gen.enforce_eager,
        block_size=gen.block_size,  # None: vLLM's default for the device
        worker_extension_cls=WORKER_EXTENSION,
        **vllm_batching_kwargs(gen.max_num_seqs, model.max_length),
        **vllm_process_kwargs(gen.tensor_parallel_size, gen.engine_in_process),
    )


class GeneratorEngine:
    """One vLLM engine (CPU or CUDA, tensor parallel over its GPUs) that samples rollout groups."""

    def __init__(
        self,
        model_path: str,
        gen_cfg: GeneratorSection,
        model_cfg: ModelSection,
        sync_cfg: SyncSection,
        seed: int,
        generator_id: int = 0,
    ):
        self.cfg, self.model_cfg, self.sync_cfg = gen_cfg, model_cfg, sync_cfg
        self.seed, self.generator_id = seed, generator_id
        self.instance_id = uuid.uuid4().hex[:12]
        self._llm = _build_llm(model_path, gen_cfg, model_cfg, seed)
        self._tokenizer = self._llm.get_tokenizer()
        # Each worker binds its weight receiver now, so `receiver_info` never needs the engine.
        workers = self._llm.collective_rpc("pfrl_receiver_info")
        self.weights = EngineWeights(self._llm, workers, SwapGate(), sync_cfg, generator_id, self.instance_id)
        self._gate = self.weights.gate
        self._stepper = EngineStepper(self._llm.llm_engine, self._gate, lambda: self.weights.version,
                                      self.weights.check, gen_cfg.swap_mode == "pause", f"g{generator_id}-")

    @property
    def policy_version(self) -> int:
        """The version in the model now (what an engine call that starts now samples with, unless
        a staged swap runs first: `serving_version`)."""
        return self.weights.version

    # -- sampling -------------------------------------------------------------------------------

    def generate(self, items: list[PromptItem]) -> list[RolloutGroup]:
        """Sample `n_samples` completions for every item; groups come back in input order. In
        pause mode, the prompts a swap interrupted are sampled again under the new weights."""
        start = time.perf_counter()
        prompts = [prompt_ids(self._tokenizer, it.problem.prompt) for it in items]
        groups: dict[int, RolloutGroup] = {}
        for i, ids in enumerate(prompts):
            if len(ids) >= self.model_cfg.max_length:
                groups[i] = self._empty_group(items[i], len(ids))
        while len(groups) < len(items):
            todo = [i for i in range(len(items)) if i not in groups]

            def make_params(version: int, todo: list[int] = todo) -> dict[int, Any]:
                return {i: self._params(items[i], len(prompts[i]), version) for i in todo}

            rnd = self._stepper.run(prompts, make_params)
            for i, out in rnd.finished.items():
                groups[i] = self._to_group(items[i], out, rnd.version)
        elapsed = time.perf_counter() - start
        for g in groups.values():
            g.gen_s = elapsed
        return [groups[i] for i in range(len(items))]

    def _params(self, item: PromptItem, prompt_len: int, version: int, *, n: int | None = None,
                budget: int | None = None, key: str = "") -> Any:
        """Sampling settings of one request: `n` completions (default `n_samples`) of at most `budget`
        new tokens (default `max_tokens`), seeded by the prompt, its attempt, `key` and the version."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        budget = self.cfg.max_tokens if budget is None else budget
        return SamplingParams(
            # FINAL_ONLY: one output per prompt, holding all n completions once the last finishes.
            output_kind=RequestOutputKind.FINAL_ONLY,
            n=self.cfg.n_samples if n is None else n,
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            max_tokens=max(1, min(budget, self.model_cfg.max_length - prompt_len)),
            stop=list(self.cfg.stop) or None,
            seed=request_seed(self.seed, item.problem.id + key, item.attempt, version),
        )

    # -- step-level pDPO: continuations of solution prefixes --------------------------------------

    def complete_prefixes(self, batches: list[PrefixBatch]) -> list[PrefixRollout]:
        """For each batch, choose its line-step prefixes (feedback/steps.py) and sample
        `completions_per_prefix` continuations of each, all under one policy version."""
        if not batches:
            return []
        chosen = [self._choose_prefixes(b) for b in batches]
        return self._complete_prefixes(batches, chosen)

    def _choose_prefixes(self, batch: PrefixBatch) -> list[list[int]]:
        from pfrl.feedback.steps import choose_prefixes, prefix_rng, step_cuts

        cuts = [step_cuts([self._tokenizer.decode([t]) for t in ids]) for ids in batch.solutions]
        return choose_prefixes(batch.solutions, cuts, batch.prefixes_per_problem, prefix_rng(self.seed, batch.item))

    def _complete_prefixes(self, batches: list[PrefixBatch], chosen: list[list[list[int]]]) -> list[PrefixRollout]:
        start = time.perf_counter()
        where = [(b, j) for b, prefixes in enumerate(chosen) for j in range(len(prefixes))]
        prompts = [batches[b].prompt_token_ids + chosen[b][j] for b, j in where]

        def make_params(version: int) -> dict[int, Any]:
            return {
                n: self._params(batches[b].item, len(prompts[n]), version, n=batches[b].completions_per_prefix,
                                budget=self.cfg.max_tokens - len(chosen[b][j]), key=f"/prefix{j}")
                for n, (b, j) in enumerate(where)
            }

        rnd = self._run_whole(prompts, make_params)
        finished, version = rnd.finished, rnd.version
        elapsed = time.perf_counter() - start
        outs: list[list[Any]] = [[] for _ in batches]
        for n, (b, _) in enumerate(where):
            outs[b].append(sorted(finished[n].outputs, key=lambda c: c.index))
        return [
            PrefixRollout(
                batch=batch, prefixes=chosen[b], prefix_texts=[self._tokenizer.decode(p) for p in chosen[b]],
                completions=[[c.text for c in comps] for comps in outs[b]],
                completion_tokens=sum(len(c.token_ids) for comps in outs[b] for c in comps),
                policy_version=version, generator_id=self.generator_id, gen_s=elapsed,
            )
            for b, batch in enumerate(batches)
        ]

    def _to_group(self, item: PromptItem, out: Any, version: int) -> RolloutGroup:
        comps = sorted(out.outputs, key=lambda c: c.index)
        return RolloutGroup(
            item=item,
            completions=[c.text for c in comps],
            token_ids=[list(c.token_ids) for c in comps],
            finish_reasons=[str(c.finish_reason) for c in comps],
            prompt_tokens=len(out.prompt_token_ids),
            completion_tokens=sum(len(c.token_ids) for c in comps),
            policy_version=version,
            generator_id=self.generator_id,
            prompt_token_ids=list(out.prompt_token_ids),
        )

    def _empty_group(self, item: PromptItem, prompt_tokens: int) -> RolloutGroup:
        """A prompt that leaves no room to generate comes back with no completions (never dropped:
        a lockstep controller counts its groups)."""
        return RolloutGroup(
            item=item,
            completions=[],
            token_ids=[],
            finish_reasons=[],
            prompt_tokens=prompt_tokens,
            completion_tokens=0,
            policy_version=self.policy_version,
            generator_id=self.generator_id,
        )

    def sample_texts(self, prompts: list[str], n: int, temperature: float) -> list[list[str]]:
        """n completions per prompt with explicit sampling settings (temperature 0: greedy), for
        held-out evaluation under the served weights; rollouts use `generate`."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            output_kind=RequestOutputKind.FINAL_ONLY,
            n=n,
            temperature=temperature,
            top_p=1.0 if temperature == 0 else self.cfg.top_p,
            max_tokens=self.cfg.max_tokens,
            stop=list(self.cfg.stop) or None,
            seed=self.seed,
        )
        # The same prompt ids as rollouts and the learner (not vLLM's own encoding of the text).
        ids = [prompt_ids(self._tokenizer, p) for p in prompts]
        outs = self._run_all(ids, params)
        return [[c.text for c in sorted(o.outputs, key=lambda c: c.index)] for o in outs]

    def logprobs(self, prompt: str, continuation: str) -> list[float]:
        """Log-probs of each token of `continuation` after `prompt` under the served weights
        (raw model log-probs: no temperature or top-p)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        p = prompt_ids(self._tokenizer, prompt)
        c = self._tokenizer.encode(continuation, add_special_tokens=False)
        params = SamplingParams(output_kind=RequestOutputKind.FINAL_ONLY, max_tokens=1, prompt_logprobs=0, temperature=0.0)
        out = self._run_all([p + c], params)[0]
        return [out.prompt_logprobs[len(p) + j][tok].logprob for j, tok in enumerate(c)]

    def _run_all(self, prompts: list[list[int]], params: Any) -> list[Any]:
        """Every prompt under the same sampling settings (evaluation): outputs in prompt order."""
        if not prompts:
            return []
        rnd = self._run_whole(prompts, lambda _v: dict.fromkeys(range(len(prompts)), params))
        return [rnd.finished[i] for i in range(len(prompts))]

    def _run_whole(self, prompts: list[list[int]], make_params: Callable[[int], dict[int, Any]]) -> Round:
        """One round sampled whole under one version: in pause mode, a round a swap interrupted is
        sampled again, all of it, under the new weights."""
        while True:
            rnd = self._stepper.run(prompts, make_params)
            if not rnd.interrupted:
                return rnd

    # -- weight sync: EngineWeights --------------------------------------------------------------

    def receiver_info(self, transport: str | None = None) -> ReceiverInfo:
        return self.weights.receiver_info(transport)

    def serving_version(self) -> int:
        return self.weights.serving_version()

    def receive_weights(self, version: int, spec: dict[str, Any]) -> dict[str, Any]:
        return self.weights.receive(version, spec)

    def shutdown(self) -> None:
        """Stop the engine's processes now rather than at garbage collection."""
        self._stepper.stop()
        with self._gate.swap():
            self._llm.llm_engine.engine_core.shutdown()
            self.weights.close()
