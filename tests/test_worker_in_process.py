"""Jobs and tries that end before any model is loaded, against a real redis-server and rq running
them as a worker does (in-process): a conversion whose token expired while it waited, or was
sealed with another server key, fails with what to do and leaves nothing.

Try it in a worker (worker/try_it.py) past its happy path: another
user's job is refused before anything is queued; a try that cannot run ends failed with what
to do, and its token and folder are gone whatever the ending; the shared cache keeps its most
recently used repos within its count and bytes. The happy path runs end to end in
test_shared_service.py (a worker process, the local Hub) and in the browser tests."""

from __future__ import annotations

import os
import tempfile
import time

import pytest
from cryptography.fernet import Fernet
from rq import SimpleWorker

from converters.errors import UserInputError
from tests.e2e.harness import RedisServer
from worker import api, queues, settings, tokens, try_it, workdirs
from worker.runner import ListenerStopsAtOnce
from worker.spec import JobSpec
from worker.status import TryStatus

TOKEN = "hf_try_it_worker_test_token_0123456789"


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield api.connect(server.url)
    server.stop()


class InProcessWorker(ListenerStopsAtOnce, SimpleWorker):
    """rq's in-process worker, shut down as ours are (worker/runner.py)."""


def _work(redis) -> None:
    InProcessWorker([settings.TRY_QUEUE, settings.GENERAL_QUEUE], connection=redis, serializer=queues.SERIALIZER).work(burst=True)


@pytest.fixture(autouse=True)
def state(monkeypatch, tmp_path):
    monkeypatch.setenv("COREML_CONVERTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv(tokens.KEY_ENV, Fernet.generate_key().decode())
    # A try sends its process's temporary files into its own folder: this process is the test's.
    monkeypatch.setenv("TMPDIR", os.environ.get("TMPDIR", tempfile.gettempdir()))
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)
    return tmp_path / "state"


def _conversion(redis, job_id: str, user: str = "alice", **meta):
    """A finished conversion as the worker leaves it in Redis (only what a try reads)."""
    meta = {"user": user, "pushed": True, "model": "alice/source", "push_target": "alice/source-coreml",
            "links": {"commit": "https://hub/alice/source-coreml/commit/" + "a" * 40},
            "report": {"task": "text-generation", "packages": [{"path": "model.mlpackage", "size_bytes": 10}]},
            **meta}
    job = queues.queue(settings.GENERAL_QUEUE, redis).enqueue("builtins.print", job_id=job_id, meta=meta)
    queues.queue(settings.GENERAL_QUEUE, redis).remove(job_id)  # not to be run: it stands for a finished one
    return job


def _run_try(redis, conversion_id: str, kind: str = "generate") -> TryStatus:
    """Submit a try as the page does and let rq run it as a worker would; its status after."""
    try_id = api.submit_try(conversion_id, TOKEN, "alice", kind, {"text": "hello"})
    assert tokens.exists(redis, try_id)  # kept for the worker while the try waits
    _work(redis)
    status = api.try_status(try_id, "alice")
    assert not tokens.exists(redis, try_id), "the try's token outlived it"
    assert not workdirs.path_for(try_id).exists(), "the try's folder outlived it"
    assert TOKEN not in (status.error or "")
    return status


def test_a_try_of_another_users_job_is_refused_before_anything_is_queued(redis):
    _conversion(redis, "cv-alices", user="alice")
    before = queues.queue(settings.TRY_QUEUE, redis).count
    with pytest.raises(UserInputError, match="That conversion is gone"):
        api.submit_try("cv-alices", TOKEN, "bob", "generate", {"text": "hello"})
    assert queues.queue(settings.TRY_QUEUE, redis).count == before
    assert not [key for key in redis.scan_iter("coreml:token:*")]  # bob's token was never stored


@pytest.mark.parametrize(("meta", "kind", "message"), [
    ({"pushed": False}, "generate", "pushed nothing: there is no package to try"),
    ({}, "classify", "There is no try-it for text-generation yet"),
    ({"report": {"task": "text-generation", "tokenizer_missing": "the repo has no tokenizer files",
                 "packages": [{"path": "model.mlpackage"}]}}, "generate", "the repo has no tokenizer files"),
    ({"report": {"task": "text-generation", "packages": []}}, "generate", "names no package: convert it again"),
])
def test_a_try_that_cannot_run_says_why_and_leaves_nothing(redis, meta, kind, message):
    job_id = f"cv-cannot-{time.time_ns():x}"
    _conversion(redis, job_id, **meta)
    if meta.get("pushed") is False:  # the page offers no try then; the worker checks again
        redis_meta = queues.fetch_job(job_id, redis)
        redis_meta.meta["pushed"] = True
        redis_meta.save_meta()
        submitted = api.submit_try(job_id, TOKEN, "alice", kind, {"text": "hello"})
        redis_meta.meta["pushed"] = False  # unpushed by the time the worker takes it
        redis_meta.save_meta()
        _work(redis)
        status = api.try_status(submitted, "alice")
        assert not tokens.exists(redis, submitted) and not workdirs.path_for(submitted).exists()
    else:
        status = _run_try(redis, job_id, kind)
    assert status.state == "failed" and message in status.error, status


