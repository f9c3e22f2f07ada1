"""Learner side of weight sync: publish the engine's weights as one policy version.

`engine` is anything with `named_weight_buckets(bucket_bytes) -> Iterator[list[(name, tensor)]]`
(the DeepSpeed engine wrapper, or `pfrl.transport.buckets.ModuleWeights` over a plain module).
Buckets are consumed one at a time, so under ZeRO-3 only one bucket is ever gathered.
"""

from __future__ import annotations

from typing import Any

from pfrl.transport.weights import SenderSpec, send_weights


def publish(engine: Any, version: int, sender_spec: dict[str, Any]) -> dict[str, Any]:
    """Send every bucket of `engine`'s weights as `version` to the receivers in `sender_spec`
    (made by `pfrl.transport.weights.sync_weights`). Under ZeRO-3, rank 0 hands in an engine that
    makes its peers walk the same bucket gathers (actors/learner.py). Returns the send stats: version, transport, buckets, bytes, receivers, seconds."""
    spec = SenderSpec.from_dict(sender_spec)
    return send_weights(spec, version, engine.named_weight_buckets(spec.bucket_bytes)).to_dict()
