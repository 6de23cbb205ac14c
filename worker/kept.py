"""Packages kept for download when the push failed: the model converted and passed its
checks, but the Hub refused it (the token lost its write access, the repo changed hands), so
the work would otherwise be lost with the job's temp folder.

One zip per job, under `state/kept/<job id>/`, for a limited time (settings.kept_ttl), within
a disk budget shared by all jobs (settings.kept_bytes: the oldest go first). It holds only the
package files (never the token). The app serves it to the job's owner; expired ones are
removed by the sweeps (worker start, worker maintenance, the app's timer). The app reads it
from the same state folder: the app and the workers must share it (docs/deployment.md).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
import zipfile
from pathlib import Path

from . import settings

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")  # rq's ids: never a path


def root() -> Path:
    path = settings.state_dir() / "kept"
    path.mkdir(parents=True, exist_ok=True)
    return path


def folder(job_id: str) -> Path:
    """The job's own folder; a job id that is not a plain name is refused (no path escapes)."""
    if not _JOB_ID.match(job_id or ""):
        raise ValueError(f"not a job id: {job_id!r}")
    return root() / job_id


def keep(job_id: str, output_dir: Path, packages: list[str], name: str) -> dict | None:
    """Zip `packages` (paths relative to `output_dir`) into the job's folder as `name`.zip;
    returns what the job's status says of it ({"file", "size_bytes", "expires_at"}), or None
    when it does not fit the budget."""
    sweep()
    target = folder(job_id)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    archive = target / f"{_safe(name)}.zip"
    partial = target / ".partial"  # renamed when complete: a half-written zip is never served
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for package in packages:
                root_ = output_dir / package
                files = [root_] if root_.is_file() else sorted(f for f in root_.rglob("*") if f.is_file())
                for file in files:
                    zf.write(file, file.relative_to(output_dir).as_posix())
        partial.rename(archive)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    size = archive.stat().st_size
    if not _make_room(size, job_id):
        shutil.rmtree(target, ignore_errors=True)
        log.warning("job %s: its package (%d bytes) is beyond the kept-packages budget: not kept", job_id, size)
        return None
    expires = time.time() + settings.kept_ttl()
    return {"file": archive.name, "size_bytes": size,
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(expires))}


def path_for(job_id: str) -> Path | None:
    """The job's kept zip, if it is here and not expired."""
    try:
        target = folder(job_id)
    except ValueError:
        return None
    zips = [p for p in target.glob("*.zip") if p.is_file() and not p.is_symlink()] if target.is_dir() else []
    if not zips or _expired(target):
        return None
    return zips[0]


def sweep(now: float | None = None) -> list[str]:
    """Remove the kept packages older than settings.kept_ttl(); returns their job ids."""
    removed = []
    for target in root().iterdir():
        if target.is_dir() and _expired(target, now):
            shutil.rmtree(target, ignore_errors=True)
            removed.append(target.name)
    if removed:
        log.info("removed %d expired kept package(s)", len(removed))
    return removed


def _expired(target: Path, now: float | None = None) -> bool:
    try:
        return (time.time() if now is None else now) - target.stat().st_mtime > settings.kept_ttl()
    except OSError:
        return True


def _make_room(size: int, job_id: str) -> bool:
    """Remove the oldest other kept packages until all fit the budget; False if this one alone does not."""
    budget = settings.kept_bytes()
    if not budget:
        return True
    if size > budget:
        return False
    others = sorted((p for p in root().iterdir() if p.is_dir() and p.name != job_id), key=lambda p: p.stat().st_mtime)
    total = size + sum(_bytes(p) for p in others)
    for oldest in others:
        if total <= budget:
            break
        total -= _bytes(oldest)
        shutil.rmtree(oldest, ignore_errors=True)
    return True


def _bytes(target: Path) -> int:
    return sum(f.stat().st_size for f in target.rglob("*") if f.is_file())


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "package"
