"""Settings of the job service, read from the environment when asked (not at import),
so the app, the workers and the tests can each set their own.

Every variable is optional; the defaults suit one machine running `make run`.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Queue names: every worker takes the general queue; only macOS runners take `macos`
# (jobs that must run on real Core ML compute units); Linux workers take tries first.
GENERAL_QUEUE = "default"
MACOS_QUEUE = "macos"
TRY_QUEUE = "tries"  # Try it runs: served first by every Linux worker (see worker/api.submit_try)
QUEUES = (GENERAL_QUEUE, MACOS_QUEUE, TRY_QUEUE)

# Prefix of our own Redis keys (rq's keys start with "rq:").
KEY_PREFIX = "coreml"


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"{name} must be a number, not {value!r}") from None


def redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None


def state_dir() -> Path:
    """The project's state folder: embedded Redis data, the secret key, job temp folders."""
    path = Path(os.environ.get("COREML_CONVERTER_STATE_DIR") or ROOT / "state")
    path.mkdir(parents=True, exist_ok=True)
    return path


def jobs_dir() -> Path:
    path = state_dir() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def job_timeout() -> int:
    """Seconds a conversion may run before rq stops it (finite: a stuck job must end)."""
    return _int("COREML_CONVERTER_JOB_TIMEOUT", 3600)


def queue_ttl() -> int:
    """Seconds a job may wait in its queue (a macOS job waits for a runner to connect)."""
    return _int("COREML_CONVERTER_QUEUE_TTL", 24 * 3600)


def result_ttl() -> int:
    """Seconds finished and failed jobs stay listed."""
    return _int("COREML_CONVERTER_RESULT_TTL", 7 * 24 * 3600)


def token_ttl() -> int:
    """Seconds an encrypted token may outlive its job at most (it is deleted when the job ends)."""
    return queue_ttl() + job_timeout() + 300


def max_params() -> int | None:
    """Largest model (parameters) this worker converts; None means the memory decides."""
    value = _int("COREML_CONVERTER_MAX_PARAMS", 0)
    return value or None


def max_bytes() -> int | None:
    """Largest model (bytes of safetensors weights) this worker converts; None: no limit."""
    value = _int("COREML_CONVERTER_MAX_BYTES", 0)
    return value or None


def hub_retry_delay() -> float:
    """Seconds a job waits before its one retry when the Hub is unavailable (5xx, timeout)."""
    value = os.environ.get("COREML_CONVERTER_HUB_RETRY_DELAY", "").strip()
    try:
        return max(0.0, float(value)) if value else 20.0
    except ValueError:
        raise ValueError(f"COREML_CONVERTER_HUB_RETRY_DELAY must be a number, not {value!r}") from None


def push_lock_wait() -> float:
    """Seconds a job waits for another job's push to the same repo before it gives up."""
    return float(_int("COREML_CONVERTER_PUSH_LOCK_WAIT", 600))


def push_lock_hold() -> float:
    """Seconds a push lock lasts at most (a worker killed mid-push frees the repo after this)."""
    return float(_int("COREML_CONVERTER_PUSH_LOCK_HOLD", 1800))


# ---- per-user limits (one user cannot starve the others); 0 turns a limit off


def user_active_jobs() -> int:
    """Conversions one user may have queued or running at once."""
    return _int("COREML_CONVERTER_USER_ACTIVE_JOBS", 2)


def user_tries_per_hour() -> int:
    """Try it runs one user may start per hour."""
    return _int("COREML_CONVERTER_USER_TRIES_PER_HOUR", 20)


def user_active_tries() -> int:
    """Try it runs one user may have queued or running at once."""
    return _int("COREML_CONVERTER_USER_ACTIVE_TRIES", 1)


def try_cache_bytes() -> int:
    """Bytes the Try it cache (source models and packages, shared by users) may hold."""
    return _int("COREML_CONVERTER_TRY_CACHE_BYTES", 20 * 10**9)


def max_download_bytes() -> int | None:
    """Bytes one job may download (the files conversion reads); refused before it starts."""
    return _int("COREML_CONVERTER_MAX_DOWNLOAD_BYTES", 40 * 10**9) or None


def layers_per_chunk() -> int | None:
    """Decoder layers per chunk when a text-generation model converts in chunks (unset: by
    size, and small models whole). A worker with little memory can chunk smaller."""
    value = _int("COREML_CONVERTER_LAYERS_PER_CHUNK", -1)
    return None if value < 0 else value


def calibration_cache() -> Path | None:
    """Where GPTQ's results are kept, so the same model calibrated the same way (another context,
    stateful or not, int4 then mixed) skips the walk (converters/transforms/calibration_cache.py).
    Unset: off. Entries are a model's compressed layers (about its float16 size); nothing evicts them."""
    value = os.environ.get("COREML_CONVERTER_CALIBRATION_CACHE", "").strip()
    return Path(value) if value else None


def kept_ttl() -> int:
    """Seconds a package whose push failed stays downloadable (worker/kept.py)."""
    return _int("COREML_CONVERTER_KEPT_TTL", 24 * 3600)


def kept_bytes() -> int:
    """Bytes all kept packages (pushes that failed) may hold together; 0: no limit."""
    return _int("COREML_CONVERTER_KEPT_BYTES", 20 * 10**9)
