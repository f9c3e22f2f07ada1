"""The one check that a path is a Hugging Face model directory, made before anything loads it.

Every entry point (`pfrl train`'s preflight, generate, eval, dpo, the learner and generator engines)
calls it, so a wrong path ends in the same one line instead of a loader's traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

from pfrl.errors import UserError


def check_model_dir(path: str | Path, max_length: int | None = None, name: str | None = None) -> None:
    """UserError unless `path` holds a `config.json`, and, given `max_length`, unless the model's
    context (`max_position_embeddings`) fits it. `name` is how the message refers to the path, e.g.
    the config key it came from."""
    what = name or str(path)
    config = Path(path) / "config.json"
    if not config.is_file():
        raise UserError(f"{what}: not a Hugging Face model directory (no config.json)")
    if max_length is None:
        return
    try:
        positions = json.loads(config.read_text()).get("max_position_embeddings")
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{config}: unreadable ({e})") from None
    if isinstance(positions, int) and max_length > positions:
        raise UserError(f"model.max_length={max_length} exceeds the model's {positions} positions ({config})")
