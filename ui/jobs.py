"""The job view and "My jobs": queue a job from the form, show a job's status (only what
changed), poll it while it runs, cancel it, list the person's jobs, reopen one of them.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import gradio as gr

from converters.errors import ConverterError, UserInputError
from converters.options import ConversionOptions
from ui import form, models, package_zip, render
from ui.form_checks import restricted, target_updates
from ui.identity import Who, owned, safe_text, signed_in
from ui.page import Page
from ui.try_panel import try_it_setup
from worker import api
from worker.status import JobStatus

log = logging.getLogger("app")  # the web process's log

RECENT_JOBS = 15
ACTIVE_STATES = ("queued", "running")
SIGN_IN_FIRST = "Sign in first: the package is pushed to your Hugging Face account."
NOT_QUEUED = "The job could not be queued (the job service did not answer). Try again in a moment."


# ---- what the handlers share


def jobs_for(user: str | None) -> tuple[list, list]:
    """The "My jobs" rows and their job ids."""
    if not user:
        return [], []
    try:
        jobs = api.recent_jobs(user, RECENT_JOBS)
    except Exception:  # noqa: BLE001 - the list is secondary; the page must keep working
        log.exception("listing jobs failed")
        return [], []
    return render.job_rows(jobs), [j.job_id for j in jobs]


# Workers connect a few seconds after the service starts (each loads the engine first): until
# this long after this web process started, no worker is not yet news (said as "starting").
STARTING_SECONDS = 60
STARTED_AT = time.monotonic()


def starting() -> bool:
    return time.monotonic() - STARTED_AT < STARTING_SECONDS


def workers_text() -> str:
    try:
        return render.workers_note(api.workers(), starting=starting())
    except Exception:  # noqa: BLE001
        log.exception("listing workers failed")
        return render.message("Cannot reach the job queue right now.", "warning")


def awaiting_workers() -> bool:
    """Whether the service is starting and no worker has connected yet (the page then polls to
    say them as soon as they do)."""
    try:
        return starting() and not api.workers()
    except Exception:  # noqa: BLE001 - the note says the queue cannot be reached
        return False


def show(page: Page, status: JobStatus, view: dict | None, user: str | None, fresh: bool = False,
         named: str | None = None, token: str | None = None) -> dict:
    """The job view's updates for a job's status, by component (some of page.view_outputs):
    parts that did not change are left out. `named`: the repo the form names now (page.target),
    read again with `token` when this job's push lands there."""
    view = dict(view or {})
    if status.note and starting():  # "no worker": the service's workers are still connecting
        status = dataclasses.replace(status, note=render.STARTING_JOB)
    active = render.is_active(status)
    state = status.state
    log_text = render.log_html(status)
    report_link = render.report_url(status) if state == "failed" else None
    ended = render.outcome(status, report_link)
    results = render.results(status, report_link, with_outcome=False)
    job_view, shown = page.job_view, page.results
    updates = {
        job_view.group: gr.update(visible=True),
        job_view.status_html: render.job_status(status),
        job_view.cancel_button: gr.update(visible=active),
        shown.download_button: gr.update(visible=package_zip.can_download(status)),
        shown.float32_button: gr.update(visible=render.float32_is_the_remedy(status)),
    }
    if fresh or log_text != view.get("log"):
        updates[job_view.log_box] = log_text
    if fresh or results != view.get("results"):
        updates[shown.results_html] = results
    if fresh or ended != view.get("outcome"):
        updates[shown.outcome_html] = ended
    if fresh:
        updates[shown.download_file] = gr.update(value=None, visible=False)
    # "My jobs" is read again when the shown job moves to a new stage or any listed job changes
    # state (one cheap read of the listed jobs' states per poll, not every job's status).
    moved = fresh or view.get("state") != state or view.get("stage") != status.stage
    listed = view.get("listed") or {}
    if moved or listed_changed(listed):
        updates[page.my_jobs.jobs_table], updates[page.job_ids] = jobs_for(user)
        listed = listed_states(updates[page.job_ids])
        # The workers note too: a page opened before its worker connected said "no worker" while the job ran.
        updates[page.options.workers_html] = workers_text()
    if moved and state == "finished" and status.pushed and status.push_kind != form.PULL_REQUEST \
            and named and status.push_target == named:
        # The repo the form names exists now: converting again into it is warned about at once,
        # read from the Hub (a page reloaded since, naming no repo, is told nothing of it).
        found = target_updates(page, named, token, (status.model or "").split("/")[-1] or None, _options_of(status))
        updates.update({component: update for component, update in found.items() if component is not page.target})
    # A panel prepared for another job is emptied: its prompt and answer were that job's.
    switched = view.get("job_id") != status.job_id
    if moved or switched:
        updates.update(try_it_setup(page.results.try_it, render.try_kind(status), fresh or switched,
                                    render.try_unavailable(status), status))
    view.update(state=state, stage=status.stage, log=log_text, results=results, outcome=ended,
                listed=listed, job_id=status.job_id)
    updates[page.view] = view
    # Polling goes on while this job or any listed one is active, so the list never shows a stale state.
    updates[page.timer] = gr.Timer(active=active or any(s in ACTIVE_STATES for s in listed.values()))
    return updates


