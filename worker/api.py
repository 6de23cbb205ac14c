"""What the app calls: submit a JobSpec, read a job's status for display, cancel it, list a
user's recent jobs and the connected workers. Light imports only (no torch): this runs
in the web process.

The app also runs the crash recovery here: `status()` (and `maintenance()`, for a timer)
runs rq's StartedJobRegistry cleanup on every queue, so a job whose worker died is
reported failed without waiting for another worker on that queue.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from datetime import datetime, timezone

from redis import Redis
from rq.command import send_stop_job_command
from rq.exceptions import DuplicateJobError, InvalidJobOperation
from rq import Callback
from rq.job import JobStatus as RqStatus
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty

from converters.errors import UserInputError
from converters.options import ConversionOptions
from converters.source import hub_unavailable

from . import capabilities, kept, queues, quotas, settings, tokens, workdirs
from .lifecycle import CANCELLED_MESSAGE
from .progress import now_iso
from .spec import JobSpec
from .states import ErrorKind, JobState
from .status import JobStatus, KeptPackage, Links, TryStatus, error_kind_of

WAITING = {RqStatus.CREATED, RqStatus.QUEUED, RqStatus.DEFERRED, RqStatus.SCHEDULED}
ACTIVE = WAITING | {RqStatus.STARTED}
TRY_TIMEOUT = 600  # seconds: a try is a few calls of a package, not a conversion
TRY_KEEP = 900  # seconds a try's result is kept
STATES = {  # rq's status -> ours; any other (created, queued, deferred, scheduled) is QUEUED
    RqStatus.FINISHED: JobState.FINISHED,
    RqStatus.FAILED: JobState.FAILED,
    RqStatus.STOPPED: JobState.CANCELLED,
    RqStatus.CANCELED: JobState.CANCELLED,
    RqStatus.STARTED: JobState.RUNNING,
}
RECENT_PER_USER = 100
CLEANUP_INTERVAL = 5.0  # seconds between registry cleanups from this process

_connection: Redis | None = None
_cleanup_lock = threading.Lock()
_last_cleanup = 0.0


# ------------------------------------------------------------------ connection


def connect(url: str | None = None) -> Redis:
    """Use the Redis at `url` (default: REDIS_URL) for every call below."""
    global _connection
    _connection = queues.connect(url)
    return _connection


def connection() -> Redis:
    return _connection or connect()


# ------------------------------------------------------------------ submit


def submit(spec: JobSpec) -> str:
    """Queue `spec` (or find the identical job already queued or running); returns the job id.

    Raises UserInputError for what can be known before queueing (a token the Hub rejects).
    """
    redis = connection()
    account = account_of(spec.token)
    if not spec.user:
        spec = spec.with_user(account["name"])
    check_push_access(spec, account)
    request = spec.job_id()  # the same request, the same id: while it runs, asking again joins it
    latest_key = f"{settings.KEY_PREFIX}:latest-run:{request}"
    latest = (redis.get(latest_key) or request.encode()).decode()
    existing = queues.fetch_job(latest, redis)
    if existing is not None and existing.get_status() in ACTIVE:
        return latest
    index = _user_key(spec.user)
    quotas.check_conversions(redis, spec.user, [raw.decode() for raw in redis.zrange(index, 0, -1)])
    # Asked again after it ended: a new run beside the old one, which stays in "My jobs".
    job_id = request if queues.fetch_job(request, redis) is None else f"{request}-{time.time_ns():x}"
    redis.set(latest_key, job_id, ex=settings.result_ttl())
    tokens.store(redis, job_id, spec.token)
    meta = {
        "stage": "queued",
        "percent": 0,
        "message": "Waiting for a worker",
        "log": [],
        "submitted_at": now_iso(),
        "user": spec.user,
        "model": spec.repo_id,
        "task": spec.task,
        "options": spec.options.to_dict(),  # what tells this job apart from another of the same model
        "push_target": spec.push_repo_id,
        "push_kind": spec.push.kind,
    }
    try:
        queues.queue(spec.queue_name, redis).enqueue(
            "worker.job.run",
            kwargs={"spec": spec.to_json()},
            job_id=job_id,
            unique=True,
            description=spec.describe(),
            meta=meta,
            job_timeout=settings.job_timeout(),
            ttl=settings.queue_ttl(),
            result_ttl=settings.result_ttl(),
            failure_ttl=settings.result_ttl(),
            on_failure=Callback("worker.lifecycle.on_failure"),
            on_stopped=Callback("worker.lifecycle.on_stopped"),
        )
    except DuplicateJobError:
        return job_id  # an identical request won the race
    redis.zadd(index, {job_id: time.time()})
    redis.zremrangebyrank(index, 0, -RECENT_PER_USER - 1)
    redis.expire(index, settings.result_ttl())
    return job_id


def resubmit(job_id: str, token: str | None, user: str | None, **options: str) -> str:
    """The same request as an ended job of `user`'s, with some options changed (e.g.
    precision="float32" after only float16 failed validation); returns the new job's id."""
    job = queues.fetch_job(job_id, connection())
    data = (job.kwargs or {}).get("spec") if job is not None else None
    if not data or (job.meta or {}).get("user") != user:
        raise UserInputError("That job is gone (jobs are kept for a limited time): fill in the form and convert again.")
    spec = JobSpec.from_json(data, token=token)
    changed = ConversionOptions.from_dict({**spec.options.to_dict(), **options}, strict=True)
    return submit(dataclasses.replace(spec, options=changed, token=token))


