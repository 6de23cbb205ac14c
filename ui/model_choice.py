"""Choosing a model: suggestions while typing, then the model's summary and tasks (and the
choices made for another model set back, saying so).
"""

from __future__ import annotations

import gradio as gr

from ui import form, models, render
from ui.identity import Who, safe_text, signed_in
from ui.page import Page

# The options adapt_to_model may set back (the push repo besides).
ADAPTED_OPTIONS = ("kv_cache", "quantize", "minimum_deployment_target")


@signed_in()
def suggest(page: Page, data: dict, who: Who, event: gr.KeyUpData, request: gr.Request):
    """Models matching what is typed. Every key runs (each carries its own text);
    NewestQuery drops answers overtaken by a later key."""
    newest, session = page.suggestions, request.session_hash
    ticket = newest.begin(session)
    found = models.search_models(event.input_value, who.token)
    if not newest.is_newest(session, ticket):
        return gr.skip()
    choices = models.next_choices(newest.shown(session), found, event.input_value)
    if choices is None:
        return gr.skip()
    newest.show(session, choices)
    return {page.model.model_box: gr.update(choices=choices)}


@signed_in()
def inspect(page: Page, data: dict, who: Who) -> dict:
    """The model's summary, tasks and Size field, and what adapt_to_model would change (applied
    by adapt once these are on the page)."""
    chosen, push_repo = page.model, page.destination.push_repo
    text = (data[chosen.model_box] or "").strip()
    if not text:
        return {page.summary: None, chosen.summary_html: "",
                chosen.task_radio: gr.update(choices=[], value=None, visible=False),
                chosen.size_radio: gr.update(visible=False),
                page.destination.convert_button: gr.update(interactive=False),
                page.options.tolerance_html: render.tolerance(None, "float16"),
                push_repo: gr.update(placeholder=form.default_push_repo(who.user, None))}
    summary = models.inspect_model(text, who.token)
    if summary.error:
        summary.error = safe_text(summary.error, who.token)
    previous = data[page.summary].repo_id if data[page.summary] else None
    fields = page.options.fields
    changes, notes = form.adapt_to_model(previous, summary.repo_id, summary.tasks, data[fields["kv_cache"]],
                                         data[push_repo], data[fields["quantize"]],
                                         data[fields["minimum_deployment_target"]])
    summary_html = render.model_summary(summary, render.tracker_url())
    if notes:  # said where the person is looking: under the model they just chose
        summary_html += render.message(" ".join(notes), "info", role="adapted")
    updates = {page.summary: summary, chosen.summary_html: summary_html,
               chosen.task_radio: gr.update(choices=form.task_choices(summary.tasks, summary.default_task),
                                            value=summary.default_task, visible=summary.convertible),
               chosen.size_radio: gr.update(visible=summary.convertible),
               page.destination.convert_button: gr.update(interactive=summary.convertible),
               # A model not found names no target: its repo name would be a guess.
               push_repo: gr.update(placeholder=form.default_push_repo(
                   who.user, summary.name if summary.convertible else None))}
    updates[page.adapted] = changes
    return updates


def adapt(page: Page, data: dict):
    """Applied once the new model's choices are on the page: a field changed here re-runs
    the option checks, which must see this model's tasks, not the previous one's."""
    changes = data[page.adapted] or {}
    fields = page.options.fields
    updates = {fields[name]: changes[name] for name in ADAPTED_OPTIONS if name in changes}
    if "push_repo" in changes:
        updates[page.destination.push_repo] = gr.update(value="")
    return updates or gr.skip()
