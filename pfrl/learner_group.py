"""Driver side of the learner: W learner actors forming one DeepSpeed data-parallel group, driven
as one learner (it lives beside `pfrl.fleet`, since it places and calls Ray actors).

Start-up: each rank is placed on its own placement-group bundle (across nodes when the strategy
spreads them), rank 0 picks the rendezvous address (its node IP and a free port), and all ranks then
build their engines together (the process group forms inside). A step splits the global batch
into one contiguous share per rank, one prompt's pairs together (`rank_shares`); the ranks'
metrics are merged into one dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.learner import LearnerActor
from pfrl.config import PfrlConfig
from pfrl.errors import RunFailed, UserError
from pfrl.types import PreferencePair, encode

# Summed over ranks; the rest are pair-weighted means, except these taken from rank 0 / the slowest.
SUMMED = ("learner/pairs", "learner/tokens", "learner/rows", "learner/truncated")
FROM_RANK0 = ("learner/lr", "learner/grad_norm", "learner/micro_batches")


def merge_metrics(per_rank: Sequence[dict[str, float]]) -> dict[str, float]:
    """Global-batch metrics from each rank's: sums of counts, pair-weighted means of loss/rewards,
    the slowest rank's step time, and rank 0's lr / grad norm (already global)."""
    weights = [m["learner/pairs"] for m in per_rank]
    total = sum(weights)
    out: dict[str, float] = {}
    for key in per_rank[0]:
        values = [m[key] for m in per_rank]
        if key in SUMMED:
            out[key] = sum(values)
        elif key in FROM_RANK0:
            out[key] = values[0]
        elif key == "learner/step_s":
            out[key] = max(values)
        else:
            out[key] = sum(v * w for v, w in zip(values, weights, strict=True)) / total
    return out


def rank_shares(pairs: Sequence[PreferencePair], world_size: int) -> list[list[PreferencePair]]:
    """`world_size` shares whose sizes differ by at most one, cut from the pairs grouped by prompt
    (prompts in order of first arrival). A rank scores a sequence that several of its pairs share
    only once (learner/batching.py `collate`), and shared sequences come from one prompt's pairs: a
    round-robin split scattered them over the ranks."""
    groups: dict[str, list[PreferencePair]] = {}
    for p in pairs:
        groups.setdefault(p.prompt_id, []).append(p)
    ordered = [p for group in groups.values() for p in group]
    base, extra = divmod(len(ordered), world_size)
    bounds = [r * base + min(r, extra) for r in range(world_size + 1)]
    return [ordered[bounds[r] : bounds[r + 1]] for r in range(world_size)]


def _abs(path: str | Path) -> str:
    """Actors do not share the driver's working directory: hand them absolute paths."""
    return str(Path(path).resolve())


def local_ranks(ips: Sequence[str]) -> list[int]:
    """Index of each rank among the ranks on its node."""
    seen: dict[str, int] = {}
    out = []
    for ip in ips:
        out.append(seen.get(ip, 0))
        seen[ip] = out[-1] + 1
    return out


class LearnerGroup:
    def __init__(
        self,
        cfg: PfrlConfig,
        model_path: str,
        seed: int,
        placement_group: PlacementGroup | None = None,
        bundle_offset: int = 0,
    ):
        """`placement_group` None: the group makes (and later removes) its own, one bundle per rank.
        Given: ranks take bundles `bundle_offset .. bundle_offset + W - 1` of it."""
        self.cfg = cfg
        self.world_size = cfg.learner.num_learners
        self._timeout = cfg.learner.start_timeout_s
        self._own_pg = placement_group is None
        self.pg = placement_group if placement_group is not None else self._make_placement_group()
        self.actors = [self._spawn(r, bundle_offset + r) for r in range(self.world_size)]
        try:
            self._init_engines(model_path, seed)
        except BaseException:
            self.shutdown()
            raise

    @property
    def rank0(self):
        return self.actors[0]

    def _make_placement_group(self) -> PlacementGroup:
        c = self.cfg.cluster
        bundle = c.learner_bundle()
        if not bundle:
            raise UserError(
                "cluster.learner_cpus and cluster.learner_gpus are both 0: nothing to place a learner on"
            )
        pg = placement_group([dict(bundle) for _ in range(self.world_size)], strategy=c.placement_strategy)
        ready, _ = ray.wait([pg.ready()], timeout=self._timeout)
        if not ready:
            remove_placement_group(pg)
            raise UserError(
                f"Ray could not place {self.world_size} learner ranks of {bundle} each "
                f"within {self._timeout:.0f} s (cluster resources: {ray.cluster_resources()})"
            )
        return pg

    def _spawn(self, rank: int, bundle: int):
        c = self.cfg.cluster
        strategy = PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=bundle)
        # ray.remote turns the class into an actor class; its stubs still type it as LearnerActor
        return LearnerActor.options(  # type: ignore[attr-defined]
            num_cpus=c.learner_cpus, num_gpus=c.learner_gpus, scheduling_strategy=strategy
        ).remote(rank, self.world_size)

    def _init_engines(self, model_path: str, seed: int) -> None:
        ips = ray.get([a.node_ip.remote() for a in self.actors], timeout=self._timeout)
        addr, port = ray.get(self.rank0.rendezvous.remote(), timeout=self._timeout)
        learner_cfg, model_cfg = self.cfg.learner.model_dump(), self.cfg.model.model_dump()
        refs = [
            a.init.remote(_abs(model_path), learner_cfg, model_cfg, seed, addr, port, lr)
            for a, lr in zip(self.actors, local_ranks(ips), strict=True)
        ]
        ray.get(refs, timeout=self._timeout)
        if self.world_size > 1:
            ray.get(self.rank0.set_peers.remote(self.actors[1:]))

    def _all(self, method: str, *args) -> list:
        return self._get([getattr(a, method).remote(*args) for a in self.actors], method)

    def _get(self, refs: list, method: str) -> list:
        """A rank that died is the end of the run, whichever call noticed it (a checkpoint, the
        final save...): say so as RunFailed, so the run records its state and resume hint."""
        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as e:
            raise RunFailed(f"a learner rank died during {method}: {e}") from None

    def train_step(self, pairs: Sequence[PreferencePair], lr: float | None = None) -> dict[str, float]:
        """One optimizer step over the global batch `pairs` (at least one pair per rank) at `lr`."""
        if len(pairs) < self.world_size:
            raise ValueError(f"{len(pairs)} pairs cannot feed {self.world_size} learner ranks")
        shares = [encode(share) for share in rank_shares(pairs, self.world_size)]
        refs = [a.train_step.remote(s, lr) for a, s in zip(self.actors, shares, strict=True)]
        return merge_metrics(self._get(refs, "train_step"))

    def refresh_reference(self) -> None:
        self._all("refresh_reference")

    def save_hf(self, out_dir: str) -> None:
        self._all("save_hf", _abs(out_dir))

    def save_checkpoint(self, ckpt_dir: str, tag: str) -> None:
        self._all("save_checkpoint", _abs(ckpt_dir), tag)

    def load_checkpoint(self, ckpt_dir: str, tag: str) -> None:
        self._all("load_checkpoint", _abs(ckpt_dir), tag)

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self._own_pg:
            remove_placement_group(self.pg)
