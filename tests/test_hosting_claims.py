"""Claims of the shared-service design (SECURITY.md) that no other test pinned: the compose
workers serve the tries queue, first; a try of a gated or private model leaves neither its
files nor its package in the shared Try it cache; every setting is in the deployment guide;
a job's download has a byte limit by default."""

from __future__ import annotations

import re

import pytest

from tests.conftest import OWNER, OWNER_TOKEN
from tests.e2e.harness import RedisServer
from tests.test_deployment import ROOT, compose, worker_args
from tests.test_worker_in_process import InProcessWorker  # rq's in-process worker, shut down as ours are
from worker import queues, settings


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield queues.connect(server.url)
    server.stop()



# ---------------------------------------------------------------- tries have their own queue, served first

ran: list[str] = []


def record(name: str) -> None:
    ran.append(name)


def test_a_compose_worker_takes_a_try_before_the_conversions_queued_ahead_of_it(redis):
    """A worker that listened to 'default' only would leave every try waiting for ever."""
    listens = worker_args(compose()["services"]["worker"]["command"])
    assert listens[0] == settings.TRY_QUEUE and settings.GENERAL_QUEUE in listens, listens
    for index in range(3):
        queues.queue(settings.GENERAL_QUEUE, redis).enqueue("tests.test_hosting_claims.record", f"conversion {index}")
    queues.queue(settings.TRY_QUEUE, redis).enqueue("tests.test_hosting_claims.record", "try")
    ran.clear()
    InProcessWorker(listens, connection=redis, serializer=queues.SERIALIZER).work(burst=True)
    assert ran == ["try", "conversion 0", "conversion 1", "conversion 2"]


# ---------------------------------------------------------------- a job runs only our functions


def test_a_job_naming_a_function_that_is_not_ours_is_refused_without_running_it(redis):
    """rq imports whatever function (and callbacks) a job's hash names: our workers refuse the
    rest, so a Redis write is not a way to run code on them."""
    from rq import Callback

    from worker.queues import ServiceJob
    from worker.runner import ConverterSpawnWorker, ConverterWorker

    assert ConverterWorker.job_class is ServiceJob and ConverterSpawnWorker.job_class is ServiceJob
    foreign = queues.queue(settings.GENERAL_QUEUE, redis).enqueue(
        "tests.test_hosting_claims.record", "a stranger's code", on_failure=Callback("tests.test_hosting_claims.record"))
    ran.clear()
    InProcessWorker([settings.GENERAL_QUEUE], connection=redis, serializer=queues.SERIALIZER,
                    job_class=ServiceJob).work(burst=True)
    assert ran == []  # neither the function nor its failure callback ran
    job = ServiceJob.fetch(foreign.id, connection=redis, serializer=queues.SERIALIZER)
    assert job.get_status() == "failed" and "not one of this service's functions: refused" in job.latest_result().exc_string
    ours = ServiceJob.create("worker.job.run", connection=redis, serializer=queues.SERIALIZER,
                             on_failure=Callback("worker.lifecycle.on_failure"))
    from worker import job as job_module, lifecycle

    assert ours.func is job_module.run and ours.failure_callback is lifecycle.on_failure


# ---------------------------------------------------------------- the shared Try it cache


def _finished_conversion(redis, job_id: str, source: str, package_repo: str, commit: str, restricted: bool) -> None:
    """A pushed conversion as the worker leaves it in Redis (only what a try reads)."""
    meta = {"user": OWNER, "pushed": True, "model": source, "push_target": package_repo,
            "source_restricted": restricted, "links": {"commit": f"https://hub/{package_repo}/commit/{commit}"},
            "report": {"task": "text-generation", "packages": [{"path": "m.mlpackage", "size_bytes": 2}]}}
    queue = queues.queue(settings.GENERAL_QUEUE, redis)
    queue.enqueue("builtins.print", job_id=job_id, meta=meta)
    queue.remove(job_id)  # not to be run: it stands for a finished one


@pytest.mark.parametrize("source, restricted", [(f"{OWNER}/secret-bert", True), (f"{OWNER}/gated-bert", True),
                                                (f"{OWNER}/tiny-bert", False)])
