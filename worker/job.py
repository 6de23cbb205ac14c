"""The job function rq runs: resolve -> download -> convert -> validate -> package -> push
-> cleanup, reporting each stage in the job's meta.

A job ends done or failed; a failure's kind (meta["error_kind"], an ErrorKind) is:
- done: pushed; the return value (and meta) hold the report and the links;
- the user's input cannot be served (`user_input`) or the package failed validation
  (`validation`): failed, with a message saying what to do, nothing pushed;
- the Hub is unavailable (`hub_unavailable`: 5xx, 429, timeout, unreachable): transient, so
  the job retries once (see HubRetry), then fails saying the Hub is unavailable, try again;
- our failure (`internal`): failed, with a short message; the trace goes to the worker log.
The token is read from its encrypted key, redacted from everything stored or logged,
and deleted, with the job's temp folder, however the job ends.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path

from converters import formats
from converters.errors import HubUnavailable, UserInputError
from converters.report import ConversionReport
from converters.source import HubReference, download

from . import card, hub, kept, settings, tokens, workdirs
from .conversion import convert_and_validate
from .lifecycle import timeout_message
from .repo_lock import repo_lock
from .progress import JobProgress, LogTailHandler, Redactor, now_iso
from .resolve import resolve
from .spec import PULL_REQUEST, JobSpec
from .states import ErrorKind

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """How a job ends when it cannot push: the message is safe to show (no token).
    `expected`: an outcome the message fully explains (a request to change, a failed
    validation, the Hub down), which the worker logs as one line, not as a crash."""

    def __init__(self, message: str, expected: bool = False):
        super().__init__(message)
        self.expected = expected


class ValidationFailed(Exception):
    """The package does not match PyTorch (or was not validated) and the user did not ask to push anyway."""


def run(spec: dict) -> dict:
    """rq entry point. `spec` is JobSpec.to_json(); the token is fetched by job id."""
    from rq import get_current_job

    job = get_current_job()
    connection = job.connection
    progress = JobProgress(job, Redactor())
    progress.set(started_at=now_iso(), worker=job.worker_name or "", error=None, error_kind=None)
    handler = LogTailHandler(progress)
    logging.getLogger().addHandler(handler)
    watchdog = _watchdog(progress, job.timeout)
    workdir = None
    try:
        token = tokens.load(connection, job.id)
        progress.redact = Redactor(token)
        if token is None:
            raise UserInputError("This job's token has expired (jobs keep it for a limited time). Submit it again.")
        workdir = workdirs.create(job.id)
        workdirs.hold_temporary_files(workdir)
        result = convert_and_push(JobSpec.from_json(spec, token=token), progress, workdir)
        progress.stage("done", "Done")
        progress.set(ended_at=now_iso())
        return result
    except UserInputError as error:
        keep_if_push_failed(progress, workdir)
        _fail(progress, str(error), ErrorKind.USER_INPUT)
    except ValidationFailed as error:
        _fail(progress, str(error), ErrorKind.VALIDATION)
    except HubUnavailable as error:
        pushing = progress.job.meta.get("stage") == "push"  # push_errors says what a failed push left
        keep_if_push_failed(progress, workdir)
        retried = progress.job.meta.get("retries", 0)
        message = str(error) + ("" if pushing else " Nothing was pushed.")
        if retried:
            message += f" (It was tried {retried + 1} times.)"
        _fail(progress, message, ErrorKind.HUB_UNAVAILABLE)
    except Exception as error:  # noqa: BLE001 - every failure must end as a clear message
        from rq.timeouts import JobTimeoutException

        if isinstance(error, JobTimeoutException):
            message = timeout_message(job.timeout)
        else:
            log.error("job %s failed:\n%s", job.id, progress.redact(traceback.format_exc()))
            message = f"The conversion failed on our side ({type(error).__name__}: {error}). Nothing was pushed."
        _fail(progress, message, ErrorKind.INTERNAL)
    finally:
        if watchdog:
            watchdog.cancel()
        logging.getLogger().removeHandler(handler)
        tokens.delete(connection, job.id)
        workdirs.remove(job.id)


def keep_if_push_failed(progress: JobProgress, workdir: Path | None) -> None:
    """A push the Hub refused after the package converted and passed its checks: keep the
    package(s) as one zip for the page's download (worker/kept.py), and say so in the job's
    status. A failure here is only logged: why the push failed is what the user must see."""
    meta = progress.job.meta
    if workdir is None or meta.get("stage") != "push" or (meta.get("validation") or {}).get("passed") is not True:
        return
    packages = [p["path"] for p in (meta.get("report") or {}).get("packages") or [] if p.get("path")]
    try:
        info = kept.keep(progress.job.id, workdir / "out", packages, (meta.get("push_target") or "package").split("/")[-1])
    except Exception as error:  # noqa: BLE001 - never hide why the push failed
        log.warning("job %s: could not keep its package: %s", progress.job.id, type(error).__name__)
        return
    if info:
        progress.set(kept_package=info)


def _watchdog(progress: JobProgress, timeout: int | None) -> threading.Timer | None:
    """rq's timeout is an exception raised once, wherever the job is; code that catches
    every exception (a fallback path in a library) can swallow it. A few seconds later this
    ends the process for sure; the worker then reports the job (worker/lifecycle.py)."""
    if not timeout or timeout < 0:
        return None

    def expire():
        progress.log("error: time limit reached", save=False)
        progress.set(error=timeout_message(timeout), error_kind=ErrorKind.INTERNAL, user_error=False,
                     ended_at=now_iso())
        os.kill(os.getpid(), signal.SIGKILL)

    grace = min(5, max(1, timeout // 10))  # seconds after rq's own timeout
    timer = threading.Timer(timeout + grace, expire)
    timer.daemon = True
    timer.start()
    return timer


def _fail(progress: JobProgress, message: str, kind: ErrorKind):
    message = progress.redact(message)
    if not progress.job.meta.get("error"):
        # A failed validation's message is the page's outcome box; its log line need not repeat it.
        progress.log("error: validation failed; nothing was pushed" if kind is ErrorKind.VALIDATION
                     else f"error: {message}", save=False)
        progress.set(error=message, error_kind=kind, user_error=kind.user_error, retrying=False, ended_at=now_iso())
    # `from None`: the chained original could carry text we have not redacted.
    raise JobFailed(progress.job.meta["error"], expected=kind is not ErrorKind.INTERNAL) from None


class HubRetry:
    """Runs a read-only Hub stage, retrying it when the Hub is unavailable (5xx, 429, timeout,
    unreachable), at most `retries` times per job in all, after `delay` seconds.

    Why inside the job and not rq's Retry on enqueue: rq retries on any exception (a user
    error or a failed validation would run twice) and re-queues the whole job behind others,
    re-doing a conversion that may have taken minutes; and the job's `finally` deletes the
    token, so a re-queued attempt would need it kept in Redis past a failure. Here the token
    never leaves this process's memory, the job stays `running` with a message saying it is
    retrying, and only resolve and download are retried: they only read. The push is not
    retried: a commit that timed out may have landed, and a second one would push twice.
    """

    def __init__(self, progress: JobProgress, retries: int = 1, delay: float | None = None):
        self.progress = progress
        self.left = retries
        self.delay = settings.hub_retry_delay() if delay is None else delay

    def __call__(self, what: str, stage_call, *args, **kwargs):
        while True:
            try:
                return stage_call(*args, **kwargs)
            except HubUnavailable as error:
                if self.left <= 0:
                    raise
                self.left -= 1
                retries = self.progress.job.meta.get("retries", 0) + 1
                reason = f"HTTP {error.status}" if error.status else "no answer"
                note = (f"The Hub is unavailable ({reason}): retrying {what} in {self.delay:g} s "
                        f"(retry {retries} of {retries + self.left}).")
                self.progress.log(f"warning: {error}", save=False)
                self.progress.log(note, save=False)
                self.progress.job.meta["message"] = self.progress.redact(note)
                self.progress.set(retrying=True, retries=retries)
                time.sleep(self.delay)
                self.progress.set(retrying=False)


def converting_words(format_name: str | None) -> str:
    """The convert stage's first words, naming the format asked for ("Converting to Core AI")."""
    chosen = formats.format_of(format_name)
    return f"Converting to {chosen.label or chosen.short}"


