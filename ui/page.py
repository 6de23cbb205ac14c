"""The page's components by section (app.py lays them out and fills these in), the session's
state, the per-page bookkeeping the handlers share, and the page's theme. The handlers in ui/ take a Page
and the event's inputs as one dict keyed by component (inputs given as a set), and return
a dict keyed by component: a component left out of the returned dict is left as it is, and
no handler depends on positions.
"""

from __future__ import annotations

import inspect
import os
import typing
from dataclasses import dataclass, field

import gradio as gr

from ui.models import NewestQuery

POLL_SECONDS = float(os.environ.get("COREML_CONVERTER_POLL_SECONDS") or 1.0)


@dataclass
class SignIn:
    user_html: gr.HTML  # who is signed in
    token_box: gr.Textbox | None = None  # self-hosted only: a Space signs in with Hugging Face
    sign_in_button: gr.Button | None = None
    sign_out_button: gr.Button | None = None


@dataclass
class ModelChoice:
    model_box: gr.Dropdown
    summary_html: gr.HTML  # what the model is and whether it converts
    task_radio: gr.Radio
    size_radio: gr.Radio  # the weight compression option as "Size", each choice with its expected package size


@dataclass
class OptionsForm:
    fields: dict[str, gr.components.Component]  # one per engine option, by its name in the option table
    sequence_html: gr.HTML  # what the sequence length means for an app
    tolerance_html: gr.HTML  # the thresholds the tolerance gives this architecture
    runner: gr.Radio
    workers_html: gr.HTML  # the workers connected (next to the runner choice)
    push_anyway: gr.Checkbox


@dataclass
class Destination:
    push: gr.Radio
    push_repo: gr.Textbox
    visibility: gr.Radio  # form.VISIBILITY_CHOICES
    confirm_public: gr.Checkbox  # shown when a gated or private model's copy is to be public
    licence_html: gr.HTML  # why a gated or private model's copy is private
    target_html: gr.HTML  # says so when the target repo exists (a push replaces its package)
    remove_others: gr.Checkbox  # a push into an existing repo also removes its other packages
    problem_html: gr.HTML  # the engine's refusal of these options for this model
    convert_button: gr.Button
    submit_html: gr.HTML  # why a job was not queued


@dataclass
class JobView:
    group: gr.Column
    status_html: gr.HTML
    log_box: gr.HTML
    cancel_button: gr.Button


@dataclass
class TryIt:
    """Run the pushed package on your own text, photo or clip (a worker runs it; see worker/try_it.py)."""

    group: gr.Accordion
    note_html: gr.HTML
    text_box: gr.Textbox  # a prompt, a text, or an image-and-text model's labels
    other_box: gr.Textbox  # the second sentence of an embedder's similarity
    run_button: gr.Button
    output_html: gr.HTML
    photo_group: gr.Column | None = None  # the photo and the sample photos (ui/try_panel.py)
    photo: gr.Image | None = None
    clip: gr.Audio | None = None  # a speech model's clip: uploaded or recorded

    @property
    def components(self) -> list:
        """What setting the panel up for a job may update."""
        return [self.group, self.note_html, self.text_box, self.other_box, self.run_button, self.output_html,
                *(c for c in (self.photo_group, self.photo, self.clip) if c is not None)]


@dataclass
class Results:
    outcome_html: gr.HTML  # pushed where, or why not: the actions sit right under it
    results_html: gr.HTML
    float32_button: gr.Button  # the one action when only float16 failed validation
    download_button: gr.Button
    download_file: gr.File
    try_it: TryIt


@dataclass
class MyJobs:
    refresh_button: gr.Button
    jobs_table: gr.Dataframe


@dataclass
class Page:
    """The page's components by section, and the session's state."""

    session: gr.State  # {"user", "token"}: server-side only, never sent to the browser
    summary: gr.State  # ui.models.ModelSummary of the chosen model
    job: gr.State  # the job shown in the job view
    view: gr.State  # what the job view shows now (to skip unchanged updates)
    job_ids: gr.State  # job ids of the "My jobs" rows
    remembered: gr.BrowserState  # in the browser: {"session": a sign-in's reference (worker/sessions.py)}
    timer: gr.Timer  # polls the job shown while it runs
    sign_in: SignIn
    model: ModelChoice
    options: OptionsForm
    destination: Destination
    job_view: JobView
    results: Results
    my_jobs: MyJobs
    # The repo the form names now (ui.form_checks.announce): a job's push there is announced
    # at once when it lands; another repo is not the form's business.
    target: gr.State | None = None
    # What adapt_to_model changes when a model is read, between its two steps (made when the
    # model choice is wired).
    adapted: gr.State | None = None
    # A running try's event: opening or starting another job cancels it, so no answer of an
    # earlier job's try lands in the panel of the job shown now.
    try_event: object = None
    # Only the answer to a session's newest model search, target lookup, option check and size
    # estimate is shown.
    suggestions: NewestQuery = field(default_factory=NewestQuery)
    target_lookups: NewestQuery = field(default_factory=NewestQuery)
    option_checks: NewestQuery = field(default_factory=NewestQuery)
    size_lookups: NewestQuery = field(default_factory=NewestQuery)

    @property
    def view_outputs(self) -> list:
        """What showing a job may update (see ui.jobs.show())."""
        return [self.job_view.group, self.job_view.status_html, self.job_view.log_box, self.job_view.cancel_button,
                self.results.outcome_html, self.results.results_html, self.results.float32_button,
                self.results.download_button, self.results.download_file, self.timer,
                *self.results.try_it.components, self.view, self.my_jobs.jobs_table, self.job_ids, self.destination.target_html,
                self.destination.remove_others, self.options.workers_html]


def presented_like(event: typing.Callable, handler: typing.Callable, without: str,
                   then: tuple[tuple[str, object], ...] = ()) -> typing.Callable:
    """Give `event`, the function Gradio will call for `handler`, what Gradio reads of it: the
    handler's name, and its parameters without `without`, then `then` (name, annotation) ones.
    Gradio injects the request, the event's data and the OAuth sign-in by the parameters'
    annotations, at their positions."""
    hints = typing.get_type_hints(handler)
    parameters = [p.replace(annotation=hints.get(p.name, p.empty))
                  for p in inspect.signature(handler).parameters.values() if p.name != without]
    parameters += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=hint)
                   for name, hint in then]
    returns = hints.get("return", inspect.Signature.empty)
    event.__signature__ = inspect.Signature(parameters, return_annotation=returns)
    event.__annotations__ = {p.name: p.annotation for p in parameters if p.annotation is not p.empty}
    if returns is not inspect.Signature.empty:
        event.__annotations__["return"] = returns
    event.__name__ = event.__qualname__ = handler.__name__
    event.__doc__ = handler.__doc__
    return event


def theme() -> gr.themes.Base:
    # System fonts: the page must not need Google Fonts (self-hosted, offline networks).
    return gr.themes.Soft(
        font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )
