"""Real processes for end-to-end tests: a redis-server in a temp folder (append-only file,
so it can be restarted with its data) and `python -m worker` processes, with their
output captured to files the tests can read (and search for leaked tokens)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Redis:
        return Redis.from_url(self.url)

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", str(self.data_dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url, socket_connect_timeout=1)

        def ready():
            try:
                return client.ping() and client.info("persistence").get("loading", 0) == 0
            except Exception:
                return False

        wait_until(ready, 20, what="redis-server")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # redis flushes its AOF and exits
            self.process.wait(20)

    def restart(self) -> None:
        self.stop()
        self.start()

    def aof_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.data_dir.rglob("*") if p.is_file())


class WorkerProcess:
    def __init__(self, redis_url: str, env: dict, log_path: Path, name: str, args: tuple[str, ...] = ()):
        self.redis_url, self.env, self.log_path, self.name, self.args = redis_url, env, Path(log_path), name, args
        self.process: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "--url", self.redis_url, "--name", self.name,
             "--job-monitoring-interval", "2", *self.args],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 90) -> "WorkerProcess":
        client = Redis.from_url(self.redis_url)

        def announced():
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            return client.exists(f"coreml:worker:{self.name}")

        wait_until(announced, timeout, interval=0.1, what=f"worker {self.name}")
        return self

    def wait_exit(self, timeout: float) -> int:
        """The exit code; on a timeout, the worker's log says where it was."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {self.name} still running after {timeout} s:\n{self.log()[-3000:]}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost machine would: no cleanup runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, warm: float = 3) -> None:
        """Warm shutdown (an idle worker exits at once), then cold: a job still running at the end of
        a test module is of no use to anyone, and waiting for it cost teardowns 20 s each."""
        if self.process and self.process.poll() is None:
            for signal_, timeout in ((signal.SIGTERM, warm), (signal.SIGTERM, 10)):  # rq: a second SIGTERM is a cold shutdown
                self.process.send_signal(signal_)
                try:
                    self.process.wait(timeout)
                    return
                except subprocess.TimeoutExpired:
                    pass
            self.process.kill()
            self.process.wait()


def worker_env(base: dict) -> dict:
    env = dict(os.environ)
    env.update(base)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("REDIS_URL", None)
    return env
