"""End-to-end: failures that lose nothing. A worker killed mid-job (SIGKILL) -> the job is
reported failed by the app's own registry cleanup and its temp folder is reclaimed; a Redis
restart keeps queued and finished jobs; the embedded backend (private redis-server + worker)
starts, keeps its jobs across a restart, and stops; macOS-style spawned workers run jobs."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import OWNER_TOKEN
from tests.e2e import repos
from tests.e2e.harness import ROOT, wait_until
from tests.e2e.service import JobService
from worker import api
from worker.spec import JobSpec

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(worker_repos, tmp_path_factory):
    service = JobService(tmp_path_factory.mktemp("recovery"), worker_repos).start()
    yield service
    service.stop()


def make_spec(model: str = repos.TINY, **kwargs) -> JobSpec:
    kwargs.setdefault("options", {"sequence_length": "8"})
    kwargs.setdefault("task", "fill-mask")
    return JobSpec.build(model, token=OWNER_TOKEN, **kwargs)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_worker_killed_mid_job_is_reported_failed_without_another_worker(service):
    before = service.hub_state()
    worker = service.add_worker("doomed").wait_ready()
    job_id = api.submit(make_spec(repos.SLOW, options={"sequence_length": "128"}, push_repo="alice/crash-target"))
    service.wait_stage(job_id, ("convert", "validate"))
    assert service.job_dir(job_id).exists()
    horses = worker.children()
    assert horses, "the job should run in a forked work horse"

    worker.kill()
    killed = time.monotonic()
    wait_until(lambda: not any(alive(pid) for pid in horses), 10, what="the horse to die with its worker")

    # No worker is left on the queue: the app's status() runs rq's registry cleanup itself.
    status = service.wait(job_id, timeout=120)
    assert time.monotonic() - killed < 120
    assert status.state == "failed" and status.error_kind == "internal"
    assert "The worker running this job stopped unexpectedly" in status.error
    assert not service.token_key_exists(job_id)
    assert not service.job_dir(job_id).exists()  # reclaimed by the failure callback
    assert service.hub_state() == before  # the killed horse did not go on to push
    assert service.running_job_ids() == []


def test_temp_folders_of_ended_jobs_are_swept(service):
    """By each worker when it starts (here: one that quits at once), and by api.maintenance()."""
    leftover = service.job_dir("cv-left-behind-by-a-lost-machine")
    leftover.mkdir(parents=True)
    # On a queue no test here feeds, so that a job another test left behind cannot keep it busy;
    # the time allows for a start on a loaded machine (the worker imports coremltools).
    sweeper = service.add_worker("sweeper", "--burst", "--worker-class", "spawn", "--queues", "tries")
    assert sweeper.wait_exit(120) == 0
    assert not leftover.exists()
    leftover.mkdir(parents=True)
    api.maintenance()
    assert not leftover.exists()


def test_a_worker_stops_listening_at_once(service):
    """Every worker shutdown (a burst worker's end, a warm stop) stops rq's command listener. Right
    after it started listening, rq's own order of steps made that wait out a 60 s timeout with
    redis-py 8 (one stop in three, measured): the sweeper above took 66 s in some runs."""
    from redis import Redis

    from worker.queues import SERIALIZER
    from worker.runner import ConverterWorker

    connection = Redis.from_url(service.redis.url)
    for attempt in range(8):  # the slow case is a race: try it more than once
        worker = ConverterWorker(["tries"], name=f"listener-{attempt}", connection=connection, serializer=SERIALIZER)
        worker.subscribe()
        started = time.monotonic()
        worker.unsubscribe()
        assert time.monotonic() - started < 2.5, f"stopping the listener took {time.monotonic() - started:.1f} s"


def test_a_listener_that_closed_its_connection_first_stops_cleanly_and_a_live_ones_error_is_raised(service):
    """Under load the listener thread may leave its loop (its wait ended) and close the connection
    while the worker's UNSUBSCRIBE is on it (a full run: "Bad file descriptor"): that stop is
    clean; the same error while the listener still runs is raised. The interleaving is made here
    by an UNSUBSCRIBE that fails only once the thread has closed the connection, or at once."""
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    from worker.queues import SERIALIZER
    from worker.runner import ConverterWorker

    connection = Redis.from_url(service.redis.url)
    worker = ConverterWorker(["tries"], name="listener-closed", connection=connection, serializer=SERIALIZER)
    worker.subscribe()
    thread = worker.pubsub_thread

    def closed_under_it(*args):
        # A message ends its wait (a command it ignores), it sees it was stopped and closes the
        # pubsub connection; then this UNSUBSCRIBE meets the closed socket
        connection.publish(worker.pubsub_channel_name, json.dumps({"command": "nothing"}))
        thread.join(timeout=5)
        assert not thread.is_alive()
        raise RedisConnectionError("Error 9 while writing to socket. Bad file descriptor.")

    worker.pubsub.unsubscribe = closed_under_it
    worker.unsubscribe()  # no error: the listener has stopped
    assert not thread.is_alive()

    worker = ConverterWorker(["tries"], name="listener-live", connection=connection, serializer=SERIALIZER)
    worker.subscribe()

    def broken(*args):
        raise RedisConnectionError("Connection reset by peer")

    worker.pubsub_thread.stop = lambda timeout=None: None  # it keeps listening
    worker.pubsub.unsubscribe = broken
    with pytest.raises(RedisConnectionError, match="reset by peer"):
        worker.unsubscribe()
    worker.pubsub_thread._running.clear()
    worker.pubsub_thread.join(timeout=5)


def test_redis_restart_keeps_queued_and_finished_jobs(service):
    service.ensure_worker("steady")
    finished_id = api.submit(make_spec(push_repo="alice/restart-target"))
    finished = service.wait(finished_id)
    assert finished.state == "finished"
    queued_id = api.submit(make_spec(runner="macos", push_repo="alice/restart-queued"))

    service.redis.restart()

    after = api.status(finished_id)
    assert after.state == "finished" and after.links == finished.links
    assert after.validation == finished.validation and after.log == finished.log
    queued = api.status(queued_id)
    assert queued.state == "queued" and queued.queue_position == 1
    assert service.token_key_exists(queued_id)  # still needed by the job that waits
    # The worker reconnects by itself and takes new jobs.
    again = service.wait(api.submit(make_spec(task="token-classification", push_repo="alice/restart-again")), timeout=90)
    assert again.state == "finished", again
    assert api.cancel(queued_id).state == "cancelled"


def test_a_killed_job_process_fails_the_job_at_once_and_the_worker_goes_on(service):
    """The OOM killer picks the biggest process: the job's, not the worker's."""
    before = service.hub_state()
    worker = service.ensure_worker("steady")
    job_id = api.submit(make_spec(repos.SLOW, options={"sequence_length": "128"}, push_repo="alice/oom-target"))
    service.wait_stage(job_id, ("convert", "validate"))
    (horse,) = worker.children()
    os.kill(horse, signal.SIGKILL)
    status = service.wait(job_id, timeout=30)
    assert status.state == "failed" and "was killed (most often: out of memory)" in status.error
    assert not service.token_key_exists(job_id) and not service.job_dir(job_id).exists()
    assert service.hub_state() == before
    assert service.wait(api.submit(make_spec(task="question-answering", push_repo="alice/after-oom"))).state == "finished"


def test_job_timeout_ends_the_job_with_a_message(service, monkeypatch):
    service.ensure_worker("steady")
    monkeypatch.setenv("COREML_CONVERTER_JOB_TIMEOUT", "1")
    job_id = api.submit(make_spec(repos.SLOW, options={"sequence_length": "128"}, push_repo="alice/timeout-target"))
    status = service.wait(job_id, timeout=60)
    assert status.state == "failed" and status.error_kind == "internal"
    assert "took longer than this service allows (1 s)" in status.error
    assert not service.token_key_exists(job_id) and not service.job_dir(job_id).exists()


def test_spawn_worker_runs_a_job(service):
    """macOS runners use rq's SpawnWorker (a fresh interpreter per job); the same code on Linux."""
    service.stop_workers()
    service.ensure_worker("spawner", "--worker-class", "spawn")
    status = service.wait(api.submit(make_spec(task="feature-extraction", push_repo="alice/spawned")), timeout=120)
    assert status.state == "finished", status
    assert status.validation["passed"] is True
    service.stop_workers()


def test_macos_queue_is_refused_on_linux(service):
    result = subprocess.run([sys.executable, "-m", "worker", "--url", service.redis.url, "--queues", "macos"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "the 'macos' queue is for macOS runners" in result.stderr


# ---------------------------------------------------------------------- embedded backend


def test_embedded_backend_starts_keeps_jobs_across_restarts_and_stops(worker_repos, tmp_path, monkeypatch):
    from worker.embedded import start_backend

    for key, value in worker_repos.client_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COREML_CONVERTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COREML_CONVERTER_MAX_PARAMS", "50000000")
    monkeypatch.delenv("COREML_CONVERTER_SECRET_KEY", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)

    backend = start_backend(log_file=tmp_path / "embedded.log")
    try:
        assert backend.embedded and backend.redis_url.startswith("redis://:")
        key_file = tmp_path / "state" / "secret.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        # Redis wants this deployment's password (else any local process could queue code for
        # the worker to run), kept in a file only we read, never on a command line.
        password = (tmp_path / "state" / "redis" / "password").read_text().strip()
        assert len(password) >= 32 and f":{password}@127.0.0.1:" in backend.redis_url
        assert stat.S_IMODE((tmp_path / "state" / "redis" / "password").stat().st_mode) == 0o600
        from redis import Redis
        from redis.exceptions import AuthenticationError, ResponseError

        with pytest.raises((AuthenticationError, ResponseError), match="(?i)auth"):
            Redis.from_url(backend.redis_url.replace(f":{password}@", "")).ping()
        for process in [backend.redis, *backend.workers]:
            assert password not in Path(f"/proc/{process.pid}/cmdline").read_text()
        done_id = api.submit(make_spec(push_repo="alice/embedded-target"))
        done = wait_until(lambda: (s := api.status(done_id)).state in ("finished", "failed") and s, 120)
        assert done.state == "finished", done
        queued_id = api.submit(make_spec(runner="macos", push_repo="alice/embedded-queued"))
    finally:
        processes = [backend.redis, *backend.workers]
        backend.stop()
    assert len(processes) == 2 and all(p.poll() is not None for p in processes)
    assert (tmp_path / "state" / "redis").is_dir()

    backend = start_backend(log_file=tmp_path / "embedded.log")  # a new port, the same data
    try:
        assert api.status(done_id).state == "finished"
        assert api.status(queued_id).state == "queued"
        assert api.cancel(queued_id).state == "cancelled"
    finally:
        backend.stop()
    assert OWNER_TOKEN not in (tmp_path / "embedded.log").read_text(errors="replace")


def test_with_redis_url_the_backend_starts_nothing(service, monkeypatch):
    from worker.embedded import start_backend

    monkeypatch.setenv("REDIS_URL", service.redis.url)
    backend = start_backend()
    assert not backend.embedded and backend.workers == [] and backend.redis_url == service.redis.url
    backend.stop()  # nothing to stop
    assert service.redis.client().ping()
    assert api.connection().connection_pool.connection_kwargs["port"] == service.redis.port
