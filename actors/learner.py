"""Ray actor for one learner rank: thin glue over `learner.engine.DPOEngine`.

Pairs arrive msgpack-framed (`pfrl.types.encode`), configs as plain dicts re-validated by the schema.
Rank 0 publishes weights. Under ZeRO-3 every rank must take part in gathering them, so rank 0,
when asked to publish, first tells its peers to walk the same weight buckets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import ray

if TYPE_CHECKING:
    from learner.engine import DPOEngine


class _FollowedEngine:
    """The engine as `publish` sees it on rank 0 under ZeRO-3: iterating the weight buckets also
    makes every peer iterate them, so the gathers inside are matched on all ranks."""

    def __init__(self, engine, peers: list):
        self._engine = engine
        self._peers = peers

    def named_weight_buckets(self, bucket_bytes: int) -> Iterator[list]:
        followers = [p.follow_weight_buckets.remote(bucket_bytes) for p in self._peers]
        yield from self._engine.named_weight_buckets(bucket_bytes)
        ray.get(followers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


@ray.remote
class LearnerActor:
    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self.engine: DPOEngine | None = None  # built by init(), once the process group can form
        self.peers: list = []

    def rendezvous(self) -> tuple[str, int]:
        """(address, free port) for the process group; asked of rank 0 only."""
        from pfrl.runtime import free_port, node_ip

        return node_ip(), free_port()

    def node_ip(self) -> str:
        from pfrl.runtime import node_ip

        return node_ip()

    def init(
        self,
        model_path: str,
        learner_cfg: dict,
        model_cfg: dict,
        seed: int,
        master_addr: str,
        master_port: int,
        local_rank: int,
    ) -> None:
        import torch

        from learner.engine import DPOEngine
        from pfrl.config import LearnerSection, ModelSection

        # Ray gives a GPU actor only its own device(s): the local index then counts within those.
        device_index = local_rank if torch.cuda.device_count() > local_rank else 0
        os.environ.update(
            {
                "MASTER_ADDR": master_addr,
                "MASTER_PORT": str(master_port),
                "RANK": str(self.rank),
                "WORLD_SIZE": str(self.world_size),
                "LOCAL_RANK": str(device_index),
            }
        )
        self.engine = DPOEngine(
            model_path,
            LearnerSection.model_validate(learner_cfg),
            ModelSection.model_validate(model_cfg),
            seed,
        )

    @property
    def _engine(self) -> DPOEngine:
        if self.engine is None:
            raise RuntimeError("LearnerActor.init() has not run")
        return self.engine

    def set_peers(self, peers: list) -> None:
        self.peers = list(peers)

    def train_step(self, pairs_msg: bytes, lr: float | None = None) -> dict[str, float]:
        from pfrl.types import decode

        return self._engine.train_step(decode(pairs_msg), lr)

    def refresh_reference(self) -> None:
        self._engine.refresh_reference()

    def save_hf(self, out_dir: str) -> None:
        self._engine.save_hf(out_dir)

    def save_checkpoint(self, ckpt_dir: str, tag: str) -> None:
        self._engine.save_checkpoint(ckpt_dir, tag)

    def load_checkpoint(self, ckpt_dir: str, tag: str) -> None:
        self._engine.load_checkpoint(ckpt_dir, tag)

    def _publishing_engine(self):
        needs_followers = self._engine.cfg.zero_stage == 3 and self.peers
        return _FollowedEngine(self._engine, self.peers) if needs_followers else self._engine

    def publish_weights(self, version: int, sender_spec: dict) -> dict:
        """Rank 0: send the current weights to the generators (learner/publish.py)."""
        from learner.publish import publish

        return publish(self._publishing_engine(), version, sender_spec)

    def follow_weight_buckets(self, bucket_bytes: int) -> int:
        """Peers under ZeRO-3: take part in rank 0's gathers; returns the buckets walked."""
        return sum(1 for _ in self._engine.named_weight_buckets(bucket_bytes))

    def weight_checksums(self, bucket_bytes: int) -> dict[str, float]:
        """Rank 0: sum of each full tensor, read the way publishing reads them (a cheap check that
        what leaves the learner matches a saved or served model)."""
        sums: dict[str, float] = {}
        for bucket in self._publishing_engine().named_weight_buckets(bucket_bytes):
            sums.update({name: float(t.double().sum()) for name, t in bucket})
        return sums
