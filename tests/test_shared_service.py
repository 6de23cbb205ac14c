"""End-to-end, many users on one service (real redis-server, real workers, the local Hub):
a gated model's copy is private by default and carries its licence; a user over the limit
of conversions is told to wait; two jobs pushing to one repo both land; a worker killed
mid-push says what landed, read back from the Hub; Try it asks the Hub before serving a
cached repo, so a revoked token gets nothing; the embedded Redis needs its password."""

from __future__ import annotations

import os
import signal

import pytest

from converters.errors import UserInputError
from tests.conftest import OWNER, OWNER_TOKEN
from tests.e2e import repos
from tests.e2e.harness import wait_until
from tests.e2e.service import JobService
from tests.models import build_model
from worker import api, repo_lock
from worker.spec import JobSpec

pytestmark = pytest.mark.e2e

GATED = f"{OWNER}/licensed-gated-bert"
SLOW_LLAMA = f"{OWNER}/slow-llama"  # four layers of 256: a few seconds a chunk
LICENCE_CARD = "---\nlicense: llama3.2\n---\n\nA gated test model.\n"


@pytest.fixture(scope="module")
def service(worker_repos, tiny_model, tmp_path_factory):
    from tests.hub_server.server import _read_folder

    worker_repos.add_repo(GATED, {**_read_folder(tiny_model("bert")), "README.md": LICENCE_CARD}, gated=True)
    slow_llama = build_model("llama", tmp_path_factory.mktemp("slow-llama") / "slow-llama", hidden_size=256,
                             intermediate_size=1024, num_hidden_layers=4)
    worker_repos.add_repo_from_folder(SLOW_LLAMA, slow_llama)
    machine_tmp = tmp_path_factory.mktemp("machine-tmp")  # the workers' system temp folder, watched below
    service = JobService(tmp_path_factory.mktemp("shared"), worker_repos, COREML_CONVERTER_USER_ACTIVE_JOBS="2",
                         COREML_CONVERTER_PUSH_LOCK_WAIT="120", TMPDIR=str(machine_tmp),
                         COREML_CONVERTER_LAYERS_PER_CHUNK="1",  # LLMs convert a layer at a time
                         COREML_CONVERTER_USER_TRIES_PER_HOUR="3").start()
    service.machine_tmp = machine_tmp
    service.add_worker("first").wait_ready()
    yield service
    service.stop()


def make_spec(model: str = repos.TINY, token: str = OWNER_TOKEN, **kwargs) -> JobSpec:
    kwargs.setdefault("options", {"sequence_length": "8"})
    kwargs.setdefault("task", "fill-mask")
    return JobSpec.build(model, token=token, **kwargs)


def horse_of(service, job_id: str) -> int:
    """The process running `job_id`: the child of the worker that took it (another worker may
    still be ending a job of an earlier test, so "the one child there is" is not enough)."""
    from worker.queues import connect, fetch_job

    connection = connect(service.redis.url)
    name = wait_until(lambda: (job := fetch_job(job_id, connection)) is not None and job.worker_name, 30,
                      what=f"the worker of {job_id}")
    (worker,) = [w for w in service.workers if w.name == name and w.process.poll() is None]
    (horse,) = worker.children()
    return horse


def test_a_gated_models_copy_is_private_by_default_and_carries_its_licence(service):
    status = service.wait(api.submit(make_spec(GATED)))
    assert status.state == "finished", status
    target = f"{OWNER}/licensed-gated-bert-coreml"
    assert service.hub.store.repos[target].private  # nothing was chosen: the source's terms decide
    assert any("is gated: its copy is pushed private" in line for line in status.log)
    readme = service.hub.files(target)["README.md"].decode()
    front, body = readme.split("\n---\n", 1)
    assert "license: llama3.2" in front and f"base_model: {GATED}" in front
    assert "Licence: the source's, **`llama3.2`**." in body
    assert "The source model is gated" in body and "was pushed private" in body

    public = service.wait(api.submit(make_spec(GATED, private=False, push_repo=f"{OWNER}/gated-made-public")))
    assert public.state == "finished" and not service.hub.store.repos[f"{OWNER}/gated-made-public"].private
    assert "made public by the person who converted it" in service.hub.files(f"{OWNER}/gated-made-public")["README.md"].decode()


