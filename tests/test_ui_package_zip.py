"""The package download (ui/package_zip.py): the exact pushed commit is fetched back from
the (local) Hub with the user's token and zipped, package folders only."""

from __future__ import annotations

import zipfile

import pytest

from converters.errors import UserInputError
from tests.conftest import OWNER, OWNER_TOKEN
from ui import package_zip
from worker.status import JobStatus

REPO = f"{OWNER}/zip-me-coreml"


@pytest.fixture
def hub(local_hub, monkeypatch):
    for key, value in local_hub.client_env().items():
        monkeypatch.setenv(key, value)
    if REPO not in local_hub.repo_ids():
        local_hub.add_repo(REPO, {
            "tiny.mlpackage/Manifest.json": '{"fileFormatVersion": "1.0.0"}',
            "tiny.mlpackage/Data/com.apple.CoreML/model.mlmodel": b"\x08\x09model",
            "tiny.mlpackage/Data/com.apple.CoreML/weights/weight.bin": b"\x00" * 64,
            "config.json": "{}",
            "README.md": "card",
        }, private=True)
    return local_hub


def finished(hub, **overrides) -> JobStatus:
    sha = hub.sha(REPO)
    status = {
        "job_id": "cv-1", "state": "finished", "pushed": True, "push_target": REPO,
        "links": {"repo": f"{hub.url}/{REPO}", "commit": f"{hub.url}/{REPO}/commit/{sha}"},
        "report": {"packages": [{"part": "model", "path": "tiny.mlpackage"}]},
    }
    status.update(overrides)
    return JobStatus.from_dict(status)


def test_the_pushed_package_comes_back_as_a_zip(hub, tmp_path):
    archive = package_zip.build_zip(finished(hub), OWNER_TOKEN, tmp_path)
    names = sorted(zipfile.ZipFile(archive).namelist())
    assert names == ["tiny.mlpackage/Data/com.apple.CoreML/model.mlmodel",
                     "tiny.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
                     "tiny.mlpackage/Manifest.json"]
    assert archive.name == f"zip-me-coreml-{hub.sha(REPO)[:8]}.zip"


def test_what_can_be_downloaded(hub):
    status = finished(hub)
    assert package_zip.can_download(status)
    assert package_zip.pushed_revision(status) == hub.sha(REPO)
    assert package_zip.package_paths(status) == ["tiny.mlpackage"]
    assert not package_zip.can_download(finished(hub, state="failed"))
    assert not package_zip.can_download(finished(hub, pushed=False))
    assert not package_zip.can_download(finished(hub, report=None))
    assert not package_zip.can_download(None)
    with pytest.raises(UserInputError, match="no pushed package"):
        package_zip.build_zip(finished(hub, pushed=False), OWNER_TOKEN)


def test_a_private_repo_needs_the_users_token(hub, tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        package_zip.build_zip(finished(hub), None, tmp_path)


def test_old_zips_are_swept(tmp_path, monkeypatch):
    monkeypatch.setattr(package_zip.tempfile, "gettempdir", lambda: str(tmp_path))
    old = package_zip.zip_root() / "zip-old"
    old.mkdir()
    package_zip.sweep(max_age=-1)
    assert not old.exists()
