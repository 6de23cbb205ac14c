"""The job service's parts, without Redis or worker processes: the job spec, the token
store, the model card, progress, size limits, crash-detection timing, and the push's
all-or-nothing rule (against the local Hub)."""

from __future__ import annotations

import json
import re
import stat

import pytest
from cryptography.fernet import Fernet

from converters.errors import UserInputError
from converters.options import ConversionOptions
from tests.conftest import OWNER, OWNER_TOKEN
from worker import card, hub, progress, tokens
from worker.resolve import check_size
from worker.spec import PULL_REQUEST, JobSpec

# ---------------------------------------------------------------------- spec


def build(model="alice/tiny-bert", **kwargs) -> JobSpec:
    kwargs.setdefault("token", "hf_secret_value")
    return JobSpec.build(model, **kwargs)


def test_spec_reads_urls_aliases_and_loose_values():
    spec = build("https://huggingface.co/alice/tiny-bert/tree/v1.0", task="masked-lm", push="PR",
                 options={"precision": "fp32", "sequence_length": 64, "minimum_deployment_target": "ios18"})
    assert (spec.repo_id, spec.revision, spec.task) == ("alice/tiny-bert", "v1.0", "fill-mask")
    assert spec.options == ConversionOptions.from_strings(precision="float32", sequence_length="64", minimum_deployment_target="iOS18")
    assert spec.push.kind == PULL_REQUEST and spec.push_repo_id == "alice/tiny-bert"
    assert build(private=True, user="bob").push_repo_id == "bob/tiny-bert-coreml"
    assert build(push="pull-request", private=True).push.private is None  # a PR has no visibility of its own
    assert build(runner="macos").queue_name == "macos" and build().queue_name == "default"


def test_a_gated_or_private_source_is_pushed_private_unless_the_user_chose():
    follow = build(user="bob")
    assert follow.push.private is None  # nothing chosen: follow the source
    assert follow.private_for(source_gated=True, source_private=False) is True
    assert follow.private_for(source_gated=False, source_private=True) is True
    assert follow.private_for(source_gated=False, source_private=False) is False
    assert build(user="bob", private=False).private_for(True, False) is False  # an explicit choice stands
    assert build(user="bob", private=True).private_for(False, False) is True
    assert JobSpec.from_json(follow.to_json()).push.private is None  # kept as "not chosen" through the queue


def test_the_default_repo_name_carries_the_variant():
    def name(**options):
        return build(user="bob", options=options).push_repo_id

    assert name() == "bob/tiny-bert-coreml"
    assert name(quantize="int4", kv_cache="stateful", minimum_deployment_target="iOS18") == "bob/tiny-bert-int4-stateful-coreml"
    assert name(precision="float32") == "bob/tiny-bert-float32-coreml"
    assert name(format="coreai") == "bob/tiny-bert-coreai" and name(format="both") == "bob/tiny-bert-coreml-coreai"
    assert build("alice/tiny-coreml", user="bob").push_repo_id == "bob/tiny-coreml"  # no "-coreml-coreml"
    # Different variants of one model never share a default repo.
    variants = [{}, {"quantize": "int8"}, {"quantize": "int4", "minimum_deployment_target": "iOS18"},
                {"precision": "float32"}, {"kv_cache": "stateful", "minimum_deployment_target": "iOS18"}]
    assert len({name(**v) for v in variants}) == len(variants)


def test_spec_json_round_trip_never_carries_the_token():
    spec = build(user=OWNER, push_repo="alice/out", private=True, push_even_if_invalid=True,
                 options={"sequence_length": "1-512", "naming": "exporters"})
    data = spec.to_json()
    assert "hf_secret_value" not in json.dumps(data) and "hf_secret_value" not in repr(spec)
    again = JobSpec.from_json(json.loads(json.dumps(data)))
    assert again == spec and again.token is None
    assert JobSpec.from_json(data, token="t").token == "t"


