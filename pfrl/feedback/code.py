"""Programs out of model text, and program outputs compared the way tests define them.

A completion for a code prompt looks like "```python\\ndef f(x):\\n    return x+1\\n```" (the prompt
ends in "### Solution\\n" without the opening fence). Outputs of function-call tests are JSON text
(`json.dumps` of the return value) and compare after JSON normalisation; stdin/stdout outputs compare
line by line, ignoring trailing whitespace.
"""

from __future__ import annotations

import json
import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PY_TAGS = {"", "python", "py", "python3"}


def _compiles(source: str) -> bool:
    try:
        compile(source, "<candidate>", "exec")
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False


def extract_program(text: str) -> str | None:
    """The program in a completion: the last fenced python (or untagged) block, a block cut off by the
    token limit included; without fences, the whole text if it compiles as Python; else None."""
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    code = [body for tag, body in blocks if tag in _PY_TAGS and body.strip()]
    if code:
        return code[-1].rstrip() + "\n"
    if blocks:
        return None  # only blocks in other languages
    stripped = text.strip()
    if stripped and _compiles(stripped):
        return stripped + "\n"
    return None


def normalize_output(text: str, function_call: bool) -> str:
    """Canonical form of one test output: JSON re-dumped for calls, right-stripped lines for stdin."""
    if function_call:
        try:
            return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
        except (ValueError, RecursionError):
            return text.strip()
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    return "\n".join(lines).strip()


def outputs_match(got: str, expected: str, function_call: bool) -> bool:
    return normalize_output(got, function_call) == normalize_output(expected, function_call)
