"""End-to-end: the job service with a real redis-server, a real worker process and the
local Hub. A Hub ID becomes a pushed, validated package (new repo and pull request);
bad requests end with a message saying what to do and push nothing; jobs are cancelled;
the token is found nowhere afterwards."""

from __future__ import annotations

import base64
import binascii
import zlib
from pathlib import Path

import pytest

from converters.errors import UserInputError
from tests.conftest import OTHER, OTHER_TOKEN, OWNER, OWNER_TOKEN
from tests.e2e import repos
from tests.e2e.harness import wait_until
from tests.e2e.service import JobService
from worker import api
from worker.spec import JobSpec

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(worker_repos, tmp_path_factory):
    # A short wait before the one retry when the Hub is unavailable (default 20 s).
    service = JobService(tmp_path_factory.mktemp("jobs"), worker_repos, COREML_CONVERTER_HUB_RETRY_DELAY="2").start()
    service.add_worker("jobs-worker").wait_ready()
    yield service
    service.stop()


def make_spec(model: str = repos.TINY, token: str | None = OWNER_TOKEN, **kwargs) -> JobSpec:
    kwargs.setdefault("options", {"sequence_length": "8"})
    return JobSpec.build(model, token=token, **kwargs)


def assert_job_ended_cleanly(service: JobService, job_id: str) -> None:
    """No job left running, no token, no temp folder."""
    assert job_id not in service.running_job_ids()
    assert not service.token_key_exists(job_id)
    wait_until(lambda: not service.job_dir(job_id).exists(), 10, what="temp folder removal")


def download_and_load(hub, repo_id: str, token: str, tmp_path: Path, revision: str | None = None):
    """Download the pushed repo again and load its package with coremltools (no Core ML runtime needed)."""
    import coremltools as ct
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo_id, revision=revision, token=token, endpoint=hub.url, local_dir=tmp_path / "dl"))
    packages = sorted(folder.glob("*.mlpackage"))
    assert packages, sorted(p.name for p in folder.iterdir())
    model = ct.models.MLModel(str(packages[0]), skip_model_load=True)
    return folder, model.get_spec(), model.user_defined_metadata


# ---------------------------------------------------------------------- new repo


@pytest.fixture(scope="module")
def new_repo_job(service):
    before = service.hub_state()
    job_id = api.submit(make_spec(task="fill-mask"))
    return job_id, service.wait(job_id), before


def test_hub_id_to_pushed_validated_package_in_a_new_repo(service, new_repo_job, tmp_path):
    job_id, status, before = new_repo_job
    assert status.state == "finished", status
    assert status.stage == "done" and status.percent == 100 and status.pushed
    assert status.validation["passed"] is True and status.validation["checks"]
    assert status.links.repo == f"{service.hub.url}/{OWNER}/job-bert-coreml"
    assert status.report["task"] == "fill-mask" and status.report["packages"][0]["path"] == "job-bert.mlpackage"
    assert any("Validation passed" in line for line in status.log)
    assert status.error is None and status.elapsed_seconds > 0
    assert_job_ended_cleanly(service, job_id)

    target = f"{OWNER}/job-bert-coreml"
    assert target not in before and target in service.hub.repo_ids()
    files = service.hub.files(target)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "README.md",
                 "job-bert.mlpackage/Manifest.json"):
        assert name in files, sorted(files)
    assert service.hub.commits(target)[-1]["title"].startswith(
        "Add Core ML conversion (fill-mask, float16, sequence length 8, iOS17, swift-transformers naming) of alice/job-bert@")

    folder, spec, metadata = download_and_load(service.hub, target, OWNER_TOKEN, tmp_path)
    assert [i.name for i in spec.description.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in spec.description.output] == ["token_scores"]
    # The new repo carries the tokenizer files, so the package names it (an app may not read a gated source).
    assert metadata["co.huggingface.exporters.name"] == target == status.report["tokenizer_repo"]
    assert metadata["co.huggingface.exporters.task"] == "fill-mask"