def convert_and_push(spec: JobSpec, progress: JobProgress, workdir: Path) -> dict:
    token = spec.token
    retry = HubRetry(progress)

    progress.stage("resolve", f"Checking {spec.repo_id} on the Hub")
    resolved = retry("the check", resolve, spec, token, workdir / "resolve")
    size = f"{resolved.parameters:,} parameters" if resolved.parameters else f"{resolved.weight_bytes:,} bytes"
    progress.log(f"{resolved.model_type} model, task {resolved.task}, {size}, revision {resolved.revision[:12]}")
    progress.set(task=resolved.task, revision=resolved.revision, model_type=resolved.model_type,
                 source_restricted=resolved.gated or resolved.private)

    progress.stage("download", f"Downloading {resolved.weight_bytes / 1e6:.1f} MB of weights")
    source = retry("the download", download, HubReference(resolved.repo_id, resolved.revision), token=token,
                   cache_dir=workdir / "hub", max_bytes=settings.max_download_bytes())

    progress.stage("convert", converting_words(spec.options.format))
    output_dir = workdir / "out"
    result = convert_and_validate(source, resolved.task, output_dir, spec.options, _engine_progress(progress),
                                  hub_name=tokenizer_repo(spec, resolved.repo_id))
    report = public_report(result.report, output_dir)
    for warning in report.get("warnings", []):
        progress.log(f"warning: {warning}", save=False)
    validation = report["validation"]
    progress.stage("validate", _validation_summary(validation))
    progress.set(report=report, validation=validation)
    if validation.get("passed") is not True and not spec.push_even_if_invalid:
        raise ValidationFailed(validation_failure_message(validation, spec.options.precision, report.get("architecture")))

    progress.stage("package", "Preparing the files and the model card")
    roots = hub.package_roots(output_dir, result.packages)
    source_url = f"{hub.endpoint()}/{resolved.repo_id}"
    # The named tokenizer repo has these: the source's own, or the copies a new repo gets.
    tokenizer_files = [name for name in card.TOKENIZER_FILES if (source.path / name).is_file()]
    body = card.card_body(source_repo=resolved.repo_id, revision=resolved.revision, source_url=source_url,
                          report=report, package_paths=roots, tokenizer_files=tokenizer_files)
    title = card.conversion_title(report["task"], report["options"])

    if spec.push.kind == PULL_REQUEST:
        progress.stage("push", f"Opening a pull request on {resolved.repo_id}")
        pushed = hub.push_pull_request(
            token=token, repo_id=resolved.repo_id, user=spec.user, title=title, description=body,
            files=hub.upload_plan(output_dir, result.packages, None), replace_folders=roots,
        )
    else:
        target = spec.push_repo_id
        private = spec.private_for(resolved.gated, resolved.private)
        if private and spec.push.private is None:
            progress.log(f"{resolved.repo_id} is {'gated' if resolved.gated else 'private'}: its copy is pushed private")
        commit_message = f"{title} of {resolved.repo_id}@{resolved.revision[:12]}"
        progress.stage("push", f"Waiting for other pushes to {target}")
        with repo_lock(progress.job.connection, target):  # one writer per repo, from "does it exist" to the commit
            progress.stage("push", f"Pushing to {target}")
            progress.set(push_commit=commit_message, push_started_at=now_iso())  # what landed, if the worker dies
            # The card describes every package the repo will hold: earlier conversions' too,
            # unless the user chose to remove them with this push.
            others = [p for p in hub.packages_in(token, target) if p not in roots]
            removed, others = (others, []) if spec.push.remove_others else ([], others)
            if removed:
                progress.log(f"removing {len(removed)} other package(s) from {target}, as asked: {', '.join(removed)}")
            readme = card.model_card(source_repo=resolved.repo_id, revision=resolved.revision, source_url=source_url,
                                     report=report, package_paths=roots, modality=_modality(report),
                                     tokenizer_files=tokenizer_files, licence=resolved.license,
                                     terms=card.licence_lines(resolved.repo_id, resolved.license, resolved.gated,
                                                              resolved.private, private), other_packages=others)
            pushed = hub.push_new_repo(
                token=token, repo_id=target, private=private, readme=readme,
                files=hub.upload_plan(output_dir, result.packages, source.path),
                commit_message=commit_message, replace_folders=roots + removed,
            )
    progress.set(links=pushed.links(), pushed=True)
    progress.log(f"pushed: {pushed.pull_request_url or pushed.commit_url}")

    progress.stage("cleanup", "Removing temporary files")
    return {"report": report, "validation": validation, "links": pushed.links(), "pushed": True,
            "reused_pull_request": pushed.reused_pull_request}


