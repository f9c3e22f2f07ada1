"""Tokenising pairs, packing micro-batches, and completion-only log-probs."""

from __future__ import annotations

import pytest
import torch

from learner.batching import (
    MicroBatch,
    TokenizedPair,
    collate,
    pack_by_pairs,
    pack_by_tokens,
    sequence_logps,
    split_to_count,
    token_logps,
    tokenize_pair,
)
from pfrl.types import PreferencePair

PAIR = PreferencePair("p0", "Question: Ana has 3 apples. How many?\nAnswer:", " 3 \\boxed{3}", " 4", 0)


@pytest.fixture(scope="module")
def tokenizer(tiny_math_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_math_model)


def test_tokenize_appends_eos_and_keeps_prompt(tokenizer):
    t = tokenize_pair(tokenizer, PAIR, max_length=256)
    assert t.prompt == tokenizer(PAIR.prompt)["input_ids"]
    assert t.chosen[-1] == tokenizer.eos_token_id and t.rejected[-1] == tokenizer.eos_token_id
    assert t.chosen[:-1] == tokenizer(PAIR.chosen, add_special_tokens=False)["input_ids"]
    assert not t.truncated


def test_tokenize_truncates_to_max_length(tokenizer):
    long = PreferencePair("p", PAIR.prompt * 4, " 1 + 1 = 2." * 20, " no", 0)
    t = tokenize_pair(tokenizer, long, max_length=48)
    assert t.truncated
    assert len(t.prompt) + len(t.chosen) <= 48 and len(t.prompt) + len(t.rejected) <= 48
    full_prompt = tokenizer(long.prompt)["input_ids"]
    assert t.prompt == full_prompt[-len(t.prompt) :]  # the prompt keeps its end
    assert len(t.chosen) >= 1 and t.rejected[-1] == tokenizer.eos_token_id  # short side keeps its EOS


def test_collate_masks_prompt_and_padding():
    items = [TokenizedPair([5, 6, 7], [8, 2], [9, 9, 9, 2]), TokenizedPair([5], [4, 4, 2], [2])]
    mb = collate(items, pad_id=0)
    assert mb.input_ids.shape == (4, 7) and mb.n_pairs == 2
    assert mb.input_ids[0].tolist() == [5, 6, 7, 8, 2, 0, 0]  # chosen of pair 0
    assert mb.input_ids[2].tolist() == [5, 6, 7, 9, 9, 9, 2]  # rejected of pair 0
    assert mb.loss_mask[0].tolist() == [0, 0, 0, 1, 1, 0, 0]
    assert mb.loss_mask[3].tolist() == [0, 1, 0, 0, 0, 0, 0]
    assert mb.attention_mask[1].tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert mb.n_tokens == (3 + 2 + 3 + 4) + (1 + 3 + 1 + 1)
    assert mb.chosen_rows.tolist() == [0, 1] and mb.rejected_rows.tolist() == [2, 3]  # nothing shared


def full_layout(items: list[TokenizedPair], pad_id: int) -> MicroBatch:
    """The micro-batch without sharing: one row per side of every pair, n chosen then n rejected."""
    rows = [(t.prompt, t.chosen) for t in items] + [(t.prompt, t.rejected) for t in items]
    width = max(len(p) + len(c) for p, c in rows)
    ids, attention, loss = (torch.zeros((len(rows), width), dtype=torch.long) for _ in range(3))
    ids.fill_(pad_id)
    for i, (p, c) in enumerate(rows):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        attention[i, : len(p) + len(c)] = 1
        loss[i, len(p) : len(p) + len(c)] = 1
    n = len(items)
    index = torch.arange(2 * n)
    return MicroBatch(ids, attention, loss, index[:n], index[n:], n, sum(t.tokens for t in items))


# One rejected sample against two chosen ones, a chosen text sampled twice, the same completion
# under another prompt, and the same token sequence with another prompt/completion boundary.
SHARED = [
    TokenizedPair([5, 6], [7, 8, 2], [9, 2]),
    TokenizedPair([5, 6], [7, 3, 3, 2], [9, 2]),
    TokenizedPair([5, 6], [7, 8, 2], [4, 2]),
    TokenizedPair([5], [7, 8, 2], [9, 2]),
    TokenizedPair([5], [6, 7, 8, 2], [6, 9, 2]),
]


