from hypothesis import given
from hypothesis import strategies as st

from learner.batching import tokenize_pair
from pfrl.feedback.steps import focus_on_first_error, split_steps
from pfrl.types import PreferencePair


@given(st.text(alphabet=st.sampled_from(list("ab .\n=12")), max_size=60))
def test_steps_concatenate_back(text):
    assert "".join(split_steps(text)) == text


def test_first_error_moves_shared_steps_into_the_prompt():
    pair = PreferencePair("p", "Q:", " 2 + 3 = 5. 5 * 2 = 10. The answer is \\boxed{10}.",
                          " 2 + 3 = 5. 5 * 2 = 11. 11 + 1 = 12. The answer is \\boxed{12}.", 3)
    focused = focus_on_first_error(pair)
    assert focused.prompt == "Q: 2 + 3 = 5. "
    assert focused.chosen == "5 * 2 = 10. The answer is \\boxed{10}."
    assert focused.rejected == "5 * 2 = 11. "
    assert not focused.rejected_complete and focused.policy_version == 3
    # the full pair is still recoverable: prompt + completion reproduces both texts' starts
    assert focused.prompt + focused.chosen == pair.prompt + pair.chosen


def test_first_error_in_last_step_keeps_the_rejection_complete():
    pair = PreferencePair("p", "Q:", " 1 + 1 = 2. The answer is \\boxed{2}.", " 1 + 1 = 2. The answer is \\boxed{3}.", 0)
    focused = focus_on_first_error(pair)
    assert focused.rejected == "The answer is \\boxed{3}." and focused.rejected_complete


def test_no_shared_prefix_or_prefix_rejection_is_unchanged():
    a = PreferencePair("p", "Q:", " 1 + 1 = 2.", " 1 + 1 = 3.", 0)
    assert focus_on_first_error(a).prompt == "Q:" and focus_on_first_error(a).rejected == " 1 + 1 = 3."
    b = PreferencePair("p", "Q:", " 1 + 1 = 2. Done.", " 1 + 1 = 2.", 0)
    assert focus_on_first_error(b) == b


def test_learner_appends_eos_only_to_complete_rejections(tiny_math_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_math_model)
    pair = PreferencePair("p", "Q:", "a.", "b.", 0)
    full = tokenize_pair(tok, pair, 512)
    cut = tokenize_pair(tok, PreferencePair("p", "Q:", "a.", "b.", 0, rejected_complete=False), 512)
    assert full.rejected[-1] == tok.eos_token_id and cut.rejected[-1] != tok.eos_token_id
    assert full.chosen[-1] == tok.eos_token_id == cut.chosen[-1]
