"""Step-focused pairs: blame the first wrong step, not everything after it.

A whole-solution pair penalises every token of the rejected completion, including the correct
arithmetic it does *after* its first mistake (correct steps on a wrong intermediate value). On
small models that teaches "don't compute" as much as "don't err". In the spirit of the paper's
step-level pDPO and of Step-DPO, `focus_on_first_error` moves the steps both completions share into
the prompt, keeps the chosen remainder whole, and cuts the rejected one after its first differing
step; the learner then does not append EOS to that cut side (`rejected_complete=False`).
"""

from __future__ import annotations

import re
from dataclasses import replace

from pfrl.types import PreferencePair

# A step ends after a sentence end or a line break (with the whitespace that follows it).
_STEP_END = re.compile(r"(?<=[.\n])\s*")


def split_steps(text: str) -> list[str]:
    """Steps whose concatenation is `text` exactly."""
    steps, start = [], 0
    for m in _STEP_END.finditer(text):
        if m.end() > start and m.start() > start:
            steps.append(text[start : m.end()])
            start = m.end()
    if start < len(text):
        steps.append(text[start:])
    return steps


def focus_on_first_error(pair: PreferencePair) -> PreferencePair:
    """The pair reduced to its first differing step (unchanged when they differ at step 0 of both
    or the rejected completion is a prefix of the chosen one)."""
    chosen, rejected = split_steps(pair.chosen), split_steps(pair.rejected)
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared >= len(rejected) or shared >= len(chosen):
        return pair
    prefix = "".join(chosen[:shared])
    return replace(
        pair,
        prompt=pair.prompt + prefix,
        chosen="".join(chosen[shared:]),
        rejected=rejected[shared],
        rejected_complete=shared + 1 == len(rejected),
        sampled=None,  # the texts changed: the sampled ids no longer match them, so re-tokenise
    )