def test_every_engine_option_is_accepted_and_kept():
    from dataclasses import fields

    spec = build(user=OWNER, options={f.name: None for f in fields(ConversionOptions)})
    assert spec.options == ConversionOptions()  # empty values mean the defaults
    assert set(spec.to_json()["options"]) == {f.name for f in fields(ConversionOptions)}


def test_job_id_is_deterministic_and_rq_safe():
    spec = build(user=OWNER, task="fill-mask")
    assert spec.job_id() == build(user=OWNER, task="fill-mask", token="another-token").job_id()
    assert spec.job_id() == build(user=OWNER, task="fill-mask", runner="macos").job_id()
    different = [
        build(user="bob", task="fill-mask"),
        build(user=OWNER, task="fill-mask", revision="v2"),
        build(user=OWNER, task="fill-mask", options={"sequence_length": "64"}),
        build(user=OWNER, task="fill-mask", push="pull-request"),
        build(user=OWNER, task="fill-mask", push_repo="alice/elsewhere"),
        build("alice/other", user=OWNER, task="fill-mask"),
    ]
    assert len({spec.job_id(), *(s.job_id() for s in different)}) == 1 + len(different)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", spec.job_id())
    with pytest.raises(ValueError):
        build().job_id()  # the user must be known first


def test_spec_refuses_bad_user_names():
    with pytest.raises(UserInputError, match="not a valid Hub user name"):
        build(user="no spaces allowed")


# ---------------------------------------------------------------------- tokens


class FakeRedis:
    """Just the four commands the token store uses."""

    def __init__(self):
        self.data, self.ttl = {}, {}

    def set(self, key, value, ex=None):
        self.data[key], self.ttl[key] = value, ex

    def get(self, key):
        return self.data.get(key)

    def delete(self, key):
        self.data.pop(key, None)

    def exists(self, key):
        return int(key in self.data)


def test_token_is_stored_encrypted_with_a_ttl_and_deleted(monkeypatch, tmp_path):
    monkeypatch.setenv("COREML_CONVERTER_STATE_DIR", str(tmp_path))
    monkeypatch.setenv(tokens.KEY_ENV, Fernet.generate_key().decode())
    redis = FakeRedis()
    tokens.store(redis, "cv-1", OWNER_TOKEN)
    (stored,) = redis.data.values()
    assert OWNER_TOKEN.encode() not in stored and redis.ttl["coreml:token:cv-1"] > 0
    assert tokens.load(redis, "cv-1") == OWNER_TOKEN
    monkeypatch.setenv(tokens.KEY_ENV, Fernet.generate_key().decode())  # a worker with another key
    with pytest.raises(tokens.SecretKeyMismatch, match="same COREML_CONVERTER_SECRET_KEY"):
        tokens.load(redis, "cv-1")
    tokens.delete(redis, "cv-1")
    assert tokens.load(redis, "cv-1") is None and not tokens.exists(redis, "cv-1")


def test_server_key_file_is_created_once_with_owner_only_permissions(monkeypatch, tmp_path):
    monkeypatch.setenv("COREML_CONVERTER_STATE_DIR", str(tmp_path))
    monkeypatch.delenv(tokens.KEY_ENV, raising=False)
    key = tokens.server_key()
    assert tokens.server_key() == key
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    Fernet(key)  # a valid key


# ---------------------------------------------------------------------- card

REPORT = {
    "task": "fill-mask",
    "options": {"precision": "float16", "sequence_length": "8", "minimum_deployment_target": "iOS17",
                "naming": "swift-transformers"},
    "packages": [{"path": "m.mlpackage", "inputs": [{"name": "input_ids", "shape": [1, 8]}],
                  "outputs": [{"name": "token_scores"}]}],
    "versions": {"coremltools": "9.0"},
}


def card_for(validation: dict) -> str:
    return card.model_card(source_repo="alice/m", revision="0123456789abcdef", source_url="http://hub/alice/m",
                           report={**REPORT, "validation": validation}, package_paths=["m.mlpackage"])


