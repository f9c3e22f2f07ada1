"""What the model reads: chat-template rendering and prompt token ids, one definition for all.

Problems are rendered once, when they are loaded (`render_problems`): the generator, the learner
and evaluation all read `Problem.prompt` as rendered here and encode it with `prompt_ids`, so the
three see identical token ids. `model.chat_template`:

    none   the record's prompt verbatim (the tiny presets)
    auto   the model tokenizer's own chat template (none when it has none)
    FILE   a Jinja chat template file (e.g. configs/prompts/chat_template.jinja)

A template may write the BOS token itself while the tokenizer also adds one on encode; the rendered
text then drops its leading BOS so the ids hold exactly one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pfrl.config import ModelSection
from pfrl.errors import UserError
from pfrl.types import Problem


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """A rendered prompt's token ids, with the tokenizer's own special tokens (its BOS, if any):
    how vLLM encodes a text prompt, and how every pfrl consumer encodes one."""
    return list(tokenizer.encode(text, add_special_tokens=True))


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and prompt_ids(tokenizer, "a")[:1] == [bos]


def resolve_template(setting: str, tokenizer: Any) -> str | None:
    """The Jinja source `model.chat_template` names (None: prompts are used verbatim)."""
    if setting == "none":
        return None
    if setting == "auto":
        return getattr(tokenizer, "chat_template", None) or None
    path = Path(setting)
    if not path.is_file():
        raise UserError(f"model.chat_template={setting}: not auto, none or a template file")
    return path.read_text(encoding="utf-8")


def render(text: str, tokenizer: Any, template: str | None, system_prompt: str | None = None) -> str:
    """One prompt as the model reads it: the user turn (after an optional system turn) plus the
    assistant header; verbatim when there is no template."""
    if template is None:
        return text
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": text})
    out = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and out.startswith(bos) and _adds_bos(tokenizer):
        out = out[len(bos):]
    return out


class PromptRenderer:
    """`render` bound to one model's tokenizer and the `model` config section."""

    def __init__(self, cfg: ModelSection, tokenizer: Any):
        self.tokenizer = tokenizer
        self.template = resolve_template(cfg.chat_template, tokenizer)
        self.system_prompt = cfg.system_prompt
        if self.system_prompt and self.template is None:
            raise UserError(
                f"model.system_prompt is set but model.chat_template={cfg.chat_template} gives no template to put it in"
            )

    @property
    def active(self) -> bool:
        return self.template is not None

    def __call__(self, text: str) -> str:
        return render(text, self.tokenizer, self.template, self.system_prompt)


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def render_problems(problems: list[Problem], cfg: ModelSection, model_path: str) -> list[Problem]:
    """Problems whose `prompt` is what the model reads; the record's own text stays in `raw_prompt`
    (what a frontier model is asked about). Unchanged with `model.chat_template: none`."""
    if cfg.chat_template == "none" and not cfg.system_prompt:
        return problems
    renderer = PromptRenderer(cfg, load_tokenizer(model_path))
    if not renderer.active:
        return problems
    return [replace(p, prompt=renderer(p.prompt), raw_prompt=p.raw_prompt or p.prompt) for p in problems]
