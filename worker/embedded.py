"""The embedded default: with no REDIS_URL, run a private `redis-server` (bound to
127.0.0.1 on a free port, with a password made once per deployment and kept in
`state/redis/password`, data in `state/redis` with an append-only file, so a restart
keeps queued and finished jobs) and worker processes next to the app. With REDIS_URL,
start nothing and use that Redis (self-hosting: workers run elsewhere, `python -m worker`).

    backend = start_backend()      # at app start-up, from the main thread
    ...                            # worker.api.submit / status / cancel
    backend.stop()                 # also registered with atexit

The children get SIGTERM if the app process dies (Linux), so none outlives it.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import api, settings, tokens

_PR_SET_PDEATHSIG = 1


@dataclass
class Backend:
    redis_url: str
    redis: subprocess.Popen | None = None  # None when REDIS_URL was given
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def embedded(self) -> bool:
        return self.redis is not None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the workers (warm first: a running job may finish), then Redis (flushes its AOF)."""
        for process in self.workers:
            _terminate(process, timeout)
        self.workers = []
        if self.redis is not None:
            _terminate(self.redis, timeout)

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_backend(*, workers: int = 1, worker_args: list[str] | None = None, log_file: Path | None = None) -> Backend:
    url = settings.redis_url()
    if url:
        api.connect(url)
        return Backend(url)
    redis_process, url = _start_redis(settings.state_dir() / "redis")
    backend = Backend(url, redis_process)
    atexit.register(backend.stop)
    tokens.server_key()  # created now, so the app and its workers read the same key file
    env = dict(os.environ, REDIS_URL=url)  # the URL holds the password: the environment, never argv
    output = open(log_file, "ab") if log_file else None  # noqa: SIM115 - the children keep it open
    for _ in range(workers):
        backend.workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "worker", *(worker_args or [])],
                cwd=settings.ROOT, env=env, stdout=output, stderr=subprocess.STDOUT if output else None,
                preexec_fn=_die_with_parent,
            )
        )
    api.connect(url)
    return backend


def _start_redis(data_dir: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: install it (Debian: apt-get install redis-server; "
            "`make run` does this) or set REDIS_URL to a Redis you run."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    password = _password(data_dir)
    config = data_dir / "redis.conf"  # the password in a file only we can read (argv is public)
    _write_private(config, f"requirepass {password}\n")
    for _attempt in range(3):  # the free port may be taken between choosing and binding it
        port = _free_port()
        process = subprocess.Popen(
            [
                binary,
                str(config),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(data_dir),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
                "--logfile", str(data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        if _wait_for_redis(url, process):
            return process, url
        _terminate(process, 5)
    log = (data_dir / "redis.log").read_text(errors="replace")[-2000:] if (data_dir / "redis.log").exists() else ""
    raise RuntimeError(f"redis-server did not start (data in {data_dir}). Its log ends with:\n{log}")


def _password(data_dir: Path) -> str:
    """This deployment's Redis password, made once: without it any local process could queue
    a job naming any function, which the worker would import and run."""
    path = data_dir / "password"
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def _wait_for_redis(url: str, process: subprocess.Popen, timeout: float = 20.0) -> bool:
    from redis import Redis

    deadline = time.monotonic() + timeout
    client = Redis.from_url(url, socket_connect_timeout=1)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            # PING answers while the AOF is still loading; LOADING errors mean: wait.
            client.ping()
            if client.info("persistence").get("loading", 0) == 0:
                return True
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _terminate(process: subprocess.Popen, timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    process.send_signal(signal.SIGTERM)  # an rq worker's second SIGTERM is a cold shutdown
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _die_with_parent() -> None:
    if platform.system() == "Linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