def test_card_of_a_validated_package():
    text = card_for({"passed": True, "kind": "reference executor", "message": "all 1 checks passed", "checks": [
        {"package": "model", "output": "token_scores", "mode": "fp16", "metric": "psnr_db", "value": 75.83249,
         "threshold": 30.0, "passed": True}]})
    front, body = text.split("\n---\n", 1)
    assert "base_model: alice/m" in front and "pipeline_tag: fill-mask" in front and "unvalidated" not in front
    assert body.lstrip().startswith("# Core ML conversion of alice/m")
    assert "| model | `token_scores` | fp16 | psnr_db | 75.83 | 30 | pass |" in body
    assert "`input_ids` [1, 8]" in body and "```swift" in body


@pytest.mark.parametrize("validation, first_line", [
    ({"passed": False, "checks": [{"metric": "max_abs_diff", "value": "inf", "threshold": 0.05, "passed": False}]},
     "> **Warning: this Core ML package FAILED validation**"),
    ({"passed": None, "skipped": True, "message": "not validated"}, "> **Warning: this Core ML package was NOT validated**"),
])
def test_card_of_a_package_pushed_anyway_says_so_first(validation, first_line):
    front, body = card_for(validation).split("\n---\n", 1)
    assert "- unvalidated" in front and body.lstrip().startswith(first_line)


def test_pipeline_tags_and_titles():
    assert card.pipeline_tag("semantic-segmentation") == "image-segmentation"
    assert card.pipeline_tag("feature-extraction", "vision") == "image-feature-extraction"
    assert card.conversion_title("fill-mask", REPORT["options"]) == (
        "Add Core ML conversion (fill-mask, float16, sequence length 8, iOS17, swift-transformers naming)")
    stateful = {**REPORT["options"], "kv_cache": "stateful"}
    assert card.conversion_title("text-generation", {**stateful, "kv_cache": "none"}) != card.conversion_title(
        "text-generation", stateful)


# ---------------------------------------------------------------------- progress


class FakeJob:
    def __init__(self):
        self.meta, self.saved = {}, 0

    def save_meta(self):
        self.saved += 1


def test_progress_writes_stage_percent_log_tail_and_redacts():
    job = FakeJob()
    reporter = progress.JobProgress(job, progress.Redactor("hf_secret_value"))
    reporter.stage("convert", "Converting")
    reporter.update(0.5, "halfway with hf_secret_value in a message")
    assert job.meta["stage"] == "convert" and 15 < job.meta["percent"] < 70
    assert "stage_started_at" in job.meta and job.saved >= 1
    for i in range(80):
        reporter.log(f"line {i}")
    assert len(job.meta["log"]) == progress.LOG_LINES and job.meta["log"][-1].endswith("line 79")
    assert "hf_secret_value" not in json.dumps(job.meta)
    reporter.stage("done", "Done")
    assert job.meta["percent"] == 100


def test_a_new_log_line_is_saved_at_once_and_a_bare_percent_is_throttled():
    """A line written just before a long step must reach the page before that step ends."""
    job = FakeJob()
    reporter = progress.JobProgress(job, progress.Redactor())
    reporter.stage("convert", "Converting")
    saved = job.saved
    reporter.update(0.1, "Reading the model")
    reporter.update(0.2, "Converting model")  # within the throttle interval: saved all the same
    assert job.saved == saved + 2
    reporter.update(0.3)
    reporter.update(0.4)
    assert job.saved <= saved + 3  # percents alone: at most one more save in the interval


# ---------------------------------------------------------------------- limits and timing


