"""A stand-in for ``huggingface_hub.HfApi`` that records every call and keeps a repo table.

Nothing leaves the machine. ``FakeHfApi.repos[(repo_type, repo_id)]`` describes
the repos that "exist" (visibility, files, card tags); ``repo_info`` raises the
library's own ``RepositoryNotFoundError`` for the others, as the Hub does.
``upload_folder`` copies the uploaded folder to ``FakeHfApi.uploaded``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest


class FakeHfApi:
    calls: list[tuple[str, dict]] = []
    repos: dict[tuple[str, str], dict] = {}
    uploaded: Path | None = None
    fail_with: Exception | None = None

    def __init__(self, **kwargs):
        FakeHfApi.calls.append(("init", kwargs))

    def repo_info(self, repo_id, **kwargs):
        from huggingface_hub.errors import RepositoryNotFoundError

        FakeHfApi.calls.append(("repo_info", {"repo_id": repo_id, **kwargs}))
        repo = FakeHfApi.repos.get((kwargs.get("repo_type"), repo_id))
        if repo is None:
            # the library's own error (built without an HTTP response object)
            error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
            Exception.__init__(error, f"404 Repository Not Found for {repo_id}")
            raise error
        return SimpleNamespace(
            private=repo["private"],
            siblings=[SimpleNamespace(rfilename=f) for f in repo["files"]],
            card_data=SimpleNamespace(tags=repo["tags"]) if repo["tags"] is not None else None,
        )

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        FakeHfApi.repos[(kwargs.get("repo_type"), repo_id)] = {
            "private": kwargs["private"],
            "files": [".gitattributes"],
            "tags": None,
        }
        return f"https://huggingface.co/{repo_id}"

    def update_repo_settings(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("update_repo_settings", {"repo_id": repo_id, **kwargs}))
        FakeHfApi.repos[(kwargs.get("repo_type"), repo_id)]["private"] = kwargs["private"]

    def upload_folder(self, **kwargs):
        FakeHfApi.calls.append(("upload_folder", kwargs))
        if FakeHfApi.fail_with is not None:
            raise FakeHfApi.fail_with
        shutil.copytree(kwargs["folder_path"], FakeHfApi.uploaded)
        return SimpleNamespace(commit_url="https://huggingface.co/c/1")

    @classmethod
    def add_repo(cls, repo_type, repo_id, *, private, files, tags):
        cls.repos[(repo_type, repo_id)] = {"private": private, "files": files, "tags": tags}

    @classmethod
    def kinds(cls) -> list[str]:
        return [name for name, _ in cls.calls]

    @classmethod
    def call(cls, name: str) -> dict:
        (found,) = [kwargs for kind, kwargs in cls.calls if kind == name]
        return found


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    import huggingface_hub

    FakeHfApi.calls = []
    FakeHfApi.repos = {}
    FakeHfApi.uploaded = tmp_path / "uploaded"
    FakeHfApi.fail_with = None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    return FakeHfApi


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
