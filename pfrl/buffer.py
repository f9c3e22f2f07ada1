"""Streaming replay buffer of preference pairs, bounded in size and in staleness.

Pairs are consumed once (on-policy DPO): `take` removes what it returns. A pair sampled by policy
version v may be trained while `reference - v <= max_policy_lag`, where the caller's reference is
the newest version published to the generators (pfrl/issue_policy.py says why); older pairs are
dropped and counted. Every drop is also queued for `take_dropped()`, so the controller can account for each
prompt in the ledger. The whole state round-trips through `state_dict()` for checkpoints.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict, deque

from pfrl.config import BufferSection
from pfrl.types import PreferencePair, from_plain, to_plain

# Identities of recently served pairs remembered for dedupe, as a multiple of capacity.
_SEEN_FACTOR = 8


def pair_key(pair: PreferencePair) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in (pair.prompt, pair.chosen, pair.rejected):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


class ReplayBuffer:
    def __init__(self, cfg: BufferSection):
        self.cfg = cfg
        self._pairs: OrderedDict[str, PreferencePair] = OrderedDict()  # insertion order = arrival
        self._served: deque[str] = deque(maxlen=cfg.capacity * _SEEN_FACTOR)
        self._served_set: set[str] = set()
        self._dropped: list[tuple[PreferencePair, str]] = []
        self.drops: Counter[str] = Counter()
        self.added = 0
        self.served = 0

    def __len__(self) -> int:
        return len(self._pairs)

    def _drop(self, key: str, reason: str) -> None:
        pair = self._pairs.pop(key)
        self.drops[reason] += 1
        self._dropped.append((pair, reason))

    def add(self, pairs: list[PreferencePair], current_version: int) -> int:
        """Add fresh pairs; returns how many were kept. Full: the oldest pairs are evicted."""
        kept = 0
        for pair in pairs:
            key = pair_key(pair)
            if self.cfg.dedupe and (key in self._pairs or key in self._served_set):
                self.drops["duplicate"] += 1
                self._dropped.append((pair, "duplicate"))
                continue
            if current_version - pair.policy_version > self.cfg.max_policy_lag:
                self.drops["stale"] += 1
                self._dropped.append((pair, "stale"))
                continue
            self._pairs[key] = pair
            kept += 1
            self.added += 1
            while len(self._pairs) > self.cfg.capacity:
                self._drop(next(iter(self._pairs)), "evicted")
        return kept

    def drop_stale(self, current_version: int) -> int:
        stale = [k for k, p in self._pairs.items() if current_version - p.policy_version > self.cfg.max_policy_lag]
        for key in stale:
            self._drop(key, "stale")
        return len(stale)

    def count_at_least(self, version: int) -> int:
        """Buffered pairs sampled by `version` or a newer one."""
        return len(self._pairs) - self.count_older(version)

    def count_older(self, version: int) -> int:
        """Buffered pairs sampled before `version`."""
        return sum(p.policy_version < version for p in self._pairs.values())

    def take(self, k: int, current_version: int) -> list[PreferencePair]:
        """Remove and return up to k trainable pairs (stale ones are dropped first)."""
        self.drop_stale(current_version)
        keys = list(self._pairs)
        if self.cfg.sampling == "freshest":
            # Newest policy version first; within a version, newest arrival first.
            arrival = {key: i for i, key in enumerate(keys)}
            keys.sort(key=lambda key: (self._pairs[key].policy_version, arrival[key]), reverse=True)
        out = []
        for key in keys[:k]:
            out.append(self._pairs.pop(key))
            self._remember(key)
        self.served += len(out)
        return out

    def _remember(self, key: str) -> None:
        if len(self._served) == self._served.maxlen:
            self._served_set.discard(self._served[0])
        self._served.append(key)
        self._served_set.add(key)

    def take_dropped(self) -> list[tuple[PreferencePair, str]]:
        out, self._dropped = self._dropped, []
        return out

    def stats(self) -> dict[str, float]:
        return {
            "buffer/size": len(self._pairs),
            "buffer/added": self.added,
            "buffer/served": self.served,
            "buffer/dropped_stale": self.drops["stale"],
            "buffer/dropped_evicted": self.drops["evicted"],
            "buffer/dropped_duplicate": self.drops["duplicate"],
        }

    def state_dict(self) -> dict:
        return {
            "pairs": [to_plain(p) for p in self._pairs.values()],
            "served": list(self._served),
            "drops": dict(self.drops),
            "added": self.added,
            "served_count": self.served,
        }

    def load_state_dict(self, state: dict) -> None:
        self._pairs = OrderedDict((pair_key(p), p) for p in (from_plain(x) for x in state["pairs"]))
        self._served = deque(state["served"], maxlen=self.cfg.capacity * _SEEN_FACTOR)
        self._served_set = set(self._served)
        self.drops = Counter(state["drops"])
        self.added = state["added"]
        self.served = state["served_count"]
        self._dropped = []
