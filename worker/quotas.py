"""Per-user limits, so one user cannot starve the others on a shared service: conversions
queued or running at once, Try it runs per hour and at once. Each limit is a setting
(worker/settings.py; 0 turns it off) and a user over one is told which, and when to try
again. Checked at submit, in the web process: light imports only.
"""

from __future__ import annotations

import math
import time

from redis import Redis
from rq.job import Job, JobStatus

from converters.errors import UserInputError

from . import queues, settings

ACTIVE = {JobStatus.CREATED, JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.STARTED}
HOUR = 3600


def active(redis: Redis, job_ids: list[str]) -> list[str]:
    """Those of `job_ids` queued or running."""
    jobs = Job.fetch_many(job_ids, connection=redis, serializer=queues.SERIALIZER) if job_ids else []
    return [job.id for job in jobs if job is not None and job.get_status(refresh=False) in ACTIVE]


def check_conversions(redis: Redis, user: str, user_jobs: list[str]) -> None:
    """Refuse a new conversion when `user` has the limit of them queued or running."""
    limit = settings.user_active_jobs()
    if limit and len(active(redis, user_jobs)) >= limit:
        raise UserInputError(
            f"You have {limit} conversion{'s' if limit > 1 else ''} queued or running, the most one person may have "
            "at once on this service. Wait for one to end (or cancel one), then convert again.")


def _tries_key(user: str) -> str:
    return f"{settings.KEY_PREFIX}:tries:{user}"


def check_try(redis: Redis, user: str, now: float | None = None) -> None:
    """Refuse a try when `user` has the limit running, or started the hourly limit."""
    now = time.time() if now is None else now
    key = _tries_key(user)
    redis.zremrangebyscore(key, 0, now - HOUR)
    started = redis.zrange(key, 0, -1, withscores=True)
    at_once = settings.user_active_tries()
    running = active(redis, [raw.decode() for raw, _ in started])
    if at_once and len(running) >= at_once:
        raise UserInputError("Your previous try is still running: wait for its answer, then try again.")
    per_hour = settings.user_tries_per_hour()
    if per_hour and len(started) >= per_hour:
        wait = math.ceil((started[0][1] + HOUR - now) / 60)
        raise UserInputError(
            f"You have started {per_hour} tries in the last hour, the most one person may on this service. "
            f"Try again in {wait} minute{'s' if wait != 1 else ''}.")


def record_try(redis: Redis, user: str, try_id: str, now: float | None = None) -> None:
    key = _tries_key(user)
    redis.zadd(key, {try_id: time.time() if now is None else now})
    redis.expire(key, HOUR)  # bounded: nothing older than an hour matters