def test_a_user_over_the_limit_of_conversions_is_told_to_wait(service):
    slow = {"sequence_length": "128"}
    first = api.submit(make_spec(repos.SLOW, options=slow, push_repo=f"{OWNER}/quota-1"))
    second = api.submit(make_spec(repos.SLOW, options=slow, push_repo=f"{OWNER}/quota-2"))
    assert api.submit(make_spec(repos.SLOW, options=slow, push_repo=f"{OWNER}/quota-2")) == second  # the same request joins
    with pytest.raises(UserInputError, match="You have 2 conversions queued or running.*Wait for one to end"):
        api.submit(make_spec(repos.SLOW, options=slow, push_repo=f"{OWNER}/quota-3"))
    for job_id in (first, second):
        api.cancel(job_id, OWNER)
        assert service.wait(job_id).state == "cancelled"
    assert service.wait(api.submit(make_spec(push_repo=f"{OWNER}/quota-3"))).state == "finished"  # free again


def test_two_jobs_pushing_to_one_repo_both_land(service):
    service.ensure_worker("first")
    service.ensure_worker("second")
    target = f"{OWNER}/shared-target"
    # Both jobs reach the push while another push holds the repo (this test's hold of its lock), so
    # both wait; let go, one pushes while the other waits for it: a collision every time, not by timing.
    held = service.redis.client().lock(repo_lock.key(target), timeout=120)
    assert held.acquire(blocking=False)
    try:
        # A Core ML package and a Core AI one: the repo ends holding both, and its card says so.
        jobs = [api.submit(make_spec(push_repo=target)),
                api.submit(make_spec(push_repo=target, options={"sequence_length": "8", "format": "coreai",
                                                                "precision": "float32"}))]
        for job_id in jobs:
            wait_until(lambda: "Waiting for other pushes" in (api.status(job_id).message or ""), 120, interval=0.02,
                       what=f"job {job_id} to wait for the repo")
        assert target not in service.hub_state()  # neither made the repo past the held lock
    finally:
        held.release()
    ended = [service.wait(job_id, timeout=240) for job_id in jobs]
    assert [s.state for s in ended] == ["finished", "finished"], ended
    titles = [c["title"] for c in service.hub.commits(target)]
    assert len([t for t in titles if "fill-mask" in t]) == 2, titles
    files = service.hub.files(target)
    assert any(f.startswith("job-bert.mlpackage/") for f in files) and any(f.startswith("job-bert.aimodel") for f in files)
    assert "## Other packages in this repo" in files["README.md"].decode()  # the later card names the earlier package
    # Asked to, a push removes the other packages: the repo then holds its package only.
    alone = service.wait(api.submit(make_spec(push_repo=target, remove_others=True, options={"sequence_length": "16"})))
    assert alone.state == "finished", alone
    files = service.hub.files(target)
    assert any(f.startswith("job-bert.mlpackage/") for f in files) and not any(f.startswith("job-bert.aimodel") for f in files)
    assert "## Other packages" not in files["README.md"].decode()
    assert all(s.links.commit.rsplit("/", 1)[-1] in {c["oid"] for c in service.hub.commits(target)} for s in ended)
    assert not service.redis.client().exists(repo_lock.key(target))  # released