def tokenizer_repo(spec: JobSpec, source_repo: str) -> str:
    """The repo the package names for its tokenizer (swift-transformers downloads
    tokenizer.json, tokenizer_config.json and config.json from it): a new repo gets copies of
    those files (hub.SUPPORT_FILES), and an app can read it even when the source is gated; a
    pull request adds the package to the source repo, so that repo it is."""
    return source_repo if spec.push.kind == PULL_REQUEST else spec.push_repo_id


def public_report(report: ConversionReport, output_dir: Path) -> dict:
    """The engine's report as the job's status holds it: JSON, without this machine's paths
    (packages named as in the repo)."""
    public = replace(report, source=replace(report.source, path=None),
                     packages=[replace(package, path=os.path.relpath(package.path, output_dir)) for package in report.packages])
    data = public.to_json()
    # The model's config.json, which the page's device fit needs as the form and the card use it
    # (a stateful package's logits have no shape in the report: without it the page said 342 MB, the form 518 MB).
    config = card.source_config(report.to_json())
    if config is not None:
        data["source_config"] = config
    return data


def _engine_progress(progress: JobProgress):
    """The engine reports (stage, fraction, message); fold it into our convert/validate stages."""

    def report(stage: str, fraction: float, message: str) -> None:
        if stage == "validate":
            if progress.job.meta.get("stage") != "validate":
                progress.stage("validate", message or "Validating", fraction)
            else:
                progress.update(fraction, message)
        elif progress.job.meta.get("stage") == "convert":
            progress.update(fraction, message)

    return report