def test_model_card(service, new_repo_job):
    readme = service.hub.files(f"{OWNER}/job-bert-coreml")["README.md"].decode()
    front, body = readme.split("\n---\n", 1)
    assert "base_model: alice/job-bert" in front and "- coreml" in front and "pipeline_tag: fill-mask" in front
    assert body.lstrip().startswith("# Core ML conversion of alice/job-bert")  # no warning: it passed
    assert "| sequence length | `8` |" in body and "| precision | `float16` |" in body
    assert "Validation passed" in body and "| model | `token_scores` | fp16 | psnr_db |" in body
    assert "```swift" in body and "MLModel(contentsOf:" in body
    assert f"names **`{OWNER}/job-bert-coreml`** — this repo, not the source `alice/job-bert`" in body


def _blobs(value: bytes):
    """A stored value and what it decodes to (rq compresses job data and tracebacks)."""
    yield value
    for candidate in (value, _b64(value)):
        if candidate:
            try:
                yield zlib.decompress(candidate)
            except zlib.error:
                pass


def _b64(value: bytes) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def redis_values(client):
    for key in client.scan_iter("*"):
        yield key
        kind = client.type(key).decode()
        if kind == "string":
            yield client.get(key)
        elif kind == "hash":
            for field, value in client.hgetall(key).items():
                yield field
                yield value
        elif kind == "list":
            yield from client.lrange(key, 0, -1)
        elif kind == "set":
            yield from client.smembers(key)
        elif kind == "zset":
            yield from (member for member, _ in client.zrange(key, 0, -1, withscores=True))
        elif kind == "stream":
            for _, fields in client.xrange(key):
                for field, value in fields.items():
                    yield field
                    yield value


def leaks(client, secret: bytes) -> list[str]:
    return [repr(value[:80]) for value in redis_values(client) for blob in _blobs(value) if secret in blob]


def test_token_is_not_in_redis_logs_or_files_after_a_full_job(service, new_repo_job):
    job_id, status, _ = new_repo_job
    assert status.state == "finished"
    client = service.redis.client()
    secret = OWNER_TOKEN.encode()

    # The scanner finds a token hidden the way rq hides its own data (zlib, base64).
    client.set("leak-probe", base64.b64encode(zlib.compress(secret)))
    assert leaks(client, secret)
    client.delete("leak-probe")

    assert client.exists(f"rq:job:{job_id}") and client.exists(f"rq:results:{job_id}")
    assert leaks(client, secret) == []
    assert secret not in service.redis.aof_bytes()  # every command Redis ever persisted
    assert OWNER_TOKEN not in service.logs()
    assert all(secret not in data for data in service.hub.files(f"{OWNER}/job-bert-coreml").values())
    state = service.tmp / "state"
    assert all(secret not in p.read_bytes() for p in state.rglob("*") if p.is_file())


# ---------------------------------------------------------------------- pull request


def test_pull_request_flavour_and_reuse_of_our_open_pull_request(service, tmp_path):
    options = {"sequence_length": "8"}
    spec = make_spec(repos.PR_SOURCE, token=OTHER_TOKEN, task="feature-extraction", push="pull-request", options=options)
    main_before = service.hub.sha(repos.PR_SOURCE)

    first = service.wait(api.submit(spec))
    assert first.state == "finished", first
    prs = service.hub.discussions(repos.PR_SOURCE)
    assert len(prs) == 1 and prs[0]["is_pull_request"] and prs[0]["author"] == OTHER and prs[0]["status"] == "open"
    assert prs[0]["title"] == ("Add Core ML conversion (feature-extraction, float16, sequence length 8, iOS17, "
                               "swift-transformers naming)")
    assert first.links.pull_request.endswith(f"/{repos.PR_SOURCE}/discussions/{prs[0]['num']}")
    assert service.hub.sha(repos.PR_SOURCE) == main_before  # main is untouched
    ref = prs[0]["ref"]
    assert "pr-bert.mlpackage/Manifest.json" in service.hub.files(repos.PR_SOURCE, ref)

    # The same conversion again: a new commit on the same PR, not a second PR; a new job, so
    # "My jobs" keeps both runs.
    second = service.wait(api.submit(spec))
    assert second.state == "finished", second
    assert second.job_id != first.job_id and second.job_id.startswith(first.job_id)
    mine = [job.job_id for job in api.recent_jobs(OTHER, 20)]
    assert first.job_id in mine and second.job_id in mine
    assert len(service.hub.discussions(repos.PR_SOURCE)) == 1
    assert second.links.pull_request == first.links.pull_request
    on_pr = [c for c in service.hub.commits(repos.PR_SOURCE) if c["ref"] == ref]
    assert len(on_pr) == 2 and on_pr[-1]["title"].startswith("Update: Add Core ML conversion")

    _, package, metadata = download_and_load(service.hub, repos.PR_SOURCE, OTHER_TOKEN, tmp_path, revision=ref)
    assert [o.name for o in package.description.output][0] == "last_hidden_state"
    assert metadata["co.huggingface.exporters.task"] == "feature-extraction"
    assert metadata["co.huggingface.exporters.name"] == repos.PR_SOURCE == second.report["tokenizer_repo"]


