"""A shared service for many users, against a real redis-server: per-user limits say which
limit and when to try again; one writer per target repo; a try's memory check."""

from __future__ import annotations

import threading
import time

import pytest
from rq import Queue

from converters.errors import UserInputError
from tests.e2e.harness import RedisServer
from worker import quotas, repo_lock, try_it


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.client()
    server.stop()


def _queued(redis, n: int, prefix: str) -> list[str]:
    queue = Queue("quota-test", connection=redis)
    return [queue.enqueue("builtins.print", job_id=f"{prefix}-{i}").id for i in range(n)]


def test_a_user_over_the_active_conversions_limit_is_told_to_wait(redis, monkeypatch):
    monkeypatch.setenv("COREML_CONVERTER_USER_ACTIVE_JOBS", "2")
    jobs = _queued(redis, 2, "alice-conv")
    quotas.check_conversions(redis, "alice", jobs[:1])  # one queued: allowed
    with pytest.raises(UserInputError, match="You have 2 conversions queued or running.*Wait for one to end"):
        quotas.check_conversions(redis, "alice", jobs)
    Queue("quota-test", connection=redis).fetch_job(jobs[0]).cancel()
    quotas.check_conversions(redis, "alice", jobs)  # one ended: allowed again
    monkeypatch.setenv("COREML_CONVERTER_USER_ACTIVE_JOBS", "0")  # 0: no limit
    quotas.check_conversions(redis, "alice", _queued(redis, 3, "alice-more"))


def test_tries_are_limited_per_hour_and_one_at_a_time(redis, monkeypatch):
    monkeypatch.setenv("COREML_CONVERTER_USER_TRIES_PER_HOUR", "3")
    monkeypatch.setenv("COREML_CONVERTER_USER_ACTIVE_TRIES", "1")
    now = time.time()
    running = _queued(redis, 1, "bob-try")[0]
    quotas.record_try(redis, "bob", running, now - 3000)
    with pytest.raises(UserInputError, match="previous try is still running"):
        quotas.check_try(redis, "bob", now)
    Queue("quota-test", connection=redis).fetch_job(running).cancel()
    for index in range(2):
        quotas.check_try(redis, "bob", now)
        quotas.record_try(redis, "bob", f"ended-{index}", now - 60)  # no such job: ended
    with pytest.raises(UserInputError, match=r"started 3 tries in the last hour.*Try again in 10 minutes"):
        quotas.check_try(redis, "bob", now)
    quotas.check_try(redis, "carol", now)  # another user is not held back
    quotas.check_try(redis, "bob", now + 601)  # the oldest left the hour
    assert 0 < redis.ttl("coreml:tries:bob") <= 3600  # bounded key


def test_one_writer_per_repo(redis):
    order: list[str] = []
    held = threading.Event()

    def first():
        with repo_lock.repo_lock(redis, "alice/Model-coreml", wait=5, hold=30):
            held.set()
            order.append("first in")
            time.sleep(0.5)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(5)
    with pytest.raises(UserInputError, match="Another conversion is pushing to alice/model-coreml right now.*Nothing was pushed"):
        with repo_lock.repo_lock(redis, "alice/model-coreml", wait=0.1):  # the Hub's ids ignore case
            pass
    with repo_lock.repo_lock(redis, "alice/model-coreml", wait=5):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]
    assert redis.get(repo_lock.key("alice/model-coreml")) is None  # released
    with repo_lock.repo_lock(redis, "alice/other", wait=0.1, hold=30):
        assert 0 < redis.ttl(repo_lock.key("alice/other")) <= 30  # a killed worker's lock expires


def test_a_try_whose_reference_would_not_fit_memory_is_refused(monkeypatch):
    monkeypatch.setattr(try_it, "available_memory", lambda: 8 * 10**9)
    report = {"architecture": {"parameters": 3_000_000_000}, "packages": [{"size_bytes": 6 * 10**9}]}
    with pytest.raises(UserInputError, match=r"needs about 27.6 GB of memory .* this server has 8.0 GB free"):
        try_it.check_memory(report)
    try_it.check_memory({"architecture": {"parameters": 135_000_000}, "packages": [{"size_bytes": 270_000_000}]})


def test_available_memory_is_read_from_this_machine():
    free = try_it.available_memory()
    assert free is not None and 10**8 < free < 10**13


def test_a_sign_in_session_is_a_reference_to_an_encrypted_token(redis, tmp_path, monkeypatch):
    from cryptography.fernet import Fernet

    from worker import sessions

    monkeypatch.setenv("COREML_CONVERTER_SECRET_KEY", Fernet.generate_key().decode())
    reference = sessions.create(redis, "alice", "hf_alice_secret")
    assert sessions.restore(redis, reference) == {"user": "alice", "token": "hf_alice_secret"}
    (key,) = redis.keys("coreml:session:*")
    assert reference.encode() not in key and b"hf_alice_secret" not in redis.get(key)  # neither kept in the clear
    assert 0 < redis.ttl(key) <= sessions.SESSION_SECONDS
    assert sessions.restore(redis, "a-guess") is None and sessions.restore(redis, None) is None
    monkeypatch.setenv("COREML_CONVERTER_SECRET_KEY", Fernet.generate_key().decode())  # another deployment's key
    assert sessions.restore(redis, reference) is None
    sessions.end(redis, reference)
    assert redis.keys("coreml:session:*") == []


def test_a_job_that_died_mid_push_says_what_landed_read_back_from_the_hub(local_hub, monkeypatch):
    """The failure callbacks' wording, made true by asking the Hub (real HTTP to the local Hub)."""
    from tests.conftest import OWNER, OWNER_TOKEN
    from worker import lifecycle
    from worker.progress import now_iso

    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    repo, title = f"{OWNER}/landed-or-not", "Add Core ML conversion (fill-mask) of alice/x@0123"
    local_hub.add_repo(repo, {"README.md": "old"}, owner_token=OWNER_TOKEN)
    meta = {"push_target": repo, "push_commit": title, "push_started_at": now_iso()}
    error = "The conversion process was killed. Nothing was pushed. Try again."
    assert lifecycle._after_push(dict(meta), OWNER_TOKEN, error) == (
        f"The conversion process was killed. Nothing was pushed to {repo} (checked on the Hub). Try again.")
    sha = local_hub.add_files(repo, {"m.mlpackage/Manifest.json": "{}"}, message=title)
    landed = dict(meta)
    said = lifecycle._after_push(landed, OWNER_TOKEN, error)
    assert f"It stopped after its commit to {repo} had landed" in said and sha in said
    assert landed["links"]["commit"].endswith(sha) and "Nothing was pushed" not in said
    meta["push_target"] = f"{OWNER}/never-created"
    assert "Nothing was pushed to alice/never-created (checked on the Hub)" in lifecycle._after_push(meta, OWNER_TOKEN, error)