def test_a_try_that_fails_on_our_side_says_so_without_the_token(redis, monkeypatch):
    _conversion(redis, "cv-our-side")

    def broken(repo_id, token):
        raise RuntimeError(f"connection reset while sending {token}")

    monkeypatch.setattr(try_it, "confirm_access", broken)
    status = _run_try(redis, "cv-our-side")
    assert status.state == "failed"
    assert status.error == "Trying the package failed on our side (RuntimeError). Try again, or report it."


def _repo(cache, name: str, size: int, age: float):
    folder = cache / f"models--alice--{name}" / "blobs"
    folder.mkdir(parents=True)
    (folder / "weights").write_bytes(b"\0" * size)
    stamp = time.time() - age
    os.utime(folder.parent, (stamp, stamp))
    return folder.parent


def test_the_shared_cache_keeps_the_most_recently_used_repos_within_count_and_bytes(tmp_path):
    cache = tmp_path / "try-cache"
    repos = [_repo(cache, f"repo-{age}", 1000, age) for age in range(try_it.CACHE_KEEP + 2)]  # repo-0 newest
    (cache / "not-a-repo").mkdir()
    try_it._prune(cache, budget=None)
    assert [r.exists() for r in repos] == [True] * try_it.CACHE_KEEP + [False, False]
    assert (cache / "not-a-repo").is_dir()  # only huggingface_hub's repo folders are pruned

    try_it._prune(cache, budget=2500)  # two repos' bytes fit; the third passes the budget
    assert [r.exists() for r in repos[:4]] == [True, True, False, False]

    big = _repo(cache, "big", 5000, -10)  # the newest, alone over the budget: kept, the rest go
    try_it._prune(cache, budget=2500)
    assert big.exists() and not any(r.exists() for r in repos)


def _queued_conversion(redis) -> str:
    """A conversion queued as api.submit queues it (the Hub's checks before it left out)."""
    spec = JobSpec.build("alice/source", token=TOKEN, task="fill-mask", user="alice")
    job_id = f"cv-waiting-{time.time_ns():x}"
    tokens.store(redis, job_id, spec.token)
    queues.queue(spec.queue_name, redis).enqueue("worker.job.run", kwargs={"spec": spec.to_json()}, job_id=job_id,
                                                 meta={"user": "alice", "stage": "queued"})
    return job_id


def _ended(redis, job_id: str):
    _work(redis)
    status = api.status(job_id)
    assert status.state == "failed" and TOKEN not in (status.error or ""), status
    assert not tokens.exists(redis, job_id) and not workdirs.path_for(job_id).exists()
    return status


def test_a_job_whose_token_expired_while_it_waited_says_submit_again(redis):
    job_id = _queued_conversion(redis)
    tokens.delete(redis, job_id)  # its time in Redis ran out before a worker took it
    status = _ended(redis, job_id)
    assert status.error == "This job's token has expired (jobs keep it for a limited time). Submit it again."


def test_a_worker_with_another_secret_key_says_which_setting_to_align(redis, monkeypatch):
    job_id = _queued_conversion(redis)
    monkeypatch.setenv(tokens.KEY_ENV, Fernet.generate_key().decode())  # this worker's key is not the app's
    status = _ended(redis, job_id)
    assert f"set the same {tokens.KEY_ENV} on the app and on every worker" in status.error
    assert status.error.endswith("Nothing was pushed.")


# ---------------------------------------------------------------- a photo try, end to end in the worker


@pytest.fixture(scope="module")
def image_text_hub(tmp_path_factory):
    """A local Hub with a tiny CLIP and its two pushed packages (converted unvalidated: the
    conversion's own checks are test_vision_kinds.py's), and the conversion's report."""
    from converters.export import convert
    from converters.options import ConversionOptions
    from tests.hub_server import LocalHub
    from tests.kind_models import build_kind

    root = tmp_path_factory.mktemp("image-text")
    folder = build_kind("clip", root / "clip")
    result = convert(str(folder), "zero-shot-image-classification", root / "out", ConversionOptions(), validate=False)
    hub = LocalHub()
    hub.start()
    yield (hub, *_pushed(hub, "alice/clip", folder, result, root / "out"))
    hub.stop()