def test_size_limits(monkeypatch):
    monkeypatch.setenv("COREML_CONVERTER_MAX_PARAMS", "1000000")
    monkeypatch.setenv("COREML_CONVERTER_MAX_BYTES", "3000000")
    check_size("a/small", 900_000, 1_800_000)
    with pytest.raises(UserInputError, match=r"1\.5 M parameters.*up to 1\.0 M parameters.*COREML_CONVERTER_MAX_PARAMS"):
        check_size("a/params", 1_500_000, 1_000)
    with pytest.raises(UserInputError, match=r"4\.0 MB of weights.*up to 3\.0 MB"):
        check_size("a/bytes", 900_000, 4_000_000)
    with pytest.raises(UserInputError, match=r"1\.2 M parameters"):
        check_size("a/no-count", None, 2_400_000)  # no parameter count: 2 bytes each at most
    monkeypatch.delenv("COREML_CONVERTER_MAX_PARAMS")
    from worker import capabilities

    total, _ = capabilities.memory_bytes()
    assert capabilities.parameter_limit() == int((total - capabilities.FIXED_BYTES) / capabilities.BYTES_PER_PARAMETER)
    if total >= 24e9 * 0.95:  # this machine (24 GB): a 7 B model (Llama-2-7B: 6.74 B parameters)
        assert capabilities.parameter_limit() > 6.74e9


def test_a_dead_workers_job_is_detected_within_two_minutes_with_the_defaults(monkeypatch):
    from worker import api
    from worker.runner import ConverterWorker, build_parser

    monkeypatch.delenv("COREML_CONVERTER_HEARTBEAT_GRACE", raising=False)
    worker = object.__new__(ConverterWorker)  # only the TTL arithmetic is exercised
    worker.job_monitoring_interval = build_parser().parse_args([]).job_monitoring_interval

    class Job:
        timeout = 3600

    # The registry entry expires this long after the last heartbeat; the app cleans up every few seconds.
    worst_case = worker.get_heartbeat_ttl(Job()) + worker.job_monitoring_interval + api.CLEANUP_INTERVAL
    assert worst_case < 120


# ---------------------------------------------------------------------- push: all or nothing


def test_a_failed_commit_deletes_the_repo_it_created(local_hub, monkeypatch, tmp_path):
    from huggingface_hub import HfApi, errors

    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    package = tmp_path / "out" / "m.mlpackage"
    package.mkdir(parents=True)
    (package / "Manifest.json").write_text("{}")
    files = hub.upload_plan(tmp_path / "out", [package], None)
    assert list(files) == ["m.mlpackage/Manifest.json"]

    def refuse(self, *args, **kwargs):
        from huggingface_hub.utils import httpx  # the HTTP client huggingface_hub itself uses

        response = httpx.Response(403, request=httpx.Request("POST", local_hub.url))
        raise errors.HfHubHTTPError("403 Forbidden", response=response)

    monkeypatch.setattr(HfApi, "create_commit", refuse)
    with pytest.raises(UserInputError, match="may not write to alice/half-written.*Nothing was pushed"):
        hub.push_new_repo(token=OWNER_TOKEN, repo_id="alice/half-written", private=False, files=files,
                          readme="# card", commit_message="Add", replace_folders=["m.mlpackage"])
    assert "alice/half-written" not in local_hub.repo_ids()

    # A repo that existed before is left as it was.
    local_hub.add_repo("alice/existing-target", {"README.md": "mine"})
    with pytest.raises(UserInputError):
        hub.push_new_repo(token=OWNER_TOKEN, repo_id="alice/existing-target", private=False, files=files,
                          readme="# card", commit_message="Add", replace_folders=["m.mlpackage"])
    assert local_hub.files("alice/existing-target") == {"README.md": b"mine"}