def test_a_try_of_a_gated_or_private_model_leaves_nothing_of_it_in_the_shared_cache(
        redis, local_hub, tmp_path, monkeypatch, source, restricted):
    from worker import try_it

    for key, value in local_hub.client_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COREML_CONVERTER_STATE_DIR", str(tmp_path / "state"))
    package_repo = f"{source}-try-package"
    commit = local_hub.add_repo(package_repo, {"m.mlpackage/Manifest.json": "{}"}, private=restricted)
    job_id = f"cv-{source.replace('/', '-')}"
    _finished_conversion(redis, job_id, source, package_repo, commit, restricted)
    seen = {}

    def run(kind, packages, source_folder, inputs, mode, progress):  # the model run is not what is tested here
        seen.update(package=len(packages) == 1 and packages[0].is_dir(), source=(source_folder / "model.safetensors").is_file())
        return {"kind": kind}

    monkeypatch.setattr(try_it.try_it, "run", run)
    assert try_it._try(redis, {"job_id": job_id, "kind": "generate", "inputs": {}}, OWNER_TOKEN,
                       lambda *_: None) == {"kind": "generate"}
    assert seen == {"package": True, "source": True}  # the try had both
    cached = sorted(p.name for p in try_it.cache_dir().iterdir() if p.name.startswith("models--"))
    kept = [f"models--{repo.replace('/', '--')}" for repo in (source, package_repo)]
    assert cached == ([] if restricted else sorted(kept))


# ---------------------------------------------------------------- the settings, documented


def _settings_named_in(path) -> set[str]:
    return set(re.findall(r"COREML_CONVERTER_[A-Z_]+[A-Z]", path.read_text()))


def test_every_setting_is_in_the_deployment_guide_and_every_limit_in_security_md():
    code = _settings_named_in(ROOT / "worker" / "settings.py")
    assert {"COREML_CONVERTER_USER_ACTIVE_JOBS", "COREML_CONVERTER_MAX_DOWNLOAD_BYTES"} <= code
    assert code - _settings_named_in(ROOT / "docs" / "deployment.md") == set()
    security = _settings_named_in(ROOT / "SECURITY.md")
    assert security - code - _settings_named_in(ROOT / "worker" / "tokens.py") == set()  # no setting that does not exist
    assert {"COREML_CONVERTER_USER_ACTIVE_JOBS", "COREML_CONVERTER_USER_TRIES_PER_HOUR", "COREML_CONVERTER_MAX_DOWNLOAD_BYTES", "COREML_CONVERTER_TRY_CACHE_BYTES",
            "COREML_CONVERTER_PUSH_LOCK_HOLD"} <= security
    readme = (ROOT / "README.md").read_text()
    deployment = readme.split("## Deployment", 1)[1].split("\n## ", 1)[0]
    assert "[SECURITY.md](SECURITY.md)" in deployment and "[docs/deployment.md](docs/deployment.md)" in deployment


def test_a_jobs_download_has_a_byte_limit_by_default(monkeypatch):
    monkeypatch.delenv("COREML_CONVERTER_MAX_DOWNLOAD_BYTES", raising=False)
    assert settings.max_download_bytes() == 40 * 10**9
    monkeypatch.setenv("COREML_CONVERTER_MAX_DOWNLOAD_BYTES", "0")  # an operator's choice: no limit
    assert settings.max_download_bytes() is None


# ---------------------------------------------------------------- a model without a tokenizer (issue 22)


def test_the_command_line_says_what_an_app_needs_when_the_repo_has_no_tokenizer(capsys):
    from converters.__main__ import print_outcome
    from converters.report import ConversionReport
    from converters.source_tokenizer import NO_FILES

    warning = f"No usable tokenizer in the repo ({NO_FILES}): checks use synthetic token ids; the continuation is compared on ids."
    report = {"task": "text-generation", "architecture": {"model_type": "qwen2", "family": "decoder", "tested": True},
              "validation": {"passed": True, "message": "", "checks": []}}
    assert print_outcome(ConversionReport.from_json({**report, "tokenizer_missing": NO_FILES, "warnings": [warning]})) == 0
    err = capsys.readouterr().err
    assert err.count("No usable tokenizer") == 1 and f"warning: {warning}" in err  # said once
    assert "note: an app needs this model's tokenizer" in err and "convert again with --hub-name naming that repo" in err
    print_outcome(ConversionReport.from_json(report))
    assert "tokenizer" not in capsys.readouterr().err  # a repo with a usable tokenizer: nothing said
