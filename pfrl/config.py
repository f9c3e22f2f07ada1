"""The one schema of a pfrl run.

Every default lives here, documented where it is defined. Components receive their own slice
(`cfg.generator`, `cfg.learner`, ...) and never invent defaults with `.get(key, default)`.
A config is built from a YAML file plus dotted `--set section.key=value` overrides; any user error
becomes a `ConfigError` whose message is one line naming the file or key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pfrl.errors import UserError


class ConfigError(UserError):
    """A user-caused config problem; its message is a single line fit for the console."""


class Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default. No setting means
    # anything as NaN or infinity (a NaN bound would pass every comparison).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RunSection(Section):
    dir: str = Field("runs/default", description="Run directory: metrics, checkpoints, ledger, resolved config.")
    seed: int = Field(0, ge=0, description="Seed for every component (prompt splits, sampling, pairing, init).")
    task: Literal["math", "code"] = Field("math", description="Task family: answer extraction and labelling rules.")
    iterations: int = Field(1, ge=1, description="Iterations, each over its own disjoint split of the prompts.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many learner steps in total (None: run all iterations)."
    )
    log_every: int = Field(1, ge=1, description="Console line every N steps.")
    push_to: str | None = Field(
        None, pattern=r"^[\w.-]+/[\w.-]+$", description="Hugging Face Hub repo (org/name) that RUN_DIR/final is "
        "uploaded to at the end of the run (created private if missing; token from HF_TOKEN or `hf auth login`)."
    )


class ModelSection(Section):
    path: str | None = Field(
        None,
        description="Hugging Face model directory of the initial policy, or a hub id (org/name) fetched once "
        "into `model.hub_cache_dir` before any actor starts. None: `pfrl bootstrap` builds the "
        "tiny model for `run.task` into `model.bootstrap_dir` (reused when already there).",
    )
    bootstrap_dir: str = Field(
        ".pfrl-cache/models", description="Where the tiny bootstrap models are built and cached."
    )
    hub_cache_dir: str = Field(
        ".pfrl-cache/hub", description="huggingface_hub cache for hub ids in `model.path` (on storage every node "
        "shares when there are several; HF_HUB_OFFLINE=1 reads it without network)."
    )
    max_length: int = Field(512, ge=16, description="Maximum prompt + completion tokens.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on CUDA, float32 on CPU."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel of the learner's policy and reference (transformers' "
        "attn_implementation); flash_attention_2 needs the flash-attn package and a CUDA GPU. Generators use "
        "vLLM's own attention backends."
    )

    @model_validator(mode="after")
    def _attention_available(self) -> ModelSection:
        import importlib.util

        if self.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError("flash_attention_2 needs the flash-attn package (pip install flash-attn), not installed")
        return self
    chat_template: str = Field(
        "none", description="How prompts are rendered, once at load, for generation, training and eval alike: "
        "none = verbatim; auto = the tokenizer's own chat template (verbatim if it has none); or a Jinja file."
    )
    system_prompt: str | None = Field(None, description="System turn put before every prompt (needs a chat template).")


class DataSection(Section):
    train_file: str | None = Field(
        None, description="Problems (id, prompt, answer | entry_point/test_inputs/test_outputs): a .jsonl or "
        ".parquet file, or a Hugging Face data set `hf:NAME[:CONFIG]:SPLIT`. None: MODEL/data/train.jsonl."
    )
    heldout_file: str | None = Field(
        None, description="Held-out problems for eval, in the same forms. None: MODEL/data/heldout.jsonl."
    )
    fields: dict[str, str] = Field(
        default_factory=dict, description="Problem field -> the data's column, e.g. {prompt: question}; unnamed "
        "fields keep their own names. Parquet / hf: rows without an id get their row number."
    )
    prompts_per_iteration: int | None = Field(
        None, ge=1, description="Size of each iteration's disjoint split (None: the file split evenly)."
    )
    max_bad_records: float = Field(
        0.05, ge=0, le=1, description="Share of malformed records that is skipped and counted; above it the run stops."
    )
    shuffle: bool = Field(True, description="Shuffle problems (seeded) before splitting into iterations.")


class GeneratorSection(Section):
    num_generators: int = Field(1, ge=1, description="Generator actors, one vLLM engine each.")
    n_samples: int = Field(8, ge=2, description="Completions sampled per prompt (the paper: 10).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (the paper: 1.0).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling (the paper: 0.9).")
    max_tokens: int = Field(128, ge=1, description="Maximum completion tokens.")
    stop: list[str] = Field(default_factory=list, description="Stop strings.")
    prompts_per_request: int = Field(8, ge=1, description="Prompts per sampling request; requests on one "
                                     "generator share its engine's batch.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per vLLM engine.")
    gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="vLLM memory fraction (on CPU: fraction of host RAM it checks against)."
    )
    cpu_kvcache_gb: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE in GiB for the CPU backend.")
    max_num_seqs: int = Field(
        64, ge=1, description="vLLM max concurrent sequences; a generator takes prompts while its engine has room for "
        "their n_samples each (at least two requests)."
    )
    enforce_eager: bool = Field(
        True, description="Run the model eagerly: faster engine start, slower decode. false: vLLM compiles it "
        "(torch.compile; on GPUs also CUDA graphs), which on CPU takes 11-25 s more per engine start for about a "
        "fifth less time per generated token on the tiny presets (docs/generation.md)."
    )
    block_size: int | None = Field(
        None, ge=1, description="Tokens per KV-cache block (null: vLLM's default for the device, 128 on CPU). "
        "vLLM's CPU attention takes multiples of 32; short sequences waste less of a smaller block "
        "(tiny math preset: 32)."
    )
    engine_in_process: bool = Field(
        True, description="With tensor_parallel_size 1, run vLLM's engine core and worker inside the generator "
        "actor instead of two child processes: much faster engine start, no per-step IPC. Tensor-parallel engines "
        "always use vLLM's worker processes."
    )
    swap_mode: Literal["pause", "drain"] = Field(
        "drain", description="Weight swap: drain = admit no new request, let those in the engine finish, then swap; "
        "pause = stop them at the next engine step, swap, and sample its unfinished prompts again under the new "
        "weights. Either way each group comes from one policy version and no request sees half-updated weights."
    )
    restart_timeout_s: float = Field(
        300.0, gt=0, description="Time allowed for Ray to bring a dead generator back (engine start included) "
        "before the run fails."
    )
    max_restarts: int = Field(3, ge=-1, description="Ray restarts of a dead generator actor (-1: unlimited).")


class SandboxSection(Section):
    backend: Literal["auto", "bwrap", "unshare", "none"] = Field(
        "auto", description="Isolation: bubblewrap, util-linux unshare, or none (rlimits only, not isolated). "
        "auto: bwrap, else unshare (with a console line and sandbox/isolation_level below 2); never none, which "
        "runs only when named here: auto fails instead."
    )
    timeout_s: float = Field(2.0, gt=0, description="Wall-clock limit per test.")
    cpu_s: int = Field(2, ge=1, description="CPU-seconds limit per test and process (RLIMIT_CPU).")
    memory_mb: int = Field(512, ge=32, description="Address-space limit per program process (RLIMIT_AS).")
    max_procs: int = Field(
        16, ge=2, description="Processes (and threads) one program may have at once, fork bombs included. "
        "Memory is limited per process, so one program can hold at most max_procs x memory_mb."
    )
    max_output_bytes: int = Field(65536, ge=64, description="Output cap per test; beyond it the run is killed.")
    scratch_mb: int = Field(
        16, ge=1, description="Size of the program's writable scratch directory (and of any single file it writes)."
    )
    workers: int = Field(2, ge=1, le=64, description="Programs run concurrently by one labeller (the pool).")
    startup_timeout_s: float = Field(
        20.0, gt=0, description="Time allowed for the sandbox and interpreter to start before the first result."
    )
    uid_base: int = Field(
        2_000_000_000, ge=1000, le=2**31 - 2, description="As root, programs run as uid_base + an offset per "
        "pool slot and process (up to 2^31 above it): an unprivileged uid no real account uses, so process "
        "limits and file permissions bite."
    )
    python: str | None = Field(
        None, description="Interpreter that runs programs. None: the base interpreter of the running Python "
        "(stdlib only: the virtual environment is not visible inside the sandbox)."
    )
    ro_binds: list[str] = Field(
        default_factory=list, description="bwrap: extra host paths made visible read-only (e.g. a site-packages "
        "directory with numpy). Everything else outside the system directories stays hidden."
    )


class FrontierSection(Section):
    base_url: str | None = Field(
        None, description="OpenAI-compatible API root, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1."
    )
    model: str | None = Field(None, description="Model name sent with each request.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key (unset: no Authorization header)."
    )
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    max_retries: int = Field(
        4, ge=0, description="The openai SDK's retries of a failed request (connection errors, timeouts, 408/409/429, "
        "5xx; exponential backoff from 0.5 s, or the server's Retry-After up to 2 min), and pfrl's re-asks of a reply "
        "that is empty or not the JSON asked for."
    )
    timeout_s: float = Field(120.0, gt=0, description="Timeout of one HTTP request.")
    cache_dir: str | None = Field(
        ".pfrl-cache/frontier", description="On-disk cache of replies keyed by the full request (None: no cache)."
    )
    temperature: float = Field(0.0, ge=0, description="Sampling temperature of the frontier model.")
    max_tokens: int = Field(1024, ge=1, description="Maximum tokens per reply.")
    num_test_inputs: int = Field(10, ge=1, description="Test inputs to ask for per code problem (the paper: ~10).")
    max_input_chars: int = Field(200, ge=8, description="Longest test input accepted (and enforced by the JSON schema).")
    structured_output: bool = Field(
        True, description="Send a JSON schema as response_format so the server enforces valid JSON."
    )
    prompt_dir: str | None = Field(
        None, description="Directory of the prompt templates (None: configs/prompts shipped with pfrl)."
    )


Source = Literal["auto", "self_consistency", "reference", "ground_truth"]
PairStrategy = Literal["one_random", "all_chosen", "margin"]

# Keys and values renamed when label sources were split three ways: an old config fails with the new name.
_RENAMED_KEYS = {
    "mode": "labeller.source (auto | self_consistency | reference | ground_truth)",
    "chosen_min_score": "labeller.min_pass_ratio.<source>",
    "min_success_frac": "labeller.min_successful_programs (a count of programs)",
    "pair_focus": "labeller.step_pairs (the paper's step-level pDPO: prefix pairs valued by sampled completions)",
}


class PerSourceMargin(Section):
    """Code margin pairs: how many more test cases the chosen program must pass, per label source
    (the paper: 6 with self-consistency labels, 4 with frontier tests; PFPO/scripts/apps/
    pseudo_test_cases/construct_dpo_pairs.sh and 4o_pseudo_baseline.sh of microsoft/unilm)."""

    self_consistency: int = Field(6, ge=1, description="Test cases, with multi-test-case self-consistency labels.")
    reference: int = Field(4, ge=1, description="Test cases, with frontier tests (reference outputs).")
    ground_truth: int = Field(1, ge=1, description="Test cases, with the data set's tests (1 + floor 1.0: pass-all vs fail).")


class PerSourcePassRatio(Section):
    """Code margin pairs: the chosen program passes at least this share of the kept test cases."""

    self_consistency: float = Field(0.5, ge=0, le=1, description="Floor with self-consistency labels (the paper: 0.5).")
    reference: float = Field(0.5, ge=0, le=1, description="Floor with frontier tests (the paper: 0.5).")
    ground_truth: float = Field(1.0, ge=0, le=1, description="Floor with the data set's tests (1.0: pass-all only).")


class ScheduleEntry(Section):
    """The label source and pair rule of one iteration."""

    source: Source = Field(description="Where labels come from in this iteration (see labeller.source).")
    pair_strategy: PairStrategy = Field(description="How pairs are drawn in this iteration (see labeller.pair_strategy).")
    step_pair_ratio: float | None = Field(
        None, ge=0, description="Prefix pairs per whole-solution pair in this iteration (see labeller.step_pairs.ratio; "
        "unset: that value)."
    )


class LabelPlan(BaseModel):
    """What one iteration does: `source` may still be auto (resolved per record by the labeller)."""

    model_config = ConfigDict(frozen=True)
    source: Source
    pair_strategy: PairStrategy
    step_pair_ratio: float = 0.0


class StepPairsSection(Section):
    """Step-level pDPO (the paper's process variant, math): solutions are cut into line steps, `k`
    completions are sampled from each prefix through the generators, a prefix's value is how many of
    them reach the group's label; each good prefix (value >= 1) is paired with a random bad one
    (value 0) of the same problem, as prompt + prefix with no end-of-sequence token."""

    ratio: float = Field(
        0.0, ge=0, description="Prefix pairs per whole-solution pair of a group (the paper: 1.0 in later rounds); "
        "0: outcome DPO only, no prefix requests."
    )
    completions_per_prefix: int = Field(3, ge=1, description="Completions sampled from each prefix (the paper: 3).")
    prefixes_per_problem: int = Field(
        8, ge=2, description="Prefixes valued per problem: a seeded sample of the line-step prefixes of its solutions."
    )


class LabellerSection(Section):
    num_labellers: int = Field(1, ge=1, description="Labeller actors.")
    source: Source = Field(
        "auto", description="Where labels come from. self_consistency: the policy's own votes; reference: what a "
        "frontier model wrote (`reference`, or `reference_test_inputs`/`reference_test_outputs`); ground_truth: the "
        "data set's `answer` / `test_outputs` (baselines only); auto: reference when the record has a frontier "
        "reference, self-consistency otherwise (never ground truth)."
    )
    pair_strategy: PairStrategy = Field(
        "one_random", description="one_random: one chosen x one rejected; all_chosen: every chosen with a random "
        "rejected; margin: code pairs by test-case counts (labeller.margin, labeller.min_pass_ratio)."
    )
    schedule: list[ScheduleEntry] | None = Field(
        None, description="Per iteration: [{source, pair_strategy}, ...]; entry i applies to iteration i, the last "
        "one to every later iteration. Set it instead of labeller.source / labeller.pair_strategy."
    )
    min_vote_share: float = Field(
        0.5, ge=0, le=1, description="Math self-consistency: keep a group only if the top answer's share of all "
        "samples is strictly above this (the paper's filter)."
    )
    min_successful_programs: int = Field(
        5, ge=1, description="Code self-consistency: drop a test input unless at least this many programs ran on it "
        "and printed something (the paper: 5 of 10)."
    )
    margin: PerSourceMargin = Field(default_factory=PerSourceMargin)
    min_pass_ratio: PerSourcePassRatio = Field(default_factory=PerSourcePassRatio)
    max_pairs_per_prompt: int | None = Field(
        4, ge=1, description="Cap on pairs from one prompt (a seeded sample); null: no cap (the paper's margin pairs)."
    )
    step_pairs: StepPairsSection = Field(default_factory=StepPairsSection)
    scorer: str | None = Field(
        None, description="Your own verifier as package.module:function, used instead of the built-in one. Math: "
        "(completion, label) -> bool | float; code: (jobs: list[SandboxJob]) -> list[list[TestResult]]. It must be "
        "importable wherever labellers run."
    )
    verify_timeout_s: float = Field(2.0, gt=0, description="Bound on one math-verify comparison.")
    sandbox: SandboxSection = Field(default_factory=SandboxSection)
    frontier: FrontierSection = Field(default_factory=FrontierSection)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key, new in _RENAMED_KEYS.items():
            if key in data:
                raise ValueError(f"labeller.{key} was replaced by {new}")
        if isinstance(data.get("margin"), int | float):
            raise ValueError("labeller.margin is now a count of test cases per source: labeller.margin.self_consistency ...")
        for where in [data, *(e for e in data.get("schedule") or [] if isinstance(e, dict))]:
            if where.get("source") == "self-consistency":
                raise ValueError("labeller source self-consistency is now spelled self_consistency")
        return data

    @model_validator(mode="after")
    def _one_way_to_choose(self) -> LabellerSection:
        if self.schedule is not None:
            if not self.schedule:
                raise ValueError("labeller.schedule: give at least one entry (or leave it unset)")
            defaults = LabellerSection.model_fields
            if self.source != defaults["source"].default or self.pair_strategy != defaults["pair_strategy"].default:
                raise ValueError("labeller.schedule sets source and pair_strategy per iteration: drop labeller.source "
                                 "and labeller.pair_strategy")
        if self.scorer is not None:
            from pfrl.feedback.scorer import load_scorer

            load_scorer(self.scorer)  # a bad path fails here, at config time, in one line
        return self

    def plan(self, iteration: int) -> LabelPlan:
        """The source and pair rule of `iteration` (0-based)."""
        if self.schedule:
            entry = self.schedule[min(iteration, len(self.schedule) - 1)]
            ratio = self.step_pairs.ratio if entry.step_pair_ratio is None else entry.step_pair_ratio
            return LabelPlan(source=entry.source, pair_strategy=entry.pair_strategy, step_pair_ratio=ratio)
        return LabelPlan(source=self.source, pair_strategy=self.pair_strategy, step_pair_ratio=self.step_pairs.ratio)

    def plans(self) -> list[LabelPlan]:
        """Every distinct plan a run can use (for whole-config checks)."""
        return [self.plan(i) for i in range(len(self.schedule or [None]))]


class LoraSection(Section):
    """LoRA adapters on the learner's policy (peft). Only the adapters train, so the optimizer state
    shrinks to theirs; they are merged into the weights whenever weights leave the learner (sync to
    generators, saved models, the reference refresh), so vLLM and transformers see a plain model."""

    rank: int = Field(0, ge=0, description="Adapter rank; 0: no adapters (full fine-tuning).")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (the update is alpha / rank x B A).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapters' input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1, description="Names of the linear layers that get adapters (Llama / Qwen / Mistral naming).",
    )


class LearnerSection(Section):
    num_learners: int = Field(1, ge=1, description="Data-parallel DeepSpeed ranks (Ray actors).")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    loss: Literal["sigmoid", "ipo", "conservative"] = Field("sigmoid", description="DPO variant.")
    beta: float = Field(0.1, gt=0, description="DPO beta (the paper: 0.5 math, 0.1-0.4 code).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="conservative DPO: label noise rate.")
    nll_weight: float = Field(0.0, ge=0, description="Weight of the NLL term on the chosen completion (paper: 0.2-1.0).")
    length_normalize: bool = Field(False, description="Average log-probs over tokens instead of summing.")
    lr: float = Field(1e-6, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    adam_betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    schedule: Literal["warmup_cosine", "constant"] = Field("warmup_cosine", description="LR schedule.")
    warmup_ratio: float = Field(
        0.05, ge=0, lt=1, description="Linear warmup over this share of each iteration's steps (the paper's "
        "trainer: a warmup proportion, then DeepSpeed's WarmupCosineLR)."
    )
    min_lr_ratio: float = Field(
        0.1, gt=0, le=1, description="warmup_cosine: the floor the cosine falls to at the end of each "
        "iteration, as a share of lr (above zero: a step never trains at lr 0)."
    )
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clip.")
    pairs_per_step: int = Field(8, ge=1, description="Preference pairs per optimizer step (global batch).")
    micro_batch_pairs: int = Field(4, ge=1, description="Pairs per micro-batch (gradient accumulation splits the step).")
    micro_batch_tokens: int | None = Field(
        None, ge=16, description="If set, micro-batches are packed by this token budget instead of a pair count."
    )
    grad_checkpointing: bool = Field(False, description="Recompute activations in backward.")
    compile: bool = Field(
        False, description="torch.compile the policy and the reference (dynamic shapes): a slower start "
        "(compiling), faster steps where per-op overhead dominates (small models, CPU).")
    zero3_persistence_threshold: int = Field(
        100_000, ge=0, description="ZeRO-3: parameters with fewer elements stay whole on every rank (fewer gathers)."
    )
    offload_optimizer: Literal["none", "cpu"] = Field(
        "none", description="cpu: DeepSpeed keeps the optimizer state (Adam moments, fp32 master weights) in host "
        "memory and runs the step there (ZeRO 1-3)."
    )
    offload_params: Literal["none", "cpu"] = Field(
        "none", description="cpu: ZeRO-3 keeps the parameters in host memory between uses (policy and reference)."
    )
    lora: LoraSection = Field(default_factory=LoraSection)

    @model_validator(mode="after")
    def _memory_levers(self) -> LearnerSection:
        if self.offload_optimizer != "none" and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs learner.zero_stage 1, 2 or 3")
        if self.offload_params != "none" and self.zero_stage != 3:
            raise ValueError("offload_params needs learner.zero_stage 3 (parameters are partitioned only there)")
        if self.compile and self.zero_stage == 3:
            raise ValueError("learner.compile needs learner.zero_stage 0, 1 or 2 (ZeRO-3 gathers each layer's "
                             "parameters in module hooks, which torch.compile does not trace)")
        return self
    epochs: int = Field(1, ge=1, description="`pfrl dpo`: passes over the pairs file.")
    start_timeout_s: float = Field(
        300.0, gt=0, description="Time allowed for the learner ranks to be placed by Ray and build their engines."
    )


class BufferSection(Section):
    capacity: int = Field(512, ge=1, description="Maximum pairs held; the oldest are evicted (counted).")
    max_policy_lag: int = Field(
        1, ge=0, description="Drop pairs sampled by weights more than this many versions older than the newest "
        "weights published to the generators (with sync.every_steps k the learner may be up to lag + k - 1 of its "
        "own steps ahead of a pair it trains on). 0: strict lockstep."
    )
    sampling: Literal["fifo", "freshest"] = Field("fifo", description="Order in which pairs leave the buffer.")
    dedupe: bool = Field(True, description="Drop identical (prompt, chosen, rejected) pairs.")


class SyncSection(Section):
    every_steps: int = Field(
        1, ge=1, description="Publish weights to generators every N learner steps (and before every evaluation). "
        "Staleness (buffer.max_policy_lag) is measured against the last published weights, so any N makes progress."
    )
    transport: Literal["auto", "collective", "zmq"] = Field(
        "auto", description="auto: collective (NCCL) on GPUs, zmq on CPU / where no group can be formed."
    )
    bucket_mb: float = Field(64.0, gt=0, description="Weight bucket size.")
    timeout_s: float = Field(
        120.0, gt=0, description="Bound on each wait of a weight sync (group rendezvous, a bucket, the handshake)."
    )
    staged: bool = Field(
        True, description="zmq: each generator receives the weights into memory while its engine keeps sampling, "
        "answers the learner, and swaps them in before its next engine call (one extra model copy in host memory, "
        "kept between syncs for the next one to reuse); "
        "false: the weights are received inside the swap, after the engine call in flight."
    )
    shm_ring: bool = Field(
        True, description="zmq: receivers on the learner's host (a marker file each creates in /dev/shm proves it) "
        "get each bucket through a ring of shared-memory slots, copied once by the learner, instead of over TCP; "
        "others, and any bucket larger than a slot, get frames. Costs shm_slots x bucket_mb of /dev/shm in the learner."
    )
    shm_slots: int = Field(
        4, ge=2, description="Slots of that ring, one bucket each: the learner fills free slots while receivers read "
        "others (fewer than 4 makes receivers copy buckets out of their slots more often)."
    )

    @property
    def ring_slots(self) -> int:
        """Slots of the shared-memory ring a ZMQ sender offers (0: the ring is off, frames only)."""
        return self.shm_slots if self.shm_ring else 0


class CheckpointSection(Section):
    every_steps: int = Field(10, ge=1, description="Full checkpoint every N steps (and at every iteration end).")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept.")


class MetricsSection(Section):
    tensorboard: bool = Field(True, description="Write TensorBoard events under RUN_DIR/tb.")
    port: int | None = Field(None, ge=1, le=65535, description="Serve Prometheus metrics on this port.")
    wandb_project: str | None = Field(None, description="Log to this wandb project (wandb must be installed).")
    eval_every_steps: int | None = Field(None, ge=1, description="Held-out eval every N steps (also at start and end).")
    eval_prompts: int = Field(128, ge=1, description="Held-out problems used per eval.")
    eval_samples: int = Field(
        1, ge=1, description="Samples per held-out problem besides the greedy one; K > 1 adds maj@K and pass@K."
    )
    eval_temperature: float = Field(1.0, ge=0, description="Sampling temperature of those K samples.")
    samples_rate: float = Field(
        0.05, ge=0, le=1, description="Share of labelled groups written to RUN_DIR/samples.jsonl (0: none), "
        "chosen by a seeded hash of the prompt id."
    )
    sample_chars: int = Field(500, ge=16, description="Each completion in samples.jsonl is cut to this many characters.")


class ClusterSection(Section):
    ray_address: str | None = Field(None, description="Existing Ray cluster (auto | HOST:PORT). None: start local Ray.")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "PACK", description="Placement-group strategy for generator and learner bundles."
    )
    generator_gpus: float = Field(0.0, ge=0, description="GPUs per generator actor (its TP group).")
    learner_gpus: float = Field(0.0, ge=0, description="GPUs per learner rank.")
    generator_cpus: float = Field(1.0, ge=0, description="CPUs reserved per generator actor.")
    learner_cpus: float = Field(1.0, ge=0, description="CPUs reserved per learner rank.")
    labeller_cpus: float = Field(0.5, ge=0, description="CPUs reserved per labeller actor.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray (None: all).")
    generator_resources: dict[str, float] = Field(
        default_factory=dict, description="Extra Ray resources per generator bundle, to pin generators to "
        "nodes that offer them (e.g. {node_type_a100: 1} with `ray start --resources`)."
    )
    learner_resources: dict[str, float] = Field(
        default_factory=dict, description="Extra Ray resources per learner bundle (pins learner ranks to nodes)."
    )

    def generator_bundle(self) -> dict[str, float]:
        """The placement-group bundle of one generator (its TP group's GPUs)."""
        return _bundle(self.generator_cpus, self.generator_gpus, self.generator_resources)

    def learner_bundle(self) -> dict[str, float]:
        return _bundle(self.learner_cpus, self.learner_gpus, self.learner_resources)


def _bundle(cpus: float, gpus: float, extra: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in {"CPU": cpus, "GPU": gpus, **extra}.items() if v > 0}


class PfrlConfig(Section):
    run: RunSection = Field(default_factory=RunSection)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    generator: GeneratorSection = Field(default_factory=GeneratorSection)
    labeller: LabellerSection = Field(default_factory=LabellerSection)
    learner: LearnerSection = Field(default_factory=LearnerSection)
    buffer: BufferSection = Field(default_factory=BufferSection)
    sync: SyncSection = Field(default_factory=SyncSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    cluster: ClusterSection = Field(default_factory=ClusterSection)

    @model_validator(mode="after")
    def _consistent(self) -> PfrlConfig:
        if self.learner.pairs_per_step % self.learner.num_learners:
            raise ValueError("learner.pairs_per_step must be a multiple of learner.num_learners")
        if self.learner.pairs_per_step > self.buffer.capacity:
            # A full step never fits in the buffer: only an iteration's tail would ever train.
            raise ValueError(f"learner.pairs_per_step ({self.learner.pairs_per_step}) exceeds buffer.capacity "
                             f"({self.buffer.capacity}): no full step would ever fit in the buffer")
        if self.run.task != "code" and any(p.pair_strategy == "margin" for p in self.labeller.plans()):
            raise ValueError("labeller.pair_strategy=margin applies to run.task=code only")
        if self.run.task == "code" and self.labeller.min_successful_programs > self.generator.n_samples:
            raise ValueError("labeller.min_successful_programs is above generator.n_samples: no test input could be kept")
        if self.run.task == "code" and any(p.step_pair_ratio > 0 for p in self.labeller.plans()):
            # A code prefix's value would need its continuations run against the test cases: not built.
            raise ValueError("labeller.step_pairs (step-level pDPO) applies to run.task=math only")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _parse_value(raw: str) -> Any:
    """`--set` values are YAML scalars/lists, so `1e-6`, `true`, `[a, b]` and `null` all work."""
    try:
        return yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError):
        return raw


def _apply_override(tree: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item[:80]!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(part.strip() for part in parts):
        raise ConfigError(f"--set {key[:80]!r}: expected section.key=value (an empty key)")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = _parse_value(raw)


def _loc_part(part: str | int) -> str:
    # A key from a YAML file can be any text: quoted, it cannot break the one-line message.
    text = str(part)
    return text if text.isidentifier() or isinstance(part, int) else repr(text[:40])


def _format_validation(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(_loc_part(p) for p in first["loc"]) or "(root)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise ConfigError(f"{p}: invalid YAML (nested too deeply)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} invalid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PfrlConfig:
    """Build a validated config from an optional YAML file plus dotted overrides."""
    tree = read_yaml(path) if path is not None else {}
    for item in overrides or []:
        _apply_override(tree, item)
    source = str(path) if path is not None else "config"
    if overrides:
        source += " (with --set)"
    try:
        return PfrlConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, source)) from None