def test_a_new_push_replaces_the_previous_package_folder(local_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    local_hub.add_repo("alice/replace-target", {"m.mlpackage/stale.bin": b"old", "m.mlpackage/Manifest.json": "{}",
                                                "notes.txt": "kept"})
    package = tmp_path / "out" / "m.mlpackage"
    package.mkdir(parents=True)
    (package / "Manifest.json").write_text('{"new": true}')
    result = hub.push_new_repo(token=OWNER_TOKEN, repo_id="alice/replace-target", private=False,
                               files=hub.upload_plan(tmp_path / "out", [package], None), readme="# card",
                               commit_message="Add", replace_folders=["m.mlpackage"])
    assert not result.created_repo
    files = local_hub.files("alice/replace-target")
    assert set(files) == {"m.mlpackage/Manifest.json", "notes.txt", "README.md"}
    assert files["m.mlpackage/Manifest.json"] == b'{"new": true}'


def test_conversion_title_names_options_that_differ_from_their_defaults():
    from converters.options import ConversionOptions
    from worker.card import conversion_title

    plain = conversion_title("fill-mask", ConversionOptions.from_strings(sequence_length=8).to_dict())
    assert plain == "Add Core ML conversion (fill-mask, float16, sequence length 8, iOS17, swift-transformers naming)"
    tuned = ConversionOptions.from_strings(sequence_length=64, minimum_deployment_target="iOS18", kv_cache="stateful", tolerance="loose")
    title = conversion_title("text-generation", tuned.to_dict())
    assert title.endswith("swift-transformers naming, kv cache stateful, tolerance loose)")


# ---------------------------------------------------------------------- worker log


def test_an_expected_job_ending_is_one_log_line_and_a_crash_keeps_its_traceback(caplog):
    """A failed validation or a request to fix ends the job as its message says: the worker
    logs one INFO line, no traceback; an unexpected exception still goes to rq's ERROR log."""
    import logging
    import sys
    import types

    from worker.job import JobFailed
    from worker.runner import ConverterWorker

    worker = ConverterWorker.__new__(ConverterWorker)  # no Redis: only the logging is exercised
    worker.log, worker.name, worker._exc_handlers = logging.getLogger("rq.worker"), "w1", []
    job = types.SimpleNamespace(id="cv-1", func_name="worker.job.run", args=(), kwargs={}, origin="default")
    caplog.set_level(logging.INFO, logger="rq.worker")

    try:
        raise JobFailed("Validation failed.", expected=True)
    except JobFailed:
        worker.handle_exception(job, *sys.exc_info())
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("INFO", "job cv-1 ended: Validation failed.")]

    caplog.clear()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        worker.handle_exception(job, *sys.exc_info())
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors and "Traceback" in errors[0].getMessage() and "boom" in errors[0].getMessage()


def test_removing_the_repos_other_packages_is_asked_for_and_kept_through_the_queue():
    spec = build(user="bob", remove_others=True)
    assert spec.push.remove_others and JobSpec.from_json(spec.to_json()).push.remove_others
    assert not build(user="bob").push.remove_others
    assert not build(push="pull-request", remove_others=True).push.remove_others  # a pull request removes nothing


def test_where_the_result_goes_is_checked_from_the_account_before_any_work():
    from worker.api import check_push_access

    def account(role="write", orgs=()):
        return {"name": "bob", "orgs": [{"name": n, "roleInOrg": r} for n, r in orgs],
                "auth": {"accessToken": {"role": role}}}

    with pytest.raises(UserInputError, match="may not create or write to bob/tiny-bert-coreml: it is read-only"):
        check_push_access(build(user="bob"), account(role="read"))
    with pytest.raises(UserInputError, match="may not open a pull request on alice/tiny-bert: it is read-only"):
        check_push_access(build(user="bob", push="pull-request"), account(role="read"))
    with pytest.raises(UserInputError, match="carol is not your account or one of your organisations"):
        check_push_access(build(user="bob", push_repo="carol/x"), account())
    with pytest.raises(UserInputError, match="your role in team is read-only"):
        check_push_access(build(user="bob", push_repo="team/x"), account(orgs=[("team", "read")]))
    check_push_access(build(user="bob", push="pull-request"), account())  # a write token may open one


# ---------------------------------------------------------------------- packages kept after a failed push


