"""Hub model ids in `model.path` (`org/name`): fetched once into a cache before any actor starts.

The driver resolves the id during preflight, so generators and learner ranks all receive the same
snapshot directory and none of them talks to the hub. With several nodes, `model.hub_cache_dir`
must be on storage they share (like `model.bootstrap_dir`). `huggingface_hub` keeps its own cache
layout there (models--org--name/snapshots/COMMIT): a second run finds the snapshot and downloads
nothing, and with HF_HUB_OFFLINE=1 it is read without any network access.
"""

from __future__ import annotations

import re
from pathlib import Path

from pfrl.errors import UserError

# `org/name` as the hub spells repository ids; a path that exists locally always wins.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# What pfrl loads (weights as safetensors, configs, tokenizer files, chat templates): not the
# .bin / .gguf / .onnx copies many repositories carry besides.
MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


def is_hub_id(path: str) -> bool:
    return _HUB_ID.fullmatch(path) is not None and not Path(path).exists()


def fetch_model(repo_id: str, cache_dir: str) -> Path:
    """The local snapshot directory of hub model `repo_id`, downloaded into `cache_dir` unless it
    is already there. Any failure (offline and not cached, unknown or gated repository, a full
    disk) is one line naming the id and the cache."""
    from huggingface_hub import snapshot_download

    try:
        # Every hub error is an OSError (HTTP, offline, not cached) or a ValueError (a bad id).
        path = Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=MODEL_FILES))
    except (OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [""])[0]
        raise UserError(
            f"model.path={repo_id}: no such directory, and fetching it from the hub into {cache_dir} "
            f"failed: {type(e).__name__}: {reason}"
        ) from None
    if not any(path.glob("*.safetensors")):
        raise UserError(f"model.path={repo_id}: the hub snapshot in {path} has no safetensors weights")
    return path