# ---------------------------------------------------------------------- Core AI


def test_format_both_pushes_the_aimodel_beside_the_mlpackage(service, tmp_path):
    """Text generation in both formats: the Core ML package for swift-transformers, and the Core AI
    LLM bundle (the folder Apple's CoreAILanguageModel loads) with its metadata and tokenizer."""
    from huggingface_hub import snapshot_download

    from converters.backends.coreai import CoreAIBackend
    from converters.backends.coreai.runtime import MODE

    target = f"{OWNER}/job-llama-both"
    options = {"sequence_length": "8", "format": "both"}
    status = service.wait(api.submit(make_spec(repos.TINY_LLAMA, task="text-generation", push_repo=target, options=options)))
    assert status.state == "finished" and status.pushed, status
    report = status.report
    assert [(p["path"], p["format"]) for p in report["packages"]] == [
        ("job-llama.mlpackage", "coreml"), ("job-llama/job-llama.aimodel", "coreai")]
    assert status.validation["passed"] is True and MODE in status.validation["modes"]
    files = service.hub.files(target)
    for name in ("job-llama.mlpackage/Manifest.json", "job-llama/job-llama.aimodel/main.mlirb", "job-llama/metadata.json",
                 "job-llama/tokenizer/tokenizer.json", "tokenizer.json", "README.md"):
        assert name in files, sorted(files)
    readme = files["README.md"].decode()
    assert "- coreai" in readme.split("\n---\n", 1)[0]
    assert "## Use it in Swift with Core AI (iOS/macOS 27)" in readme and "needs iOS 27 / macOS 27" in readme
    assert "CoreAILanguageModel" in readme
    assert "## Use it in Swift\n" in readme and "LanguageModel.loadCompiled" in readme  # the Core ML section stays

    # The pushed bundle, downloaded again, runs in Core AI's runtime as Apple's engine drives it.
    folder = Path(snapshot_download(target, token=OWNER_TOKEN, endpoint=service.hub.url, local_dir=tmp_path / "dl"))
    runner = CoreAIBackend().runner(folder / "job-llama" / "job-llama.aimodel")
    try:
        import numpy as np

        logits = runner.process([1] * 8, runner.make_state())
        assert logits.shape[:2] == (1, 8) and np.isfinite(logits).all()
    finally:
        runner.close()


# ---------------------------------------------------------------------- validation


def test_failed_validation_pushes_nothing(service):
    before = service.hub_state()
    status = service.wait(api.submit(make_spec(repos.FRAGILE, task="fill-mask")))
    assert status.state == "failed" and status.error_kind == "validation"
    # Only its float16 runs fail: the message names float32 as the remedy, once.
    assert "float16 arithmetic" in status.error and "Nothing was pushed" in status.error
    assert status.error.count("Convert in float32") == 1 and "authors" not in status.error
    assert status.validation["passed"] is False and status.report["packages"]
    assert service.hub_state() == before
    assert_job_ended_cleanly(service, status.job_id)


def test_push_anyway_says_so_in_the_cards_first_lines(service):
    spec = make_spec(repos.FRAGILE, task="fill-mask", push_even_if_invalid=True, private=True)
    status = service.wait(api.submit(spec))
    assert status.state == "finished" and status.validation["passed"] is False
    assert service.hub.store.repos[f"{OWNER}/fragile-bert-coreml"].private  # as asked
    readme = service.hub.files(f"{OWNER}/fragile-bert-coreml")["README.md"].decode()
    front, body = readme.split("\n---\n", 1)
    assert "- unvalidated" in front
    assert body.lstrip().startswith("> **Warning: this Core ML package FAILED validation**")
    assert "| FAIL |" in body


# ---------------------------------------------------------------------- bad input

