"""Temp folders, one per job, named by the job id under `state/jobs/`.

The job removes its own folder when it ends. A folder whose job was killed (stopped,
crashed worker) is removed by whoever learns the job is over: the stop/failure callbacks,
and each worker's sweep at start and during maintenance.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from redis import Redis

from . import settings

log = logging.getLogger(__name__)


def path_for(job_id: str) -> Path:
    return settings.jobs_dir() / job_id


def create(job_id: str) -> Path:
    path = path_for(job_id)
    shutil.rmtree(path, ignore_errors=True)  # a retry starts clean
    path.mkdir(parents=True)
    return path


def hold_temporary_files(path: Path) -> Path:
    """Send this process's temporary files (coremltools' packages, chunks, zips: anything
    using `tempfile`) into the job's folder, so a kill, cancel or OOM leaves none behind that
    the sweep does not remove. A job runs in a process of its own (rq's work horse)."""
    import os
    import tempfile

    folder = path / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    return folder


def remove(job_id: str) -> None:
    shutil.rmtree(path_for(job_id), ignore_errors=True)


def sweep(connection: Redis) -> list[str]:
    """Remove folders of jobs that are not running any more; returns their job ids."""
    from rq.job import JobStatus

    from .queues import fetch_job

    removed = []
    for folder in settings.jobs_dir().iterdir():
        try:
            job = fetch_job(folder.name, connection)
            running = job is not None and job.get_status() == JobStatus.STARTED
        except Exception:  # noqa: BLE001 - unreadable job: keep the folder, try again later
            continue
        if not running:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    if removed:
        log.info("removed %d temp folder(s) of ended jobs", len(removed))
    return removed
