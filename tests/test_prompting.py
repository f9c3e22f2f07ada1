"""Chat templates rendered once at load; one BOS; the same prompt ids for generation, training, eval."""

from __future__ import annotations

import shutil

import pytest

from pfrl.config import ModelSection
from pfrl.errors import UserError
from pfrl.prompting import PromptRenderer, prompt_ids, render_problems
from pfrl.types import Problem

# A template that writes BOS itself, as Llama- and Mistral-style templates do.
BOS_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
PROBLEM = Problem("p0", "Question: Ana has 3 apples. How many?\nAnswer:", answer="3")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_math_model):
    """The tiny model with a tokenizer that adds BOS on encode (like Llama's) and a chat template
    that writes BOS too: the case where a careless renderer doubles it."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("bos-model") / "m"
    shutil.copytree(tiny_math_model, out)
    tok = AutoTokenizer.from_pretrained(out)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)])
    tok.chat_template = BOS_TEMPLATE
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_none_leaves_prompts_untouched(model_dir):
    assert render_problems([PROBLEM], ModelSection(), model_dir) == [PROBLEM]


def test_auto_renders_the_model_template_with_one_bos(model_dir, tokenizer):
    assert prompt_ids(tokenizer, "x")[0] == tokenizer.bos_token_id  # the tokenizer adds BOS itself
    (rendered,) = render_problems([PROBLEM], ModelSection(chat_template="auto", system_prompt="Be brief."), model_dir)
    assert rendered.prompt == f"<|system|>\nBe brief.\n<|user|>\n{PROBLEM.prompt}\n<|assistant|>\n"
    assert rendered.raw_prompt == PROBLEM.prompt and rendered.answer == "3"
    ids = prompt_ids(tokenizer, rendered.prompt)
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


def test_template_file_and_its_errors(tmp_path, model_dir):
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    (rendered,) = render_problems([PROBLEM], ModelSection(chat_template=str(path)), model_dir)
    assert rendered.prompt == f"[{PROBLEM.prompt}]"
    with pytest.raises(UserError, match="model.chat_template=nope.jinja: not auto, none or a template file"):
        render_problems([PROBLEM], ModelSection(chat_template="nope.jinja"), model_dir)
    with pytest.raises(UserError, match="model.system_prompt is set but"):
        render_problems([PROBLEM], ModelSection(system_prompt="hi"), model_dir)


def test_shipped_plain_template_renders_for_the_tiny_model(tiny_math_model):
    (rendered,) = render_problems([PROBLEM], ModelSection(chat_template="configs/prompts/chat_template.jinja"),
                                  tiny_math_model)
    assert rendered.prompt == f"### User\n{PROBLEM.prompt}\n### Assistant\n"


def test_training_encodes_the_prompt_as_generation_and_eval_do(model_dir, tokenizer):
    """The learner re-tokenising a pair without sampled ids gets the same prompt ids as
    `prompt_ids` (the generator's and `pfrl eval`'s encoding), one BOS included."""
    from learner.batching import tokenize_pair
    from pfrl.types import PreferencePair

    (rendered,) = render_problems([PROBLEM], ModelSection(chat_template="auto"), model_dir)
    pair = PreferencePair("p0", rendered.prompt, " 3", " 4", 0)
    assert tokenize_pair(tokenizer, pair, 512).prompt == prompt_ids(tokenizer, rendered.prompt)
    assert PromptRenderer(ModelSection(chat_template="auto"), tokenizer)(PROBLEM.prompt) == rendered.prompt


@pytest.mark.slow
def test_generator_eval_and_learner_see_identical_prompt_ids(model_dir, tokenizer):
    """A real vLLM engine: the prompt ids it sampled from (carried to the learner) equal the ids
    the learner would make from the text and the ids evaluation sends, with one BOS."""
    from learner.batching import tokenize_pair
    from pfrl.config import GeneratorSection, SyncSection
    from pfrl.feedback.pairs import to_preference_pairs
    from pfrl.generation import GeneratorEngine
    from pfrl.types import LabelledGroup, PreferencePair, PromptItem

    model_cfg = ModelSection(chat_template="auto", max_length=256)
    (rendered,) = render_problems([PROBLEM], model_cfg, model_dir)
    engine = GeneratorEngine(model_dir, GeneratorSection(n_samples=2, max_tokens=8), model_cfg, SyncSection(), seed=0)
    try:
        (group,) = engine.generate([PromptItem(rendered, 0)])
        texts = engine.sample_texts([rendered.prompt], 1, 0.0)
    finally:
        engine.shutdown()
    expected = prompt_ids(tokenizer, rendered.prompt)
    assert group.prompt_token_ids == expected and expected.count(tokenizer.bos_token_id) == 1
    (pair,) = to_preference_pairs(group, LabelledGroup("p0", 0, 0, "3", [1.0, 0.0], [(0, 1)]))
    assert tokenize_pair(tokenizer, pair, 256).prompt == expected  # trained on the sampled ids
    text_only = PreferencePair("p0", pair.prompt, pair.chosen, pair.rejected, 0)
    assert tokenize_pair(tokenizer, text_only, 256).prompt == expected  # re-tokenised: the same
    assert len(texts) == 1 and len(texts[0]) == 1


def test_preflight_counts_the_bos_a_prompt_is_encoded_with(model_dir, tokenizer):
    """A prompt that leaves exactly `room` tokens without its BOS leaves room - 1 with it: too long."""
    from pfrl.preflight import _too_long

    n = len(prompt_ids(tokenizer, PROBLEM.prompt))  # BOS included, as the generator encodes it
    assert _too_long([PROBLEM], model_dir, room=16, max_length=n + 16) == set()
    assert _too_long([PROBLEM], model_dir, room=16, max_length=n + 15) == {"p0"}
