"""What happens when a job ends in a way its own code cannot see: rq callbacks and the
worker's horse-killed handler. Each one deletes the job's token, removes its temp folder
(when it is on this machine) and, if the job recorded no error itself, records one.

They run in different processes: `on_failure` in the work horse (the job raised) or in
whoever runs the StartedJobRegistry cleanup (the app: the worker died), `on_stopped`
and `on_horse_killed` in the worker. So this module stays light: no torch, no engine.
"""

from __future__ import annotations

import logging

from redis import Redis

from . import tokens, workdirs
from .progress import now_iso
from .states import ErrorKind

log = logging.getLogger(__name__)

ABANDONED_MESSAGE = (
    "The worker running this job stopped unexpectedly (it may have run out of memory or been restarted). "
    "Nothing was pushed. Try again; if it happens again, try a smaller model."
)
CANCELLED_MESSAGE = "Cancelled"
HORSE_KILLED_MESSAGE = (
    "The conversion process was killed (most often: out of memory). Nothing was pushed. "
    "Try a smaller model, or a worker with more memory."
)


def timeout_message(seconds: int | None) -> str:
    limit = f"{round(seconds / 60)} min" if seconds and seconds >= 120 else f"{seconds} s"
    return f"The conversion took longer than this service allows ({limit}) and was stopped. Nothing was pushed."


def end(job, connection: Redis, *, error: str | None, kind: ErrorKind | None) -> None:
    """Forget the job's secrets and files; record `error` unless the job recorded one. A job
    that died while pushing says what actually landed, read back from the Hub."""
    try:
        meta = job.get_meta(refresh=True)
        mid_push = meta.get("push_started_at") and not meta.get("pushed")
        if mid_push and (error or kind == ErrorKind.CANCELLED):
            token = tokens.load(connection, job.id)  # api.cancel leaves it to us for a running job
            if error:
                error = _after_push(meta, token, error)
            else:  # cancelled while pushing: the commit may have landed all the same
                landed = _after_push(meta, token, "Nothing was pushed.")
                meta.update(message=f"{CANCELLED_MESSAGE} while pushing. {landed}")
        tokens.delete(connection, job.id)
        workdirs.remove(job.id)
        if error and not meta.get("error"):
            meta.update(error=error, error_kind=kind, user_error=kind == ErrorKind.USER_INPUT)
        if kind == ErrorKind.CANCELLED:
            meta["cancelled"] = True
            if not str(meta.get("message", "")).startswith(CANCELLED_MESSAGE):
                meta["message"] = CANCELLED_MESSAGE
        meta.setdefault("ended_at", now_iso())
        job.save_meta()
    except Exception:  # noqa: BLE001 - a failing callback would replace the job's own failure
        log.exception("cleanup after job %s failed", job.id)


def _after_push(meta: dict, token: str | None, error: str) -> str:
    """`error` (which says "Nothing was pushed"), made true: did the job's commit land?"""
    from . import hub

    repo, title = meta.get("push_target"), meta.get("push_commit")
    try:
        landed = hub.landed_commit(token, repo, title, meta["push_started_at"])
    except Exception as problem:  # noqa: BLE001 - the Hub could not tell: say so
        log.warning("could not read back the push to %s: %s", repo, type(problem).__name__)
        return error.replace("Nothing was pushed.", f"It stopped while pushing to {repo}: check that repo, the "
                                                    "package may or may not have landed.")
    if landed is None:
        return error.replace("Nothing was pushed.", f"Nothing was pushed to {repo} (checked on the Hub).")
    meta.update(links={"repo": f"{hub.endpoint()}/{repo}", "commit": landed}, pushed_before_stop=True)
    return error.replace("Nothing was pushed.", f"It stopped after its commit to {repo} had landed ({landed}): "
                                                "the package is there, but the job did not finish.")


def on_failure(job, connection: Redis, exc_type, exc_value, traceback) -> None:
    from rq.exceptions import AbandonedJobError
    from rq.timeouts import JobTimeoutException

    if exc_type is AbandonedJobError or isinstance(exc_value, AbandonedJobError):
        end(job, connection, error=ABANDONED_MESSAGE, kind=ErrorKind.INTERNAL)
    elif isinstance(exc_value, JobTimeoutException):
        end(job, connection, error=timeout_message(job.timeout), kind=ErrorKind.INTERNAL)
    else:
        end(job, connection, error="The conversion failed on our side. Nothing was pushed.", kind=ErrorKind.INTERNAL)


def on_stopped(job, connection: Redis) -> None:
    end(job, connection, error=None, kind=ErrorKind.CANCELLED)


TRY_KILLED_MESSAGE = ("The process running this try was killed (most often: out of memory). Nothing of it was kept. "
                      "Run it again; if it happens again, download the package and try it in your app.")


def on_horse_killed(job, retpid, ret_val, rusage) -> None:
    """Worker handler: the job's process died without reporting (no rq callback runs then)."""
    is_try = (job.meta or {}).get("kind") == "try"
    end(job, job.connection, error=TRY_KILLED_MESSAGE if is_try else HORSE_KILLED_MESSAGE, kind=ErrorKind.INTERNAL)
