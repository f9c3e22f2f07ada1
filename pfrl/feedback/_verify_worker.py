"""math-verify in its own process: one JSON line [gold, pred] in, one line "true"/"false" out.

The parent (`answers.AnswerJudge`) bounds each comparison by killing this process, so math-verify's
own signal-based timeouts are switched off here.
"""

from __future__ import annotations

import json
import logging
import sys


def _equal(parse, verify, gold: str, pred: str) -> bool:
    parsed_gold = parse(f"${gold}$", parsing_timeout=None)
    parsed_pred = parse(f"${pred}$", parsing_timeout=None)
    if not parsed_gold or not parsed_pred:
        return False
    return bool(verify(parsed_gold, parsed_pred, timeout_seconds=None))


def main() -> None:
    logging.disable(logging.WARNING)  # math-verify warns once that its timeouts are off: we know
    from math_verify import parse, verify

    _equal(parse, verify, "\\frac{x}{2}", "x/2")  # warm the LaTeX parser: the first call is slow
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            gold, pred = json.loads(line)
            verdict = _equal(parse, verify, str(gold), str(pred))
        except Exception:
            verdict = False
        print("true" if verdict else "false", flush=True)


if __name__ == "__main__":
    main()
