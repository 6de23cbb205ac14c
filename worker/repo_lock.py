"""One writer per target repo: a Redis lock held from "does the repo exist" to the end of
the commit. Without it, two jobs pushing to one repo (two workers) could both find it new,
and the one whose commit failed would delete the repo with the other's commit in it.

The lock expires by itself (a worker killed mid-push must not block the repo for ever);
a job that cannot get it in time fails with a message, having pushed nothing.
"""

from __future__ import annotations

from contextlib import contextmanager

from redis import Redis
from redis.exceptions import LockError

from converters.errors import UserInputError

from . import settings


def key(repo_id: str) -> str:
    return f"{settings.KEY_PREFIX}:push-lock:{repo_id.lower()}"  # the Hub's repo ids are case-insensitive


@contextmanager
def repo_lock(connection: Redis, repo_id: str, wait: float | None = None, hold: float | None = None):
    """Hold the push lock of `repo_id`; wait up to `wait` seconds for another job's push."""
    wait = settings.push_lock_wait() if wait is None else wait
    lock = connection.lock(key(repo_id), timeout=hold or settings.push_lock_hold(), blocking_timeout=wait)
    if not lock.acquire():
        raise UserInputError(
            f"Another conversion is pushing to {repo_id} right now, and it did not finish within "
            f"{wait / 60:.0f} minute(s). Nothing was pushed: try again when it is done, or pick another repo name.")
    try:
        yield
    finally:
        try:
            lock.release()
        except LockError:  # it expired (a very long push): another job may hold it now
            pass
