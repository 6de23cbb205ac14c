"""What a worker can do, announced in Redis so the app can show it: the OS, whether the
Core ML runtime is there (macOS only: it predicts on real compute units), memory, and
the largest model it takes. One hash per worker, expiring unless refreshed.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import socket

from redis import Redis

from . import settings

# Peak memory of a conversion. A model converted whole (float32 weights up to 2 GB:
# converters/chunks.py) peaks at 8-11 bytes per parameter (DESIGN.md), under 6 GB. A bigger
# one converts a chunk of layers at a time and is validated against the model streamed layer
# by layer; what grows with it is the package the reference executor holds (float16: 2 bytes
# per parameter; int4: 1, unpacked one per byte): a 7 B int4 model peaked at 11.5 GB
# (bench/big_model.py). A fixed part (one chunk's conversion, libraries) plus 2.5 bytes per
# parameter keeps float16 in bounds too.
FIXED_BYTES = 3 * 10**9
BYTES_PER_PARAMETER = 2.5


def memory_bytes() -> tuple[int | None, int | None]:
    """(total, available) physical memory in bytes; None when the OS does not say."""
    total = available = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    return total, available


def coreml_runtime() -> bool:
    """True when coremltools can run predictions here (its native part exists only on macOS)."""
    return importlib.util.find_spec("coremltools.libcoremlpython") is not None


def parameter_limit() -> int | None:
    """COREML_CONVERTER_MAX_PARAMS, or what this machine's memory allows."""
    configured = settings.max_params()
    if configured:
        return configured
    total, _ = memory_bytes()
    return int((total - FIXED_BYTES) / BYTES_PER_PARAMETER) if total and total > FIXED_BYTES else None


def describe(queues: list[str]) -> dict[str, str]:
    total, available = memory_bytes()
    return {
        "hostname": socket.gethostname(),
        "pid": str(os.getpid()),
        "os": platform.system(),
        "platform": platform.platform(),
        "coreml_runtime": "yes" if coreml_runtime() else "no",
        "memory_total_bytes": str(total or ""),
        "memory_available_bytes": str(available or ""),
        "max_params": str(parameter_limit() or ""),
        "max_bytes": str(settings.max_bytes() or ""),
        "queues": ",".join(queues),
    }


def _key(worker_name: str) -> str:
    return f"{settings.KEY_PREFIX}:worker:{worker_name}"


def announce(connection: Redis, worker_name: str, queues: list[str], ttl: int) -> None:
    with connection.pipeline() as pipe:
        pipe.hset(_key(worker_name), mapping=describe(queues))
        pipe.expire(_key(worker_name), ttl)
        pipe.execute()


def withdraw(connection: Redis, worker_name: str) -> None:
    connection.delete(_key(worker_name))


def announced(connection: Redis) -> list[dict]:
    """Every live worker's capabilities (name included)."""
    workers = []
    for key in connection.scan_iter(match=_key("*"), count=100):
        data = {k.decode(): v.decode() for k, v in connection.hgetall(key).items()}
        if data:
            data["name"] = key.decode().split(":", 2)[2]
            workers.append(data)
    return sorted(workers, key=lambda w: w["name"])
