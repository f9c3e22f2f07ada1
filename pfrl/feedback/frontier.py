"""Frontier-model feedback through any OpenAI-compatible chat-completions server.

`FrontierClient` sends chat requests with bounded concurrency, retries transient failures with
exponential backoff, keeps an on-disk cache keyed by the whole request (re-running a labelling job
costs nothing), and can ask the server to enforce a JSON schema (`response_format` json_schema).
Three writers use it, one per kind of pseudo feedback in the paper:

- `write_math_references`: a full solution per math problem; its final answer becomes the label.
- `write_test_inputs`: test inputs per code problem, as a JSON object `{"test_inputs": [...]}`.
- `write_reference_programs`: a program per code problem; `outputs_from_reference` (or the labeller's
  reference mode) runs it in the sandbox and its outputs become the expected outputs.

Prompt wording lives in `configs/prompts/` (see its README).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfrl.config import FrontierSection
from pfrl.errors import UserError
from pfrl.feedback.answers import extract_answer
from pfrl.feedback.code import extract_program, normalize_output
from pfrl.feedback.sandbox import Sandbox, SandboxJob
from pfrl.types import Problem

log = logging.getLogger(__name__)
SHIPPED_PROMPTS = Path(__file__).resolve().parents[2] / "configs" / "prompts"
RETRY_HTTP = {408, 409, 425, 429, 500, 502, 503, 504}


class FrontierError(UserError):
    """A request the server refuses for good (bad key, unknown model, bad request)."""


class FrontierRequestFailed(RuntimeError):
    """A request still failing after every retry (server down, overloaded, or replying garbage)."""


class _Retryable(Exception):
    pass


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    schema: dict[str, Any] | None = None
    schema_name: str = "reply"


class FrontierClient:
    def __init__(self, cfg: FrontierSection):
        if not cfg.base_url or not cfg.model:
            raise FrontierError("labeller.frontier.base_url and labeller.frontier.model must be set")
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.cache = Path(cfg.cache_dir) if cfg.cache_dir else None
        self.requests_sent = 0
        self.cache_hits = 0
        self._count_lock = threading.Lock()  # chat_many calls from several threads

    def _count(self, what: str) -> None:
        with self._count_lock:
            setattr(self, what, getattr(self, what) + 1)

    # -- one request -------------------------------------------------------------------------------
    def _payload(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": req.messages,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        if req.schema is not None and self.cfg.structured_output:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": req.schema_name, "schema": req.schema, "strict": True},
            }
        return body

    def _post(self, body: dict[str, Any]) -> str:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as resp:
                reply = json.load(resp)
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace").replace("\n", " ")
            if e.code in RETRY_HTTP:
                raise _Retryable(f"HTTP {e.code}") from None
            raise FrontierError(f"{self.url}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
            raise _Retryable(str(e)) from None
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise _Retryable("reply without choices[0].message.content") from None

    def _post_with_retries(self, body: dict[str, Any], want_json: bool) -> str:
        delay = self.cfg.backoff_s
        for attempt in range(self.cfg.max_retries + 1):
            try:
                self._count("requests_sent")
                content = self._post(body)
                if want_json:
                    json.loads(content)  # malformed JSON is worth another try
                return content
            except (_Retryable, json.JSONDecodeError) as e:
                if attempt == self.cfg.max_retries:
                    raise FrontierRequestFailed(f"gave up after {attempt + 1} attempts: {e}") from None
                time.sleep(delay * (1 + random.random() * 0.25))
                delay *= 2
        raise AssertionError("unreachable")

    # -- cache -------------------------------------------------------------------------------------
    def _cache_path(self, body: dict[str, Any]) -> Path | None:
        if self.cache is None:
            return None
        key = hashlib.sha256(json.dumps([self.url, body], sort_keys=True).encode()).hexdigest()
        return self.cache / key[:2] / f"{key}.json"

    def chat(self, req: ChatRequest) -> str:
        """The reply text (cached). FrontierError: refused for good; FrontierRequestFailed: retries spent."""
        body = self._payload(req)
        path = self._cache_path(body)
        if path is not None and path.is_file():
            self._count("cache_hits")
            return json.loads(path.read_text())["content"]
        content = self._post_with_retries(body, want_json=req.schema is not None)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"content": content}))
            tmp.replace(path)  # atomic: concurrent writers of one key never leave half a file
        return content

    def chat_many(self, requests: list[ChatRequest]) -> list[str | None]:
        """Replies in order, `concurrency` in flight; None where a request failed after retries."""

        def one(req: ChatRequest) -> str | None:
            try:
                return self.chat(req)
            except FrontierRequestFailed as e:
                log.warning("frontier request failed: %s", e)
                return None

        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            return list(pool.map(one, requests))


# -- prompts -----------------------------------------------------------------------------------------
def _template(cfg: FrontierSection, name: str) -> str:
    root = Path(cfg.prompt_dir) if cfg.prompt_dir else SHIPPED_PROMPTS
    path = root / name
    if not path.is_file():
        raise UserError(f"{path}: prompt template not found")
    return path.read_text()


def _style(cfg: FrontierSection, problem: Problem) -> str:
    if problem.entry_point is None:
        return _template(cfg, "style_stdin.txt").strip()
    return _template(cfg, "style_function_call.txt").strip().format(entry_point=problem.entry_point)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


_SCALAR = [
    {"type": "integer", "minimum": -(10**9), "maximum": 10**9},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "string", "maxLength": 40},
]


def _argument_schema(max_items: int) -> dict[str, Any]:
    """One positional argument: a scalar, a list of scalars, or a list of lists of scalars (bounded,
    so a constrained model cannot nest or grow without end)."""
    flat = {"type": "array", "maxItems": max_items, "items": {"anyOf": _SCALAR}}
    nested = {"type": "array", "maxItems": max_items, "items": {"anyOf": [*_SCALAR, flat]}}
    return {"anyOf": [*_SCALAR, nested]}


def test_inputs_schema(cfg: FrontierSection, function_call: bool) -> dict[str, Any]:
    """JSON schema of the test-input reply: for calls each input is an array of arguments (sent back
    as its JSON text), for stdin programs a string."""
    if function_call:
        item = {"type": "array", "minItems": 1, "maxItems": 6, "items": _argument_schema(8)}
    else:
        item = {"type": "string", "maxLength": cfg.max_input_chars}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["test_inputs"],
        "properties": {
            "test_inputs": {"type": "array", "items": item, "minItems": 1, "maxItems": cfg.num_test_inputs}
        },
    }


# -- writers -----------------------------------------------------------------------------------------
def write_math_references(client: FrontierClient, problems: list[Problem]) -> list[Problem]:
    """Each problem with `reference` set to the frontier model's solution (unchanged where the reply
    failed or states no final answer)."""
    template = _template(client.cfg, "math_reference.txt")
    replies = client.chat_many([ChatRequest(_user(template.format(prompt=p.prompt))) for p in problems])
    return [
        dataclasses.replace(p, reference=r) if r and extract_answer(r) is not None else p
        for p, r in zip(problems, replies, strict=True)
    ]


def parse_test_inputs(reply: str, function_call: bool, cfg: FrontierSection) -> list[str]:
    """Valid, distinct test inputs from a reply, as the problem schema stores them: for calls the
    JSON text of each argument array (a model writing the array as a string is accepted too)."""
    try:
        items = json.loads(reply).get("test_inputs", [])
    except (ValueError, AttributeError):
        return []
    out: list[str] = []
    for item in items if isinstance(items, list) else []:
        text = _call_input(item) if function_call else item if isinstance(item, str) else None
        if text is not None and len(text) <= cfg.max_input_chars and text not in out:
            out.append(text)
    return out[: cfg.num_test_inputs]


def _call_input(item: Any) -> str | None:
    if isinstance(item, str):
        try:
            item = json.loads(item)
        except ValueError:
            return None
    return json.dumps(item) if isinstance(item, list) else None


def write_test_inputs(client: FrontierClient, problems: list[Problem]) -> list[Problem]:
    """Each problem with frontier-written `test_inputs` (and no outputs: they are for the new inputs to
    get, from a reference program or self-consistency); unchanged where no valid input came back."""
    cfg = client.cfg
    template = _template(cfg, "code_test_inputs.txt")
    requests = [
        ChatRequest(
            _user(template.format(prompt=p.prompt, n=cfg.num_test_inputs, style=_style(cfg, p))),
            schema=test_inputs_schema(cfg, p.entry_point is not None),
            schema_name="test_inputs",
        )
        for p in problems
    ]
    out = []
    for p, reply in zip(problems, client.chat_many(requests), strict=True):
        inputs = parse_test_inputs(reply, p.entry_point is not None, cfg) if reply else []
        out.append(dataclasses.replace(p, test_inputs=inputs, test_outputs=[]) if inputs else p)
    return out


def write_reference_programs(client: FrontierClient, problems: list[Problem]) -> list[Problem]:
    """Each problem with `reference` set to the frontier model's program (unchanged where none came)."""
    template = _template(client.cfg, "code_reference.txt")
    requests = [
        ChatRequest(_user(template.format(prompt=p.prompt, style=_style(client.cfg, p)))) for p in problems
    ]
    out = []
    for p, reply in zip(problems, client.chat_many(requests), strict=True):
        program = extract_program(reply) if reply else None
        out.append(dataclasses.replace(p, reference=program) if program else p)
    return out


def outputs_from_reference(sandbox: Sandbox, problems: list[Problem]) -> list[Problem]:
    """Run each problem's reference program on its inputs; the outputs of the runs that completed
    become `test_outputs` (inputs it failed on are dropped). Problems without one are unchanged."""
    todo = [p for p in problems if p.reference and p.test_inputs]
    jobs = [SandboxJob(extract_program(p.reference), p.test_inputs, p.entry_point) for p in todo]
    done: dict[str, Problem] = {}
    for p, results in zip(todo, sandbox.run_many(jobs), strict=True):
        kept = [(i, r.output) for i, r in zip(p.test_inputs, results, strict=True) if r.status.ran]
        outputs = [normalize_output(o, p.entry_point is not None) for _, o in kept]
        done[p.id] = dataclasses.replace(p, test_inputs=[i for i, _ in kept], test_outputs=outputs)
    return [done.get(p.id, p) for p in problems]
