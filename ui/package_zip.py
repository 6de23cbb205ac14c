"""The "Download the package" button: fetch the pushed package(s) back from the Hub (the
exact commit the job made, with the user's token, so private repos and pull requests
work) and zip them. The worker keeps nothing after a pushed job, so the Hub is the source;
when the push failed after the package passed its checks, the worker kept it as a zip
(worker/kept.py), served from there.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from converters.errors import UserInputError
from converters.source import HubReference, hub_api, hub_errors
from worker import kept
from worker.status import JobStatus

_COMMIT = re.compile(r"/commit/([0-9a-fA-F]{7,64})/?$")
KEEP_SECONDS = 3600  # zips older than this are removed (Gradio has copied them by then)


def zip_root() -> Path:
    root = Path(tempfile.gettempdir()) / "coreml-converter-zips"
    root.mkdir(parents=True, exist_ok=True)
    return root


def package_paths(status: JobStatus) -> list[str]:
    """Paths in the repo of the job's packages (e.g. 'tiny-bert.mlpackage')."""
    report = status.report or {}
    return [p["path"] for p in report.get("packages") or [] if p.get("path")]


def pushed_revision(status: JobStatus) -> str | None:
    """The commit the job pushed (read from its commit link)."""
    match = _COMMIT.search(status.links.commit or "")
    return match.group(1) if match else None


def can_download(status: JobStatus | None) -> bool:
    return pushed_package(status) or bool(status and status.kept_package)


def pushed_package(status: JobStatus | None) -> bool:
    return bool(status) and status.state == "finished" and status.pushed \
        and bool(package_paths(status)) and bool(status.push_target)


def kept_zip(status: JobStatus) -> Path:
    """A copy of the zip the worker kept for a job whose push failed, in a folder Gradio
    serves from (the state folder is not one); a hard link when it can, so no second copy."""
    source = kept.path_for(status.job_id or "") if status.kept_package else None
    if source is None:
        raise UserInputError("The package of this job is no longer kept (it is kept for a limited time): "
                             "convert it again.")
    sweep()
    copy = Path(tempfile.mkdtemp(prefix="kept-", dir=zip_root())) / source.name
    try:
        os.link(source, copy)
    except OSError:  # another file system
        shutil.copyfile(source, copy)
    return copy


def build_zip(status: JobStatus, token: str | None, workdir: Path | None = None) -> Path:
    """Download the job's packages from the Hub and zip them; returns the zip's path."""
    if not pushed_package(status):
        raise UserInputError("There is no pushed package to download for this job.")
    repo_id = status.push_target
    revision = pushed_revision(status)
    paths = package_paths(status)
    if workdir is None:
        sweep()
        workdir = Path(tempfile.mkdtemp(prefix="zip-", dir=zip_root()))
    workdir = Path(workdir)
    folder = workdir / "files"
    with hub_errors(HubReference(repo_id, revision), token):
        hub_api(token).snapshot_download(
            repo_id, revision=revision, local_dir=folder, token=token or False,
            allow_patterns=[f"{p}/*" for p in paths] + [f"{p}/**" for p in paths],
        )
    name = _safe(f"{repo_id.split('/')[-1]}-{(revision or 'main')[:8]}") + ".zip"
    archive = workdir / name
    written = 0
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for package in paths:
            root = folder / package
            for file in sorted(root.rglob("*")):
                if file.is_file():
                    zf.write(file, file.relative_to(folder).as_posix())
                    written += 1
    shutil.rmtree(folder, ignore_errors=True)  # the zip holds them: one copy on disk, not two
    if not written:
        raise UserInputError(f"The package files were not found in {repo_id}: they may have been removed since.")
    return archive


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "package"


def sweep(max_age: float = KEEP_SECONDS) -> None:
    """Remove zips made more than `max_age` seconds ago."""
    now = time.time()
    for folder in zip_root().iterdir():
        try:
            if now - folder.stat().st_mtime > max_age:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass
