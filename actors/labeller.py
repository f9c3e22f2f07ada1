"""Ray actor around `pfrl.feedback.labeller.Labeller` (thin glue; the logic lives in pfrl/).

Request/response: `label(bytes) -> bytes`, msgpack of a list of RolloutGroup in and a list of
LabelledGroup out (see `pfrl.types.encode`); `value_prefixes`, PrefixRollout in and PrefixValues out
(step-level pDPO). A request's groups are labelled together, so a code
labeller's sandbox pool stays busy.
"""

from __future__ import annotations

from typing import Any

import ray

from pfrl.config import LabellerSection
from pfrl.feedback.labeller import Labeller, Task
from pfrl.types import PrefixRollout, RolloutGroup, decode, encode


@ray.remote
class LabellerActor:
    def __init__(self, task: Task, labeller_cfg_dict: dict[str, Any], seed: int):
        self.labeller = Labeller(task, LabellerSection.model_validate(labeller_cfg_dict), seed)

    def label(self, groups_bytes: bytes) -> bytes:
        groups = decode(groups_bytes)
        if not all(isinstance(g, RolloutGroup) for g in groups):
            raise TypeError("expected RolloutGroup messages")
        return encode(self.labeller.label_many(groups))

    def value_prefixes(self, rollouts_bytes: bytes) -> bytes:
        """msgpack list of PrefixRollout -> msgpack list of PrefixValues (step-level pDPO)."""
        rollouts = decode(rollouts_bytes)
        if not all(isinstance(r, PrefixRollout) for r in rollouts):
            raise TypeError("expected PrefixRollout messages")
        return encode(self.labeller.value_prefixes(rollouts))

    def ping(self) -> bool:
        """Answers once the actor (its judge or sandbox pool) is up: the fleet waits on it at start."""
        return True

    def stop(self) -> None:
        """Release the judge / sandbox (call before killing the actor)."""
        self.labeller.close()
