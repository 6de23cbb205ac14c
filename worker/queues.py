"""Redis connection, the two rq queues and job lookup, all with rq's JSON serializer:
job data comes from users, and pickle would run whatever it is given."""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from . import settings

SERIALIZER = JSONSerializer


def connect(url: str | None = None) -> Redis:
    url = url or settings.redis_url()
    if not url:
        raise RuntimeError("No Redis: set REDIS_URL, or start the embedded backend (worker.embedded.start_backend()).")
    # A timeout on connect only: rq's blocking dequeue waits longer than any fixed socket timeout.
    return Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)


def queue(name: str, connection: Redis) -> Queue:
    return Queue(name, connection=connection, serializer=SERIALIZER, default_timeout=settings.job_timeout())


def all_queues(connection: Redis) -> list[Queue]:
    return [queue(name, connection) for name in settings.QUEUES]


def fetch_job(job_id: str, connection: Redis) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
    except NoSuchJobError:
        return None
