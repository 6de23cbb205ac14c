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
# What a job in our queues may name: rq imports the function and callbacks a job's hash in
# Redis names, so anyone able to write one could otherwise run any importable function on
# the workers. The Redis password keeps others out; this keeps the workers to our own code.
RUNNABLE = frozenset({"worker.job.run", "worker.try_it.run"})
CALLBACKS = frozenset({"worker.lifecycle.on_failure", "worker.lifecycle.on_stopped"})


class ServiceJob(Job):
    """An rq job that runs only this service's functions and callbacks (the workers' job class)."""

    @property
    def func(self):
        if self.func_name not in RUNNABLE:
            raise PermissionError(f"job {self.id} names {self.func_name!r}, not one of this service's functions: refused")
        return super().func

    @property
    def success_callback(self):
        return super().success_callback if self._success_callback_name in CALLBACKS else None

    @property
    def failure_callback(self):
        return super().failure_callback if self._failure_callback_name in CALLBACKS else None

    @property
    def stopped_callback(self):
        return super().stopped_callback if self._stopped_callback_name in CALLBACKS else None


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