def _validation_summary(validation: dict) -> str:
    """The validate stage's progress line: the verdict, short (the failure message says the rest)."""
    from converters.report import ValidationReport

    report = ValidationReport.from_json(validation)
    if report.passed is True:
        return f"Validation {report.summary()}."
    if report.passed is False:
        return f"Validation failed: {len(report.failed_checks)} of {len(report.checks)} checks."
    return "The package was not validated."


def validation_failure_message(validation: dict, precision: str, architecture: dict | None = None) -> str:
    """Why nothing was pushed, said once: the cause in plain words and the remedy. The
    conversion is ours, so a wrong package is our fault to fix, never the model authors';
    for an architecture outside the tested list, validation did its job: the generic path does
    not fit this model, and the remedy is asking for the architecture."""
    from converters.report import ValidationReport

    report = ValidationReport.from_json(validation)
    if report.passed is None:
        return (f"The package was not validated ({report.message or 'nothing ran it'}), so nothing was pushed. "
                "Convert again with validation on, or ask to push even if validation fails.")
    worst = report.failure(report.failed_checks[0]) if report.failed_checks else report.message
    scheme = (validation.get("quality") or {}).get("scheme")
    if scheme:  # a compression that loses too much on this model: a size choice, not a fault
        return (f"The {scheme} compression loses too much quality on this model: {worst}. Nothing was pushed. "
                "Choose a larger size: 8-bit (int8) kept the quality of every model we measured.")
    if precision == "float16" and report.only_float16_fails:
        return ("Computed exactly, the package matches the PyTorch model; in float16 arithmetic (how the GPU and "
                f"Neural Engine run it) it drifts: {worst}. Nothing was pushed. Convert in float32: it passes, "
                "at twice the size, on the CPU and GPU.")
    if architecture and architecture.get("tested") is False:
        return (f"The architecture '{architecture.get('model_type')}' is not in the tested list: converted as a "
                f"{architecture.get('family')} model, its package does not compute what the PyTorch model computes: "
                f"{worst}. Nothing was pushed. Validation caught it, as it is there to: ask for this architecture "
                "in an issue (quoting this message), or push it anyway to look at it (its model card will say so).")
    return (f"The package does not compute what the PyTorch model computes: {worst}. Nothing was pushed. "
            "This is a fault in our conversion, not in the model: please report it. To look at the package "
            "anyway, convert again and ask to push even if validation fails (its model card will say so).")


def _modality(report: dict) -> str:
    inputs = [i["name"] for p in report.get("packages", []) for i in p.get("inputs", [])]
    return "vision" if "image" in inputs else "text"
