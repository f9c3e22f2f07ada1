"""Typed messages that cross process boundaries.

Everything that travels between the controller, generators, labellers, buffer and learner is one
of these dataclasses. `encode`/`decode` frame them with msgpack (a type tag plus plain fields):
no pickles on the data plane, and a message of the wrong shape fails loudly on decode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import msgpack


@dataclass(slots=True)
class Problem:
    """One record of the JSONL problem schema. Three kinds of label, never confused: the data set's
    ground truth (`answer`; `test_outputs` on `test_inputs`), what a frontier model wrote (`reference`:
    a math solution/answer or a code program; `reference_test_inputs` and, from its program,
    `reference_test_outputs`), and none at all (self-consistency)."""

    id: str
    prompt: str
    answer: str | None = None
    reference: str | None = None
    entry_point: str | None = None
    test_inputs: list[str] = field(default_factory=list)
    test_outputs: list[str] = field(default_factory=list)
    reference_test_inputs: list[str] = field(default_factory=list)
    reference_test_outputs: list[str] = field(default_factory=list)
    # A data set's own test code (asserts run after the program), kept whole for evaluation only.
    eval_tests: str | None = None
    # The record's prompt before chat-template rendering (None: `prompt` was never rendered).
    raw_prompt: str | None = None


@dataclass(slots=True)
class PromptItem:
    """A problem scheduled for sampling, with where it sits in the run."""

    problem: Problem
    iteration: int
    attempt: int = 0


@dataclass(slots=True)
class RolloutGroup:
    """N completions sampled for one prompt by one policy version."""

    item: PromptItem
    completions: list[str]
    token_ids: list[list[int]]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int
    policy_version: int
    generator_id: int = 0
    gen_s: float = 0.0
    # The prompt's token ids as the engine saw them (empty where no engine sampled: `pfrl label`).
    prompt_token_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class LabelledGroup:
    """Pseudo-feedback outcome of one rollout group."""

    prompt_id: str
    iteration: int
    policy_version: int
    label: str | None
    scores: list[float]
    pairs: list[tuple[int, int]]
    skipped: str | None = None
    vote_share: float | None = None
    pseudo_outputs: list[str | None] | None = None
    label_s: float = 0.0
    # How far the pseudo label agrees with the record's ground truth, when it has some and the label
    # did not come from it (math: 1.0 or 0.0; code: share of compared test inputs). Only compared.
    agree_gt: float | None = None

    def __post_init__(self) -> None:
        # msgpack has no tuples: restore (chosen, rejected) index pairs after a round trip.
        self.pairs = [(a, b) for a, b in self.pairs]


@dataclass(slots=True)
class SampledIds:
    """The token ids a generator sampled for one pair: the learner trains on these exactly, since
    re-tokenising the text can merge tokens differently (and `chosen`/`rejected` end in EOS only
    when the sample did)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


@dataclass(slots=True)
class PreferencePair:
    """One DPO example, tagged with the policy version that sampled it."""

    prompt_id: str
    prompt: str
    chosen: str
    rejected: str
    policy_version: int
    iteration: int = 0
    # False for a side that stops before the solution ends (pDPO prefix pairs): no EOS is appended to
    # it when the pair is re-tokenised (sampled ids never carry one there).
    chosen_complete: bool = True
    rejected_complete: bool = True
    # None when the pair has no sampled ids (a pairs file, text edited after sampling): re-tokenised.
    sampled: SampledIds | None = None


@dataclass(slots=True)
class PrefixBatch:
    """Step-level pDPO: one labelled group's solutions, whose line-step prefixes a generator samples
    `completions_per_prefix` continuations from (prompt + prefix, no EOS) so each prefix can be
    valued against the group's label."""

    item: PromptItem
    label: str
    prompt_token_ids: list[int]
    solutions: list[list[int]]  # the group's sampled token ids
    prefixes_per_problem: int
    completions_per_prefix: int
    source_version: int  # the policy version that sampled the solutions (and so the prefixes)


@dataclass(slots=True)
class PrefixRollout:
    """The prefixes a generator chose from a batch, and what it sampled from each
    (`completions[j]` continue `prefixes[j]`)."""

    batch: PrefixBatch
    prefixes: list[list[int]]
    prefix_texts: list[str]
    completions: list[list[str]]
    completion_tokens: int
    policy_version: int  # the weights that sampled the completions (only the values depend on them)
    generator_id: int = 0
    gen_s: float = 0.0


@dataclass(slots=True)
class PrefixValues:
    """How many completions of each prefix reached the label: >= 1 is a good prefix, 0 a bad one."""

    prompt_id: str
    values: list[int]
    label_s: float = 0.0


@dataclass(slots=True)
class TensorMeta:
    name: str
    dtype: str
    shape: list[int]
    offset: int
    nbytes: int


@dataclass(slots=True)
class WeightsMeta:
    """Header of one weight bucket; the raw bytes travel next to it (no copies through msgpack)."""

    version: int
    bucket: int
    num_buckets: int
    tensors: list[TensorMeta]


_TYPES: dict[str, type] = {
    t.__name__: t
    for t in (Problem, PromptItem, RolloutGroup, LabelledGroup, SampledIds, PreferencePair, PrefixBatch, PrefixRollout,
              PrefixValues, TensorMeta, WeightsMeta)
}


def to_plain(msg: Any) -> Any:
    """Dataclass tree -> tagged plain data, msgpack-ready."""
    if dataclasses.is_dataclass(msg) and not isinstance(msg, type):
        out = {f.name: to_plain(getattr(msg, f.name)) for f in dataclasses.fields(msg)}
        out["__t"] = type(msg).__name__
        return out
    if isinstance(msg, list | tuple):
        return [to_plain(v) for v in msg]
    if isinstance(msg, dict):
        return {k: to_plain(v) for k, v in msg.items()}
    return msg


def from_plain(data: Any) -> Any:
    if isinstance(data, dict):
        tag = data.get("__t")
        fields = {k: from_plain(v) for k, v in data.items() if k != "__t"}
        if tag is None:
            return fields
        cls = _TYPES.get(tag)
        if cls is None:
            raise ValueError(f"unknown message type {tag!r}")
        return cls(**fields)
    if isinstance(data, list):
        return [from_plain(v) for v in data]
    return data


def encode(msg: Any) -> bytes:
    return msgpack.packb(to_plain(msg), use_bin_type=True)


def decode(raw: bytes) -> Any:
    return from_plain(msgpack.unpackb(raw, raw=False))
