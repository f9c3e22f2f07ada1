"""Preference pairs -> token ids -> padded micro-batches -> completion log-probs.

A pair sampled by a generator carries the token ids it was sampled as (`PreferencePair.sampled`):
those are trained on exactly. Otherwise the prompt is encoded the way the generator encodes it
(`pfrl.prompting.prompt_ids`) and the completion without special tokens, plus EOS: the sequence the
policy would have produced had it stopped.
Only completion tokens are scored; prompt and padding positions are masked out. A micro-batch holds
each distinct (prompt + completion) sequence of its pairs once, and per pair the rows of its chosen
and rejected sides, so one forward covers both. Pairs of one prompt often share a sequence (one
rejected sample against several chosen ones, or a small policy sampling the same text twice):
scoring it once and indexing it twice gives the same loss and the same gradient (a row used twice
receives its gradient twice) for fewer forward rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pfrl.prompting import prompt_ids
from pfrl.types import PreferencePair


@dataclass(slots=True)
class TokenizedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    truncated: bool = False

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens of both sequences."""
        return 2 * len(self.prompt) + len(self.chosen) + len(self.rejected)

    @property
    def longest(self) -> int:
        return len(self.prompt) + max(len(self.chosen), len(self.rejected))


@dataclass(slots=True)
class MicroBatch:
    """R distinct right-padded rows (R <= 2n) for n pairs. Without shared sequences the rows are the
    n chosen sequences, then the n rejected ones (`chosen_rows` = 0..n-1, `rejected_rows` = n..2n-1)."""

    input_ids: torch.Tensor  # [R, T]
    attention_mask: torch.Tensor  # [R, T]
    loss_mask: torch.Tensor  # [R, T]: 1 where the token is a completion token
    chosen_rows: torch.Tensor  # [n] long: the row of each pair's chosen sequence
    rejected_rows: torch.Tensor  # [n] long: the row of each pair's rejected sequence
    n_pairs: int
    n_tokens: int  # real tokens of all 2n sequences, shared ones counted per use (what was trained on)

    @property
    def n_rows(self) -> int:
        """Sequences the forward passes score."""
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> MicroBatch:
        return MicroBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.loss_mask.to(device),
            self.chosen_rows.to(device),
            self.rejected_rows.to(device),
            self.n_pairs,
            self.n_tokens,
        )