# Refused by JobSpec.build / api.submit before anything is queued.
REFUSED_BEFORE_QUEUEING = [
    pytest.param(dict(model=""), "No model given", id="empty-id"),
    pytest.param(dict(model="not a model id!"), "is not a valid Hub model ID", id="malformed-id"),
    pytest.param(dict(model="alice/../etc"), "is not a valid Hub model ID", id="dot-dot-id"),
    pytest.param(dict(model="https://huggingface.co/datasets/alice/data"), "is a dataset, not a model", id="dataset-url"),
    pytest.param(dict(model="https://huggingface.co/spaces/alice/app"), "is a space, not a model", id="space-url"),
    pytest.param(dict(model="ftp://huggingface.co/alice/model"), "is not a web address", id="ftp-url"),
    pytest.param(dict(model="https://huggingface.co/alice"), "does not name a model", id="url-without-model"),
    pytest.param(dict(model="alice/job-bert@v1", revision="v2"), "Two revisions were given", id="two-revisions"),
    pytest.param(dict(revision="bad rev"), "is not a valid revision", id="bad-revision"),
    pytest.param(dict(task="nope"), "Unknown task 'nope'", id="unknown-task"),
    pytest.param(dict(options={"precision": "int3"}), "Unknown precision 'int3'", id="bad-precision"),
    pytest.param(dict(options={"sequence_length": "abc"}), "Sequence length 'abc' is not understood", id="bad-length"),
    pytest.param(dict(options={"sequence_length": "512-1"}), "from a smaller to a larger number", id="reversed-range"),
    pytest.param(dict(options={"sequence_length": "0"}), "must be at least 1", id="zero-length"),
    pytest.param(dict(options={"minimum_deployment_target": "iOS9"}), "Unknown minimum deployment target", id="old-target"),
    pytest.param(dict(options={"naming": "coreml"}), "Unknown naming 'coreml'", id="bad-naming"),
    pytest.param(dict(options={"speculative": "yes"}), "Unknown option(s): speculative", id="unknown-option"),
    pytest.param(dict(token=None), "A Hugging Face token is needed", id="no-token"),
    pytest.param(dict(token="hf_not_a_real_token"), "The Hub rejected the token", id="token-rejected-at-submit"),
    pytest.param(dict(push="gist"), "Unknown push target 'gist'", id="bad-push-target"),
    pytest.param(dict(push_repo="alice/has space"), "is not a valid Hub ID", id="bad-target-repo"),
    pytest.param(dict(push="pull-request", push_repo="alice/x"), "leave the target repo empty", id="pr-with-target"),
    pytest.param(dict(runner="windows"), "Unknown runner 'windows'", id="bad-runner"),
    # Where the result goes is checked with the user's token before any work (not after the conversion).
    pytest.param(dict(token="hf_not_a_real_token", user=OWNER), "The Hub rejected the token", id="token-rejected"),
    pytest.param(dict(task="fill-mask", token=repos.OWNER_READ_TOKEN, push_repo="alice/read-only-target"),
                 "Your token may not create or write to alice/read-only-target: it is read-only",
                 id="read-only-token-new-repo"),
    pytest.param(dict(model=repos.PR_SOURCE, task="fill-mask", token=repos.OTHER_READ_TOKEN, push="pull-request"),
                 "Your token may not open a pull request on alice/pr-bert: it is read-only", id="read-only-token-pull-request"),
    pytest.param(dict(task="fill-mask", push_repo=f"{OTHER}/not-yours"),
                 f"may not create or write to {OTHER}/not-yours: {OTHER} is not your account", id="other-namespace"),
    pytest.param(dict(task="fill-mask", push_repo="alice/secret-bert", token=OTHER_TOKEN, user=OTHER),
                 "may not create or write to alice/secret-bert: alice is not your account", id="another-users-repo"),
]


@pytest.mark.parametrize("request_fields, message", REFUSED_BEFORE_QUEUEING)
def test_bad_request_is_refused_before_queueing(service, request_fields, message):
    before_hub, client = service.hub_state(), service.redis.client()
    jobs_before = sorted(client.scan_iter("rq:job:*"))
    fields = {"model": repos.TINY, "token": OWNER_TOKEN, "options": {"sequence_length": "8"}, **request_fields}
    with pytest.raises(UserInputError) as error:
        api.submit(JobSpec.build(fields.pop("model"), **fields))
    assert message in str(error.value)
    assert "hf_" not in str(error.value)  # no token echoed back
    assert sorted(client.scan_iter("rq:job:*")) == jobs_before and not list(client.scan_iter("coreml:token:*"))
    assert service.hub_state() == before_hub


