"""The receiving end of weight sync, inside every vLLM worker process.

vLLM mixes `WeightSyncExtension` into its worker class (`worker_extension_cls`), so these methods
run in the worker process through `llm.collective_rpc(...)`. Control arguments travel that way
(plain dicts); tensors do not (collective_rpc does not carry them intact): the worker pulls them
from the learner itself over the chosen transport, and applies them as they arrive with vLLM's
in-place reload (`load_weights` under layer-wise reprocessing, which rebuilds CPU-packed and
quantised kernel layouts), so a whole model copy is never staged.

A collective_rpc runs between engine steps, so no forward pass sees half-loaded weights. If a sync
fails part-way, the worker says so and the generator refuses to sample until a full sync succeeds.
Every name here starts with `pfrl_` / `_pfrl`: vLLM rejects extensions that shadow worker attributes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pfrl.transport import collective, staging
from pfrl.transport.buckets import Received
from pfrl.transport.weights import ReceiverSpec
from pfrl.transport.zmq_weights import ZmqWeightReceiver


@dataclass
class _WorkerState:
    zmq: ZmqWeightReceiver
    version: int = 0


def refresh_tied_layers(model: torch.nn.Module) -> int:
    """Re-run weight post-processing on layers that share their weight with another layer.

    The reload repacks the layers it loads; a tied LM head receives no tensor of its own (the
    checkpoint has only the embedding), so on CPU, where the head's GEMM uses a packed copy of the
    weight, it would keep serving the old one. Returns how many layers were refreshed."""
    owners: dict[int, list[torch.nn.Module]] = {}
    for module in model.modules():
        weight = module.__dict__.get("_parameters", {}).get("weight")
        if weight is not None and hasattr(module, "quant_method"):
            owners.setdefault(id(weight), []).append(module)
    refreshed = 0
    for modules in owners.values():
        if len(modules) < 2:
            continue
        for module in modules:
            process = getattr(module.quant_method, "process_weights_after_loading", None)
            if process is not None:
                process(module)
                refreshed += 1
    return refreshed


class WeightSyncExtension:
    """Methods vLLM adds to its worker class; called via `llm.collective_rpc("pfrl_...")`."""

    # Provided by vLLM's worker class, which this extension is mixed into.
    model_runner: Any
    vllm_config: Any
    rank: int
    reload_weights: Callable[..., None]

    def _pfrl(self) -> _WorkerState:
        state = getattr(self, "_pfrl_state", None)
        if state is None:
            state = _WorkerState(zmq=ZmqWeightReceiver())
            self._pfrl_state = state
        return state

    def pfrl_receiver_info(self) -> dict[str, Any]:
        """Bind this worker's ZMQ receiver (once) and say where and on what device it is."""
        state = self._pfrl()
        return {
            "addr": state.zmq.addr,
            "device": self.model_runner.device.type,
            "rank": self.rank,
            "version": state.version,
            "pid": os.getpid(),  # the generator hands staged weights over in memory when it is its own
        }

    def _pfrl_tensors(self, version: int, spec: ReceiverSpec, into: Received):
        if spec.transport == "zmq":
            return self._pfrl().zmq.receive(version, spec.timeout_s, into)
        assert spec.group is not None, "a collective receiver spec carries its group"
        pg = collective.join(spec.group, spec.base_rank + self.rank, spec.timeout_s)
        return collective.receive(pg, spec.group.backend, version, into)

    def _pfrl_restore(self) -> None:
        """After a failed reload: put back the layers' own tensors so the model stays well formed
        (its values are mixed; the generator will not sample until the next full sync)."""
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        try:
            finalize_layerwise_reload(self.model_runner.get_model(), self.vllm_config.model_config)
        except Exception:  # nothing more to undo; the failed sync is reported either way
            pass

    def pfrl_receive(self, version: int, spec: dict[str, Any]) -> dict[str, Any]:
        """Receive `version` and load it in place. Never raises (an exception here would take the
        engine down): failures come back as `ok=False` with the error."""
        into = Received()
        return self._pfrl_load(version, lambda: self._pfrl_tensors(version, ReceiverSpec.from_dict(spec), into), into)

    def pfrl_load_staged(self, version: int, token: str) -> dict[str, Any]:
        """Load `version` from weights the generator staged in this same process
        (pfrl/transport/staging.py); never raises, like `pfrl_receive`."""
        into = Received()

        def tensors():
            staged = staging.take(token)
            into.bytes, into.buckets = staged.bytes, len(staged.buckets)
            into.tensors = sum(len(b) for b in staged.buckets)
            return staged.tensors()

        return self._pfrl_load(version, tensors, into)

    def _pfrl_load(self, version: int, tensors: Callable[[], Any], into: Received) -> dict[str, Any]:
        state = self._pfrl()
        start = time.perf_counter()
        try:
            self.reload_weights(weights_iterator=tensors(), is_checkpoint_format=True)
            refresh_tied_layers(self.model_runner.get_model())
        except Exception as e:
            self._pfrl_restore()
            return {
                "ok": False,
                "error": f"{type(e).__name__}: {e}",
                "version": state.version,
                "group_id": collective.current_group_id(),
            }
        state.version = version
        return {
            "ok": True,
            "error": None,
            "version": version,
            "bytes": into.bytes,
            "tensors": into.tensors,
            "buckets": into.buckets,
            "seconds": time.perf_counter() - start,
            "group_id": collective.current_group_id(),
        }