def test_a_worker_killed_mid_push_says_what_landed(service):
    service.ensure_worker("first")
    target = f"{OWNER}/killed-mid-push"
    job_id = api.submit(make_spec(push_repo=target))
    # The push hangs: the fault is set once the checks before the push (the form's access check, the
    # worker's look at the repo) are behind the job, or they would wait out its minute instead.
    stage = wait_until(lambda: (s := api.status(job_id).stage) in ("validate", "package", "push") and s, 120,
                       interval=0.02, what="the conversion to end")
    assert stage != "push", "the job reached its push before the fault was set"
    service.hub.inject_fault(target, status=None, delay=60)
    try:
        wait_until(lambda: "Pushing to" in (api.status(job_id).message or ""), 120, what="the push to start")
        assert (service.job_dir(job_id) / "tmp").is_dir()  # the job's temporary files go to its own folder
        os.kill(horse_of(service, job_id), signal.SIGKILL)
    finally:
        service.hub.clear_faults(target)
    status = service.wait(job_id, timeout=60)
    assert status.state == "failed"
    assert f"Nothing was pushed to {target} (checked on the Hub)." in status.error, status.error
    assert target not in service.hub.repo_ids() or not service.hub.commits(target)[1:]
    assert not service.job_dir(job_id).exists() and not service.token_key_exists(job_id)
    assert not list(service.machine_tmp.rglob("*.mlpackage"))  # the kill left none in the machine's temp


def test_a_job_cancelled_mid_push_says_what_landed(service):
    service.ensure_worker("first")
    target = f"{OWNER}/cancelled-mid-push"
    job_id = api.submit(make_spec(push_repo=target))
    wait_until(lambda: api.status(job_id).stage in ("validate", "package", "push"), 120, interval=0.02,
               what="the conversion to end")
    service.hub.inject_fault(target, status=None, delay=60)  # the push hangs
    try:
        wait_until(lambda: "Pushing to" in (api.status(job_id).message or ""), 120, what="the push to start")
        api.cancel(job_id, OWNER)
    finally:
        service.hub.clear_faults(target)  # the worker's read-back of the push goes through
    status = service.wait(job_id, timeout=60)
    assert status.state == "cancelled" and status.error is None
    assert status.message == f"Cancelled while pushing. Nothing was pushed to {target} (checked on the Hub).", status.message
    assert target not in service.hub.repo_ids() or not service.hub.commits(target)[1:]
    assert not service.job_dir(job_id).exists() and not service.token_key_exists(job_id)


def test_a_worker_killed_mid_chunk_leaves_nothing_behind(service):
    service.ensure_worker("first")
    job_id = api.submit(make_spec(SLOW_LLAMA, task="text-generation", push_repo=f"{OWNER}/killed-mid-chunk"))
    wait_until(lambda: "(chunk 2 of 4)" in (api.status(job_id).message or ""), 120, what="the second chunk")
    assert list(service.job_dir(job_id).rglob("*.mlpackage"))  # the first chunk, set aside in the job's folder
    os.kill(horse_of(service, job_id), signal.SIGKILL)
    status = service.wait(job_id, timeout=60)
    assert status.state == "failed" and "was killed" in status.error
    assert not service.job_dir(job_id).exists() and not list(service.machine_tmp.rglob("*.mlpackage"))
    assert f"{OWNER}/killed-mid-chunk" not in service.hub.repo_ids()


