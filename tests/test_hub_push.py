"""`run.push_to`: RUN_DIR/final goes to the hub through huggingface_hub (HfApi replaced by a
recorder: no network, no token)."""

from __future__ import annotations

import httpx2  # huggingface_hub's HTTP client
import huggingface_hub
import pytest
from huggingface_hub.errors import HfHubHTTPError

from pfrl.config import ConfigError, load_config
from pfrl.errors import UserError
from pfrl.hub_push import push_final


class RecordingApi:
    calls: list[tuple[str, dict]] = []
    fail: Exception | None = None

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def upload_folder(self, **kw):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("upload_folder", kw))
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{kw['repo_id']}/commit/abc",
            commit_message="m",
            commit_description="",
            oid="abc",
        )


@pytest.fixture
def api(monkeypatch):
    RecordingApi.calls, RecordingApi.fail = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return RecordingApi


def _run_dir(tmp_path):
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    return tmp_path / "run"


def test_final_is_uploaded_to_the_repo(api, tmp_path):
    url = push_final(_run_dir(tmp_path), "org/tiny-pfrl")
    assert url == "https://huggingface.co/org/tiny-pfrl/commit/abc"
    (create, kw_create), (upload, kw_upload) = api.calls
    assert (create, kw_create["repo_id"], kw_create["private"], kw_create["exist_ok"]) == (
        "create_repo",
        "org/tiny-pfrl",
        True,
        True,
    )
    assert upload == "upload_folder" and kw_upload["repo_id"] == "org/tiny-pfrl"
    assert kw_upload["folder_path"] == str(tmp_path / "run" / "final") and kw_upload["repo_type"] == "model"


def test_no_final_model_is_a_user_error(api, tmp_path):
    with pytest.raises(UserError, match="no model to push"):
        push_final(tmp_path / "run", "org/x")
    assert api.calls == []


def test_a_refused_upload_is_one_line(api, tmp_path):
    response = httpx2.Response(401, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
    api.fail = HfHubHTTPError("401 Unauthorized\nInvalid token", response=response)
    with pytest.raises(
        UserError, match=r"run.push_to=org/x: upload of .* failed \(401 Unauthorized Invalid"
    ) as e:
        push_final(_run_dir(tmp_path), "org/x")
    assert "\n" not in str(e.value)


def test_push_to_must_name_org_and_repo():
    assert load_config(None, ["run.push_to=org/name"]).run.push_to == "org/name"
    with pytest.raises(ConfigError, match="run.push_to"):
        load_config(None, ["run.push_to=just-a-name"])
