"""The finished job's actions: download its package as a zip, or convert it again in float32
when only float16 failed validation.
"""

from __future__ import annotations

import gradio as gr

from converters.errors import UserInputError
from ui import package_zip, render
from ui.identity import Who, owned, signed_in
from ui.jobs import show
from ui.page import Page
from worker import api

DOWNLOAD_LABEL = "Download the package (.zip)"
PREPARING = "Preparing the zip… (a large package takes a minute)"


def said_above_the_outcome(page: Page, data: dict, text: str) -> dict:
    """An action's error, said at its button, above the job's own outcome (which stays)."""
    return {page.results.outcome_html: render.message(text, "error") + render.outcome(api.status(data[page.job]))}


@signed_in(said_above_the_outcome)
def convert_in_float32(page: Page, data: dict, who: Who) -> dict:
    job_id = api.resubmit(data[page.job], who.token, who.user, precision="float32")
    status = api.status(job_id)
    return {page.destination.submit_html: "", page.options.fields["precision"]: "float32", page.job: job_id,
            **show(page, status, data[page.view], who.user, fresh=True)}


def preparing_download(page: Page):
    """A big package takes a while to fetch and zip: the button itself says so meanwhile."""
    return gr.update(value=PREPARING, interactive=False)


def download_failed(page: Page, data: dict, text: str) -> dict:
    return {page.results.download_file: gr.update(visible=False),
            page.results.download_button: gr.update(value=DOWNLOAD_LABEL, interactive=True),
            **said_above_the_outcome(page, data, text)}


@signed_in(download_failed, catch=UserInputError)
def download(page: Page, data: dict, who: Who) -> dict:
    shown = page.results
    job_id = data[page.job]
    status = api.status(job_id) if job_id else None
    ready = gr.update(value=DOWNLOAD_LABEL, interactive=True)
    if not status or not owned(status, who.user):
        return {shown.download_file: gr.update(visible=False), shown.download_button: ready,
                shown.outcome_html: render.message("There is no package to download.", "error")}
    # A push that failed after the checks passed: the zip the worker kept; else the pushed commit's.
    path = package_zip.kept_zip(status) if status.kept_package else package_zip.build_zip(status, who.token)
    return {shown.download_file: gr.update(value=str(path), visible=True), shown.download_button: ready}
