"""Frontier-model feedback client.

Against a real vLLM OpenAI-compatible server running the tiny random model on CPU: its text is
gibberish, so the test proves that structured output (a JSON schema sent as response_format) makes
it return valid JSON of the requested shape. Retry (through the openai SDK, `Retry-After` included),
error and cache behaviour are tested against a scripted stdlib HTTP server; the writers and
`pfrl references` end to end against a server that answers with the synthetic reference solutions,
whose programs must then label as correct.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pfrl import cli
from pfrl.config import FrontierSection, LabellerSection, SandboxSection
from pfrl.feedback import frontier
from pfrl.feedback.labeller import Labeller
from pfrl.runtime import free_port
from pfrl.tasks import synthetic_code, synthetic_math
from pfrl.tasks.io import problem_to_dict, read_problems, write_jsonl
from pfrl.types import PromptItem, RolloutGroup

ROOT = Path(__file__).resolve().parents[1]


# -- a real vLLM server ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vllm_server(tiny_code_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        tiny_code_model,
        "--served-model-name",
        "tiny",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--gpu-memory-utilization",
        "0.3",
        "--max-model-len",
        "512",
        "--chat-template",
        str(ROOT / "configs/prompts/chat_template.jinja"),
        # compact JSON: a random model otherwise fills the reply with whitespace between tokens
        "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_healthy(port, proc, log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_healthy(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 400) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(2)
    pytest.fail("vLLM server did not become healthy")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_structured_output_from_a_real_server(vllm_server, tmp_path):
    cfg = FrontierSection(
        base_url=vllm_server,
        model="tiny",
        cache_dir=str(tmp_path / "cache"),
        num_test_inputs=3,
        max_input_chars=120,
        max_tokens=200,
        max_retries=1,
        concurrency=2,
    )
    client = frontier.FrontierClient(cfg)
    for function_call in (True, False):
        schema = frontier.test_inputs_schema(cfg, function_call)
        reply = client.chat(
            frontier.ChatRequest([{"role": "user", "content": "Write tests for f."}], schema, "t")
        )
        inputs = json.loads(reply)["test_inputs"]  # valid JSON of the requested shape, from gibberish
        assert isinstance(inputs, list) and 1 <= len(inputs) <= 3
        assert all(isinstance(i, list) if function_call else isinstance(i, str) for i in inputs)

    problems = [p for p, _ in synthetic_code.generate(3, seed=0)]
    written = frontier.write_test_inputs(client, problems)
    assert all(
        p.test_inputs == q.test_inputs for p, q in zip(written, problems, strict=True)
    )  # ground truth kept
    assert any(p.reference_test_inputs for p in written)
    for p in written:
        assert all(isinstance(json.loads(i), list) for i in p.reference_test_inputs) and p.entry_point

    sent = client.requests_sent
    again = frontier.write_test_inputs(client, problems)
    assert [p.reference_test_inputs for p in again] == [p.reference_test_inputs for p in written]
    assert client.requests_sent == sent and client.cache_hits >= len(problems)
    # Free-text writers run end to end too (gibberish rarely holds an answer or a program).
    assert (
        len(frontier.write_math_references(client, [p for p, _ in synthetic_math.generate(2, seed=0)])) == 2
    )


# -- a scripted server ---------------------------------------------------------------------------------
class Script:
    """Replies by rule: fail the first `failures` requests with `status` and `fail_headers`, then
    answer via `answer`. Failures ask for a 10 ms wait by default (`retry-after-ms`), so the SDK's
    retries do not slow the tests down."""

    def __init__(self, answer, failures: int = 0, status: int = 503, fail_headers: dict | None = None):
        self.answer, self.failures, self.status = answer, failures, status
        self.fail_headers = {"retry-after-ms": "10"} if fail_headers is None else fail_headers
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.arrivals: list[float] = []


@pytest.fixture
def scripted():
    holder: dict[str, Script] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server naming)
            script = holder["script"]
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append(body)
            script.auth.append(self.headers.get("Authorization"))
            script.arrivals.append(time.monotonic())
            if len(script.requests) <= script.failures:
                self.send_response(script.status)
                for key, value in script.fail_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "9")
                self.end_headers()
                self.wfile.write(b"try later")
                return
            reply = {"choices": [{"message": {"role": "assistant", "content": script.answer(body)}}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def start(script: Script, **cfg) -> frontier.FrontierClient:
        holder["script"] = script
        base = dict(
            base_url=f"http://127.0.0.1:{server.server_port}/v1",
            model="m",
            cache_dir=None,
            max_retries=3,
        )
        return frontier.FrontierClient(FrontierSection(**{**base, **cfg}))

    start.base_url = f"http://127.0.0.1:{server.server_port}/v1"
    yield start
    server.shutdown()


def hello(_body) -> str:
    return "hello"


def test_retries_with_backoff_then_succeeds(scripted, monkeypatch):
    monkeypatch.setenv("PFRL_TEST_KEY", "sk-test")
    script = Script(hello, failures=2, status=503)
    client = scripted(script, api_key_env="PFRL_TEST_KEY")
    assert client.chat(frontier.ChatRequest([{"role": "user", "content": "hi"}])) == "hello"
    assert len(script.requests) == 3 and script.auth == ["Bearer sk-test"] * 3


def test_retry_after_header_is_honoured(scripted):
    # The SDK's own first backoff is at most 0.5 s: a gap of 2 s can only come from the header.
    script = Script(hello, failures=1, status=429, fail_headers={"Retry-After": "2"})
    client = scripted(script, max_retries=1)
    assert client.chat(frontier.ChatRequest([{"role": "user", "content": "hi"}])) == "hello"
    assert len(script.requests) == 2 and client.requests_sent == 2
    assert script.arrivals[1] - script.arrivals[0] >= 1.9


def test_without_a_key_a_placeholder_is_sent(scripted, monkeypatch):
    monkeypatch.delenv("PFRL_UNSET_KEY", raising=False)
    script = Script(hello)
    client = scripted(script, api_key_env="PFRL_UNSET_KEY")
    assert client.chat(frontier.ChatRequest([{"role": "user", "content": "hi"}])) == "hello"
    assert script.auth == [f"Bearer {frontier.NO_KEY}"]


def test_refusals_are_not_retried(scripted):
    script = Script(hello, failures=99, status=401)
    client = scripted(script)
    with pytest.raises(frontier.FrontierError, match="HTTP 401"):
        client.chat(frontier.ChatRequest([{"role": "user", "content": "hi"}]))
    assert len(script.requests) == 1


def test_giving_up_leaves_the_problem_unchanged(scripted):
    script = Script(hello, failures=99, status=500)
    client = scripted(script, max_retries=2)
    problems = [p for p, _ in synthetic_math.generate(2, seed=1)]
    assert frontier.write_math_references(client, problems) == problems
    assert len(script.requests) == 2 * 3


def test_invalid_json_is_retried_when_a_schema_was_asked(scripted):
    replies = iter(['{"test_inputs": ["[1]"', '{"test_inputs": [[1], [2], [1]]}'])
    script = Script(lambda body: next(replies))
    client = scripted(script)
    problem = synthetic_code.generate(1, seed=0)[0][0]
    (written,) = frontier.write_test_inputs(client, [problem])
    assert written.reference_test_inputs == ["[1]", "[2]"] and written.reference_test_outputs == []
    assert (written.test_inputs, written.test_outputs) == (problem.test_inputs, problem.test_outputs)
    assert script.requests[0]["response_format"]["type"] == "json_schema"


def test_cache_answers_repeated_requests(scripted, tmp_path):
    script = Script(hello)
    client = scripted(script, cache_dir=str(tmp_path / "c"))
    req = frontier.ChatRequest([{"role": "user", "content": "same"}])
    assert client.chat(req) == client.chat(req) == "hello"
    fresh = scripted(script, cache_dir=str(tmp_path / "c"))
    assert fresh.chat(req) == "hello" and len(script.requests) == 1 and fresh.cache_hits == 1


def _synthetic_answer(pairs):
    """Plays the frontier model: finds which synthetic problem the prompt is about."""

    def answer(body) -> str:
        text = body["messages"][-1]["content"]
        for problem, solution in pairs:
            if problem.prompt.strip() in text:
                return solution
        return "I cannot tell."

    return answer


def test_reference_programs_become_labels(scripted):
    pairs = synthetic_code.generate(3, seed=17)
    client = scripted(Script(_synthetic_answer(pairs)))
    bare = [
        p.__class__(id=p.id, prompt=p.prompt, entry_point=p.entry_point, reference_test_inputs=p.test_inputs)
        for p, _ in pairs
    ]
    with_refs = frontier.write_reference_programs(client, bare)
    assert all(p.reference and re.search(rf"def {p.entry_point}\(", p.reference) for p in with_refs)
    sandbox_cfg = SandboxSection(timeout_s=1.0, cpu_s=1)
    with Labeller("code", LabellerSection(sandbox=sandbox_cfg), seed=0) as labeller:
        filled = frontier.outputs_from_reference(labeller.sandbox, with_refs)
        assert [p.reference_test_outputs for p in filled] == [p.test_outputs for p, _ in pairs]
        groups = [
            RolloutGroup(PromptItem(p, 0), [sol, sol.replace("return ", "return -1 + ", 1)], [], [], 0, 0, 0)
            for p, (_, sol) in zip(with_refs, pairs, strict=True)
        ]
        for out in labeller.label_many(groups):
            assert out.scores == [1.0, 0.0] and out.pairs == [(0, 1)]


def test_math_references_from_solutions(scripted):
    pairs = synthetic_math.generate(4, seed=5)
    script = Script(_synthetic_answer(pairs))
    client = scripted(script)
    written = frontier.write_math_references(
        client, [p.__class__(id=p.id, prompt=p.prompt) for p, _ in pairs]
    )
    assert [p.reference for p in written] == [s for _, s in pairs]
    assert "\\boxed{ANSWER}" in script.requests[0]["messages"][0]["content"]


def _frontier_for_code(pairs):
    """Plays the frontier model for code: the synthetic tests' inputs when a JSON schema is asked
    for, the synthetic solution otherwise."""
    solve = _synthetic_answer(pairs)

    def answer(body) -> str:
        if "response_format" not in body:
            return solve(body)
        text = body["messages"][-1]["content"]
        problem = next(p for p, _ in pairs if p.prompt.strip() in text)
        return json.dumps({"test_inputs": [json.loads(i) for i in problem.test_inputs]})

    return answer


def _references_cli(scripted, tmp_path, task: str, bare, answer) -> list:
    scripted(Script(answer))
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(data, (problem_to_dict(p) for p in bare))
    frontier_keys = {"base_url": scripted.base_url, "model": "m", "cache_dir": "null", "max_retries": 0}
    sets = [f"labeller.frontier.{k}={v}" for k, v in frontier_keys.items()] + ["labeller.sandbox.timeout_s=1"]
    argv = ["references", "--task", task, "--data", str(data), "--out", str(out)]
    assert cli.main(argv + [x for kv in sets for x in ("--set", kv)]) == 0
    return read_problems(out).problems


def test_references_command_writes_math_references(scripted, tmp_path):
    pairs = synthetic_math.generate(3, seed=2)
    bare = [p.__class__(id=p.id, prompt=p.prompt) for p, _ in pairs]
    written = _references_cli(scripted, tmp_path, "math", bare, _synthetic_answer(pairs))
    assert [p.reference for p in written] == [s for _, s in pairs]
    assert all(p.answer is None for p in written)


def test_references_command_writes_code_tests_and_outputs(scripted, tmp_path):
    pairs = synthetic_code.generate(3, seed=4)
    bare = [p.__class__(id=p.id, prompt=p.prompt, entry_point=p.entry_point) for p, _ in pairs]
    written = _references_cli(scripted, tmp_path, "code", bare, _frontier_for_code(pairs))
    assert [p.reference_test_inputs for p in written] == [p.test_inputs for p, _ in pairs]
    # from the reference runs
    assert [p.reference_test_outputs for p in written] == [p.test_outputs for p, _ in pairs]
    assert all(not p.test_inputs and not p.test_outputs for p in written)  # no ground truth invented
    assert all(re.search(rf"def {p.entry_point}\(", p.reference) for p in written)
