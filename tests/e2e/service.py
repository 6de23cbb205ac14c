"""JobService: the whole job service for a test module, as it runs in production: a real
redis-server, real `python -m worker` processes, the local Hub, and worker.api in this
process (configured through the same environment variables the app would have)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.fernet import Fernet

from .harness import RedisServer, WorkerProcess, wait_until, worker_env

if TYPE_CHECKING:  # the worker is imported once the service's environment is set
    from worker.status import JobStatus

ENDED = ("finished", "failed", "cancelled")


class JobService:
    def __init__(self, tmp: Path, hub, **worker_settings: str):
        self.tmp, self.hub = Path(tmp), hub
        self.redis = RedisServer(self.tmp / "redis")
        self.settings = {
            **hub.client_env(),
            "COREML_CONVERTER_STATE_DIR": str(self.tmp / "state"),
            "COREML_CONVERTER_SECRET_KEY": Fernet.generate_key().decode(),
            "COREML_CONVERTER_MAX_PARAMS": "50000000",
            "COREML_CONVERTER_HEARTBEAT_GRACE": "10",
            **worker_settings,
        }
        self.workers: list[WorkerProcess] = []
        self._env = pytest.MonkeyPatch()

    def start(self) -> "JobService":
        from worker import api

        self.redis.start()
        for key, value in self.settings.items():
            self._env.setenv(key, value)
        self._env.delenv("REDIS_URL", raising=False)
        api.connect(self.redis.url)
        return self

    def add_worker(self, name: str, *args: str) -> WorkerProcess:
        worker = WorkerProcess(self.redis.url, worker_env(self.settings), self.tmp / f"{name}.log", name, args)
        self.workers.append(worker.start())
        return worker

    def ensure_worker(self, name: str, *args: str) -> WorkerProcess:
        """The running worker called `name`, started (and waited for) if there is none."""
        for worker in self.workers:
            if worker.name == name and worker.process.poll() is None:
                return worker
        return self.add_worker(name, *args).wait_ready()

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.redis.stop()
        self._env.undo()

    # ------------------------------------------------------------------ waiting

    def wait(self, job_id: str, states=ENDED, timeout: float = 120) -> JobStatus:
        from worker import api

        return wait_until(lambda: (s := api.status(job_id)).state in states and s, timeout, interval=0.05,
                          what=f"job {job_id} in {states}")

    def wait_stage(self, job_id: str, stages, timeout: float = 60) -> JobStatus:
        from worker import api

        return wait_until(lambda: (s := api.status(job_id)).stage in stages and s, timeout, interval=0.02,
                          what=f"job {job_id} at {stages}")

    # ------------------------------------------------------------------ inspection

    def hub_state(self) -> dict:
        """Every repo with its commit count and discussions: compare to see what was pushed."""
        return {repo: (len(self.hub.commits(repo)), len(self.hub.discussions(repo))) for repo in self.hub.repo_ids()}

    def running_job_ids(self) -> list[str]:
        from rq.registry import StartedJobRegistry

        from worker import queues

        client = self.redis.client()
        return [j for q in ("default", "macos") for j in StartedJobRegistry(q, connection=client).get_job_ids()
                if queues.fetch_job(j, client)]

    def logs(self) -> str:
        return "\n".join(w.log() for w in self.workers)

    def job_dir(self, job_id: str) -> Path:
        return self.tmp / "state" / "jobs" / job_id

    def token_key_exists(self, job_id: str) -> bool:
        return bool(self.redis.client().exists(f"coreml:token:{job_id}"))
