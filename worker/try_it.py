"""Try it, in a worker: run a finished job's pushed package on the user's text, beside the
PyTorch model it came from (converters/try_it.py does the running).

Why from the Hub and not from the worker that converted it: that worker's folder is gone
when the job ends (and the worker may be too). The pushed commit is the package the user
got, any worker can fetch it, and the Hub checks the user's token on the way. Downloads go
to one cache folder per worker (huggingface_hub's cache), so trying the same package again
fetches nothing; the cache is pruned to CACHE_KEEP repos, least recently used first.

The request is JSON: {"job_id": the conversion's, "kind", "inputs"}. The token travels as
for conversions (worker/tokens.py) and is deleted when the try ends.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from converters import try_it
from converters.errors import UserInputError
from converters.source import HubReference, download

from . import queues, settings, tokens
from .job import JobFailed
from .progress import Redactor

log = logging.getLogger(__name__)

CACHE_KEEP = 6  # repos (source models and pushed packages) kept in the try-it cache
TIMEOUT = 600  # seconds: a try is a few calls, not a conversion


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
        result = _try(job.connection, request, token)
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


def _try(connection, request: dict, token: str | None) -> dict:
    conversion = queues.fetch_job(request["job_id"], connection)
    meta = (conversion.meta or {}) if conversion is not None else {}
    links, report = meta.get("links") or {}, meta.get("report") or {}
    if not meta.get("pushed") or not links.get("commit"):
        raise UserInputError("That conversion is gone or pushed nothing: there is no package to try.")
    kind = try_it.kind_for(report.get("task") or meta.get("task"))
    if kind is None or kind != request.get("kind"):
        raise UserInputError(f"There is no try-it for {report.get('task') or 'this task'} yet.")
    if report.get("tokenizer_missing"):  # no text can become token ids for this model
        raise UserInputError(try_it.NO_TOKENIZER.format(why=report["tokenizer_missing"]))
    repo = meta["model"] if links.get("pull_request") else meta.get("push_target")
    commit = links["commit"].rstrip("/").rsplit("/", 1)[-1]
    package_path = (report.get("packages") or [{}])[0].get("path")
    if not package_path:
        raise UserInputError("That conversion's report names no package: convert it again to try it.")

    cache = cache_dir()
    source = download(HubReference(meta["model"], meta.get("revision")), token=token, cache_dir=cache)
    package = _download_package(repo, commit, package_path, token, cache)
    for used in {meta["model"], repo}:  # most recently used: kept by _prune
        (cache / f"models--{used.replace('/', '--')}").touch(exist_ok=True)
    _prune(cache)
    mode = "fp16" if (report.get("options") or {}).get("precision", "float16") == "float16" else "fp32"
    return try_it.run(kind, package, source.path, request.get("inputs") or {}, mode)


def _download_package(repo: str, commit: str, package_path: str, token: str | None, cache: Path) -> Path:
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo, revision=commit, allow_patterns=[f"{package_path}/**"], token=token or False,
                                    endpoint=os.environ.get("HF_ENDPOINT") or None, cache_dir=cache))
    package = folder / package_path
    if not package.is_dir():
        raise UserInputError(f"The pushed commit has no {package_path}: it was changed since. Convert again to try it.")
    return package


def _prune(cache: Path) -> None:
    """Keep the CACHE_KEEP most recently used repos of the cache (models--owner--name folders)."""
    repos = sorted((p for p in cache.iterdir() if p.is_dir() and p.name.startswith("models--")),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in repos[CACHE_KEEP:]:
        shutil.rmtree(stale, ignore_errors=True)
