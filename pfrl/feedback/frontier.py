"""Frontier-model feedback through any OpenAI-compatible chat-completions server.

`FrontierClient` sends chat requests through the `openai` SDK, which owns the HTTP side: timeouts,
retries of connection errors, 408/409/429 and 5xx with exponential backoff, and the server's
`Retry-After` / `retry-after-ms` headers (up to two minutes). pfrl adds what the SDK does not know
about: bounded concurrency, an on-disk cache keyed by the whole request (re-running a labelling job
costs nothing), and re-asking when a reply is empty or is not the JSON a schema asked for
(`response_format` json_schema). Three writers use it, one per kind of pseudo feedback in the paper:

- `write_math_references`: a full solution per math problem; its final answer becomes the label.
- `write_test_inputs`: test inputs per code problem, as a JSON object `{"test_inputs": [...]}`, into
  `reference_test_inputs` (a record's own `test_inputs`/`test_outputs` stay: they are ground truth).
- `write_reference_programs`: a program per code problem; `outputs_from_reference` (or the labeller's
  reference source) runs it in the sandbox and its outputs become `reference_test_outputs`.

`write_references` chains them per task (what `pfrl references` runs). Prompt wording lives in
`configs/prompts/` (see its README).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
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
# The openai SDK requires some key; vLLM's convention for servers started without --api-key.
NO_KEY = "EMPTY"


class FrontierError(UserError):
    """A request the server refuses for good (bad key, unknown model, bad request)."""


class FrontierRequestFailed(RuntimeError):
    """A request still failing after every retry (server down, overloaded, or replying garbage)."""


def sdk_retries(status: int) -> bool:
    """Statuses the openai SDK retries by itself (so, once it gives up, a transient failure)."""
    return status in (408, 409, 429) or status >= 500


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    schema: dict[str, Any] | None = None
    schema_name: str = "reply"


class FrontierClient:
    def __init__(self, cfg: FrontierSection):
        import openai

        if not cfg.base_url or not cfg.model:
            raise FrontierError("labeller.frontier.base_url and labeller.frontier.model must be set")
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"  # names the server in errors and cache keys
        self.cache = Path(cfg.cache_dir) if cfg.cache_dir else None
        self.requests_sent = 0  # HTTP attempts, the SDK's own retries included
        self.cache_hits = 0
        self._count_lock = threading.Lock()  # chat_many calls from several threads
        self._sdk = openai.OpenAI(
            base_url=cfg.base_url,
            api_key=os.environ.get(cfg.api_key_env) or NO_KEY,
            timeout=cfg.timeout_s,
            max_retries=cfg.max_retries,
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [self._on_send]}),
        )

    def _on_send(self, _request: Any) -> None:
        self._count("requests_sent")

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

    def _complete(self, body: dict[str, Any]) -> str | None:
        """The reply text (None when the server sent no content); the SDK has retried already."""
        import openai

        try:
            reply = self._sdk.chat.completions.create(**body)
        except openai.APIStatusError as e:
            if sdk_retries(e.status_code):
                raise FrontierRequestFailed(f"{self.url}: HTTP {e.status_code} after retries") from None
            detail = str(e.message)[:300].replace("\n", " ")
            raise FrontierError(f"{self.url}: HTTP {e.status_code}: {detail}") from None
        except openai.APIConnectionError as e:  # timeouts included
            raise FrontierRequestFailed(f"{self.url}: {e}") from None
        choices = getattr(reply, "choices", None)
        return choices[0].message.content if choices else None

    def _ask(self, body: dict[str, Any], want_json: bool) -> str:
        """Re-ask (up to `max_retries` times) while the reply is empty or not the JSON asked for: the
        HTTP exchange succeeded, so this is the model's doing and another sample may fix it."""
        problem = ""
        for _ in range(self.cfg.max_retries + 1):
            content = self._complete(body)
            if not content:
                problem = "reply without content"
                continue
            if want_json:
                try:
                    json.loads(content)
                except ValueError:
                    problem = "reply is not valid JSON"
                    continue
            return content
        raise FrontierRequestFailed(f"{self.url}: {problem} after {self.cfg.max_retries + 1} asks")

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
        content = self._ask(body, want_json=req.schema is not None)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
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

    def close(self) -> None:
        self._sdk.close()


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
    """Each problem with frontier-written `reference_test_inputs` (and no outputs yet: they come from a
    reference program or self-consistency); unchanged where no valid input came back."""
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
        out.append(
            dataclasses.replace(p, reference_test_inputs=inputs, reference_test_outputs=[]) if inputs else p
        )
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
    """Run each problem's reference program on its `reference_test_inputs`; the outputs of the runs
    that completed become `reference_test_outputs` (inputs it failed on are dropped). Problems without
    a program or frontier inputs are unchanged."""
    todo = [p for p in problems if p.reference and p.reference_test_inputs]
    jobs = [
        SandboxJob(extract_program(p.reference or ""), p.reference_test_inputs, p.entry_point) for p in todo
    ]
    done: dict[str, Problem] = {}
    for p, results in zip(todo, sandbox.run_many(jobs), strict=True):
        kept = [(i, r.output) for i, r in zip(p.reference_test_inputs, results, strict=True) if r.status.ran]
        outputs = [normalize_output(o, p.entry_point is not None) for _, o in kept]
        done[p.id] = dataclasses.replace(
            p, reference_test_inputs=[i for i, _ in kept], reference_test_outputs=outputs
        )
    return [done.get(p.id, p) for p in problems]


def write_references(
    client: FrontierClient, problems: list[Problem], task: str, sandbox: Sandbox | None = None
) -> list[Problem]:
    """The paper's first-iteration labels for `task`: math gets a reference solution per problem;
    code gets frontier test inputs and a reference program whose sandboxed outputs become the
    expected outputs (`reference_test_inputs`/`reference_test_outputs`; a record's own tests stay)."""
    if task == "math":
        return write_math_references(client, problems)
    if sandbox is None:
        raise ValueError("code references need a sandbox to run the reference programs")
    with_programs = write_reference_programs(client, write_test_inputs(client, problems))
    return outputs_from_reference(sandbox, with_programs)