# Accepted, then refused by the worker (resolve before any download, or push).
REFUSED_BY_THE_JOB = [
    pytest.param(dict(model="alice/no-such-model"), "'alice/no-such-model' was not found on the Hub", id="missing-repo"),
    pytest.param(dict(model=repos.TINY + "@no-such-branch"), "has no revision 'no-such-branch'", id="missing-revision"),
    pytest.param(dict(model="alice/secret-bert", token=OTHER_TOKEN), "was not found on the Hub", id="no-access"),
    pytest.param(dict(model="alice/gated-bert", token=OTHER_TOKEN), "is gated: accept its conditions", id="gated"),
    pytest.param(dict(model="alice/pickle-bert"), "has weights only in pickle files", id="pickle-only"),
    pytest.param(dict(model="alice/remote-code"), "needs custom code from its repo", id="remote-code"),
    pytest.param(dict(model=repos.SPEECH), "The architecture 'wav2vec2' cannot be converted", id="unsupported-arch"),
    pytest.param(dict(task="text-generation"), "The task 'text-generation' is not available for bert models",
                 id="unsupported-task"),
    pytest.param(dict(model=repos.NO_CONFIG), "has no config.json", id="no-config"),
    pytest.param(dict(model=repos.NO_WEIGHTS), "has no model weights", id="no-weights"),
    pytest.param(dict(model=repos.BAD_CONFIG), "damaged config.json: it is not valid JSON", id="broken-config"),
    pytest.param(dict(model=repos.TRUNCATED, task="text-generation"), "damaged model.safetensors: it is not a complete",
                 id="truncated-weights"),
    pytest.param(dict(model=repos.HUGE), "is too large for this worker: 7.0 B parameters", id="too-large"),
    pytest.param(dict(task="fill-mask", options={"sequence_length": "1024"}),
                 "Sequence length 1024 is beyond this model's maximum of 512", id="length-beyond-model"),
]


@pytest.mark.parametrize("request_fields, message", REFUSED_BY_THE_JOB)
def test_bad_request_fails_the_job_with_a_message(service, request_fields, message):
    before = service.hub_state()
    fields = {"model": repos.TINY, "token": OWNER_TOKEN, "options": {"sequence_length": "8"}, **request_fields}
    token = fields["token"]
    job_id = api.submit(JobSpec.build(fields.pop("model"), **fields))
    status = service.wait(job_id)
    assert status.state == "failed", status
    assert message in status.error, status.error
    assert status.error_kind == "user_input" and status.user_error is True
    assert token not in status.error and not any(token in line for line in status.log)
    assert service.hub_state() == before, "something was pushed"
    assert_job_ended_cleanly(service, job_id)


def test_token_revoked_before_the_push(service):
    """The token works for reading, then stops working (revoked, OAuth expiry) before the push."""
    before = service.hub_state()
    job_id = api.submit(make_spec(repos.SLOW, token=repos.REVOCABLE_TOKEN, task="fill-mask",
                                  options={"sequence_length": "128"}, push_repo="alice/revoked-target"))
    at = service.wait_stage(job_id, ("convert", "validate", "package", "push", "done"))
    assert at.stage in ("convert", "validate"), "the job got too far to test this"
    repos.revoke(service.hub, repos.REVOCABLE_TOKEN)
    status = service.wait(job_id)
    assert status.state == "failed" and status.error_kind == "user_input"
    assert "The Hub rejected your token while pushing to alice/revoked-target" in status.error
    assert service.hub_state() == before and "alice/revoked-target" not in service.hub.repo_ids()
    assert_job_ended_cleanly(service, job_id)