def submit_try(job_id: str, token: str | None, user: str | None, kind: str, inputs: dict) -> str:
    """Queue a try of `user`'s finished job's package (worker/try_it.py); returns the try's id."""
    from converters import try_it

    redis = connection()
    job = queues.fetch_job(job_id, redis)
    if job is None or (job.meta or {}).get("user") != user or not (job.meta or {}).get("pushed"):
        raise UserInputError("That conversion is gone (jobs are kept for a limited time): convert it again to try it.")
    inputs = {key: value for key, value in inputs.items() if key in ("text", "other", "new_tokens", "photo", "audio")}
    for key in ("text", "other"):
        if key in inputs:
            inputs[key] = try_it.check_text(inputs[key], "The prompt" if kind == "generate" else "The text")
    for key, what in (("photo", "photo"), ("audio", "clip")):  # refused before it is queued in Redis
        try_it.media(inputs, key, what)
    quotas.check_try(redis, user)
    try_id = f"try-{job_id}-{time.time_ns():x}"
    tokens.store(redis, try_id, token or "")
    quotas.record_try(redis, user, try_id)
    # Their own queue, which workers serve first: a try (seconds to minutes, one per user at a
    # time) never waits behind queued conversions, and the per-user limits bound what it delays.
    queues.queue(settings.TRY_QUEUE, redis).enqueue(
        "worker.try_it.run", kwargs={"request": {"job_id": job_id, "kind": kind, "inputs": inputs}},
        job_id=try_id, meta={"user": user, "kind": "try"}, job_timeout=TRY_TIMEOUT, ttl=settings.queue_ttl(),
        result_ttl=TRY_KEEP, failure_ttl=TRY_KEEP)
    return try_id


def try_status(try_id: str, user: str | None) -> TryStatus:
    """The try's state, and by state: its position and what it waits for (queued), how far it
    is (running), its result (finished) or its error.

    position (queued): 1 = next among the tries. waiting_for (queued): what the try waits for,
    in words: "1 try ahead", "a conversion is running on the only worker", "2 tries ahead; all 2
    workers are busy (1 conversion, 1 try)", "a free worker is starting it", "no worker is
    running: …". progress (running): {"message": what the try is doing, e.g. "PyTorch: 5 of
    16 tokens", "The package: 9 of 16 tokens", "fraction": 0 to 1, never going back}, or None
    before its first report; both keys are None in other states."""
    redis = connection()
    job = queues.fetch_job(try_id, redis)
    if job is None or (job.meta or {}).get("user") != user:
        return TryStatus("unknown", error="This try is gone: run it again.")
    rq_status = job.get_status(refresh=True)
    state = STATES.get(rq_status, JobState.QUEUED)
    meta = job.meta or {}
    error = meta.get("error")
    if state == JobState.FAILED and not error:
        error = "The worker running this try stopped before it ended: run it again."
    position = _position(job) if state == JobState.QUEUED else None
    return TryStatus(str(state), position=position, result=meta.get("result"), error=error,
                     progress=meta.get("progress") if state == JobState.RUNNING else None,
                     waiting_for=_try_waiting_for(position, redis) if state == JobState.QUEUED else None)


