"""Waits that say what is happening: the job view's percent and log as the engine reports steps
within its long stages (worker/progress.py), a try's progress in its meta (worker/try_it.py),
and what a queued try waits for (worker/api.try_status), against a real redis-server.

The engine's own step messages are checked where a tiny conversion already runs:
test_continuation.py (conversion, validation, Try it) and test_calibrated_compression.py (GPTQ)."""

from __future__ import annotations

import pytest
from rq.job import JobStatus
from rq.worker import Worker

from tests.e2e.harness import RedisServer
from worker import api, capabilities, progress, queues, settings
from worker.job import _engine_progress
from worker.try_it import meta_progress


class FakeJob:
    def __init__(self):
        self.meta, self.saved = {}, 0

    def save_meta(self):
        self.saved += 1


def _engine_run(report) -> None:
    """The calls converters.export makes for a calibrated, validated conversion (shortened)."""
    report("resolve", 0.0, "Reading the model")
    report("load", 0.1, "Loading the PyTorch model")
    for layer in range(30):
        report("convert", round(0.12 + 0.38 * layer / 30, 4), f"Calibrating 4-bit weights (GPTQ): layer {layer + 1} of 30")
    for fraction, step in ((0.5, "exporting the PyTorch program"), (0.6, "converting to Core ML"), (0.8, "saving the package")):
        report("convert", fraction, f"Converting model: {step}")
    report("validate", 0.0, "Validating against PyTorch")
    for group in range(8):
        report("validate", group / 8, f"Validating: text, 128 tokens (fp16 emulation), {group + 1} of 8")
    report("validate", 1.0, "all 24 checks passed")


def test_the_page_percent_moves_through_long_stages_and_never_goes_back():
    job = FakeJob()
    reporter = progress.JobProgress(job, progress.Redactor())
    reporter.stage("convert", "Converting to Core ML")
    percents = []
    engine = _engine_progress(reporter)
    _engine_run(lambda *call: (engine(*call), percents.append(job.meta["percent"])))
    reporter.stage("validate", "Validation passed: all 24 checks.")  # the job's summary, after the engine
    percents.append(job.meta["percent"])
    assert percents == sorted(percents) and percents[-1] == progress.STAGES["package"]
    calibrating = percents[2:32]
    assert len(set(calibrating)) > 10  # GPTQ's minutes move the bar, not one parked percent
    validating = percents[-10:-1]
    assert validating[0] == progress.STAGES["validate"] and len(set(validating)) > 5


def test_counts_within_a_step_replace_their_log_line_and_are_saved_at_most_twice_a_second():
    job = FakeJob()
    reporter = progress.JobProgress(job, progress.Redactor())
    reporter.stage("convert", "Converting to Core ML")
    reporter.update(0.1, "Loading the PyTorch model")
    saved = job.saved
    for layer in range(30):
        reporter.update(0.12 + layer / 100, f"Calibrating 4-bit weights (GPTQ): layer {layer + 1} of 30")
    assert job.saved <= saved + 2  # the step's first line at once; its counts throttled (a test runs in < 0.5 s)
    assert job.meta["message"] == "Calibrating 4-bit weights (GPTQ): layer 30 of 30"
    lines = [line.split(" ", 1)[1] for line in job.meta["log"]]
    assert lines == ["Converting to Core ML", "Loading the PyTorch model", "Calibrating 4-bit weights (GPTQ): layer 30 of 30"]
    reporter.log("warning: something a library said")
    reporter.update(0.5, "Calibrating 4-bit weights (GPTQ): layer 30 of 30, done")  # after another line: its own
    reporter.update(0.6, "Converting model: exporting the PyTorch program")
    assert [line.split(" ", 1)[1] for line in job.meta["log"]][-3:] == [
        "warning: something a library said", "Calibrating 4-bit weights (GPTQ): layer 30 of 30, done",
        "Converting model: exporting the PyTorch program"]


def test_a_trys_progress_is_stored_for_the_page_and_its_counts_throttled():
    job = FakeJob()
    report = meta_progress(job, progress.Redactor("hf_secret"))
    report("Loading the PyTorch model", 0.0)
    for count in range(1, 17):
        report(f"PyTorch: {count} of 16 tokens", 0.2 * count / 16)
    report("Loading the package", 0.2)
    assert job.meta["progress"] == {"message": "Loading the package", "fraction": 0.2}
    assert job.saved <= 4  # each new step at once, the 16 counts within the interval: at most one more
    report("Reading hf_secret", 0.3)
    assert "hf_secret" not in job.meta["progress"]["message"]


# ---------------------------------------------------------------------- try_status, real Redis


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield api.connect(server.url)
    server.stop()


def _queued_try(redis, try_id: str, user: str = "alice"):
    return queues.queue(settings.TRY_QUEUE, redis).enqueue("builtins.print", job_id=try_id,
                                                           meta={"user": user, "kind": "try"})


def _worker(redis, name: str, monkeypatch) -> Worker:
    """A worker serving tries then conversions, announced as the runner does (its machine's
    description left out: reading it imports coremltools)."""
    monkeypatch.setattr(capabilities, "describe", lambda queue_names: {"queues": ",".join(queue_names)})
    worker = Worker([settings.TRY_QUEUE, settings.GENERAL_QUEUE], name=name, connection=redis,
                    serializer=queues.SERIALIZER)
    worker.register_birth()
    capabilities.announce(redis, name, worker.queue_names(), 60)
    return worker


def test_a_queued_try_says_what_it_waits_for_and_a_running_one_how_far_it_is(redis, monkeypatch):
    _queued_try(redis, "try-a-1", "bob")
    mine = _queued_try(redis, "try-a-2")
    status = api.try_status("try-a-2", "alice")
    assert (status.state, status.position, status.progress) == ("queued", 2, None)
    assert status.waiting_for == "no worker is running: the try waits until one starts"

    worker = _worker(redis, "w1", monkeypatch)
    assert api.try_status("try-a-2", "alice").waiting_for == "1 try ahead"
    conversion = queues.queue(settings.GENERAL_QUEUE, redis).enqueue("builtins.print", job_id="cv-1")
    worker.prepare_execution(conversion)
    assert api.try_status("try-a-2", "alice").waiting_for == "1 try ahead; a conversion is running on the only worker"

    queues.queue(settings.TRY_QUEUE, redis).remove("try-a-1")
    other = _worker(redis, "w2", monkeypatch)
    assert api.try_status("try-a-2", "alice").waiting_for == "a free worker is starting it"
    other.prepare_execution(queues.fetch_job("try-a-1", redis))
    assert api.try_status("try-a-2", "alice").waiting_for == "all 2 workers are busy (1 conversion, 1 try)"

    mine.meta["progress"] = {"message": "The package: 9 of 16 tokens", "fraction": 0.65}
    mine.save_meta()
    mine.set_status(JobStatus.STARTED)
    status = api.try_status("try-a-2", "alice")
    assert status.state == "running" and status.waiting_for is None
    assert status.progress == {"message": "The package: 9 of 16 tokens", "fraction": 0.65}
