"""The "Try it" panel: set up for the job shown (the boxes its kind needs), and run the pushed
package on the person's text (a worker runs it; this only queues the try and polls it).
"""

from __future__ import annotations

import time

import gradio as gr

from ui import render
from ui.identity import Who, owned, safe_text, signed_in
from ui.page import POLL_SECONDS, Page, TryIt
from worker import api
from worker.status import JobStatus


def try_it_setup(panel: TryIt, kind: str | None, fresh: bool, unavailable: str | None = None,
                 status: JobStatus | None = None) -> dict:
    """The Try it panel for a job: shown with the boxes its kind needs (typed text is kept
    while the same job is shown), or only with why it can't be tried (`unavailable`)."""
    if kind is None:  # hidden, and emptied: nothing of an earlier job's try may reappear with it
        return {panel.group: gr.update(visible=False), panel.output_html: "", panel.text_box: gr.update(value=""),
                panel.other_box: gr.update(value="")}
    if unavailable:
        return {panel.group: gr.update(visible=True), panel.note_html: unavailable, panel.output_html: "",
                panel.text_box: gr.update(visible=False), panel.other_box: gr.update(visible=False),
                panel.run_button: gr.update(visible=False)}
    label, example, second = render.TRY_LABELS[kind]
    other, other_example = second or ("", "")
    updates = {panel.group: gr.update(visible=True), panel.note_html: render.try_note(kind, status),
               panel.text_box: gr.update(label=label, placeholder=example, visible=True),
               panel.other_box: gr.update(label=other, visible=bool(other), placeholder=other_example),
               panel.run_button: gr.update(visible=True)}
    if fresh:
        updates[panel.text_box] = gr.update(label=label, placeholder=example, value="", visible=True)
        updates[panel.other_box] = gr.update(label=other, visible=bool(other), placeholder=other_example, value="")
        updates[panel.output_html] = ""
    return updates


def said_in_the_panel(page: Page, data: dict, text: str) -> str:
    return render.message(text, "error")


@signed_in(said_in_the_panel)
def try_package(page: Page, data: dict, who: Who):
    """Queue the try, then wait for its answer here (the worker runs it; this only polls)."""
    panel = page.results.try_it
    status = api.status(data[page.job]) if data[page.job] else None
    kind = render.try_kind(status) if status and owned(status, who.user) else None
    if kind is None:
        yield render.message("There is no package to try: convert a model first.", "error")
        return
    _, example, second = render.TRY_LABELS[kind]
    inputs = {"text": data[panel.text_box] or example}  # an empty box tries the shown example
    if second:
        inputs["other"] = data[panel.other_box] or second[1]
    try_id = api.submit_try(data[page.job], who.token, who.user, kind, inputs)  # its refusal: said by @signed_in
    deadline = time.monotonic() + api.TRY_TIMEOUT + 60
    while time.monotonic() < deadline:
        state = api.try_status(try_id, who.user)
        if state.state == "finished" and state.result:
            yield render.try_result(state.result, inputs)
            return
        if state.ended:
            yield render.message(safe_text(state.error or "The try failed.", who.token), "error")
            return
        yield render.try_waiting(state)
        time.sleep(POLL_SECONDS)
    yield render.message("No worker answered in time: run it again in a moment.", "error")