def test_collate_scores_each_distinct_row_once_and_indexes_the_full_layout():
    mb, full = collate(SHARED, pad_id=0), full_layout(SHARED, pad_id=0)
    # 10 sides: [5,6]+[7,8,2] and [5,6]+[9,2] twice each; the rest (boundary included) distinct.
    assert mb.n_rows == 8 and mb.n_pairs == 5 and mb.n_tokens == full.n_tokens
    assert len({tuple(r) for r in mb.input_ids.tolist()}) < mb.n_rows  # same ids, other boundary
    index = torch.cat([mb.chosen_rows, mb.rejected_rows])
    for name in ("input_ids", "attention_mask", "loss_mask"):
        assert torch.equal(getattr(mb, name)[index], getattr(full, name)), name


def test_shared_rows_give_the_logps_of_the_full_layout():
    mb, full = collate(SHARED, pad_id=0), full_layout(SHARED, pad_id=0)
    # A row's logits depend only on its tokens: the full layout's are the distinct rows', repeated.
    logits = torch.randn(mb.input_ids.shape + (11,), generator=torch.Generator().manual_seed(1))
    full_logits = logits[torch.cat([mb.chosen_rows, mb.rejected_rows])]
    for normalize in (False, True):
        for a, b in zip(sequence_logps(logits, mb, normalize), sequence_logps(full_logits, full, normalize), strict=True):
            assert torch.allclose(a, b), normalize


def _dpo_step(policy, reference, mb: MicroBatch, length_normalize: bool) -> tuple[float, dict[str, torch.Tensor]]:
    """DPOEngine._loss and its backward, on plain modules: the loss and the policy's gradients."""
    from learner.loss import dpo_loss

    policy.zero_grad(set_to_none=True)
    with torch.no_grad():
        ref_c, ref_r, _ = sequence_logps(reference(mb.input_ids, attention_mask=mb.attention_mask).logits, mb, length_normalize)
    logits = policy(mb.input_ids, attention_mask=mb.attention_mask).logits
    c, r, nll = sequence_logps(logits, mb, length_normalize)
    loss, _ = dpo_loss(c, r, ref_c, ref_r, beta=0.1, loss_type="sigmoid", label_smoothing=0.0, chosen_nll=nll, nll_weight=1.0)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("length_normalize", [False, True])
def test_shared_rows_make_the_update_of_the_full_batch(tiny_math_model, tokenizer, length_normalize):
    """Loss and gradients with each distinct row scored once equal those of the duplicated batch."""
    import copy

    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(tiny_math_model, dtype=torch.float32)
    reference = copy.deepcopy(policy).eval()
    with torch.no_grad():  # a reference the policy has moved away from: rewards are not all zero
        for p in reference.parameters():
            p.add_(0.02 * torch.randn_like(p))
    q2 = "Question: Bo has 5 pens. How many?\nAnswer:"
    right, other_right, wrong, other_wrong = " 3 \\boxed{3}", " 1 + 2 = 3. \\boxed{3}", " 4", " \\boxed{5}"
    pairs = [
        PreferencePair("p0", PAIR.prompt, right, wrong, 0),
        PreferencePair("p0", PAIR.prompt, other_right, wrong, 0),
        PreferencePair("p0", PAIR.prompt, right, other_wrong, 0),
        PreferencePair("p1", q2, right, wrong, 0),
    ]
    items = [tokenize_pair(tokenizer, p, max_length=256) for p in pairs]
    shared, full = collate(items, tokenizer.pad_token_id), full_layout(items, tokenizer.pad_token_id)
    assert (shared.n_rows, full.n_rows) == (6, 8)
    loss, grads = _dpo_step(policy, reference, shared, length_normalize)
    full_loss, full_grads = _dpo_step(policy, reference, full, length_normalize)
    assert loss == pytest.approx(full_loss, rel=1e-5)
    assert grads.keys() == full_grads.keys() and grads
    for name, g in full_grads.items():
        assert torch.allclose(grads[name], g, rtol=1e-4, atol=1e-7), name


