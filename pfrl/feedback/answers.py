"""Final answers out of model text, and answer equivalence bounded in time.

Extraction, in order of trust: the last `\\boxed{...}` (nested braces), the last "The answer is ...",
the last "#### ...", the last "A: ..." line, else the last number. The result is cleaned: dollar
signs, thousands commas, units, percent and degree marks and a trailing period go.

`AnswerJudge.equal` first compares normalised strings and exact numbers (fractions, decimals,
`\\frac`); only what that cannot decide goes to math-verify, in a worker process that is killed
when one comparison runs past `timeout_s` (sympy can hang, and signal-based timeouts do not work
off the main thread, where Ray actors and the sandbox pool call us).
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"answer\s+is\s*[:=]?\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")
_A_LINE = re.compile(r"^\s*A\s*:\s*(.+)$", re.MULTILINE)
_NUMBER = re.compile(r"-?\d(?:[\d,]*\d)?(?:\.\d+)?(?:\s*/\s*\d+)?")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_UNIT_TAIL = re.compile(r"^(.+?)\s*\\(?:text|mbox|mathrm)\s*\{[^{}]*\}$")
_WORD_UNITS = re.compile(r"^(-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)\s+[A-Za-z][A-Za-z .]*$")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}$")
_SPACING = re.compile(r"\\[,;:! ]|\\left|\\right|\s+")
_MAX_ANSWER = 200


def _last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` whose braces close (a truncated one is ignored)."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def _first_sentence(text: str) -> str:
    """Text up to the end of its line and first sentence ("42. So..." -> "42"; "3.5" stays)."""
    text = text.split("\n", 1)[0]
    end = _SENTENCE_END.search(text)
    return text[: end.start()] if end else text


def clean_answer(raw: str) -> str | None:
    """Strip presentation from an answer: math delimiters, $, units, commas, %, degrees, final period."""
    s = raw.strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)].strip()
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)
    unit = _UNIT_TAIL.match(s)
    if unit:
        s = unit.group(1)
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s).strip()
    words = _WORD_UNITS.match(s)
    if words:
        s = words.group(1)
    s = s.rstrip(" .,;:").strip()
    return s[:_MAX_ANSWER] if s else None


def extract_answer(text: str) -> str | None:
    """The final answer stated in `text`, cleaned, or None if it states none."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return clean_answer(boxed)
    for pattern in (_ANSWER_IS, _HASHES, _A_LINE):
        matches = pattern.findall(text)
        if matches:
            found = clean_answer(_first_sentence(matches[-1]))
            if found is not None:
                return found
    numbers = _NUMBER.findall(text)
    return clean_answer(numbers[-1]) if numbers else None


def _normal_form(answer: str) -> str:
    s = _SPACING.sub("", answer)
    return s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


def as_number(answer: str) -> Fraction | None:
    """Exact value of a plain number, decimal, a/b or \\frac{a}{b}; None for anything else."""
    s = _normal_form(answer)
    frac = _FRAC.match(s)
    if frac:
        sign, num, den = frac.groups()
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return -value if sign else value
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)(/\d+)?", s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def quick_equal(a: str, b: str) -> bool | None:
    """Decide cheaply when possible: same normal form, or both exact numbers. None: undecided."""
    if _normal_form(a) == _normal_form(b):
        return True
    x, y = as_number(a), as_number(b)
    if x is not None and y is not None:
        return x == y
    return None


class _VerifyWorker:
    """A math-verify subprocess speaking JSON lines; killed and replaced when a comparison overruns."""

    def __init__(self, startup_timeout_s: float = 120.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pfrl.feedback._verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are pipes
        self._stdin, self._stdout = self.proc.stdin, self.proc.stdout
        if self._read(startup_timeout_s) != "ready":
            self.close()
            raise RuntimeError("math-verify worker did not start")

    def _read(self, timeout_s: float) -> str | None:
        ready, _, _ = select.select([self._stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self._stdout.readline()
        return line.strip() if line else None

    def compare(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        """The verdict, or None if the worker overran or died (it must then be replaced)."""
        try:
            self._stdin.write(json.dumps([gold, pred]) + "\n")
        except BrokenPipeError:
            return None
        reply = self._read(timeout_s)
        return {"true": True, "false": False}.get(reply or "")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self._stdin, self._stdout):
            try:
                stream.close()
            except OSError:
                pass


class AnswerJudge:
    """Answer equivalence: quick checks, then math-verify bounded by `timeout_s` per comparison.
    A comparison that times out counts as not equal. Thread-safe; verdicts are cached."""

    def __init__(self, timeout_s: float, cache_size: int = 65536):
        self.timeout_s = timeout_s
        self._worker: _VerifyWorker | None = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], bool] = {}
        self._cache_size = cache_size
        self.timeouts = 0

    def equal(self, a: str, b: str) -> bool:
        quick = quick_equal(a, b)
        if quick is not None:
            return quick
        key = (a, b)
        with self._lock:
            if key not in self._cache:
                if len(self._cache) >= self._cache_size:
                    self._cache.clear()
                self._cache[key] = self._verify(a, b)
            return self._cache[key]

    def _verify(self, gold: str, pred: str) -> bool:
        if self._worker is None:
            self._worker = _VerifyWorker()
        verdict = self._worker.compare(gold, pred, self.timeout_s)
        if verdict is None:
            self.timeouts += 1
            self._worker.close()
            self._worker = None
            return False
        return verdict

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None

    def __del__(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.close()
