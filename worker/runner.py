"""The worker process: `python -m worker` (self-hosting) and the embedded default.

Linux: rq's forking Worker, with torch, coremltools, transformers and the engine imported
once in the parent, so each job's forked process starts in milliseconds. macOS: rq's
SpawnWorker (forking after Objective-C frameworks load crashes there), each job a fresh
interpreter. Both announce their capabilities in Redis and sweep temp folders of ended jobs.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import platform
import signal
import socket
import sys
import warnings

from redis.exceptions import ConnectionError as RedisConnectionError
from rq.worker import SpawnWorker, Worker

from . import capabilities, kept, lifecycle, settings, workdirs
from .job import JobFailed
from .queues import SERIALIZER, ServiceJob, connect

log = logging.getLogger("worker")

IS_MACOS = platform.system() == "Darwin"
_PR_SET_PDEATHSIG = 1


def heartbeat_grace() -> int:
    """Seconds past a missed heartbeat before a running job counts as abandoned (rq uses 60).
    Read from the environment in every process, since spawned horses get no attributes."""
    return int(os.environ.get("COREML_CONVERTER_HEARTBEAT_GRACE", "60"))


class ListenerStopsAtOnce:
    """rq's own order (unsubscribe, then stop the listener) makes a shutdown wait a minute
    with redis-py 8 (one in three, measured): `PubSubWorkerThread.stop()` now joins its thread,
    which, no longer subscribed, sits out its 60 s wait for a subscription. Stopping the listener
    first lets the UNSUBSCRIBE reply wake it, and the join is bounded as rq meant it to be."""

    def unsubscribe(self):
        if self.pubsub_thread:
            self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
            try:
                self.pubsub_thread.stop(timeout=0)  # clears its loop flag; returns at once
            except TypeError:  # redis-py before 8.2: stop() only clears the flag
                self.pubsub_thread.stop()
            try:
                self.pubsub.unsubscribe()
            except (OSError, RedisConnectionError):
                # The listener left its loop first (a message or the end of its wait came before
                # the UNSUBSCRIBE) and closed the connection under it: it listens no more, which is
                # all this asks. An error while it still runs is a real one.
                self.pubsub_thread.join(timeout=1)
                if self.pubsub_thread.is_alive():
                    raise
            self.pubsub_thread.join(timeout=1)
            self.pubsub.close()


class _ConverterWorkerMixin(ListenerStopsAtOnce):
    """What our workers add to rq's: capabilities, temp-folder sweeps, a tunable grace, and
    jobs that run only our functions (queues.ServiceJob)."""

    job_class = ServiceJob

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        # rq adds a fixed 60 s; the grace decides how soon a dead worker's job is reported.
        ttl = super().get_heartbeat_ttl(job, working_time)
        return ttl - 60 + heartbeat_grace()

    def heartbeat(self, timeout=None, pipeline=None):
        super().heartbeat(timeout, pipeline)
        if not self.is_horse:
            capabilities.announce(self.connection, self.name, self.queue_names(), (timeout or self.worker_ttl) + 60)

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        workdirs.sweep(self.connection)
        kept.sweep()  # packages of failed pushes, past their time

    def handle_exception(self, job, *exc_info):
        # A job that ended as its message says (fix the request, validation failed, the Hub
        # is down) is no crash: one line, no traceback. (We register no rq exception
        # handlers, so skipping rq's chain here loses nothing.)
        error = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(error, JobFailed) and error.expected:
            self.log.info("job %s ended: %s", job.id, error)
            return
        super().handle_exception(job, *exc_info)

    def register_death(self):
        capabilities.withdraw(self.connection, self.name)
        super().register_death()


class ConverterWorker(_ConverterWorkerMixin, Worker):
    def main_work_horse(self, job, queue):
        # The horse runs in its own process group; without this it would outlive a killed
        # worker, keep converting unseen, and race the cleanup that reports the job failed.
        if platform.system() == "Linux":
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() == 1:  # the worker died before prctl took effect
                os._exit(1)
        super().main_work_horse(job, queue)


class ConverterSpawnWorker(_ConverterWorkerMixin, SpawnWorker):
    pass


def preload() -> None:
    """Import the heavy libraries once, in the parent, before any fork."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("coremltools", "torch", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import coremltools  # noqa: F401
    import huggingface_hub  # noqa: F401
    import torch  # noqa: F401
    import transformers.modeling_utils  # noqa: F401

    import converters.export  # noqa: F401
    import worker.job  # noqa: F401
    from converters.memory import settle_imports

    settle_imports()


def redact_url(url: str) -> str:
    """A Redis URL without its password, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="Run a Core ML Converter worker against a Redis (REDIS_URL).",
    )
    parser.add_argument("--url", default=settings.redis_url(), help="Redis URL (default: $REDIS_URL)")
    default_queues = (f"{settings.MACOS_QUEUE},{settings.GENERAL_QUEUE}" if IS_MACOS
                      else f"{settings.TRY_QUEUE},{settings.GENERAL_QUEUE}")
    parser.add_argument("--queues", default=default_queues,
                        help=f"comma-separated queues, first served first (default here: {default_queues})")
    parser.add_argument("--name", default=None, help="worker name (default: host.pid)")
    parser.add_argument("--worker-class", choices=("auto", "fork", "spawn"), default="auto",
                        help="fork (Linux default) or spawn (macOS default)")
    parser.add_argument("--job-monitoring-interval", type=int, default=15,
                        help="seconds between heartbeats while a job runs (default 15)")
    parser.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    parser.add_argument("--max-jobs", type=int, default=None, help="quit after this many jobs")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # one line per Hub request otherwise
    if not args.url:
        print("error: no Redis: set REDIS_URL or pass --url redis://host:6379/0", file=sys.stderr)
        return 2
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(settings.QUEUES))
    if unknown:
        print(f"error: unknown queue(s) {', '.join(unknown)}; known: {', '.join(settings.QUEUES)}", file=sys.stderr)
        return 2
    if settings.MACOS_QUEUE in queues and not IS_MACOS:
        print(f"error: the '{settings.MACOS_QUEUE}' queue is for macOS runners (its jobs need the Core ML runtime); "
              f"this machine runs {platform.system()}.", file=sys.stderr)
        return 2
    spawn = args.worker_class == "spawn" or (args.worker_class == "auto" and IS_MACOS)

    connection = connect(args.url)
    try:
        connection.ping()
    except Exception as error:  # noqa: BLE001 - say which Redis and why, then stop
        print(f"error: cannot reach Redis at {redact_url(args.url)}: {error}", file=sys.stderr)
        return 2
    workdirs.sweep(connection)  # folders of jobs that ended while no worker was here
    kept.sweep()
    if not spawn:
        preload()
    worker_class = ConverterSpawnWorker if spawn else ConverterWorker
    worker = worker_class(
        queues,
        name=args.name or f"{socket.gethostname()}.{os.getpid()}",
        connection=connection,
        serializer=SERIALIZER,
        job_monitoring_interval=args.job_monitoring_interval,
        work_horse_killed_handler=lifecycle.on_horse_killed,
    )
    log.info("worker %s (%s) on queues %s", worker.name, worker_class.__name__, ", ".join(queues))
    worker.work(burst=args.burst, max_jobs=args.max_jobs, logging_level=args.log_level.upper())
    return 0