def _batch_and_logits(vocab: int = 11, seed: int = 0):
    items = [TokenizedPair([1, 2, 3], [4, 5], [6, 7, 8]), TokenizedPair([1, 9], [10, 4, 3], [5])]
    mb = collate(items, pad_id=0)
    logits = torch.randn(mb.input_ids.shape + (vocab,), generator=torch.Generator().manual_seed(seed))
    return items, mb, logits


def test_sequence_logps_sum_completion_tokens_only():
    items, mb, logits = _batch_and_logits()
    logp = torch.log_softmax(logits, -1)
    chosen, rejected, nll = sequence_logps(logits, mb, length_normalize=False)

    def manual(row: int, prompt: list[int], completion: list[int]) -> float:
        seq = prompt + completion
        # token at position t is predicted by the logits at t - 1
        return sum(logp[row, t - 1, seq[t]].item() for t in range(len(prompt), len(seq)))

    for i, t in enumerate(items):
        assert chosen[i].item() == pytest.approx(manual(i, t.prompt, t.chosen), abs=1e-5)
        assert rejected[i].item() == pytest.approx(manual(2 + i, t.prompt, t.rejected), abs=1e-5)
        assert nll[i].item() == pytest.approx(-manual(i, t.prompt, t.chosen) / len(t.chosen), abs=1e-5)


