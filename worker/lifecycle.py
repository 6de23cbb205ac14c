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
HORSE_KILLED_MESSAGE = (
    "The conversion process was killed (most often: out of memory). Nothing was pushed. "
    "Try a smaller model, or a worker with more memory."
)


def timeout_message(seconds: int | None) -> str:
    limit = f"{round(seconds / 60)} min" if seconds and seconds >= 120 else f"{seconds} s"
    return f"The conversion took longer than this service allows ({limit}) and was stopped. Nothing was pushed."


def end(job, connection: Redis, *, error: str | None, kind: ErrorKind | None) -> None:
    """Forget the job's secrets and files; record `error` unless the job recorded one."""
    try:
        tokens.delete(connection, job.id)
        workdirs.remove(job.id)
        meta = job.get_meta(refresh=True)
        if error and not meta.get("error"):
            meta.update(error=error, error_kind=kind, user_error=kind == ErrorKind.USER_INPUT)
        if kind == ErrorKind.CANCELLED:
            meta.update(cancelled=True, message="Cancelled")
        meta.setdefault("ended_at", now_iso())
        job.save_meta()
    except Exception:  # noqa: BLE001 - a failing callback would replace the job's own failure
        log.exception("cleanup after job %s failed", job.id)


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


def on_horse_killed(job, retpid, ret_val, rusage) -> None:
    """Worker handler: the job's process died without reporting (no rq callback runs then)."""
    end(job, job.connection, error=HORSE_KILLED_MESSAGE, kind=ErrorKind.INTERNAL)
