"""HTML for the page: the model summary, the live job view, weight compression (sizes and
quality on real text against its bar), the validation table and the continuation check, where
the model can run (with where its compression suits), the program's make-up, links, failures
with a pre-filled report link, and "My jobs" rows.

Input is what worker.api.status() returns (a worker.status.JobStatus; and ui.models.ModelSummary); every value is
escaped, since model IDs and messages come from users and the Hub. No token is ever
part of a status, so none can end up here.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from html import escape
from urllib.parse import quote, urlencode

from converters import device_fit, wording
from converters import formats
from converters.formats import format_of
from converters.report import METRIC_LABELS, MODE_LABELS, ConversionReport, ValidationReport
from converters.report import number as report_number
from converters.wording import continuation_reach, continuation_verdict
from worker.progress import STAGES
from worker.status import JobStatus, TryStatus

# The stages a job walks through, as the person reads them.
STAGE_LABELS = {
    "queued": "Queued",
    "resolve": "Check",
    "download": "Download",
    "convert": "Convert",
    "validate": "Validate",
    "package": "Package",
    "push": "Push",
    "cleanup": "Clean up",
    "done": "Done",
}
STEPS = [s for s in STAGES if s != "queued"]

STATE_LABELS = {
    "queued": "Waiting",
    "running": "Running",
    "finished": "Done",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "unknown": "Unknown",
}

METRICS = METRIC_LABELS
MODES = MODE_LABELS
UNITS = (("cpu", "CPU"), ("gpu", "GPU"), ("neural_engine", "Neural Engine"))
UNIT_WORDS = {"yes": "✓ yes", "partial": "◐ partly", "default_shape": "◐ at the default shape", "no": "✗ no"}

CSS = """
.cm-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px 14px; }
.cm-error { border-left: 4px solid #d9534f; background: rgba(217, 83, 79, 0.08); padding: 10px 14px; border-radius: 6px; }
.cm-warning { border-left: 4px solid #e0a800; background: rgba(224, 168, 0, 0.10); padding: 8px 12px; border-radius: 6px; }
.cm-ok { border-left: 4px solid #2e9e5b; background: rgba(46, 158, 91, 0.10); padding: 10px 14px; border-radius: 6px; }
.cm-info { color: var(--body-text-color-subdued); font-size: 0.92em; }
.cm-muted { color: var(--body-text-color-subdued); }
.cm-steps { display: flex; flex-wrap: wrap; gap: 6px; margin: 8px 0; padding: 0; list-style: none; }
.cm-steps li { padding: 3px 10px; border-radius: 999px; border: 1px solid var(--border-color-primary);
  font-size: 0.9em; color: var(--body-text-color-subdued); margin: 0; line-height: 1.4; }  /* the page's
  prose styles gave the last pill extra height */
.cm-steps li.cm-done { background: rgba(46, 158, 91, 0.15); color: var(--body-text-color); border-color: #2e9e5b; }
.cm-steps li.cm-current { background: var(--color-accent); color: white; border-color: var(--color-accent); font-weight: 600; }
.cm-steps li.cm-failed { background: #d9534f; color: white; border-color: #d9534f; font-weight: 600; }
.cm-bar { height: 10px; border-radius: 5px; background: var(--border-color-primary); overflow: hidden; }
.cm-bar > div { height: 100%; background: var(--color-accent); transition: width 0.4s; }
.cm-bar.cm-bar-failed > div { background: #d9534f; }
.cm-bar.cm-bar-done > div { background: #2e9e5b; }
.cm-bar.cm-bar-stopped > div { background: #e0a800; }
.cm-steps li.cm-stopped { background: #e0a800; color: black; border-color: #e0a800; font-weight: 600; }
.cm-table { border-collapse: collapse; width: 100%; font-size: 0.9em; margin: 6px 0 12px; }
.cm-table th, .cm-table td { border-bottom: 1px solid var(--border-color-primary); padding: 4px 8px; text-align: left; }
.cm-table td.cm-num { font-variant-numeric: tabular-nums; text-align: right; white-space: nowrap; }
.cm-pass { color: #2e9e5b; font-weight: 600; }
.cm-fail { color: #d9534f; font-weight: 600; }
.cm-badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 0.85em;
  border: 1px solid var(--border-color-primary); margin-left: 6px; }
.cm-links a { margin-right: 14px; }
.cm-log-title { font-weight: 600; margin: 8px 0 4px; }
.cm-log { max-height: calc(12 * 0.85em * 1.4); overflow-y: auto; display: flex; flex-direction: column-reverse;
  box-sizing: content-box; border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 6px 10px; }
.cm-continuation ul { margin: 4px 0 12px; padding-left: 1.2em; }
.cm-continuation li { margin: 2px 0; }
.cm-text { white-space: pre-wrap; word-break: break-word; font-family: var(--font-mono); font-size: 0.9em; }
.cm-try-images { display: flex; flex-wrap: wrap; gap: 12px; margin: 6px 0; }
.cm-try-images figure { margin: 0; }
.cm-try-images img { width: 200px; height: auto; image-rendering: pixelated; border-radius: 4px; }
.cm-try-large img { width: 360px; }
.cm-try-images figcaption { font-size: 0.85em; color: var(--body-text-color-subdued); }
.cm-log pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-family: var(--font-mono); font-size: 0.85em;
  line-height: 1.4; }  /* the box is 12 such lines high: no line shows half */
"""


# ---------------------------------------------------------------------- small pieces


def count(n: int | None) -> str:
    if not n:
        return "unknown"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


def size(n: int | None) -> str:
    if not n:
        return "unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def hub_url(path: str = "") -> str:
    base = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return f"{base}/{path}" if path else base


def link(url: str, text: str) -> str:
    return f'<a href="{escape(url, quote=True)}" target="_blank" rel="noopener">{escape(text)}</a>'


def message(text: str, level: str = "info", role: str | None = None) -> str:
    """A one-paragraph note: level error | warning | ok | info (`role`: a data-role to find it by)."""
    if not text:
        return ""
    css = {"error": "cm-error", "warning": "cm-warning", "ok": "cm-ok"}.get(level, "cm-info")
    marked = f' data-role="{escape(role)}"' if role else ""
    return f'<div class="{css}" data-level="{escape(level)}"{marked}>{escape(page_words(text))}</div>'


# The command line's own words, as the page says them (messages are shared with the CLI).
CLI_ONLY = {"--hub-name": "the tokenizer repo", "--no-validate": "skipping validation", "--output": "the output folder"}
_FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def page_words(text: str) -> str:
    """`text` with any command-line flag named by its field on the page ("--kv-cache" -> "KV
    cache"): a person using the form never typed a flag."""
    from converters.options import OPTIONS

    labels = {flag: option.label for option in OPTIONS.values() for flag in option.cli_flags}
    return _FLAG.sub(lambda m: labels.get(m.group(0)) or CLI_ONLY.get(m.group(0)) or m.group(0).lstrip("-"), text)


# ---------------------------------------------------------------------- sign-in and model


def signed_in(user: str | None, how: str = "") -> str:
    if not user:
        return ('<div class="cm-muted" data-signed-in="no">Not signed in. Sign in to convert: '
                "the package is pushed to your Hugging Face account.</div>")
    how = f" ({escape(how)})" if how else ""
    return f'<div data-signed-in="yes">Signed in as <strong>{escape(user)}</strong>{how}</div>'


def model_summary(summary, request_base: str | None = None) -> str:
    """The card under the model field: architecture, size, tasks; or why it cannot be converted
    (with a link asking for the architecture when `request_base`, a tracker URL, is given)."""
    if summary is None:
        return ""
    if summary.error:
        known = ""
        if summary.model_type:
            known = f"<div class='cm-muted'>Architecture: {escape(summary.model_type)}" + (
                f" ({escape(summary.architectures[0])})" if summary.architectures else "") + "</div>"
        ask = ""
        if request_base and summary.unsupported_architecture:
            ask = (f'<div class="cm-links" data-role="request">'
                   f"{link(architecture_request_url(summary, request_base), 'Ask for this architecture (opens a pre-filled request)')}</div>")
        return (f'<div class="cm-error" data-model-ok="no" data-model="{escape(summary.repo_id or "")}">'
                f"<strong>This model cannot be converted.</strong> {escape(summary.error)}{known}{ask}</div>")
    badges = ""
    if summary.private:
        badges += '<span class="cm-badge">private</span>'
    if summary.gated:
        badges += '<span class="cm-badge">gated</span>'
    arch = escape(summary.model_type or "?")
    if summary.architectures:
        arch += f" ({escape(', '.join(summary.architectures))})"
    size_text = f"{count(summary.parameters)} parameters" if summary.parameters else "parameter count unknown"
    size_text += f", {size(summary.weight_bytes)} of safetensors weights"
    pipeline = escape(summary.pipeline_tag) if summary.pipeline_tag else "none"
    revision = f"@{escape(summary.revision)}" if summary.revision else ""
    return (
        f'<div class="cm-card" data-model-ok="yes" data-model="{escape(summary.repo_id or "")}">'
        f"<div><strong>{link(hub_url(summary.repo_id), summary.repo_id)}</strong>{revision}{badges}</div>"
        f"<div>Architecture: {arch}</div>"
        f"{family_line(summary)}"
        f"<div>Size: {escape(size_text)}</div>"
        f"<div>Hub task tag: {pipeline}</div>"
        f"<div>Can be converted for {len(summary.tasks)} task{'s' if len(summary.tasks) != 1 else ''}: "
        f"{escape(', '.join(summary.tasks))}</div>"
        "</div>"
    )


def family_line(summary) -> str:
    """The family that converts it; for an architecture outside the tested list, that mark."""
    if not summary.family:
        return ""
    if summary.tested:
        return f'<div data-role="family">Family: {escape(summary.family)} (tested)</div>'
    return (f'<div data-role="family" data-tested="no">Family: {escape(summary.family)} · '
            "<strong>architecture not in the tested list</strong>: it converts with the "
            f"{escape(summary.family)} family's wrappers, and validation decides whether the package is right</div>")


def tolerance(thresholds: dict | None, precision: str) -> str:
    if not thresholds:
        return '<div class="cm-info">Thresholds appear once a model is chosen.</div>'
    return (
        f'<div class="cm-info">For {escape(precision)} this architecture must reach: '
        f"max abs difference ≤ {thresholds['atol']:g} × the output's scale, "
        f"PSNR ≥ {thresholds['min_psnr']:g} dB, top-1 agreement ≥ {thresholds['min_top1']:.0%}, "
        f"cosine similarity ≥ {thresholds['min_cosine']:g}, label agreement ≥ {thresholds['min_label_agreement']:.0%} "
        "(each where it applies).</div>"
    )


# Said instead of "no worker" while the service starts: its workers connect a few seconds after it.
STARTING = "The service is starting: its workers connect in a few seconds."
STARTING_JOB = "The service is starting: the job begins once its worker connects, in a few seconds."


def workers_note(workers: list[dict], starting: bool = False) -> str:
    """How many workers and Mac runners are connected (shown next to the validation choice);
    none while the service is `starting` is no news yet."""
    macs = [w for w in workers if w.get("os") == "Darwin" or "macos" in w.get("queues", "").split(",")]
    others = len(workers) - len(macs)
    if not workers and starting:
        return f'<div class="cm-info" data-role="starting">{escape(STARTING)}</div>'
    if not workers:
        return ('<div class="cm-warning">No worker is connected right now: a job waits until one starts.</div>')
    mac_text = (f"{len(macs)} Mac runner{'s' if len(macs) != 1 else ''}" if macs
                else "no Mac runner (a Mac job waits until one connects)")
    return f'<div class="cm-info">Connected: {others} Linux worker{"s" if others != 1 else ""}, {mac_text}.</div>'


# ---------------------------------------------------------------------- the live job view


def job_status(status: JobStatus | None) -> str:
    if not status:
        return ""
    state = status.state
    stage = status.stage or "queued"
    if state == "unknown":
        return f'<div data-state="unknown" data-stage="unknown">{message(status.error or "Unknown job.", "error")}</div>'
    percent = int(status.percent or 0)
    model, variant = str(status.model or ""), job_variant(status)
    title = f'<span data-role="job-identity" title="{escape(job_identity(status))}">{escape(model)}'
    if variant:
        title += f" <span class='cm-muted'>· {escape(variant)}</span>"
    title += "</span>"
    badge = f'<span class="cm-badge" data-role="state">{escape(STATE_LABELS.get(state, state))}</span>'

    # Where the job is (or where it failed or was stopped). A cancelled job's stage is
    # "cancelled": the step it reached is read from its percent.
    failed = state == "failed"
    stopped = state == "cancelled"
    if stage in STEPS:
        current_index = STEPS.index(stage)
    elif stopped and percent > 0:
        current_index = max(i for i, name in enumerate(STEPS) if STAGES[name] <= percent)
    else:
        current_index = -1
    steps = []
    for index, name in enumerate(STEPS):
        if state == "finished" or index < current_index:
            css = "cm-done"
        elif index == current_index:
            css = ("cm-failed" if failed else "cm-stopped" if stopped
                   else "cm-done" if name == "done" else "cm-current")
        else:
            css = ""
        steps.append(f'<li class="{css}" data-step="{name}">{STAGE_LABELS[name]}</li>')
    if state == "queued":
        steps.insert(0, '<li class="cm-current" data-step="queued">Queued</li>')

    bar_css = ("cm-bar-failed" if failed else "cm-bar-stopped" if stopped
               else "cm-bar-done" if state == "finished" else "")
    lines = []
    if state == "queued":
        position = status.queue_position
        if position:
            lines.append(f"Position in the queue: {position}" + (" (next)" if position == 1 else ""))
        if status.note:
            lines.append(status.note)
    if status.elapsed_seconds is not None:
        lines.append(f"Elapsed: {duration(status.elapsed_seconds)}")
    lines.append(f"Job {status.job_id}")
    text = status.message or ""
    return (
        f'<div class="cm-job" data-state="{escape(state)}" data-stage="{escape(stage)}" data-percent="{percent}">'
        f"<div><strong>{title}</strong>{badge}</div>"
        f'<ul class="cm-steps">{"".join(steps)}</ul>'
        f'<div class="cm-bar {bar_css}" role="progressbar" aria-valuenow="{percent}" aria-valuemin="0" '
        f'aria-valuemax="100"><div style="width: {percent}%"></div></div>'
        f'<div data-role="message"><strong>{percent}%</strong> {escape(text)}</div>'
        f'<div class="cm-muted">{" · ".join(escape(line) for line in lines)}</div>'
        "</div>"
    )


def log_text(status: JobStatus | None) -> str:
    return "\n".join(status.log if status else [])


def log_html(status: JobStatus | None) -> str:
    """The job's log tail, newest line at the bottom and in view (the box scrolls from the end)."""
    text = log_text(status)
    if not text:
        return ""
    return (f'<div class="cm-log-title">Log</div><div class="cm-log" data-role="log">'
            f"<pre>{escape(text)}</pre></div>")


def is_active(status: JobStatus | None) -> bool:
    return status is not None and status.active


# ---------------------------------------------------------------------- results


def outcome(status: JobStatus | None, report_url: str | None = None) -> str:
    """How the job ended, in one box: pushed where, or why not and what to do."""
    if not status or status.state in (None, "unknown"):
        return ""
    state = status.state
    if state == "finished":
        return _success(status, status.validation_json)
    if state == "failed":
        return _failure(status, report_url)
    if state == "cancelled":
        if status.message.startswith("Cancelled while pushing"):  # what landed, read back from the Hub
            return message(status.message, "warning")
        return message("Cancelled. Nothing was pushed." if not status.pushed else "Cancelled.", "warning")
    return ""


def results(status: JobStatus | None, report_url: str | None = None, with_outcome: bool = True) -> str:
    """Everything shown once a job has ended (or its validation is known): the outcome (unless
    the page shows it apart, with its actions under it), then the evidence."""
    if not status or status.state in (None, "unknown"):
        return ""
    state = status.state
    validation = status.validation_json
    parts = [outcome(status, report_url)] if with_outcome else []
    report = status.report or {}
    if state in ("finished", "failed"):
        parts.append(compression_section(report, validation))
        parts.append(device_fit_section(report))
    if validation and state in ("finished", "failed", "cancelled"):
        parts.append(untested_section(report, validation))
        parts.append(validation_section(validation))
        parts.append(continuation_section(validation))
    if state in ("finished", "failed", "cancelled"):
        parts.append(compute_units_section(validation or {}, report))
        parts.append(program_section(report))
    if report.get("warnings") and state in ("finished", "failed"):
        items = "".join(f"<li>{escape(str(w))}</li>" for w in report["warnings"])
        parts.append(f'<div class="cm-warning"><strong>Warnings</strong><ul>{items}</ul></div>')
    return f'<div class="cm-results" data-state="{escape(state)}">{"".join(parts)}</div>'


def _success(status: JobStatus, validation: dict | None = None) -> str:
    """Pushed: where, and whether the package passed validation or was pushed anyway (the
    person asked to push even if validation fails)."""
    links = status.links
    items = []
    if links.pull_request:
        items.append(link(links.pull_request, "Open the pull request"))
    if links.repo:
        items.append(link(links.repo, f"Open the repo {status.push_target or ''}".strip()))
    if links.commit:
        items.append(link(links.commit, "See the commit"))
    where = escape("a pull request" if links.pull_request else status.push_target or "the Hub")
    links_html = f'<div class="cm-links" data-role="links">{"".join(items)}</div>'
    if not validation:
        return f'<div class="cm-ok" data-role="done"><strong>Done.</strong> The package was pushed to {where}.{links_html}</div>'
    report = ValidationReport.from_json(validation)
    sizes = package_sizes(status.report or {})
    if report.passed is True:
        return (f'<div class="cm-ok" data-role="done" data-validation="passed"><strong>Done.</strong> '
                f"The package passed validation and was pushed to {where}.{sizes}{links_html}</div>")
    if report.passed is False:
        head = "Pushed anyway: the package FAILED validation."
        text = (f"It does not compute what the PyTorch model computes, and was pushed to {where} anyway because "
                "you asked to push even if validation fails; its model card (or pull request) says so. "
                "Check its outputs before use.")
    else:
        head = "Pushed without validation."
        text = f"Nothing checked that the package computes what the PyTorch model computes; it was pushed to {where} anyway."
    state = "failed" if report.passed is False else "not-run"
    return (f'<div class="cm-warning" data-role="done" data-validation="{state}"><strong>{escape(head)}</strong> {text}'
            f'<div data-role="validation-summary">Validation {escape(report.summary())}</div>{links_html}</div>')


def package_sizes(report: dict) -> str:
    """Each package's size on disk, compressed or not (what an app bundle grows by)."""
    parts = [f"{escape(str(p.get('path') or 'package'))}: {size(p['size_bytes'])}"
             for p in report.get("packages") or [] if p.get("size_bytes")]
    return f' <span data-role="package-sizes">Size: {"; ".join(parts)}.</span>' if parts else ""


def device_fit_section(report: dict) -> str:
    """The devices the package fits: its memory while it runs (its size and cache as written, the
    largest activation estimated) and each device class's verdict (converters/device_fit.py)."""
    footprint = device_fit.from_report(report, report.get("source_config"))  # the config: as the form and the card
    if footprint is None:
        return ""
    rows = "".join(
        f'<tr data-device="{escape(v.device.key)}" data-fit="{escape(v.level)}"><td>{escape(v.device.label)}</td>'
        f"<td class='cm-num'>{escape(device_fit.gigabytes(v.device.app_limit))}</td>"
        f"<td class='cm-num'>{escape(device_fit.gigabytes(v.device.entitled_limit) if v.device.entitled_limit else '—')}</td>"
        f"<td>{escape(FIT_WORDS[v.level])}</td></tr>"
        for v in device_fit.verdicts(footprint))
    table = ('<table class="cm-table" data-role="device-fit-table"><thead><tr><th>Device</th><th>An app may use</th>'
             f"<th>With the increased memory limit entitlement</th><th>This package</th></tr></thead><tbody>{rows}</tbody></table>")
    return (f'<div class="cm-device-fit" data-role="device-fit"><h4>Device fit</h4>'
            f'<div data-role="device-fit-summary">{escape(device_fit.summary(footprint))}</div>{table}</div>')


FIT_WORDS = {device_fit.FITS: "fits", device_fit.ENTITLED: "fits with the entitlement", device_fit.TOO_LARGE: "too large"}


def float32_is_the_remedy(status: JobStatus | None) -> bool:
    """A float16 job whose exact (fp32) runs passed and only float16 ones failed: converting in
    float32 gives a package that passes (the failure message says so; the page offers it)."""
    if not status or status.state != "failed" or status.error_kind != "validation":
        return False
    options = (status.report or {}).get("options") or {}
    return options.get("precision") == "float16" and status.validation_report.only_float16_fails


def _failure(status: JobStatus, report_url: str | None) -> str:
    error = status.error or "The job failed."
    kind = status.error_kind
    lead = {
        "user_input": "This request cannot be converted as given.",
        "validation": "Validation failed.",
        "internal": "Something went wrong on our side.",
        "hub_unavailable": "The Hugging Face Hub is unavailable right now.",
    }.get(kind, "The job failed.")
    stage = status.stage
    where = f" (during: {STAGE_LABELS.get(stage, stage)})" if stage and stage not in ("queued", "done") else ""
    validated = (status.validation_json or {}).get("passed") is True
    if stage == "push" and kind == "user_input" and validated:
        # The work was done: say so, and that only the push was refused.
        lead, where = "The model converted and passed validation, but it could not be pushed.", ""
    if status.kept_package:
        return _kept_after_failed_push(status, error, kind)
    report = ""
    lossy = bool(((status.validation_json or {}).get("quality") or {}).get("scheme"))  # a size to choose, not a fault
    if report_url and kind in ("validation", "internal") and not float32_is_the_remedy(status) and not lossy:
        # Our fault to fix: the report goes to this service's tracker, never the model's authors.
        report = f'<div class="cm-links" data-role="report">{link(report_url, "Report this problem (opens a pre-filled report)")}</div>'
    return (
        f'<div class="cm-error" data-role="error" data-kind="{escape(kind or "")}">'
        f"<strong>{escape(lead)}</strong>{escape(where)}<div data-role='error-message'>{escape(error)}</div>"
        f"{report}</div>"
    )


def _kept_after_failed_push(status: JobStatus, error: str, kind: str | None) -> str:
    """The push failed after the package passed its checks, and the service kept the package:
    say it converted, why the push failed, and that it can be downloaded (the button below)."""
    kept = status.kept_package
    target = status.push_target or "your repo"
    until = when(kept.expires_at)
    note = f"Download the package below ({size(kept.size_bytes)} zip, kept until {until}), or fix the access and convert again."
    return (
        f'<div class="cm-error" data-role="error" data-kind="{escape(kind or "")}" data-kept="yes">'
        f"<strong>{escape(f'Your model converted and passed its checks, but it could not be pushed to {target}.')}</strong>"
        f"<div data-role='error-message'>{escape(error)}</div>"
        f"<div data-role='kept-package'>{escape(note)}</div></div>"
    )


def untested_section(report: dict, validation: dict) -> str:
    """An architecture outside the tested list: said above the validation that vouches for it."""
    typed = ConversionReport.from_json({**report, "validation": validation})
    mark = typed.untested_mark()
    if not mark:
        return ""
    return (f'<div class="cm-info" data-role="untested">{escape(typed.architecture.model_type or "")}: '
            f"{escape(mark)}</div>")


def validation_section(validation: dict) -> str:
    report = ValidationReport.from_json(validation)
    verdict = {True: '<span class="cm-pass">passed</span>', False: '<span class="cm-fail">failed</span>'}.get(
        report.passed, '<span class="cm-muted">not run</span>')
    kind = escape(report.kind)
    header = (f"<h4>Validation: {verdict}</h4><div class='cm-muted' data-role='validation-summary'>"
              f"{escape(report.summary())}" + (f" · {kind}" if kind else "") + "</div>")
    if not report.checks:
        return f'<div class="cm-validation">{header}</div>'
    rows = []
    for check in report.checks:
        rows.append(
            f'<tr data-passed="{"yes" if check.passed else "no"}">'
            f"<td>{escape(check.package)}</td>"
            f"<td>{escape(check.inputs)}</td>"
            f"<td>{escape(check.output)}</td>"
            f"<td>{escape(MODES.get(check.mode, check.mode))}</td>"
            f"<td>{escape(METRICS.get(check.metric, check.metric))}</td>"
            f"<td class='cm-num'>{escape(number(check.value, check.metric))}</td>"
            f"<td class='cm-num'>{'≥' if check.higher_is_better else '≤'} {escape(number(check.threshold, check.metric))}</td>"
            f"<td>{'<span class=cm-pass>✓ pass</span>' if check.passed else '<span class=cm-fail>✗ fail</span>'}</td>"
            "</tr>"
        )
    table = (
        '<table class="cm-table" data-role="validation-table"><thead><tr>'
        "<th>Package</th><th>Inputs</th><th>Output</th><th>Mode</th><th>Check</th>"
        "<th>Value</th><th>Threshold</th><th>Result</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    notes = "".join(f"<li>{escape(str(n))}</li>" for n in report.notes)
    notes = f"<ul class='cm-muted'>{notes}</ul>" if notes else ""
    return f'<div class="cm-validation">{header}{table}{notes}</div>'


def continuation_section(validation: dict) -> str:
    """The greedy continuation of one prompt by each package next to PyTorch's
    (validation["continuation"]; absent for older reports, other tasks, skipped validation)."""
    continuation = ValidationReport.from_json(validation).continuation
    if continuation is None or not continuation.runs:
        return ""
    verdict = {True: '<span class="cm-pass">passed</span>', False: '<span class="cm-fail">failed</span>'}.get(
        continuation.passed, '<span class="cm-muted">not checked</span>')
    about = f"Prompt {_quoted(continuation.prompt)}, continued greedily by each package and by PyTorch: {escape(continuation_reach(continuation))}."
    items = []
    for run in continuation.runs:
        verdict_words = continuation_verdict(run)
        mark = {True: f'<span class="cm-pass">✓ {escape(verdict_words)}</span>',
                False: f'<span class="cm-fail">✗ {escape(verdict_words)}</span>'}.get(
            run.passed, f'<span class="cm-muted">{escape(verdict_words)}</span>')
        why = " · ".join(escape(str(reason)) for reason in (run.error,) if reason)
        details = [f"driven as {escape(str(run.driven_as))}"] if run.driven_as else []
        details += [why] if why else []
        details_html = f' <span class="cm-muted">· {" · ".join(details)}</span>' if details else ""
        state = {True: "yes", False: "no"}.get(run.passed, "unchecked")
        items.append(f'<li data-passed="{state}"><strong>{escape(run.label)}</strong>: {mark}{details_html}'
                     f"{_texts(run, continuation.pytorch_text)}</li>")
    overall = {True: "yes", False: "no"}.get(continuation.passed, "unchecked")
    return (
        f'<div class="cm-continuation" data-role="continuation" data-passed="{overall}">'
        f"<h4>Continuation check: {verdict}</h4><div class='cm-muted'>{about}</div>"
        f"<ul>{''.join(items)}</ul></div>"
    )


def _texts(run, pytorch_text) -> str:
    """The package's text and PyTorch's, split where they part (when the report says where)."""
    extra = run.extra or {}
    if "same_text" in extra:
        same = extra.get("same_text") or ""
        own, theirs = extra.get("own_rest") or "", extra.get("pytorch_rest") or ""
        rest = ("" if not (own or theirs) else
                f'<div class="cm-muted" data-role="after">then the package: {_quoted(own)} · PyTorch: {_quoted(theirs)}</div>')
        return f'<div data-role="same">both: {_quoted(same)}</div>{rest}'
    text = _quoted(run.text) if run.text is not None else '<span class="cm-muted">(no text)</span>'
    return f"<div>{text} / <strong>PyTorch</strong>: {_quoted(pytorch_text)}</div>"


def _quoted(text) -> str:
    """Model text, literal: a newline shown as ⏎ so the quotes stay on one line."""
    text = str(text if text is not None else "").replace("\r\n", "\n").replace("\n", "⏎")
    return f'«<span class="cm-text">{escape(text)}</span>»'


def compute_units_section(validation: dict, report: dict | None = None) -> str:
    """Where each package can run, and (from the report) which compute unit its weight
    compression suits, per coremltools' guide."""
    units = validation.get("compute_units") or {}
    notes = placement_notes(report or {})
    if not units:
        return f'<div class="cm-units"><h4>Where the model can run</h4>{notes}</div>' if notes else ""
    rows = []
    for part, info in units.items():
        cells = "".join(
            f"<td data-unit='{key}'>{escape(UNIT_WORDS.get((info.get('units') or {}).get(key), '?'))}</td>"
            for key, _ in UNITS)
        reasons = "<br>".join(escape(str(r)) for r in info.get("reasons") or []) or "no restriction found"
        rows.append(f"<tr><td>{escape(part)}</td>{cells}<td>{reasons}</td></tr>")
    placement = validation.get("placement") or {}
    basis = next((info.get("basis") for info in units.values() if info.get("basis")), "")
    measured = " Measured on a Mac with MLComputePlan as well." if placement else ""
    return (
        '<div class="cm-units"><h4>Where the model can run</h4>'
        f"<div class='cm-muted'>{escape(basis)}.{escape(measured)}</div>"
        '<table class="cm-table" data-role="compute-units"><thead><tr><th>Package</th>'
        + "".join(f"<th>{label}</th>" for _, label in UNITS)
        + f"<th>Why</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{notes}</div>"
    )


def placement_notes(report: dict) -> str:
    """One line per compression scheme in the report: the compute unit it suits (converters/wording.py's
    notes, from coremltools' guide), then how Core ML decompresses weights."""
    items, seen = [], set()
    for _, entry in wording.compressed_packages(report):
        scheme = str(entry.get("scheme") or "")
        note = wording.placement_note(scheme)
        if note and note not in seen:
            seen.add(note)
            items.append(f'<li data-scheme="{escape(scheme)}">{escape(note)}</li>')
    if not items:
        return ""
    items.append(f"<li>{escape(wording.DECOMPRESSION_NOTE)}</li>")
    return f'<ul class="cm-muted" data-role="placement-notes">{"".join(items)}</ul>'


# ---------------------------------------------------------------------- compression and program


def compression_section(report: dict, validation: dict | None = None) -> str:
    """Each compressed package: scheme, method, granularity, bits per weight, size before and
    after, weights compressed and left float; then its quality on real text, each number next to
    the scheme's bar, and why the bar is there. Float packages: nothing."""
    packages = wording.compressed_packages(report)
    if not packages:
        return ""
    schemes = ", ".join(dict.fromkeys(str(entry.get("scheme")) for _, entry in packages))
    rows = "".join(
        f'<tr data-package="{escape(part)}" data-scheme="{escape(str(entry.get("scheme")))}">'
        f"<td>{escape(part)}</td><td>{escape(str(entry.get('scheme')))}</td><td>{escape(str(entry.get('method', '')))}</td>"
        f"<td>{escape(str(entry.get('granularity', '')))}</td>"
        f"<td class='cm-num'>{escape(number(entry.get('bits_per_weight')))}</td>"
        f"<td class='cm-num' data-role='size'>{escape(wording.size_change(entry))}</td>"
        f"<td>{escape(wording.weights_line(entry))}</td></tr>"
        for part, entry in packages)
    table = ('<table class="cm-table" data-role="compression-table"><thead><tr><th>Package</th><th>Scheme</th>'
             "<th>Method</th><th>Granularity</th><th>Bits per weight</th><th>Size</th><th>Weights</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>")
    return (f'<div class="cm-compression" data-role="compression"><h4>Compression: {escape(schemes)}</h4>'
            f"{table}{quality_table(validation or report.get('validation'))}</div>")


def quality_table(validation: dict | None) -> str:
    """The quality numbers on real text (validation["quality"]), per package and mode, each next
    to the scheme's bar, then why the bar is there."""
    rows = wording.quality_rows(validation)
    if not rows:
        return ""
    labels = [label for _, label, _, _ in wording.QUALITY_METRICS]
    body = []
    for row in rows:
        cells = {check["label"]: _quality_cell(check) for check in row["checks"]}
        verdicts = [check["passed"] for check in row["checks"]]
        state = "unjudged" if None in verdicts or not verdicts else "yes" if all(verdicts) else "no"
        body.append(
            f'<tr data-passed="{state}" data-mode="{escape(row["mode"])}"><td>{escape(row["part"])}</td>'
            f"<td>{escape(MODES.get(row['mode'], row['mode']))}</td>"
            + "".join(cells.get(label, "<td></td>") for label in labels)
            + f"<td class='cm-num'>{escape(wording.perplexities(row['numbers']))}</td></tr>")
    reason = wording.bar_reason(validation)
    reason_html = f'<div class="cm-muted" data-role="quality-bar">The bar: {escape(reason)}.</div>' if reason else ""
    return ('<div class="cm-muted">Quality on a passage of real English prose, against PyTorch (float32):</div>'
            '<table class="cm-table" data-role="quality-table"><thead><tr><th>Package</th><th>Mode</th>'
            + "".join(f"<th>{escape(label[:1].upper() + label[1:])}</th>" for label in labels)
            + f"<th>Perplexity</th></tr></thead><tbody>{''.join(body)}</tbody></table>{reason_html}")


def _quality_cell(check: dict) -> str:
    """A number next to its bar, marked pass or fail: '100.0% (bar ≥ 90.0%) ✓'."""
    mark = {True: " <span class=cm-pass>✓</span>", False: " <span class=cm-fail>✗</span>"}.get(check["passed"], "")
    state = {True: "yes", False: "no"}.get(check["passed"], "unjudged")
    return (f'<td class="cm-num" data-metric="{escape(check["metric"])}" data-passed="{state}">'
            f"{escape(wording.quality_cell(check))}{mark}</td>")


# The Program table's facts: (key in report.ProgramInfo, heading, data-role, how a value reads).
PROGRAM_FACTS = (
    ("fused_attention", "Fused attention", "fused-attention", wording.yes_no),
    ("stateful", "Stateful", "stateful", wording.yes_no),
    ("weight_bits", "Weight bits", "weight-bits", report_number),
)


def program_section(report: dict) -> str:
    """What each package's program holds (report["packages"][i]["program"]), when the engine
    says: fused attention, stateful, weight bits and the most frequent ops — each fact only for
    a format whose programs have it (formats.Format.program_facts: an .aimodel has no Core ML
    fused attention op or weight bits), a column only when some package has it."""
    shown = [(package, format_of(package.get("format"))) for package in report.get("packages") or []
             if isinstance(package.get("program"), dict)]
    if not shown:
        return ""
    facts = [fact for fact in PROGRAM_FACTS if any(fact[0] in fmt.program_facts for _, fmt in shown)]
    rows = []
    for package, fmt in shown:
        program, part = package["program"], str(package.get("part") or "model")
        cells = "".join(
            f"<td data-role='{role}'{' class=cm-num' if key == 'weight_bits' else ''}>"
            f"{escape(words(program.get(key)) if key in fmt.program_facts else '—')}</td>"
            for key, _, role, words in facts)
        label = f"{part} ({fmt.label})" if len({f.name for _, f in shown}) > 1 else part
        rows.append(f'<tr data-package="{escape(part)}"><td>{escape(label)}</td>{cells}'
                    f"<td>{escape(wording.top_ops(program.get('op_counts')))}</td></tr>")
    headings = "".join(f"<th>{heading}</th>" for _, heading, _, _ in facts)
    return ('<div class="cm-program" data-role="program"><h4>Program</h4><table class="cm-table"><thead><tr>'
            f"<th>Package</th>{headings}<th>Most frequent ops</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def number(value, metric: str | None = None) -> str:
    """A check's value or threshold as shown (converters.report.number: shares in %, ...)."""
    return report_number(value, metric)


# ---------------------------------------------------------------------- failure reports


def report_base_url(model: str | None = None) -> str:
    """Where "Report this problem" goes: COREML_CONVERTER_REPORT_URL (a 'new issue' or 'new
    discussion' URL), else this Space's discussions; else nowhere. A failed conversion is this
    service's to fix, so the model's own page is never the place (`model`: kept for callers)."""
    return tracker_url() or ""


def tracker_url() -> str | None:
    """The service's own tracker (configured, or this Space's discussions), if there is one."""
    configured = os.environ.get("COREML_CONVERTER_REPORT_URL", "").strip()
    if configured:
        return configured
    space = os.environ.get("SPACE_ID", "").strip()
    return f"https://huggingface.co/spaces/{space}/discussions/new" if space else None


def architecture_request_url(summary, base: str) -> str:
    architectures = ", ".join(summary.architectures) or "?"
    body = (f"Please add the `{summary.model_type}` architecture ({architectures}).\n\n"
            f"Example model: `{summary.repo_id}`"
            + (f" (Hub task tag: {summary.pipeline_tag})" if summary.pipeline_tag else "") + ".")
    return _prefilled(base, f"Support the {summary.model_type} architecture", body)


def _prefilled(base: str, title: str, body: str) -> str:
    field = "body" if ("github" in base or "/issues/new" in base) else "description"
    separator = "&" if "?" in base else "?"
    return base + separator + urlencode({"title": title, field: body[:3000]}, quote_via=quote)


def report_url(status: JobStatus, base: str | None = None) -> str | None:
    """A link that opens a pre-filled issue or discussion about this failed job (never a token)."""
    base = base if base is not None else report_base_url(status.model)
    if not base:
        return None
    report = status.report or {}
    options = report.get("options") or {}
    validation = status.validation_report
    failed = validation.failures()[:5]
    lines = [
        f"Converting `{status.model}` ({status.task or 'task not resolved'}) to Core ML failed.",
        "",
        f"- job: `{status.job_id}`",
        f"- failed during: {STAGE_LABELS.get(status.stage, status.stage)}",
        f"- kind: {status.error_kind or 'unknown'}",
    ]
    if options:
        lines.append("- options: " + ", ".join(f"{k}={v}" for k, v in options.items()))
    if report.get("versions"):
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    if validation.passed is not None:
        lines.append(f"- validation: {validation.summary()}")
    lines += ["", "Message:", "", "> " + (status.error or "").replace("\n", "\n> ")]
    if failed:
        lines += ["", "Failed checks:", ""] + [f"- {line}" for line in failed]
        more = len(validation.failed_checks) - len(failed)
        lines += [f"- ... and {more} more"] if more > 0 else []
    title = f"Conversion failed: {status.model} ({status.task or '?'})"
    return _prefilled(base, title, "\n".join(lines))


# ---------------------------------------------------------------------- my jobs


JOB_HEADERS = ["Submitted", "Model", "Conversion", "State", "Result"]


def job_variant(status: JobStatus) -> str:
    """What tells a job apart from another conversion of the same model: "text-generation ·
    int4 · stateful · iOS18" (converters.wording.variant of the options it was asked for)."""
    return wording.variant(status.resolved_task, status.requested_options)


def job_identity(status: JobStatus) -> str:
    """The job's name wherever it is shown: "SmolLM2-135M · text-generation · int4 · stateful · iOS18"."""
    return wording.identity(status.model, status.resolved_task, status.requested_options)


def job_rows(jobs: list[JobStatus]) -> list[list[str]]:
    rows = []
    for job in jobs:
        links = job.links
        if links.pull_request:
            result = f"[pull request]({links.pull_request})"
        elif links.repo and job.state == "finished":
            result = f"[{job.push_target or 'repo'}]({links.repo})"
        elif job.state == "failed" and job.error_kind == "validation":
            result = ("Failed validation in float16 only: convert in float32" if float32_is_the_remedy(job)
                      else "Failed validation: nothing was pushed")
        elif job.state == "failed":
            result = _one_line(job.error or "failed")
        elif job.state in ("queued", "running"):
            # The stage only: the job view above has the live percent (the table refreshes per stage).
            result = STAGE_LABELS.get(job.stage, job.stage) if job.state == "running" else ""
        else:
            result = ""
        rows.append([
            when(job.submitted_at),
            str(job.model or ""),
            job_variant(job),
            STATE_LABELS.get(job.state, str(job.state)),
            result,
        ])
    return rows


def when(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    text = text.replace("[", "(").replace("]", ")")  # the cell is markdown
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + " …"  # whole words


# ---------------------------------------------------------------------- try it


TRY_LABELS = {  # kind -> (first box's label, its example, (second box's label, its example) or None)
    "generate": ("Prompt", "The capital of France is", None),
    "similarity": ("First sentence", "A man is playing a guitar.", ("Second sentence", "Someone plays an instrument.")),
    "classify": ("Text", "I loved this film, the actors were wonderful.", None),
    "zero-shot": ("Labels, one a line", "a street with a house\nshapes on a table\na cat", None),
}
TRY_NOTES = {
    "generate": "The package continues your prompt greedily, driven as swift-transformers drives it, next to the "
                "PyTorch model it came from.",
    "similarity": "How alike two sentences are (cosine of their mean-pooled embeddings), from the package and from "
                  "the PyTorch model.",
    "classify": "The label and top scores of your text, from the package and from the PyTorch model.",
    "classify-image": "The top classes of your photo, from the package and from the PyTorch model.",
    "detect": "What the package finds in your photo, drawn on it (its boxes red, the PyTorch model's blue), "
              "above a score threshold of 0.5.",
    "segment": "The class of each pixel of your photo from the package, beside the PyTorch model's, each drawn in "
               "colour over the photo, with the classes each finds and the share of pixels they agree on.",
    "depth": "The depth map of your photo from the package, beside the PyTorch model's, both drawn on the "
             "PyTorch map's scale (white: its largest value).",
    "zero-shot": "How well each label fits your photo, scored by the image and text packages together as the model "
                 "scores them, beside the PyTorch model.",
    "transcribe": "The transcript of your clip, the three packages driven as WhisperKit drives them (in the model's "
                  "own language, without timestamps), beside the PyTorch model's own generate.",
}


def try_kind(status: JobStatus | None) -> str | None:
    """The try-it a finished, pushed job offers (converters.try_it.kind_of_report), else None."""
    from converters.try_it import kind_of_report

    if not status or status.state != "finished" or not status.pushed:
        return None
    return kind_of_report(status.report or {}, status.task)


def try_unavailable(status: JobStatus | None) -> str | None:
    """Why a finished job's package can't be tried on text (the repo has no usable tokenizer), else None."""
    from converters.try_it import NO_TOKENIZER, TOKENIZED

    why = ((status.report if status else None) or {}).get("tokenizer_missing")
    if not why or try_kind(status) not in TOKENIZED:  # a photo or a clip needs no tokens typed
        return None
    return f'<div class="cm-warning" data-try-unavailable="1">{escape(NO_TOKENIZER.format(why=why))}</div>'


def try_note(kind: str | None, status: JobStatus | None = None) -> str:
    if not kind:
        return ""
    chosen = format_of((status.requested_options if status else {}).get("format"))
    note = TRY_NOTES[kind]
    if not chosen.swift_transformers:  # an .aimodel is not driven by swift-transformers
        note = note.replace(", driven as swift-transformers drives it,", "")
    return f'<div class="cm-muted">{escape(note)} {chosen.try_runs}: its speed is this server\'s CPU, not a device\'s.</div>'


def try_waiting(state: TryStatus) -> str:
    """While a try waits or runs: what it waits for, or how far each side has written."""
    progress = state.progress or {}
    if state.state == "queued":
        waiting = state.waiting_for
        text = "Queued" + (f": {waiting}" if waiting else (f" (position {state.position})" if state.position else "")) + "…"
    else:
        text = (progress.get("message") or "Running the package and the PyTorch model") + "…"
    fraction = progress.get("fraction")
    bar = (f'<progress max="1" value="{float(fraction):.3f}" data-role="try-progress"></progress>'
           if isinstance(fraction, (int, float)) and state.state != "queued" else "")
    return f'<div class="cm-info" data-try-state="{escape(str(state.state))}">{escape(text)}{bar}</div>'


def _rate(side: dict) -> str:
    rate = side.get("tokens_per_second")
    return f"{side.get('tokens', 0)} tokens" + (f", {rate:g} tokens/s" if rate else "")


def try_result(result: dict, inputs: dict | None = None) -> str:
    """A try's answer: the package's beside PyTorch's (`inputs`: what was typed, repeated)."""
    kind, package, pytorch = result.get("kind"), result.get("package") or {}, result.get("pytorch") or {}
    found = formats.mode(result.get("mode") or "fp32")
    mode = found[1].words if found else str(result.get("mode"))
    if kind == "generate":
        rows = [("Package (" + mode + ")", package.get("text", ""), _rate(package)),
                ("PyTorch (float32)", pytorch.get("text", ""), _rate(pytorch))]
        same = result.get("matching_tokens", 0)
        verdict = (f"The first {same} of {pytorch.get('tokens', 0)} tokens are the same."
                   if same < pytorch.get("tokens", 0) else "The same tokens.")
        if package.get("stopped") == "length":
            held = result.get("prompt_tokens", 0) + package.get("tokens", 0)
            verdict += (f" The package stopped when full ({held} tokens): convert with a longer sequence length, "
                        "or a stateful KV cache, to generate more.")
        head = f"<div class='cm-muted'>Prompt: {escape(result.get('prompt', ''))}</div>"
        body = "".join(f"<tr><td>{escape(who)}</td><td data-role='continuation'>{_quoted(text)}</td>"
                       f"<td class='cm-num'>{escape(speed)}</td></tr>" for who, text, speed in rows)
        return (f'<div class="cm-try" data-kind="generate">{head}<table class="cm-table"><thead><tr><th></th>'
                f"<th>Continuation</th><th>Speed</th></tr></thead><tbody>{body}</tbody></table>"
                f"<div data-role='try-verdict'>{escape(verdict)}</div></div>")
    if kind == "similarity":
        body = "".join(f"<tr><td>{escape(who)}</td><td class='cm-num' data-role='similarity'>{side.get('similarity', 0):.4f}</td>"
                       f"<td class='cm-num'>{side.get('seconds', 0):.2f} s</td></tr>"
                       for who, side in (("Package (" + mode + ")", package), ("PyTorch (float32)", pytorch)))
        typed = inputs or {}
        sentences = (f"<div class='cm-muted' data-role='sentences'>{_quoted(typed.get('text'))} and "
                     f"{_quoted(typed.get('other'))}</div>" if typed.get("text") else "")
        meaning = ("Cosine similarity of the two sentences' embeddings: 1 means the same meaning, near 0 unrelated. "
                   "The package should give what PyTorch gives, to about two decimals.")
        return (f'<div class="cm-try" data-kind="similarity">{sentences}<table class="cm-table"><thead><tr><th></th>'
                f"<th>Similarity</th><th>Time</th></tr></thead><tbody>{body}</tbody></table>"
                f"<div class='cm-muted' data-role='meaning'>{escape(meaning)}</div></div>")
    if kind == "classify":
        def scores(side):
            return ", ".join(f"{label} {value:.1%}" for label, value in side.get("scores") or [])
        body = "".join(f"<tr><td>{escape(who)}</td><td data-role='label'>{escape(str(side.get('label')))}</td>"
                       f"<td>{escape(scores(side))}</td></tr>"
                       for who, side in (("Package (" + mode + ")", package), ("PyTorch (float32)", pytorch)))
        return (f'<div class="cm-try" data-kind="classify"><table class="cm-table"><thead><tr><th></th>'
                f"<th>Label</th><th>Top scores</th></tr></thead><tbody>{body}</tbody></table></div>")
    return _try_media_result(kind, result, package, pytorch, mode)


# ---------------------------------------------------------------------- try it on a photo or a clip


def _picture(png: str | None, caption: str, role: str) -> str:
    """One of a try's images (a base64 PNG made by the worker) with its caption."""
    if not png:
        return ""
    return (f"<figure data-role='{escape(role)}'><img src='data:image/png;base64,{escape(png)}' alt='{escape(caption)}'>"
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _seconds(side: dict) -> str:
    return f"{float(side.get('seconds') or 0):.2f} s"


def _try_media_result(kind: str | None, result: dict, package: dict, pytorch: dict, mode: str) -> str:
    """A photo's or a clip's try: the package's answer beside PyTorch's, drawn."""
    sides = (("Package (" + mode + ")", package), ("PyTorch (float32)", pytorch))
    if kind == "depth":
        pictures = (_picture(result.get("photo"), "Your photo, as the package takes it", "photo")
                    + _picture(package.get("map"), f"Package ({mode})", "package-map")
                    + _picture(pytorch.get("map"), "PyTorch (float32)", "pytorch-map"))
        agreement = (f"The two maps: PSNR {float(result.get('psnr_db') or 0):.1f} dB, mean relative error "
                     f"{float(result.get('relative_error') or 0):.2%}. Time: package {_seconds(package)}, "
                     f"PyTorch {_seconds(pytorch)}.")
        return (f'<div class="cm-try" data-kind="depth"><div class="cm-try-images">{pictures}</div>'
                f"<div data-role='try-verdict'>{escape(agreement)}</div></div>")
    if kind == "segment":
        pictures = (_picture(result.get("photo"), "Your photo, as the package takes it", "photo")
                    + _picture(package.get("mask"), f"Package ({mode})", "package-mask")
                    + _picture(pytorch.get("mask"), "PyTorch (float32)", "pytorch-mask"))

        def classes(side):
            return ", ".join(f"<span style='color:{escape(str(colour))}'>&#9632;</span> "
                             f"{escape(str(label))} {float(share):.0%}" for label, share, colour in side.get("classes") or [])
        body = "".join(f"<tr><td>{escape(who)}</td><td data-role='classes'>{classes(side)}</td>"
                       f"<td class='cm-num'>{_seconds(side)}</td></tr>" for who, side in sides)
        agreement = f"The two masks agree on {float(result.get('agreement') or 0):.1%} of the pixels."
        return (f'<div class="cm-try" data-kind="segment"><div class="cm-try-images">{pictures}</div>'
                f"<table class='cm-table'><thead><tr><th></th><th>Classes (share of pixels)</th><th>Time</th></tr></thead>"
                f"<tbody>{body}</tbody></table><div data-role='try-verdict'>{escape(agreement)}</div></div>")
    if kind == "detect":
        def found(side):
            detections = side.get("detections") or []
            return ", ".join(f"{d.get('label')} {float(d.get('score') or 0):.2f}" for d in detections) or "nothing above the threshold"
        body = "".join(f"<tr><td>{escape(who)}</td><td class='cm-num' data-role='count'>{len(side.get('detections') or [])}</td>"
                       f"<td>{escape(found(side))}</td><td class='cm-num'>{_seconds(side)}</td></tr>" for who, side in sides)
        picture = _picture(result.get("drawn"), "Boxes: the package's red, PyTorch's blue", "drawn")
        below = (f"<div class='cm-muted' data-role='below-threshold'>Nothing scored {float(result.get('threshold') or 0):g} "
                 "or more: each side's best few are shown.</div>" if result.get("below_threshold") else "")
        return (f'<div class="cm-try" data-kind="detect"><div class="cm-try-images cm-try-large">{picture}</div>{below}'
                f"<table class='cm-table'><thead><tr><th></th><th>Found</th><th>Label and score</th><th>Time</th></tr></thead>"
                f"<tbody>{body}</tbody></table></div>")
    if kind in ("classify-image", "zero-shot"):
        photo = _picture(result.get("photo"), "Your photo, as the package takes it", "photo")
        if kind == "classify-image":
            def scores(side):
                return ", ".join(f"{label} {value:.1%}" for label, value in side.get("scores") or [])
            body = "".join(f"<tr><td>{escape(who)}</td><td data-role='label'>{escape(str(side.get('label')))}</td>"
                           f"<td>{escape(scores(side))}</td></tr>" for who, side in sides)
            head = "<th>Class</th><th>Top scores</th>"
        else:
            theirs = dict(pytorch.get("probabilities") or [])
            body = "".join(f"<tr><td data-role='label'>{escape(str(label))}</td><td class='cm-num'>{value:.1%}</td>"
                           f"<td class='cm-num'>{float(theirs.get(label, 0)):.1%}</td></tr>"
                           for label, value in package.get("probabilities") or [])
            head = f"<th>Label</th><th>Package ({escape(mode)})</th><th>PyTorch (float32)</th>"
        how = {"softmax": " Probabilities by softmax over the labels, as the model scores them: they add up to 100%.",
               "sigmoid": " Each label's probability by sigmoid, as the model scores them: each stands alone."}
        note = how.get(str(result.get("probability")), "") if kind == "zero-shot" else ""
        meaning = f"<div class='cm-muted' data-role='meaning'>{escape(note.strip())}</div>" if note else ""
        first = "" if kind == "zero-shot" else "<th></th>"
        return (f'<div class="cm-try" data-kind="{escape(kind)}"><div class="cm-try-images">{photo}</div>'
                f"<table class='cm-table'><thead><tr>{first}{head}</tr></thead><tbody>{body}</tbody></table>{meaning}</div>")
    if kind == "transcribe":
        def readable(side) -> bool:  # a tiny random model's tokens decode to broken bytes
            text = side.get("text") or ""
            return bool(text.strip()) and text.count("\ufffd") * 2 < len(text)

        def transcript(side):
            return _quoted(side.get("text")) if readable(side) else "<span class='cm-muted'>(no words: see the token ids)</span>"
        body = "".join(f"<tr><td>{escape(who)}</td><td data-role='transcript'>{transcript(side)}</td>"
                       f"<td class='cm-num'>{_seconds(side)}</td></tr>" for who, side in sides)
        ids = "".join(f"<div>{escape(who)}: <code data-role='token-ids'>{escape(' '.join(map(str, side.get('token_ids') or [])))}"
                      f"</code></div>" for who, side in sides)
        same, total = int(result.get("matching_tokens") or 0), len(pytorch.get("token_ids") or [])
        verdict = ("The same tokens." if same == total == len(package.get("token_ids") or [])
                   else f"The first {same} of {total} tokens are the same.")
        language = (f" Decoded with <code data-role='language-token'>{escape(str(result['language_tokens']))}</code>, the model's "
                    "own language and task." if result.get("language_tokens") else "")
        head = f"<div class='cm-muted'>Your clip: {float(result.get('clip_seconds') or 0):.1f} s, at 16 kHz.{language}</div>"
        return (f'<div class="cm-try" data-kind="transcribe">{head}<table class="cm-table"><thead><tr><th></th>'
                f"<th>Transcript</th><th>Time</th></tr></thead><tbody>{body}</tbody></table>"
                f"<div data-role='try-verdict'>{escape(verdict)}</div>"
                f"<details{'' if all(readable(side) for _, side in sides) else ' open'}><summary>Token ids</summary>{ids}"
                "</details></div>")
    return ""