def test_kept_packages_fit_their_budget_oldest_first_and_expire(monkeypatch, tmp_path):
    import os
    import time

    from worker import kept

    monkeypatch.setenv("COREML_CONVERTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COREML_CONVERTER_KEPT_TTL", "3600")
    out = tmp_path / "out"
    (out / "m.mlpackage" / "Data").mkdir(parents=True)
    (out / "m.mlpackage" / "Data" / "weight.bin").write_bytes(os.urandom(4000))  # incompressible
    monkeypatch.setenv("COREML_CONVERTER_KEPT_BYTES", "10000")
    first = kept.keep("cv-1", out, ["m.mlpackage"], "alice/x")
    assert first["file"] == "alice-x.zip" and first["size_bytes"] > 4000 and kept.path_for("cv-1")
    old = time.time() - 60
    os.utime(kept.folder("cv-1"), (old, old))
    kept.keep("cv-2", out, ["m.mlpackage"], "y")
    kept.keep("cv-3", out, ["m.mlpackage"], "z")  # over the budget: the oldest (cv-1) goes
    assert kept.path_for("cv-1") is None and kept.path_for("cv-2") and kept.path_for("cv-3")
    monkeypatch.setenv("COREML_CONVERTER_KEPT_BYTES", "100")
    assert kept.keep("cv-4", out, ["m.mlpackage"], "w") is None and not kept.folder("cv-4").exists()  # alone too big
    assert kept.sweep() == [] and sorted(kept.sweep(now=time.time() + 3601)) == ["cv-2", "cv-3"]
    assert not list(kept.root().iterdir())


def test_a_job_status_is_typed_and_round_trips_through_json():
    """api.status's JobStatus: enums for its state and error kind, typed links and kept package,
    and the same data back from its JSON (a newer service's unknown state or kind stays a string)."""
    from worker.states import ErrorKind, JobState
    from worker.status import JobStatus, KeptPackage, Links

    status = JobStatus("cv-1", JobState.FAILED, stage="push", percent=90, log=["12:00:00 Pushing"], user="alice", model="alice/m",
                       options={"precision": "float16"}, links=Links(repo="http://hub/alice/m-coreml"),
                       error="The Hub refused the push.", error_kind=ErrorKind.USER_INPUT, user_error=True,
                       kept_package=KeptPackage("m-coreml.zip", 6, "2026-11-25T12:00:00+00:00"),
                       validation={"passed": True, "checks": []})
    data = json.loads(json.dumps(status.to_dict()))
    assert data["state"] == "failed" and data["links"] == {"repo": "http://hub/alice/m-coreml"}
    assert data["kept_package"] == {"file": "m-coreml.zip", "size_bytes": 6, "expires_at": "2026-11-25T12:00:00+00:00"}
    again = JobStatus.from_dict(data)
    assert again == status and again.state is JobState.FAILED and again.error_kind is ErrorKind.USER_INPUT
    assert again.validation_report.passed is True and again.requested_options == {"precision": "float16"}
    assert not again.active and again.owned_by("alice") and not again.owned_by("bob") and JobStatus("cv-2").owned_by("bob")
    newer = JobStatus.from_dict({"job_id": "cv-3", "state": "paused", "error_kind": "quota"})
    assert (newer.state, newer.error_kind, newer.links, newer.kept_package) == ("paused", "quota", Links(), None)


def test_the_convert_stage_names_the_format_asked_for():
    """Issue 24's walk-through: a Core AI job's log said "Converting to Core ML"."""
    from worker.job import converting_words

    assert converting_words("coreai") == "Converting to Core AI"
    assert converting_words("coreml") == converting_words(None) == "Converting to Core ML"
    assert converting_words("both") == "Converting to Core ML + Core AI"


def test_the_public_report_carries_the_models_config_not_the_path(tmp_path):
    """The page's device fit reads the model's config from the job's report (as the form and the
    card do); the report still names no path of the worker's machine."""
    from converters.report import ConversionReport
    from worker.job import public_report

    config = {"model_type": "llama", "hidden_size": 576, "vocab_size": 49152}
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = ConversionReport.from_json({"source": {"path": str(tmp_path), "id": "alice/tiny"}, "task": "text-generation"})
    public = public_report(report, tmp_path / "out")
    assert public["source_config"] == config and str(tmp_path) not in json.dumps(public)