def test_try_it_asks_the_hub_before_serving_a_cached_repo(service):
    service.ensure_worker("first")
    job = service.wait(api.submit(make_spec(repos.TINY_LLAMA, task="text-generation",
                                            push_repo=f"{OWNER}/try-cached")))
    assert job.state == "finished", job

    def attempt():
        try_id = api.submit_try(job.job_id, repos.REVOCABLE_TOKEN, OWNER, "generate",
                                {"text": "the capital of france is", "new_tokens": 2})
        return wait_until(lambda: (s := api.try_status(try_id, OWNER)).state in ("finished", "failed") and s, 180,
                          what="the try")

    first = attempt()
    assert first.state == "finished" and first.result["package"]["tokens"] >= 1, first

    # A worker killed mid-try: the try ends failed, with nothing of it left behind.
    service.hub.inject_fault(repos.TINY_LLAMA, status=None, delay=60)  # the try waits on the Hub
    try:
        try_id = api.submit_try(job.job_id, OWNER_TOKEN, OWNER, "generate", {"text": "hello", "new_tokens": 2})
        wait_until(lambda: api.try_status(try_id, OWNER).state == "running", 60, what="the try to start")
        wait_until(lambda: list((service.tmp / "state" / "jobs").glob("try-*")), 30, what="the try's folder")
        os.kill(horse_of(service, try_id), signal.SIGKILL)
    finally:
        service.hub.clear_faults(repos.TINY_LLAMA)
    killed = wait_until(lambda: (s := api.try_status(try_id, OWNER)).state == "failed" and s, 60, what="the failure")
    assert "killed" in killed.error
    assert not list((service.tmp / "state" / "jobs").glob("try-*")) and not service.token_key_exists(try_id)
    assert not list(service.machine_tmp.rglob("*.mlpackage"))

    repos.revoke(service.hub, repos.REVOCABLE_TOKEN)
    second = attempt()  # both repos are in the worker's cache now
    assert second.state == "failed" and "rejected the token" in second.error, second
    # Three tries this hour: a fourth is refused, with when to try again, before anything is queued.
    with pytest.raises(UserInputError, match=r"You have started 3 tries in the last hour.*Try again in \d+ minutes"):
        api.submit_try(job.job_id, OWNER_TOKEN, OWNER, "generate", {"text": "hello"})
    assert not list((service.tmp / "state" / "jobs").glob("try-*"))  # the tries' temp folders are gone


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_a_shard_index_naming_a_file_outside_the_repo_fails_the_job_as_the_users_input(service, tiny_model, kind):
    """The reproduced attack, through a worker: an index naming a file in the worker's shared
    Try it cache (another user's weights), by '..' or by absolute path."""
    import json

    from tests.hub_server.server import _read_folder

    service.ensure_worker("first")
    repo = f"{OWNER}/escaping-index-{kind}"
    files = _read_folder(tiny_model("bert"))
    files["model-00001-of-00001.safetensors"] = files.pop("model.safetensors")
    cached = f"try-cache/models--{OWNER}--job-llama/snapshots/{'0' * 40}/model.safetensors"
    name = f"../../../../{cached}" if kind == "relative" else str(service.tmp / "state" / cached)
    index = {"weight_map": {"a": "model-00001-of-00001.safetensors", "w": name}}
    service.hub.add_repo(repo, {**files, "model.safetensors.index.json": json.dumps(index)})
    status = service.wait(api.submit(make_spec(repo)))
    assert status.state == "failed" and status.error_kind == "user_input", status
    assert "damaged model.safetensors.index.json" in status.error and json.dumps(name)[:120] in status.error, status.error
    assert "which is not a file inside the model folder" in status.error
    assert [r for r in service.hub.repo_ids() if r.startswith(repo)] == [repo]  # nothing pushed


def test_every_key_the_service_wrote_has_a_ttl_or_a_bound(service):
    """After this module's jobs, tries, cancels and kills. Our keys (tokens, sessions, job
    indexes, push locks, try counters) and every job expire; rq's cancelled-jobs registry is
    given the results' TTL. What is left without a TTL is rq's own bookkeeping, each bounded:
    the names of queues and live workers, and per-queue lists and registries of job ids that rq
    cleans as the jobs expire."""
    client = service.redis.client()
    keys = sorted(key.decode() for key in client.scan_iter("*"))
    assert any(k.startswith("rq:job:") for k in keys), keys
    without_ttl = [k for k in keys if client.ttl(k) == -1]
    ours_or_jobs = [k for k in without_ttl if not k.startswith("rq:") or k.startswith(("rq:job:", "rq:canceled:"))]
    assert ours_or_jobs == [], ours_or_jobs
    print("no TTL (rq's bookkeeping):", without_ttl)