def _options_of(status: JobStatus) -> ConversionOptions | None:
    try:
        return ConversionOptions.from_strings(**status.requested_options)
    except UserInputError:  # a job from an older service: the defaults
        return None


def listed_states(job_ids: list[str]) -> dict[str, str]:
    try:
        return api.states(list(job_ids))
    except Exception:  # noqa: BLE001 - the list is secondary
        log.exception("reading the listed jobs' states failed")
        return {}


def listed_changed(listed: dict[str, str]) -> bool:
    return bool(listed) and listed_states(list(listed)) != listed


# ---- Convert, poll, cancel


def said_under_convert(page: Page, data: dict, text: str) -> dict:
    """Why a job was not queued, under the Convert button."""
    return {page.destination.submit_html: render.message(text, "error")}


@signed_in(said_under_convert, required=SIGN_IN_FIRST)
def submit(page: Page, data: dict, who: Who) -> dict:
    """Queue the form's job and show it."""
    chosen, options, where = page.model, page.options, page.destination
    values = form.FormValues(
        model=data[chosen.model_box] or "", task=data[chosen.task_radio],
        option_values={name: data[field] for name, field in options.fields.items()},
        runner=data[options.runner], push=data[where.push], push_repo=data[where.push_repo],
        visibility=data[where.visibility], remove_others=data[where.remove_others],
        push_even_if_invalid=data[options.push_anyway],
        restricted=restricted(data[page.summary]), confirmed_public=data[where.confirm_public])
    # What the form refuses is refused here too: Convert may be pressed before the form's check of
    # the last change has answered (a stateful cache for iOS17 was queued, then failed at once).
    summary = data[page.summary]
    if summary is not None and (problem := models.check_options(summary, values.task, values.options())):
        return said_under_convert(page, data, problem)
    try:
        job_id = api.submit(values.to_spec(who.token, who.user))
        status = api.status(job_id)
    except ConverterError:
        raise  # a request to fix, or the Hub unavailable (try again): said by @signed_in
    except Exception as error:  # noqa: BLE001 - say it plainly; the details go to the log
        log.error("submitting failed: %s", safe_text(error, who.token))
        return said_under_convert(page, data, NOT_QUEUED)
    return {where.submit_html: "", page.job: job_id, **show(page, status, data[page.view], who.user, fresh=True)}


def stop_polling(page: Page) -> dict:  # made when called: a Timer made while building would join the page
    return {page.timer: gr.Timer(active=False)}


@signed_in()
def poll(page: Page, data: dict, who: Who):
    if not data[page.job]:  # no job shown: polled only while the service starts, to say its workers when they connect
        return {page.options.workers_html: workers_text(), **({} if awaiting_workers() else stop_polling(page))}
    try:
        status = api.status(data[page.job])
    except Exception:  # noqa: BLE001 - Redis hiccup: keep polling, say nothing new
        log.exception("status of %s failed", data[page.job])
        return gr.skip()
    if not owned(status, who.user):
        return stop_polling(page)
    return show(page, status, data[page.view], who.user, named=data[page.target], token=who.token)


@signed_in()
def cancel(page: Page, data: dict, who: Who):
    if not data[page.job]:
        return gr.skip()
    try:
        return show(page, api.cancel(data[page.job], user=who.user), data[page.view], who.user)
    except UserInputError:  # not this user's job: nothing to show or change
        return gr.skip()


# ---- My jobs


@signed_in()
def refresh(page: Page, data: dict, who: Who) -> dict:
    rows, ids = jobs_for(who.user)
    return {page.my_jobs.jobs_table: rows, page.job_ids: ids, page.options.workers_html: workers_text()}


@signed_in()
def open_job(page: Page, data: dict, who: Who, event: gr.SelectData):
    """Show the job of the row clicked."""
    ids = data[page.job_ids]
    row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
    if row is None or row >= len(ids):
        return gr.skip()
    status = api.status(ids[row])
    if not owned(status, who.user):
        return gr.skip()
    # The form shows the reopened job's model (read again: its summary, tasks and sizes).
    return {page.job: ids[row], page.model.model_box: gr.update(value=status.model),
            **show(page, status, data[page.view], who.user, fresh=True)}
