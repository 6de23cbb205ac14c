"""Try it, in a worker: run a finished job's pushed package on the user's text, photo or clip,
beside the PyTorch model it came from (converters/try_it.py does the running).

Why from the Hub and not from the worker that converted it: that worker's folder is gone
when the job ends (and the worker may be too). The pushed commit is the package the user
got, and any worker can fetch it. Downloads go to one cache folder per worker
(huggingface_hub's cache), shared by every user, so trying the same package again fetches
nothing: each try first asks the Hub whether this user's token may read both repos now
(confirm_access), since a cached commit is otherwise served without any request. The cache
is pruned by count and by bytes (settings.try_cache_bytes), least recently used first.

The request is JSON: {"job_id": the conversion's, "kind", "inputs"} (a photo or a clip as
base64 bytes in "inputs"). The token travels as for conversions (worker/tokens.py) and is
deleted when the try ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from converters import try_it
from converters.errors import UserInputError
from converters.source import HubReference, download

from . import queues, settings, tokens, workdirs
from .job import JobFailed
from .progress import Redactor, step_of

log = logging.getLogger(__name__)

CACHE_KEEP = 6  # repos (source models and pushed packages) kept in the try-it cache
TIMEOUT = 600  # seconds: a try is a few calls, not a conversion
SAVE_INTERVAL = 0.5  # seconds between saves of a try's progress within one step


def cache_dir() -> Path:
    path = settings.state_dir() / "try-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(request: dict) -> dict:
    """rq entry point. Returns the result (converters.try_it's dict); a problem the user can
    act on ends the job with its message in meta["error"]."""
    from rq import get_current_job

    job = get_current_job()
    token = tokens.load(job.connection, job.id)
    redact = Redactor(token)
    try:
        workdirs.hold_temporary_files(workdirs.create(job.id))
        result = _try(job.connection, request, token, meta_progress(job, redact))
        job.meta["result"] = result
        job.save_meta()
        return result
    except UserInputError as error:
        job.meta["error"] = redact(str(error))
        job.save_meta()
        raise JobFailed(job.meta["error"], expected=True) from None
    except Exception as error:  # noqa: BLE001 - every failure ends as a message
        log.error("try %s failed: %s", job.id, redact(f"{type(error).__name__}: {error}"))
        job.meta["error"] = f"Trying the package failed on our side ({type(error).__name__}). Try again, or report it."
        job.save_meta()
        raise JobFailed(job.meta["error"]) from None
    finally:
        tokens.delete(job.connection, job.id)
        workdirs.remove(job.id)


def meta_progress(job, redact: Redactor) -> try_it.Progress:
    """progress(message, fraction) into job.meta["progress"] (api.try_status reads it): a new
    step is saved at once; counts within a step ("5 of 16 tokens") at most every SAVE_INTERVAL."""
    saved_at = 0.0

    def report(message: str, fraction: float) -> None:
        nonlocal saved_at
        previous = (job.meta.get("progress") or {}).get("message") or ""
        job.meta["progress"] = {"message": redact(message), "fraction": round(min(max(fraction, 0.0), 1.0), 3)}
        if step_of(message) != step_of(previous) or time.monotonic() - saved_at >= SAVE_INTERVAL:
            job.save_meta()
            saved_at = time.monotonic()

    return report


def _try(connection, request: dict, token: str | None, progress: try_it.Progress) -> dict:
    conversion = queues.fetch_job(request["job_id"], connection)
    meta = (conversion.meta or {}) if conversion is not None else {}
    links, report = meta.get("links") or {}, meta.get("report") or {}
    if not meta.get("pushed") or not links.get("commit"):
        raise UserInputError("That conversion is gone or pushed nothing: there is no package to try.")
    kind = try_it.kind_of_report(report, meta.get("task"))
    if kind is None or kind != request.get("kind"):
        raise UserInputError(f"There is no try-it for {report.get('task') or 'this task'} yet.")
    if report.get("tokenizer_missing") and kind in try_it.TOKENIZED:  # no text can become token ids for this model
        raise UserInputError(try_it.NO_TOKENIZER.format(why=report["tokenizer_missing"]))
    repo = meta["model"] if links.get("pull_request") else meta.get("push_target")
    commit = links["commit"].rstrip("/").rsplit("/", 1)[-1]
    # Every package of the conversion, in its order: an image-and-text model scores with two,
    # Whisper transcribes with three.
    package_paths = [p.get("path") for p in report.get("packages") or []]
    if not package_paths or not all(package_paths):
        raise UserInputError("That conversion's report names no package: convert it again to try it.")

    check_memory(report)
    # The cache is shared by every user: the Hub confirms this token's access to both repos
    # first (a cached commit would otherwise be served with no request at all).
    progress("Checking access on the Hub", 0.0)
    for used in dict.fromkeys([meta["model"], repo]):
        confirm_access(used, token)
    cache = cache_dir()
    progress(f"Getting {meta['model']}'s files", 0.0)
    source = download(HubReference(meta["model"], meta.get("revision")), token=token, cache_dir=cache,
                      max_bytes=settings.max_download_bytes())
    progress(f"Getting the package from {repo}", 0.0)
    packages = _download_packages(repo, commit, package_paths, token, cache)
    for used in {meta["model"], repo}:  # most recently used: kept by _prune
        (cache / f"models--{used.replace('/', '--')}").touch(exist_ok=True)
    _prune(cache)
    mode = "fp16" if (report.get("options") or {}).get("precision", "float16") == "float16" else "fp32"
    try:
        return try_it.run(kind, packages, source.path, request.get("inputs") or {}, mode, progress)
    finally:
        if meta.get("source_restricted"):  # a gated or private model's files leave with its try
            for used in {meta["model"], repo}:
                shutil.rmtree(cache / f"models--{used.replace('/', '--')}", ignore_errors=True)


def confirm_access(repo_id: str, token: str | None) -> None:
    """An authenticated call the Hub answers only if `token` may read `repo_id`'s files now
    (a revoked token, or a gate no longer granted, fails it); UserInputError otherwise."""
    from converters.source import hub_api, hub_errors

    with hub_errors(HubReference(repo_id), token):
        hub_api(token).auth_check(repo_id, token=token or False)


def check_memory(report: dict) -> None:
    """Refuse a try whose PyTorch reference (float32) and package would not fit this machine's
    free memory, instead of being killed half-way."""
    parameters = (report.get("architecture") or {}).get("parameters") or 0
    package = sum(p.get("size_bytes") or 0 for p in report.get("packages") or [])
    needed = parameters * 4 * 1.3 + package * 2  # float32 weights and activations; the package, decompressed
    free = available_memory()
    if free and needed > free:
        raise UserInputError(
            f"Trying this model needs about {needed / 1e9:.1f} GB of memory (its PyTorch original runs in float32 "
            f"beside the package), and this server has {free / 1e9:.1f} GB free. Download the package and try it in "
            "your app instead.")


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux: MemAvailable), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _download_packages(repo: str, commit: str, package_paths: list[str], token: str | None, cache: Path) -> list[Path]:
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo, revision=commit, allow_patterns=[f"{path}/**" for path in package_paths],
                                    token=token or False, endpoint=os.environ.get("HF_ENDPOINT") or None, cache_dir=cache))
    packages = [folder / path for path in package_paths]
    for path, package in zip(package_paths, packages):
        if not package.is_dir():
            raise UserInputError(f"The pushed commit has no {path}: it was changed since. Convert again to try it.")
    return packages


def _prune(cache: Path, budget: int | None = None) -> None:
    """Keep the most recently used repos of the cache (models--owner--name folders): at most
    CACHE_KEEP of them, and no more bytes than the budget (the newest is always kept)."""
    budget = settings.try_cache_bytes() if budget is None else budget
    repos = sorted((p for p in cache.iterdir() if p.is_dir() and p.name.startswith("models--")),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for index, repo in enumerate(repos):
        total += sum(f.stat().st_size for f in repo.rglob("*") if f.is_file() and not f.is_symlink())
        if index >= CACHE_KEEP or (index and budget and total > budget):
            shutil.rmtree(repo, ignore_errors=True)