def _fit(prompt: list[int], completion: list[int], max_length: int) -> tuple[list[int], list[int], bool]:
    """Cut a sequence to max_length: the prompt keeps its end (at most half the budget when it must
    give way), the completion keeps its start (EOS is lost: it did not finish within the budget)."""
    if len(prompt) + len(completion) <= max_length:
        return prompt, completion, False
    room_for_prompt = max(max_length - len(completion), max_length // 2)
    prompt = prompt[-room_for_prompt:]
    return prompt, completion[: max_length - len(prompt)], True


def pad_token_id(tokenizer) -> int:
    # Padding is masked everywhere, so any id works; EOS stands in where a tokenizer has no pad.
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _retokenize(tokenizer, pair: PreferencePair) -> tuple[list[int], list[int], list[int]]:
    """Token ids of a pair that carries no sampled ids (a pairs file, or text edited after sampling)."""
    prompt = prompt_ids(tokenizer, pair.prompt)
    eos = [tokenizer.eos_token_id]
    # A side that stops mid-solution (a pDPO prefix) did not end there: no EOS after it.
    chosen = list(tokenizer(pair.chosen, add_special_tokens=False)["input_ids"]) + (eos if pair.chosen_complete else [])
    rejected = list(tokenizer(pair.rejected, add_special_tokens=False)["input_ids"]) + (eos if pair.rejected_complete else [])
    return prompt, chosen, rejected


def tokenize_pair(tokenizer, pair: PreferencePair, max_length: int) -> TokenizedPair:
    """The pair's sampled token ids when it carries them (what the policy actually produced), else
    its text re-tokenised."""
    if pair.sampled is not None:
        ids = pair.sampled
        prompt, chosen, rejected = list(ids.prompt), list(ids.chosen), list(ids.rejected)
    else:
        prompt, chosen, rejected = _retokenize(tokenizer, pair)
    # Both sides must see the same prompt tokens, so cut the prompt once for the longer completion.
    p, _, cut = _fit(prompt, max(chosen, rejected, key=len), max_length)
    c = chosen[: max_length - len(p)]
    r = rejected[: max_length - len(p)]
    return TokenizedPair(p, c, r, cut or len(c) < len(chosen) or len(r) < len(rejected))


def tokenize_pairs(tokenizer, pairs: Sequence[PreferencePair], max_length: int) -> list[TokenizedPair]:
    return [tokenize_pair(tokenizer, p, max_length) for p in pairs]


def group_by_prompt(items: Sequence[TokenizedPair]) -> list[list[TokenizedPair]]:
    """The pairs of each prompt (by its token ids), prompts in order of first arrival and pairs in
    arrival order within one. Only pairs in one micro-batch can share a scored row (`collate`), and
    shared rows come from pairs of one prompt: packing keeps each group together where it can."""
    groups: dict[tuple[int, ...], list[TokenizedPair]] = {}
    for t in items:
        groups.setdefault(tuple(t.prompt), []).append(t)
    return list(groups.values())


def pack_by_pairs(items: Sequence[TokenizedPair], pairs_per_batch: int) -> list[list[TokenizedPair]]:
    """Fixed-size slices of the pairs grouped by prompt (pairs usually arrive so already, and then
    the order is unchanged); a group still straddles a slice boundary when it must."""
    ordered = [t for group in group_by_prompt(items) for t in group]
    return [ordered[i : i + pairs_per_batch] for i in range(0, len(ordered), pairs_per_batch)]


def _length_sorted_groups(items: Sequence[TokenizedPair]) -> list[TokenizedPair]:
    """Prompt groups by their longest pair, longest first, each group's pairs longest first. With one
    pair per prompt this is a plain sort by length; otherwise a short pair travels with its prompt's
    longer ones, trading a little padding for the rows they share."""
    groups = [sorted(g, key=lambda t: t.longest, reverse=True) for g in group_by_prompt(items)]
    groups.sort(key=lambda g: g[0].longest, reverse=True)
    return [t for g in groups for t in g]


def pack_by_tokens(items: Sequence[TokenizedPair], token_budget: int) -> list[list[TokenizedPair]]:
    """Greedy packing of length-sorted pairs under a padded-token budget (2 x pairs x longest row).
    Sorting keeps similar lengths together, so little of the budget goes to padding; a pair longer
    than the budget on its own still gets a micro-batch of one. The budget counts every pair's two
    rows, shared or not: it bounds memory whatever the data, and sharing only lowers the cost."""
    batches: list[list[TokenizedPair]] = []
    current: list[TokenizedPair] = []
    for item in _length_sorted_groups(items):
        longest = max([item.longest] + [t.longest for t in current])
        if current and 2 * (len(current) + 1) * longest > token_budget:
            batches.append(current)
            current = []
        current.append(item)
    if current:
        batches.append(current)
    return batches


def pack_micro_batches(
    items: Sequence[TokenizedPair], micro_batch_pairs: int, micro_batch_tokens: int | None
) -> list[list[TokenizedPair]]:
    if micro_batch_tokens is not None:
        return pack_by_tokens(items, micro_batch_tokens)
    return pack_by_pairs(items, micro_batch_pairs)


def split_to_count(batches: list[list[TokenizedPair]], count: int) -> list[list[TokenizedPair]]:
    """Split the largest micro-batches until there are `count` of them (data-parallel ranks must run
    the same number of forward/backward passes). Returns fewer only when every batch is one pair."""
    out = [list(b) for b in batches]
    while len(out) < count:
        i = max(range(len(out)), key=lambda j: len(out[j]))
        if len(out[i]) < 2:
            break
        half = len(out[i]) // 2
        out[i : i + 1] = [out[i][:half], out[i][half:]]
    return out


Row = tuple[list[int], list[int]]  # (prompt ids, completion ids)


def distinct_rows(items: Sequence[TokenizedPair]) -> tuple[list[Row], list[int], list[int]]:
    """Each distinct (prompt, completion) once, chosen sides first, in order of first use; and the
    row index of each pair's chosen and rejected side. The key is the exact token ids on both sides
    of the loss-mask boundary: the same text split differently is scored differently."""
    index: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    rows: list[Row] = []

    def row_of(prompt: list[int], completion: list[int]) -> int:
        key = (tuple(prompt), tuple(completion))
        if key not in index:
            index[key] = len(rows)
            rows.append((prompt, completion))
        return index[key]

    chosen = [row_of(t.prompt, t.chosen) for t in items]
    rejected = [row_of(t.prompt, t.rejected) for t in items]
    return rows, chosen, rejected


def collate(items: Sequence[TokenizedPair], pad_id: int) -> MicroBatch:
    """Right-padded [R, T] tensors over the distinct rows; the loss mask marks completion tokens."""
    rows, chosen, rejected = distinct_rows(items)
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, completion) in enumerate(rows):
        n = len(prompt) + len(completion)
        input_ids[i, :n] = torch.tensor(prompt + completion, dtype=torch.long)
        attention[i, :n] = 1
        loss_mask[i, len(prompt) : n] = 1
    index = torch.tensor(chosen + rejected, dtype=torch.long)
    n_tokens = sum(t.tokens for t in items)
    return MicroBatch(input_ids, attention, loss_mask, index[: len(items)], index[len(items) :], len(items), n_tokens)


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(token_t | tokens_<t) for t >= 1, shape [B, T-1], in float32.

    One row at a time: a full [B, T, vocab] log-softmax would be the largest tensor of the step."""
    targets = input_ids[:, 1:]
    out = []
    for row_logits, row_targets in zip(logits[:, :-1], targets, strict=True):
        row = row_logits.float()
        picked = row.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)
        out.append(picked - torch.logsumexp(row, dim=-1))
    return torch.stack(out)


def sequence_logps(
    logits: torch.Tensor, batch: MicroBatch, length_normalize: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen log-probs, rejected log-probs, chosen token-mean NLL), each of shape [n_pairs], from
    the logits of the batch's distinct rows.

    Log-probs are sums over completion tokens, or means when `length_normalize`. Indexing a row for
    each pair that uses it routes each use's gradient back to that row's logits, where they add up."""
    mask = batch.loss_mask[:, 1:].to(logits.device, torch.float32)
    per_token = token_logps(logits, batch.input_ids.to(logits.device)) * mask
    summed = per_token.sum(-1)
    counts = mask.sum(-1).clamp(min=1)
    seq = summed / counts if length_normalize else summed
    chosen, rejected = batch.chosen_rows.to(logits.device), batch.rejected_rows.to(logits.device)
    chosen_nll = -summed[chosen] / counts[chosen]
    return seq[chosen], seq[rejected], chosen_nll