def test_a_push_refused_at_the_end_keeps_the_validated_package_for_that_job_until_it_expires(service):
    """Write access checked at submit, then lost before the push (a role changed, a token's
    rights narrowed): the package that passed its checks is kept as a zip for its job alone."""
    import os
    import zipfile

    from worker import kept

    target = f"{OWNER}/refused-at-push"
    job_id = api.submit(make_spec(task="fill-mask", push_repo=target))
    service.hub.inject_fault(target, status=403)  # after the check at submit; the job reaches the target only to push
    try:
        status = service.wait(job_id)
    finally:
        service.hub.clear_faults(target)
    assert status.state == "failed" and status.stage == "push", status
    assert status.validation["passed"] is True and f"may not create or write to {target}" in status.error
    assert_job_ended_cleanly(service, job_id)  # the temp folder and the token are gone; the zip is not there

    info, path = status.kept_package, kept.path_for(job_id)
    assert path is not None and path.parent == service.tmp / "state" / "kept" / job_id and path.name == info.file
    assert path.name == "refused-at-push.zip" and path.stat().st_size == info.size_bytes
    names = zipfile.ZipFile(path).namelist()
    assert "job-bert.mlpackage/Manifest.json" in names and any(n.endswith("weight.bin") for n in names), names
    assert OWNER_TOKEN.encode() not in path.read_bytes() and OWNER_TOKEN not in str(info)
    # Only that job's own folder: another job has none, and an id that is a path is refused.
    assert kept.path_for(job_id + "x") is None and kept.path_for("../kept/" + job_id) is None
    with pytest.raises(ValueError):
        kept.folder("../" + job_id)

    # Past its time (24 h by default) it is no longer offered, and the sweep removes it.
    old = path.parent.stat().st_mtime - 25 * 3600
    os.utime(path.parent, (old, old))
    assert kept.path_for(job_id) is None and api.status(job_id).kept_package is None
    assert job_id in kept.sweep() and not path.parent.exists()


# ---------------------------------------------------------------------- Hub outage


def _model_info_answers(hub, repo_id: str) -> list[int]:
    return [status for method, path, status in hub.request_log if method == "GET" and path == f"/api/models/{repo_id}"]


def test_hub_outage_is_retried_once_then_fails_saying_the_hub_is_unavailable(service):
    repo_id = f"{OWNER}/outage-bert"
    before, client = service.hub_state(), service.redis.client()
    service.hub.inject_fault(repo_id, status=503)
    try:
        job_id = api.submit(make_spec(repo_id, task="fill-mask"))
        retrying = wait_until(lambda: (s := api.status(job_id)).retrying and s, 60, interval=0.02,
                              what="the job to say it is retrying")
        assert retrying.state == "running" and retrying.retries == 1
        assert "The Hub is unavailable (HTTP 503): retrying the check in 2 s" in retrying.message
        status = service.wait(job_id)
    finally:
        service.hub.clear_faults(repo_id)
    assert status.state == "failed", status
    assert status.error_kind == "hub_unavailable" and status.user_error is False
    assert status.error.startswith("The Hub is unavailable: it answered HTTP 503 for alice/outage-bert")
    assert "try again" in status.error and "Nothing was pushed" in status.error
    assert "(It was tried 2 times.)" in status.error and status.retries == 1 and not status.retrying
    assert "cannot be converted as given" not in status.error and "not found" not in status.error
    assert _model_info_answers(service.hub, repo_id) == [503, 503]  # tried once, retried once, no more
    assert service.hub_state() == before, "something was pushed"
    assert_job_ended_cleanly(service, job_id)
    assert leaks(client, OWNER_TOKEN.encode()) == []


def test_a_brief_hub_outage_is_retried_and_the_job_pushes_once(service):
    target = f"{OWNER}/after-outage"
    service.hub.inject_fault(repos.TINY, status=503, times=1)  # the first request fails, then the Hub is back
    try:
        job_id = api.submit(make_spec(task="fill-mask", push_repo=target))
        status = service.wait(job_id)
    finally:
        service.hub.clear_faults(repos.TINY)
    assert status.state == "finished", status
    assert status.retries == 1 and any("retrying the check" in line for line in status.log)
    pushes = [c for c in service.hub.commits(target) if c["title"].startswith("Add Core ML conversion")]
    assert len(pushes) == 1, service.hub.commits(target)  # pushed once
    assert_job_ended_cleanly(service, job_id)
    assert leaks(service.redis.client(), OWNER_TOKEN.encode()) == []


# ---------------------------------------------------------------------- duplicates and cancel


