"""What the controller measures between learner steps, and the per-step record it becomes.

Rates are over a sliding window of wall time; label statistics are over the groups labelled since
the previous step. Counters that must survive a resume are in `state_dict`.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from pfrl.metrics import RateMeter
from pfrl.types import LabelledGroup, PrefixRollout, PrefixValues, RolloutGroup

# learner/<k> from the engine -> dpo/<k> in the record (the DPO view of a step).
_DPO_KEYS = {"loss": "dpo/loss", "reward_acc": "dpo/reward_acc", "margin": "dpo/margin",
             "reward_chosen": "dpo/reward_chosen", "reward_rejected": "dpo/reward_rejected",
             "logp_chosen": "dpo/logp_chosen", "logp_rejected": "dpo/logp_rejected", "nll": "dpo/nll"}


_LABEL_WINDOW = 64  # groups behind label/pair_yield, label/vote_share, label/pass_rate, label/agree_gt


class RunMeters:
    def __init__(self, task: str):
        self.task = task
        self.gen_tokens = RateMeter()
        self.gen_prompts = RateMeter()
        self.label_groups = RateMeter()
        self.labelled_groups = 0
        self.resampled = 0  # labelled groups sent back to be sampled again (issue_policy.wants_group)
        self.settled = 0
        # (vote share, mean score, pairs) of the most recent groups: a step that saw no new labels
        # still reports the current picture rather than a hole in the series.
        self._recent: deque[tuple[float | None, float, int]] = deque(maxlen=_LABEL_WINDOW)
        # Agreement of pseudo labels with ground truth, for groups that carry some (see LabelledGroup.agree_gt).
        self._agree_gt: deque[float] = deque(maxlen=_LABEL_WINDOW)
        # Step-level pDPO: prefixes valued and their continuations, (good prefixes, prefixes, pairs) per group.
        self.prefixes = RateMeter()
        self.prefix_pairs = 0
        self._prefix_recent: deque[tuple[int, int, int]] = deque(maxlen=_LABEL_WINDOW)
        self._sync: dict[str, Any] | None = None
        self._lags: list[int] = []
        self._requests: list[tuple[int, float]] = []  # (prompts, seconds issue to labelled) since the last step
        self._step_start = self._last_step_end = time.time()

    def on_labelled(self, group: RolloutGroup, result: LabelledGroup) -> None:
        self.labelled_groups += 1
        self.gen_tokens.add(group.completion_tokens)
        self.gen_prompts.add(1)
        self.label_groups.add(1)
        mean_score = sum(result.scores) / len(result.scores) if result.scores else 0.0
        self._recent.append((result.vote_share, mean_score, len(result.pairs)))
        if result.agree_gt is not None:
            self._agree_gt.append(result.agree_gt)

    def on_resampled(self, group: RolloutGroup) -> None:
        """Its tokens were generated all the same: they count in gen/tokens_per_s."""
        self.resampled += 1
        self.gen_tokens.add(group.completion_tokens)

    def on_request(self, prompts: int, seconds: float) -> None:
        self._requests.append((prompts, seconds))

    def _request_stats(self) -> dict[str, float]:
        """rollout/*: how long a request took from issue to its labels, against learner/step_s the
        figure that says whether requests come back within a step. Absent when none came back."""
        rows, self._requests = self._requests, []
        if not rows:
            return {}
        return {"rollout/request_s": sum(s for _, s in rows) / len(rows),
                "rollout/request_prompts": sum(n for n, _ in rows) / len(rows)}

    def on_prefixes(self, rollout: PrefixRollout, values: PrefixValues, pairs: int) -> None:
        self.gen_tokens.add(rollout.completion_tokens)
        self.prefixes.add(len(rollout.prefixes))
        self.prefix_pairs += pairs
        self._prefix_recent.append((sum(v >= 1 for v in values.values), len(values.values), pairs))

    def _prefix_stats(self) -> dict[str, float]:
        """pdpo/*: absent unless the run values prefixes."""
        rows = list(self._prefix_recent)
        if not rows:
            return {}
        prefixes = sum(n for _, n, _ in rows)
        return {"pdpo/prefixes_per_s": self.prefixes.rate(), "pdpo/pairs": self.prefix_pairs,
                "pdpo/good_frac": sum(g for g, _, _ in rows) / max(1, prefixes),
                "pdpo/pair_yield": sum(p > 0 for _, _, p in rows) / len(rows)}

    def on_sync(self, stats: dict[str, Any]) -> None:
        self._sync = stats

    def on_step_start(self, lags: list[int]) -> None:
        self._lags = lags
        self._step_start = time.time()

    def _label_stats(self) -> dict[str, float]:
        rows = list(self._recent) or [(None, 0.0, 0)]
        out = {"label/pair_yield": sum(p > 0 for _, _, p in rows) / len(rows), "label/groups": self.labelled_groups}
        if self.task == "math":
            shares = [v for v, _, _ in rows if v is not None]
            out["label/vote_share"] = sum(shares) / len(shares) if shares else 0.0
        else:
            out["label/pass_rate"] = sum(s for _, s, _ in rows) / len(rows)
        if self._agree_gt:  # absent, not zero, when no record carries ground truth
            out["label/agree_gt"] = sum(self._agree_gt) / len(self._agree_gt)
        return out

    def _learner_stats(self, learner: dict[str, float]) -> dict[str, float]:
        now = time.time()
        span = max(now - self._last_step_end, 1e-6)
        out = {
            "learner/step_s": learner.get("learner/step_s", now - self._step_start),
            "learner/tokens_per_s": learner.get("learner/tokens", 0.0) / max(now - self._step_start, 1e-6),
            "learner/idle_frac": max(0.0, self._step_start - self._last_step_end) / span,
            "learner/pairs": learner.get("learner/pairs", 0.0),
        }
        for key, name in _DPO_KEYS.items():
            if f"learner/{key}" in learner:
                out[name] = learner[f"learner/{key}"]
        # learner/rows beside learner/pairs: the sequences actually scored (2 x pairs without sharing).
        for key in ("learner/rows", "learner/lr", "learner/grad_norm", "learner/reference_version"):
            if key in learner:
                out[key] = learner[key]
        self._last_step_end = now
        return out

    def step_record(self, step: int, iteration: int, version: int, learner: dict, buffer: dict, restarts: tuple[int, int],
                    split_size: int) -> dict[str, Any]:
        record: dict[str, Any] = {"step": step, "iteration": iteration, "policy_version": version, "time": time.time(),
                                  "gen/tokens_per_s": self.gen_tokens.rate(), "gen/prompts_per_s": self.gen_prompts.rate(),
                                  "label/groups_per_s": self.label_groups.rate()}
        record.update(self._label_stats())
        record.update(self._prefix_stats())
        record.update(self._request_stats())
        record.update(buffer)
        record["buffer/policy_lag"] = max(self._lags) if self._lags else 0
        record["buffer/policy_lag_mean"] = sum(self._lags) / len(self._lags) if self._lags else 0.0
        record.update(self._learner_stats(learner))
        if self._sync is not None:
            record.update({"sync/ms": self._sync["latency_ms"], "sync/gb_per_s": self._sync["gbps"],
                           "sync/version": self._sync["version"]})
        record["faults/generator_restarts"], record["faults/labeller_restarts"] = restarts
        record["label/resampled"] = self.resampled
        record["progress/settled"] = self.settled
        record["progress/split"] = split_size
        return record

    @staticmethod
    def console_line(r: dict[str, Any]) -> str:
        label = f"vote {r['label/vote_share']:.2f}" if "label/vote_share" in r else f"pass {r.get('label/pass_rate', 0):.2f}"
        return (f"step {r['step']:4d} it {r['iteration']} v{r['policy_version']} | gen {r['gen/tokens_per_s']:7.0f} tok/s "
                f"{r['gen/prompts_per_s']:5.1f} prompts/s | {label} yield {r.get('label/pair_yield', 0):.2f} | "
                + (f"pdpo {r['pdpo/pairs']} pairs good {r['pdpo/good_frac']:.2f} | " if "pdpo/pairs" in r else "") +
                f"buf {r['buffer/size']:3d} lag {r['buffer/policy_lag']} stale {r['buffer/dropped_stale']} | "
                f"loss {r.get('dpo/loss', float('nan')):.3f} acc {r.get('dpo/reward_acc', float('nan')):.2f} "
                f"| learn {r['learner/tokens_per_s']:6.0f} tok/s idle {r['learner/idle_frac']:.2f} "
                f"| sync {r.get('sync/ms', 0):5.0f} ms | {r['progress/settled']}/{r['progress/split']} prompts")

    def state_dict(self) -> dict:
        return {"labelled_groups": self.labelled_groups, "settled": self.settled, "prefix_pairs": self.prefix_pairs,
                "resampled": self.resampled}

    def load_state_dict(self, state: dict) -> None:
        self.labelled_groups = state["labelled_groups"]
        self.settled = state["settled"]
        self.prefix_pairs = state.get("prefix_pairs", 0)
        self.resampled = state.get("resampled", 0)