def whoami(token: str | None) -> str:
    """The Hub user name behind `token`."""
    return account_of(token)["name"]


def check_push_access(spec: JobSpec, account: dict) -> None:
    """Refuse, before any work, a push the token could not make: a read-only token, a new repo
    outside the user's account and organisations, an existing repo it may not write to."""
    from huggingface_hub import HfApi, errors

    from .spec import PULL_REQUEST

    target = spec.push_repo_id
    action = "open a pull request on" if spec.push.kind == PULL_REQUEST else "create or write to"
    remedy = "Give a token with write access (or pick a repo in your own account) and convert again."
    role = ((account.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise UserInputError(f"Your token may not {action} {target}: it is read-only. {remedy}")
    if spec.push.kind == PULL_REQUEST:
        return
    namespace = target.split("/")[0]
    orgs = {o.get("name"): o for o in account.get("orgs") or []}
    if namespace != account.get("name") and namespace not in orgs:
        raise UserInputError(f"Your token may not {action} {target}: {namespace} is not your account or one of your "
                             f"organisations. {remedy}")
    if namespace in orgs and orgs[namespace].get("roleInOrg") == "read":
        raise UserInputError(f"Your token may not {action} {target}: your role in {namespace} is read-only. {remedy}")
    client = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:
        client.auth_check(target, token=spec.token, write=True)
    except errors.RepositoryNotFoundError:
        return  # a new repo in the user's own namespace: theirs to create
    except errors.HfHubHTTPError as error:
        if getattr(error.response, "status_code", None) == 403:
            raise UserInputError(f"Your token may not {action} {target}: it has no write access there. {remedy}") from None
        unavailable = hub_unavailable(error, "while checking where the result goes")
        if unavailable is not None:
            raise unavailable from None
        raise


def account_of(token: str | None) -> dict:
    """The Hub account behind `token` (whoami: name, orgs, the token's role)."""
    from huggingface_hub import HfApi, errors

    try:
        return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).whoami(token=token or False)
    except Exception as error:
        unavailable = hub_unavailable(error, "while checking the token")
        if unavailable is not None:
            raise unavailable from None
        if isinstance(error, errors.HfHubHTTPError) and getattr(error.response, "status_code", None) in (401, 403):
            raise UserInputError("The Hub rejected the token: sign in again or give a valid token.") from None
        raise


# ------------------------------------------------------------------ status


def _cancelled_message(meta: dict) -> str:
    """"Cancelled", or, stopped while pushing, what landed (worker/lifecycle.py reads it back)."""
    message = str(meta.get("message") or "")
    return message if message.startswith(CANCELLED_MESSAGE) else CANCELLED_MESSAGE


def status(job_id: str) -> JobStatus:
    """Everything the app shows about a job (worker/status.py says what each field holds).

    Its state is a JobState (queued, running, finished, failed, cancelled, unknown); a failed
    job's error_kind an ErrorKind (user_input, validation, hub_unavailable, internal, cancelled).
    """
    redis = connection()
    cleanup_abandoned()
    job = queues.fetch_job(job_id, redis)
    if job is None:
        return JobStatus(job_id=job_id, state=JobState.UNKNOWN,
                         error="This job is unknown: it never existed, or it ended too long ago to be kept.")
    rq_status = job.get_status(refresh=False)
    meta = job.meta or {}
    state = STATES.get(rq_status, JobState.QUEUED)
    if not state.active:
        tokens.delete(redis, job_id)  # whatever ended the job, its token must not outlive it
    error = meta.get("error")
    if rq_status == RqStatus.FAILED and not error:
        error = "The job failed on our side. Nothing was pushed."
    cancelled = state == JobState.CANCELLED
    return JobStatus(
        job_id=job_id,
        state=state,
        queue=job.origin,
        queue_position=_position(job) if state == JobState.QUEUED else None,
        stage="cancelled" if cancelled else meta.get("stage", "queued"),
        percent=100 if state == JobState.FINISHED else meta.get("percent", 0),
        message=_cancelled_message(meta) if cancelled else meta.get("message", ""),
        log=list(meta.get("log", [])),
        user=meta.get("user"),
        model=meta.get("model"),
        task=meta.get("task"),
        options=meta.get("options") or (meta.get("report") or {}).get("options") or {},
        push_target=meta.get("push_target"),
        push_kind=meta.get("push_kind"),
        submitted_at=meta.get("submitted_at"),
        started_at=meta.get("started_at"),
        ended_at=meta.get("ended_at") or (_iso(job.ended_at) if not state.active else None),
        elapsed_seconds=_elapsed(meta, state),
        report=meta.get("report"),
        validation=meta.get("validation"),
        links=Links.from_dict(meta.get("links")),
        pushed=bool(meta.get("pushed")),
        error=None if cancelled else error,
        error_kind=ErrorKind.CANCELLED if cancelled else error_kind_of(meta.get("error_kind")),
        user_error=bool(meta.get("user_error")),
        cancelled=cancelled,
        retrying=state == JobState.RUNNING and bool(meta.get("retrying")),
        retries=meta.get("retries", 0),
        note=_waiting_note(job.origin, redis) if state == JobState.QUEUED else None,
        kept_package=KeptPackage.from_dict(meta.get("kept_package"))
        if meta.get("kept_package") and kept.path_for(job_id) else None,
    )


def recent_jobs(user: str, limit: int = 10) -> list[JobStatus]:
    """The user's latest jobs, newest first (status without the log)."""
    redis = connection()
    found = []
    for raw in redis.zrevrange(_user_key(user), 0, RECENT_PER_USER):
        job_id = raw.decode()
        info = status(job_id)
        if info.state == JobState.UNKNOWN:
            redis.zrem(_user_key(user), job_id)
            continue
        found.append(dataclasses.replace(info, log=[]))
        if len(found) >= limit:
            break
    return found


def states(job_ids: list[str]) -> dict[str, str]:
    """{job id: state} for a list of jobs, in one round trip (what "My jobs" watches)."""
    from rq.job import Job

    jobs = Job.fetch_many(job_ids, connection=connection(), serializer=queues.SERIALIZER) if job_ids else []
    return {job_id: str(STATES.get(job.get_status(refresh=False), JobState.QUEUED)) if job else str(JobState.UNKNOWN)
            for job_id, job in zip(job_ids, jobs)}


def workers() -> list[dict]:
    """Connected workers and what they can do (OS, Core ML runtime, memory, queues)."""
    return capabilities.announced(connection())


# ------------------------------------------------------------------ cancel


def cancel(job_id: str, user: str | None = None) -> JobStatus:
    """Cancel a queued or running job; returns its status. Ended jobs are left as they are.
    With `user`, only that user's own jobs can be cancelled (UserInputError otherwise)."""
    redis = connection()
    job = queues.fetch_job(job_id, redis)
    if job is None:
        return status(job_id)
    owner = job.get_meta(refresh=True).get("user")
    if user is not None and owner and owner != user:
        raise UserInputError("This job belongs to someone else: only the person who started it can cancel it.")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        current = job.get_status()
        if current in WAITING:
            try:
                job.cancel()
            except InvalidJobOperation:
                pass
            # rq's registry of cancelled jobs has no expiry of its own: bound it like the jobs, at
            # once (a worker may take the job meanwhile, and the stop below returns early).
            redis.expire(f"rq:canceled:{job.origin}", settings.result_ttl())
            time.sleep(0.2)  # a worker may have popped it just before: then stop it below
            if job.get_status() in WAITING | {RqStatus.CANCELED}:
                break
        elif current == RqStatus.STARTED:
            try:
                send_stop_job_command(redis, job_id, serializer=queues.SERIALIZER)
                # The worker deletes the token once the job has stopped: stopped mid-push, it
                # first reads back from the Hub (with that token) whether the commit landed.
                return status(job_id)
            except InvalidJobOperation:  # dequeued, not yet marked with its worker
                time.sleep(0.1)
        else:
            return status(job_id)
    tokens.delete(redis, job_id)
    if job.get_status() == RqStatus.CANCELED:
        meta = job.get_meta(refresh=True)
        meta.update(cancelled=True, message="Cancelled", ended_at=now_iso())
        job.save_meta()
    return status(job_id)


# ------------------------------------------------------------------ recovery


def cleanup_abandoned(force: bool = False) -> None:
    """Fail (via rq's registry cleanup and our failure callback) jobs whose worker died."""
    global _last_cleanup
    if not force and time.monotonic() - _last_cleanup < CLEANUP_INTERVAL:
        return
    if not _cleanup_lock.acquire(blocking=False):
        return
    try:
        _last_cleanup = time.monotonic()
        redis = connection()
        for name in settings.QUEUES:
            # A timer, not SIGALRM, bounds the callbacks: the app calls this from any thread.
            StartedJobRegistry(name, connection=redis, serializer=queues.SERIALIZER,
                               death_penalty_class=TimerDeathPenalty).cleanup()
    finally:
        _cleanup_lock.release()


def maintenance() -> None:
    """For a periodic timer in the app: recover abandoned jobs; sweep local temp folders and
    expired kept packages."""
    cleanup_abandoned(force=True)
    workdirs.sweep(connection())
    kept.sweep()


# ------------------------------------------------------------------ helpers


def _user_key(user: str) -> str:
    return f"{settings.KEY_PREFIX}:jobs:{user}"


def _position(job) -> int | None:
    position = job.get_position()
    return position + 1 if position is not None else None  # 1 = next


def _waiting_note(queue_name: str, redis: Redis) -> str | None:
    live = capabilities.announced(redis)
    if not any(queue_name in w.get("queues", "").split(",") for w in live):
        if queue_name == settings.MACOS_QUEUE:
            return "No macOS runner is connected: the job waits until one connects."
        return "No worker is running: the job waits until one starts."
    return None


def _try_waiting_for(position: int | None, redis: Redis) -> str:
    """What a queued try waits for: the tries ahead of it, and the workers that run tries when
    every one of them is busy (a try starts only when one ends what it is running)."""
    serving = [w["name"] for w in capabilities.announced(redis) if settings.TRY_QUEUE in w.get("queues", "").split(",")]
    if not serving:
        return "no worker is running: the try waits until one starts"
    ahead = max((position or 1) - 1, 0)
    waits = [f"{ahead} {'try' if ahead == 1 else 'tries'} ahead"] if ahead else []
    running = [_running_job_id(name, redis) for name in serving]
    if all(running):
        waits.append(_busy_workers(running))
    return "; ".join(waits) or "a free worker is starting it"


def _running_job_id(worker_name: str, redis: Redis) -> str | None:
    from rq.worker import Worker

    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + worker_name, connection=redis,
                                serializer=queues.SERIALIZER)
    return worker.get_current_job_id() if worker is not None else None


def _busy_workers(job_ids: list[str]) -> str:
    """What busy workers run, in words, from their jobs' ids (a try's starts with "try-")."""
    tries = sum(1 for job_id in job_ids if job_id.startswith("try-"))
    conversions = len(job_ids) - tries
    if len(job_ids) == 1:
        return f"{'another try' if tries else 'a conversion'} is running on the only worker"
    running = [f"{count} {word if count == 1 else plural}"
               for count, word, plural in ((conversions, "conversion", "conversions"), (tries, "try", "tries")) if count]
    return f"all {len(job_ids)} workers are busy ({', '.join(running)})"


def _elapsed(meta: dict, state: JobState) -> float | None:
    start = meta.get("started_at") or meta.get("submitted_at")
    if not start:
        return None
    end = meta.get("ended_at") if not state.active else None
    end_time = datetime.fromisoformat(end) if end else datetime.now(timezone.utc)
    return round((end_time - datetime.fromisoformat(start)).total_seconds(), 1)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat(timespec="seconds")
