"""Model out: push a finished run's `RUN_DIR/final` to a Hugging Face Hub repo (`run.push_to`).

huggingface_hub does the upload (chunked, LFS for the weights); the token comes from its usual
places (`HF_TOKEN`, or `hf auth login`). A repo that does not exist yet is created private:
publishing a model is a decision the user takes on the hub, not a side effect of a run.
(Model *in*, a hub id in `model.path`, is `pfrl.hub`.)
"""

from __future__ import annotations

import logging
from pathlib import Path

from pfrl.errors import UserError

log = logging.getLogger(__name__)


def push_final(run_dir: str | Path, repo_id: str) -> str:
    """Upload `run_dir/final` (the Hugging Face directory the run ends with) to the model repo
    `repo_id`; returns the URL of the commit."""
    from huggingface_hub import HfApi

    folder = Path(run_dir) / "final"
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: no model to push to {repo_id} (no config.json)")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=True, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"pfrl: {Path(run_dir).name}/final",
        )
    except OSError as e:  # huggingface_hub's HfHubHTTPError (refusals, bad token) is an OSError
        raise UserError(
            f"run.push_to={repo_id}: upload of {folder} failed ({e})".replace("\n", " ")
        ) from None
    url = getattr(commit, "commit_url", None) or str(commit)
    log.info("pushed %s to %s", folder, url)
    return url