def _pushed(hub, repo: str, folder, result, out) -> tuple[str, dict]:
    """alice's `repo` (the source `folder`) and `repo`-coreml holding the conversion's packages, on
    the local `hub`: the pushed commit, and the report as the job's status holds it (the packages
    named as in the repo)."""
    hub.add_user("alice", TOKEN)
    hub.add_repo_from_folder(repo, folder)
    commit = hub.add_repo(
        f"{repo}-coreml", {path.relative_to(out).as_posix(): path.read_bytes()
                           for package in result.packages for path in package.rglob("*") if path.is_file()})
    report = dict(result.report_json)
    report["packages"] = [{**entry, "path": os.path.relpath(entry["path"], out)} for entry in report["packages"]]
    return commit, report


def test_a_photo_try_scores_labels_with_both_packages(redis, image_text_hub, monkeypatch):
    """A zero-shot try in a worker: it fetches both packages of the pushed commit (image and text
    encoders) and the source, and answers with each label's probability from both sides."""
    import base64
    import io

    from PIL import Image

    hub, commit, report = image_text_hub
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    _conversion(redis, "cv-clip", model="alice/clip", push_target="alice/clip-coreml", report=report,
                links={"commit": f"{hub.url}/alice/clip-coreml/commit/{commit}"})
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (200, 30, 30)).save(buffer, format="PNG")
    with pytest.raises(UserInputError, match="too large to try here"):
        api.submit_try("cv-clip", TOKEN, "alice", "zero-shot", {"text": "a\nb", "photo": "A" * (12 * 2**20)})
    try_id = api.submit_try("cv-clip", TOKEN, "alice", "zero-shot",
                            {"text": "a red square\na blue sky", "photo": base64.b64encode(buffer.getvalue()).decode()})
    _work(redis)
    status = api.try_status(try_id, "alice")
    assert status.state == "finished", status.error
    result = status.result
    assert result["kind"] == "zero-shot"
    ours, theirs = dict(result["package"]["probabilities"]), dict(result["pytorch"]["probabilities"])
    assert set(ours) == {"a red square", "a blue sky"} and all(abs(ours[k] - theirs[k]) < 5e-3 for k in ours)
    assert not tokens.exists(redis, try_id) and not workdirs.path_for(try_id).exists()


# ---------------------------------------------------------------- a Core AI try, end to end in the worker


@pytest.fixture(scope="module")
def core_ai_classifier_hub(tmp_path_factory):
    """A local Hub with a tiny classifier (its head saved and decided, x100) and its pushed Core AI
    package (.aimodel), converted unvalidated: the conversion's own checks are test_coreai.py's."""
    from converters.export import convert
    from converters.options import ConversionOptions
    from tests.hub_server import LocalHub
    from tests.test_compressed_validation import _tiny_classifier

    root = tmp_path_factory.mktemp("core-ai-classifier")
    folder = _tiny_classifier(root / "classifier")
    result = convert(str(folder), "text-classification", root / "out", ConversionOptions.from_strings(format="coreai"),
                     validate=False)
    assert [package.suffix for package in result.packages] == [".aimodel"]
    hub = LocalHub()
    hub.start()
    yield (hub, *_pushed(hub, "alice/classifier", folder, result, root / "out"))
    hub.stop()


def test_a_core_ai_package_is_tried_in_a_worker_as_pytorch_labels_it(redis, core_ai_classifier_hub, monkeypatch):
    """A try of a pushed .aimodel in a worker: fetched from the commit, run in coreai-core's own
    runtime, its label PyTorch's and each score within 0.01; token and folder gone after."""
    hub, commit, report = core_ai_classifier_hub
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    _conversion(redis, "cv-core-ai", model="alice/classifier", push_target="alice/classifier-coreml", report=report,
                links={"commit": f"{hub.url}/alice/classifier-coreml/commit/{commit}"})
    status = _run_try(redis, "cv-core-ai", kind="classify")
    assert status.state == "finished", status.error
    result = status.result
    assert result["kind"] == "classify" and result["mode"] == "coreai"
    ours, theirs = dict(result["package"]["scores"]), dict(result["pytorch"]["scores"])
    assert set(ours) == set(theirs) == {"negative", "neutral", "positive"}
    assert result["package"]["label"] == result["pytorch"]["label"] and max(theirs.values()) > 0.6
    assert all(abs(ours[label] - theirs[label]) < 0.01 for label in ours), (ours, theirs)