def test_sequence_logps_ignore_prompt_and_padding_logits():
    _, mb, logits = _batch_and_logits()
    before = sequence_logps(logits, mb, length_normalize=False)
    noisy = logits.clone()
    # Scramble the logits that predict prompt tokens and those at/after padding.
    predicts_scored = mb.loss_mask[:, 1:].bool()
    noisy[:, :-1][~predicts_scored] += 100 * torch.randn_like(noisy[:, :-1][~predicts_scored])
    noisy[:, -1] += 50.0
    after = sequence_logps(noisy, mb, length_normalize=False)
    for a, b in zip(before, after, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_length_normalisation_divides_by_completion_tokens():
    items, mb, logits = _batch_and_logits()
    c_sum, r_sum, _ = sequence_logps(logits, mb, length_normalize=False)
    c_avg, r_avg, _ = sequence_logps(logits, mb, length_normalize=True)
    assert torch.allclose(c_avg, c_sum / torch.tensor([len(t.chosen) for t in items], dtype=torch.float32))
    assert torch.allclose(r_avg, r_sum / torch.tensor([len(t.rejected) for t in items], dtype=torch.float32))


def test_token_logps_matches_log_softmax():
    _, mb, logits = _batch_and_logits()
    ref = torch.log_softmax(logits, -1)[:, :-1].gather(-1, mb.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(token_logps(logits, mb.input_ids), ref, atol=1e-5)


def _items(lengths: list[int]) -> list[TokenizedPair]:
    return [TokenizedPair([1] * n, [2] * n, [3] * (n // 2 + 1)) for n in lengths]


def test_pack_by_pairs_keeps_order():
    items = _items([3, 4, 5, 6, 7])
    batches = pack_by_pairs(items, 2)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [t for b in batches for t in b] == items


def test_pack_by_tokens_respects_budget():
    items = _items([3, 40, 5, 22, 7, 9, 30, 4, 100])
    budget = 200
    batches = pack_by_tokens(items, budget)
    assert sorted(map(id, (t for b in batches for t in b))) == sorted(map(id, items))  # each pair once
    for b in batches:
        padded = 2 * len(b) * max(t.longest for t in b)
        assert padded <= budget or len(b) == 1  # an oversized pair travels alone
    assert any(len(b) > 1 for b in batches)


def test_pack_by_pairs_keeps_a_prompts_pairs_together():
    a, b, c = ([i] * 3 for i in (1, 2, 3))
    items = [TokenizedPair(p, [4, i], [5]) for p, i in ((a, 0), (b, 0), (a, 1), (c, 0), (b, 1), (a, 2))]
    batches = pack_by_pairs(items, 3)
    assert [[t.prompt[0] for t in batch] for batch in batches] == [[1, 1, 1], [2, 2, 3]]
    assert [t.chosen[1] for t in batches[0]] == [0, 1, 2]  # arrival order within a prompt


def test_pack_by_tokens_keeps_a_prompts_pairs_together():
    x = [TokenizedPair([1] * 6, [7] * 12, [8, 8]), TokenizedPair([1] * 6, [9] * 3, [8, 8])]  # longest 18, 9
    y = [TokenizedPair([2] * 6, [9] * 10, [3]), TokenizedPair([2] * 6, [9] * 10, [4])]  # longest 16, 16
    # A plain length sort packs x0 y0 | y1 x1: both prompts split, 8 rows scored instead of 6.
    batches = pack_by_tokens([x[0], y[0], x[1], y[1]], token_budget=2 * 2 * 18)
    assert batches == [x, y]
    assert sum(collate(b, pad_id=0).n_rows for b in batches) == 6


def test_pack_by_tokens_with_one_pair_per_prompt_is_a_length_sort():
    items = _items([3, 40, 5, 22, 7, 9, 30, 4, 100])
    flat = [t for b in pack_by_tokens(items, 200) for t in b]
    assert flat == sorted(items, key=lambda t: t.longest, reverse=True)


def test_split_to_count_splits_largest_and_stops_at_singletons():
    items = _items([1, 2, 3, 4, 5, 6])
    batches = split_to_count([items[:4], items[4:]], 4)
    assert len(batches) == 4 and [t for b in batches for t in b] == items
    assert len(split_to_count([items[:1], items[1:2]], 5)) == 2


# -- sampled token ids ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe():
    """A real byte-level BPE (the tiny models' tokenizer), trained so that 'apples' is one token."""
    from pfrl.tiny import build_tokenizer

    return build_tokenizer(["Ana has 3 apples and 4 apples. apples apples apples."] * 50, vocab_size=300)


def _sampled_group(bpe):
    """A group whose completions were sampled token by token: 'apples' spelt as single characters,
    which re-tokenising the text would merge into one token."""
    from pfrl.types import Problem, PromptItem, RolloutGroup

    problem = Problem("p0", "Ana has 3 apples. How many?")
    spelt = [bpe.convert_tokens_to_ids(ch) for ch in "apples"]
    chosen = [bpe.convert_tokens_to_ids("Ġ")] + spelt + [bpe.eos_token_id]  # ended on EOS
    rejected = bpe.encode(" 4 apples", add_special_tokens=False)  # cut by max_tokens: no EOS
    return RolloutGroup(
        item=PromptItem(problem, 0), completions=[bpe.decode(chosen, skip_special_tokens=True), bpe.decode(rejected)],
        token_ids=[chosen, rejected], finish_reasons=["stop", "length"], prompt_tokens=0, completion_tokens=0,
        policy_version=3, prompt_token_ids=bpe.encode(problem.prompt, add_special_tokens=True),
    )


def test_learner_trains_on_the_sampled_ids_not_a_retokenisation(bpe):
    from pfrl.feedback.pairs import to_preference_pairs
    from pfrl.types import LabelledGroup, decode, encode

    group = _sampled_group(bpe)
    labelled = LabelledGroup("p0", 0, 3, "3", [1.0, 0.0], [(0, 1)])
    (pair,) = [decode(encode(p)) for p in to_preference_pairs(group, labelled)]  # as it travels
    chosen_ids, rejected_ids = group.token_ids
    # The premise: the sampled ids are not what the text re-tokenises to.
    assert bpe.encode(pair.chosen, add_special_tokens=False) + [bpe.eos_token_id] != chosen_ids
    batch = collate([tokenize_pair(bpe, pair, max_length=256)], pad_id=bpe.pad_token_id)
    width = len(group.prompt_token_ids) + len(chosen_ids)
    assert batch.input_ids[0, :width].tolist() == group.prompt_token_ids + chosen_ids
    n_rej = len(group.prompt_token_ids) + len(rejected_ids)
    assert batch.input_ids[1, :n_rej].tolist() == group.prompt_token_ids + rejected_ids  # no EOS added
    assert batch.attention_mask[1].sum().item() == n_rej


def test_pairs_without_sampled_ids_are_retokenised(bpe):
    pair = PreferencePair("p", "Q:", " 1 + 1 = 2. So 2.", " 1 + 1 = 2. So 3. Yes.", 0)
    t = tokenize_pair(bpe, pair, max_length=256)
    assert t.chosen == bpe.encode(pair.chosen, add_special_tokens=False) + [bpe.eos_token_id]