def test_cancel_a_queued_job_and_identical_requests_share_it(service):
    spec = make_spec(task="fill-mask", runner="macos")  # no macOS runner here: it waits
    job_id = api.submit(spec)
    assert api.submit(spec) == job_id
    assert api.submit(make_spec(task="fill-mask", runner="macos", options={"sequence_length": "16"})) != job_id
    status = api.status(job_id)
    assert status.state == "queued" and status.queue == "macos" and status.queue_position == 1
    assert "No macOS runner is connected" in status.note
    assert service.token_key_exists(job_id)

    with pytest.raises(UserInputError, match="belongs to someone else"):
        api.cancel(job_id, user="mallory")
    assert api.status(job_id).state == "queued"
    status = api.cancel(job_id, user=OWNER)
    assert status.state == "cancelled" and status.cancelled and status.error is None
    assert not service.token_key_exists(job_id)
    assert api.status(job_id).state == "cancelled"
    other = make_spec(task="fill-mask", runner="macos", options={"sequence_length": "16"}).with_user(OWNER).job_id()
    assert api.cancel(other).state == "cancelled"


def test_cancel_a_running_job(service):
    before = service.hub_state()
    spec = make_spec(repos.SLOW, task="fill-mask", options={"sequence_length": "128"})
    job_id = api.submit(spec)
    service.wait_stage(job_id, ("download", "convert", "validate"))
    assert api.submit(spec) == job_id  # the same request while it runs: the same job
    api.cancel(job_id)
    status = service.wait(job_id, timeout=30)
    assert status.state == "cancelled" and status.cancelled and status.stage == "cancelled"
    assert service.hub_state() == before
    assert_job_ended_cleanly(service, job_id)
    # The worker goes on to the next job.
    after = make_spec(task="question-answering", push_repo="alice/after-cancel")
    assert service.wait(api.submit(after)).state == "finished"


def test_recent_jobs_and_workers(service, new_repo_job):
    job_id, _, _ = new_repo_job
    recent = api.recent_jobs(OWNER, limit=50)
    assert job_id in [j.job_id for j in recent] and all(not j.log for j in recent)
    assert recent == sorted(recent, key=lambda j: j.submitted_at or "", reverse=True)
    (worker,) = api.workers()
    assert worker["name"] == "jobs-worker" and worker["os"] == "Linux" and worker["coreml_runtime"] == "no"
    assert worker["queues"] == "tries,default" and int(worker["max_params"]) == 50_000_000  # tries first
    assert api.status("cv-unknown").state == "unknown"


ALL_TOKENS = [OWNER_TOKEN, OTHER_TOKEN, repos.OWNER_READ_TOKEN, repos.OTHER_READ_TOKEN, repos.REVOCABLE_TOKEN,
              "hf_not_a_real_token"]


def test_whisper_pushes_whisperkits_variant_folder(service):
    """A Whisper checkpoint becomes one variant folder in the new repo (WhisperKit downloads
    '<variant>/…': its three packages, the tokenizer and the configs), and the card loads it
    with WhisperKit."""
    target = f"{OWNER}/job-whisper-coreml"
    status = service.wait(api.submit(make_spec(repos.TINY_WHISPER, task="automatic-speech-recognition", options={})))
    assert status.state == "finished" and status.pushed, status
    assert status.validation["passed"] is True
    assert any(c["metric"] == "continuation_match" for c in status.validation["checks"])
    files = service.hub.files(target)
    for name in ("MelSpectrogram.mlpackage/Manifest.json", "AudioEncoder.mlpackage/Manifest.json",
                 "TextDecoder.mlpackage/Manifest.json", "tokenizer.json", "config.json", "generation_config.json"):
        assert f"job-whisper/{name}" in files, sorted(files)
    readme = files["README.md"].decode()
    assert "pipeline_tag: automatic-speech-recognition" in readme.split("\n---\n", 1)[0]
    assert f'WhisperKit(WhisperKitConfig(model: "job-whisper", modelRepo: "{target}"))' in readme


def test_no_token_anywhere_after_every_job_of_this_module(service):
    """Runs last: after successes, failures at every stage, cancellations and a revoked token."""
    client = service.redis.client()
    assert list(client.scan_iter("rq:job:*"))  # (with pytest-xdist, this module's jobs may be split)
    assert not list(client.scan_iter("coreml:token:*"))  # every job ended, every token deleted
    stored, logs = service.redis.aof_bytes(), service.logs()
    for token in ALL_TOKENS:
        assert leaks(client, token.encode()) == [], token
        assert token.encode() not in stored and token not in logs, token
