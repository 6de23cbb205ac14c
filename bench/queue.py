"""Benchmark: the job queue, with a real redis-server and real `python -m worker` processes.

1. Start latency: time from `worker.api.submit` to the job's first stage (`resolve`, written
   by the job function in the worker) on a warm forking worker (heavy imports done once,
   before forking), against a spawning worker (a fresh interpreter per job, as on macOS).
2. Throughput: trivial jobs per minute with 1 and with 2 workers (ratio 2/1).

    python bench/queue.py [--jobs 200] [--latency-runs 10] [--spawn-runs 3]

The conversion jobs here stop at `resolve` (the Hub address points nowhere): only the
queue and the worker start-up are measured, not a conversion.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named queue.py: keep its folder off sys.path so `import queue` (used by
# redis and rq) finds the standard library's module, not this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.001):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(interval)
    return value


class Processes:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.children: list[subprocess.Popen] = []
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), REDIS_URL=self.url, HF_ENDPOINT="http://127.0.0.1:9",
                        COREML_CONVERTER_STATE_DIR=str(tmp / "state"))
        from cryptography.fernet import Fernet

        self.env["COREML_CONVERTER_SECRET_KEY"] = Fernet.generate_key().decode()

    def start_redis(self):
        self.children.append(subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.tmp),
             "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL))
        from redis import Redis

        client = Redis.from_url(self.url)

        def ping():
            try:
                return client.ping()
            except Exception:
                return False

        wait_until(ping, 20, 0.05)
        return client

    def start_worker(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        process = subprocess.Popen([sys.executable, "-m", "worker", "--name", name, *args], cwd=ROOT, env=self.env,
                                   stdout=log, stderr=subprocess.STDOUT)
        self.children.append(process)
        return process

    def stop_worker(self, process: subprocess.Popen):
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        self.children.remove(process)

    def stop(self):
        for process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)


def wait_for_worker(client, name: str):
    wait_until(lambda: client.exists(f"coreml:worker:{name}"), 120, 0.1)


def start_latencies(runs: int, offset: int) -> tuple[list[float], list[float]]:
    """Seconds from submit to the job's first stage, and to the end of its resolve stage
    (whose checks import torch and transformers: already loaded in a warm forking worker),
    one job at a time."""
    from worker import api, queues
    from worker.spec import JobSpec

    latencies, resolved = [], []
    for i in range(runs):
        spec = JobSpec.build("bench/model", token="hf_bench_token", user="bench",
                             options={"sequence_length": str(offset + i + 1)})
        started = time.perf_counter()
        job_id = api.submit(spec)
        job = queues.fetch_job(job_id, api.connection())
        wait_until(lambda: job.get_meta(refresh=True).get("stage") not in (None, "queued"), 120)
        latencies.append(time.perf_counter() - started)
        wait_until(lambda: job.get_status() in ("failed", "finished"), 120)
        resolved.append(time.perf_counter() - started)
    return latencies, resolved


def throughput(client, jobs: int) -> float:
    """Trivial jobs per minute: enqueue `jobs` at once, time until all have finished."""
    from worker import queues

    queue = queues.queue("default", client)
    registry = queue.finished_job_registry
    done_before = registry.count
    started = time.perf_counter()
    with client.pipeline() as pipe:
        for _ in range(jobs):
            queue.enqueue("time.sleep", 0, pipeline=pipe, result_ttl=600)
        pipe.execute()
    wait_until(lambda: registry.count - done_before >= jobs, 600, 0.01)
    return jobs / (time.perf_counter() - started) * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="trivial jobs per throughput run")
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--spawn-runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (make system-deps)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    procs = Processes(tmp)
    for key in ("REDIS_URL", "HF_ENDPOINT", "COREML_CONVERTER_STATE_DIR", "COREML_CONVERTER_SECRET_KEY"):
        os.environ[key] = procs.env[key]
    try:
        client = procs.start_redis()
        from worker import api

        api.connect(procs.url)

        first = procs.start_worker("w1")
        wait_for_worker(client, "w1")
        start_latencies(1, 1000)  # the first job imports what the preload does not (model classes)
        warm, warm_resolve = start_latencies(args.latency_runs, 0)
        procs.stop_worker(first)

        spawner = procs.start_worker("spawn", "--worker-class", "spawn")
        wait_for_worker(client, "spawn")
        cold, cold_resolve = start_latencies(args.spawn_runs, 100)
        procs.stop_worker(spawner)

        procs.start_worker("t1")
        wait_for_worker(client, "t1")
        throughput(client, 20)  # warm-up
        per_minute_1 = throughput(client, args.jobs)
        procs.start_worker("t2")
        wait_for_worker(client, "t2")
        per_minute_2 = throughput(client, args.jobs)
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def ms(values):
        return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"

    print(f"submit -> first stage, warm forking worker ({len(warm)} jobs): {ms(warm)}")
    print(f"submit -> first stage, spawning worker, fresh interpreter per job ({len(cold)} jobs): {ms(cold)}")
    print(f"  ratio spawn / fork: {statistics.median(cold) / statistics.median(warm):.1f}x")
    print(f"submit -> resolve stage done (torch, transformers loaded), warm forking worker: {ms(warm_resolve)}")
    print(f"submit -> resolve stage done (torch, transformers imported), spawning worker: {ms(cold_resolve)}")
    print(f"  ratio spawn / fork: {statistics.median(cold_resolve) / statistics.median(warm_resolve):.1f}x")
    print(f"trivial jobs per minute, 1 worker: {per_minute_1:.0f}")
    print(f"trivial jobs per minute, 2 workers: {per_minute_2:.0f}")
    print(f"  ratio 2 workers / 1 worker: {per_minute_2 / per_minute_1:.2f}x (on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
