"""Core ML Converter: the web UI (Gradio 6). The page's layout and its events' wiring only:
the handlers are in ui/ (one module per part of the page), jobs go through worker.api, model
checks are the engine's own (via ui/), HTML comes from ui/render.

    python app.py      # what `make run` and the Docker image run

Sign-in: "Sign in with Hugging Face" (OAuth) when running as a Space (SYSTEM=spaces);
a token field when self-hosted. With no REDIS_URL the app starts a private redis-server
and a worker next to itself (worker.embedded); with REDIS_URL it uses that Redis and the
workers connected to it. Tokens stay on the server (session state, encrypted in Redis
while a job needs them) and are never rendered back into the page or the logs.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import typing

import gradio as gr

from converters.options import OPTIONS
from ui import form, form_checks, jobs, model_choice, models, render, results, sign_in, try_panel
from ui.page import (POLL_SECONDS, Destination, JobView, ModelChoice, MyJobs, OptionsForm, Page, Results, SignIn,
                     presented_like, theme)
from ui.results import DOWNLOAD_LABEL
from worker import api

log = logging.getLogger("app")

ON_SPACES = os.environ.get("SYSTEM") == "spaces"
MAINTENANCE_SECONDS = 60
SCROLL_TO_JOB = "() => document.querySelector('#job')?.scrollIntoView({behavior: 'smooth', block: 'start'})"
QUIET = {"api_visibility": "private"}  # the page's own events, not a public API
POLLING = {"concurrency_limit": None, "show_progress": "hidden", **QUIET}
TYPED = {"trigger_mode": "always_last", "show_progress": "hidden"}  # a text box's change: its last text

INTRO = """# Core ML Converter
Turn a Hugging Face model into a **Core ML** package for iPhone, iPad and Mac apps. Every package is
checked against the PyTorch model before it is pushed to your Hugging Face account."""


# ---------------------------------------------------------------------- the page
# build_demo lays the page out section by section (each section function returns its
# components by name, see ui/page.py), then wires the events to the handlers in ui/.


def build_demo(on_spaces: bool = ON_SPACES) -> gr.Blocks:
    with gr.Blocks(title="Core ML Converter", delete_cache=(1800, 3600)) as demo:
        page = lay_out_page(on_spaces)
        checks = wire_form_checks(page)
        wire_page_load(demo, page, target=checks[2])
        wire_sign_in(page)
        wire_model_choice(page, checks)
        wire_results(page)  # first: the events below cancel its try
        wire_job(page)
        wire_my_jobs(page)
    return demo


def lay_out_page(on_spaces: bool) -> Page:
    """The page's components (inside a gr.Blocks), section by section in page order."""
    states = {name: gr.State(value) for name, value in
              (("session", {}), ("summary", None), ("job", None), ("view", {}), ("job_ids", []), ("target", None))}
    remembered = gr.BrowserState({}, storage_key="coreml-converter")  # a reference only, never the token
    timer = gr.Timer(POLL_SECONDS, active=False)
    gr.Markdown(INTRO)
    sign_in = sign_in_section(on_spaces)
    model = model_section()
    options = options_section({form.SIZE_OPTION: model.size_radio})
    destination = destination_section()
    # A Column, not a Group, carries the id: Gradio gives a Group's id to two nested divs.
    with gr.Column(visible=False, elem_id="job") as job_group, gr.Group():
        job_view = job_view_section(job_group)
        results = results_section()
    return Page(**states, remembered=remembered, timer=timer, sign_in=sign_in, model=model, options=options,
                destination=destination, job_view=job_view, results=results, my_jobs=my_jobs_section())


# ---- sections: the components, in page order


def sign_in_section(on_spaces: bool) -> SignIn:
    with gr.Row(elem_id="signin"):
        if on_spaces:
            gr.LoginButton(value="Sign in with Hugging Face", size="md", scale=0, min_width=320)
            return SignIn(gr.HTML(render.signed_in(None), elem_id="user"))
        token_box = gr.Textbox(
            label="Hugging Face token", type="password", placeholder="hf_…", scale=4, elem_id="token",
            info="A token with write access (Hub settings → Access Tokens). It stays on this server.")
        sign_in_button = gr.Button("Sign in", scale=0, min_width=140, elem_id="sign-in")
        user_html = gr.HTML(render.signed_in(None), elem_id="user")
        sign_out_button = gr.Button("Sign out", scale=0, min_width=120, size="sm", visible=False, elem_id="sign-out")
    return SignIn(user_html, token_box, sign_in_button, sign_out_button)


def model_section() -> ModelChoice:
    gr.Markdown("### 1. Choose a model")
    model_box = gr.Dropdown(
        label="Model", info=form.HELP["model"], choices=[], value=None, allow_custom_value=True,
        filterable=True, elem_id="model")
    summary_html = gr.HTML(elem_id="model-summary")
    task_radio = gr.Radio(label="Task", info=form.HELP["task"], choices=[], value=None, visible=False, elem_id="task")
    # Shown with the tasks: a person new to Core ML meets weight compression as the package's size.
    size_radio = option_component(form.SIZE_OPTION, visible=False)
    return ModelChoice(model_box, summary_html, task_radio, size_radio)


# Notes shown under an option's field: their elem_id and first content.
OPTION_NOTES = {
    "sequence_length": ("sequence-note", lambda: render.message(form.sequence_note(OPTIONS["sequence_length"].default)[1])),
    "tolerance": ("tolerance-thresholds", lambda: render.tolerance(None, OPTIONS["precision"].default)),
}


def option_component(name: str, **extra) -> gr.components.Component:
    """The field of one engine option, from its row in the option table (label, help, choices,
    default): a text box for free text, radio buttons for a few choices (and for Size, whose
    choices each show a size), a dropdown for many."""
    spec = form.option_field(name)
    elem_id = name.replace("_", "-")
    if "choices" not in spec:
        return gr.Textbox(**spec, elem_id=elem_id, **extra)
    kind = gr.Dropdown if len(spec["choices"]) > 4 and name != form.SIZE_OPTION else gr.Radio
    return kind(**spec, elem_id=elem_id, **extra)


def options_section(placed: dict[str, gr.components.Component]) -> OptionsForm:
    """Every option of the option table not `placed` elsewhere (Size: under the task), two to a
    row in the table's order, then where to validate. Its fields hold every option, placed or not."""
    fields, notes = {}, {}
    names = [name for name in OPTIONS if name not in placed]
    with gr.Accordion("2. Options: the defaults suit most apps", open=False, elem_id="options"):
        for pair in (names[i:i + 2] for i in range(0, len(names), 2)):
            with gr.Row():
                for name in pair:
                    with gr.Column():
                        fields[name] = option_component(name, visible=form.shown_before_a_model(name))
                        if name in OPTION_NOTES:
                            elem_id, content = OPTION_NOTES[name]
                            notes[name] = gr.HTML(content(), elem_id=elem_id)
        with gr.Row():
            with gr.Column():
                runner = gr.Radio(**form.runner_field(None), elem_id="runner")  # in the chosen format's words
                workers_html = gr.HTML(elem_id="workers")
            push_anyway = gr.Checkbox(False, label="Push even if validation fails", info=form.HELP["push_anyway"],
                                      elem_id="push-anyway")
    fields = {name: placed.get(name) or fields[name] for name in OPTIONS}  # the table's order
    return OptionsForm(fields, notes["sequence_length"], notes["tolerance"], runner, workers_html, push_anyway)


def destination_section() -> Destination:
    gr.Markdown("### 3. Where the result goes")
    with gr.Row():
        push = gr.Radio(form.PUSH_CHOICES, value=form.NEW_REPO, label="Push to", info=form.HELP["push"],
                        elem_id="push")
        push_repo = gr.Textbox(label="Repo name", placeholder=form.default_push_repo(None, None),
                               info=form.HELP["push_repo"], elem_id="push-repo")
        visibility = gr.Radio(form.VISIBILITY_CHOICES, value=form.AUTO, label="Visibility", info=form.HELP["private"],
                              elem_id="visibility")
    licence_html = gr.HTML(elem_id="licence-note")
    confirm_public = gr.Checkbox(False, label=form.CONFIRM_PUBLIC, visible=False, elem_id="confirm-public")
    target_html = gr.HTML(elem_id="push-target-note")
    remove_others = gr.Checkbox(False, label=form.REMOVE_OTHERS, visible=False, elem_id="remove-others")
    problem_html = gr.HTML(elem_id="option-check")
    convert_button = gr.Button("Convert", variant="primary", interactive=False, elem_id="convert")
    submit_html = gr.HTML(elem_id="submit-message")
    return Destination(push, push_repo, visibility, confirm_public, licence_html, target_html, remove_others,
                       problem_html, convert_button, submit_html)


def job_view_section(group: gr.Column) -> JobView:
    status_html = gr.HTML(elem_id="job-status")
    log_box = gr.HTML(elem_id="job-log")
    cancel_button = gr.Button("Cancel this job", variant="stop", visible=False, elem_id="cancel")
    return JobView(group, status_html, log_box, cancel_button)


def results_section() -> Results:
    with gr.Column(elem_id="job-results"):
        outcome_html = gr.HTML(elem_id="job-outcome")
        float32_button = gr.Button("Convert in float32", variant="primary", visible=False, elem_id="convert-float32")
        download_button = gr.Button(DOWNLOAD_LABEL, visible=False, elem_id="download")
        download_file = gr.File(label="Package", visible=False, interactive=False, elem_id="download-file")
        try_it = try_panel.try_it_section()
        results_html = gr.HTML(elem_id="job-evidence")
    return Results(outcome_html, results_html, float32_button, download_button, download_file, try_it)


def my_jobs_section() -> MyJobs:
    with gr.Accordion("My jobs", open=True, elem_id="my-jobs"):
        with gr.Row():
            gr.Markdown("Your recent conversions. Click a row to show it above.")
            refresh_button = gr.Button("Refresh", scale=0, size="sm", elem_id="refresh-jobs")
        jobs_table = gr.Dataframe(headers=render.JOB_HEADERS, value=[], interactive=False, wrap=True,
                                  datatype=["str", "str", "str", "str", "markdown"], elem_id="jobs-table")
    return MyJobs(refresh_button, jobs_table)


# ---- events, by section


def bind(page: Page, handler: typing.Callable) -> typing.Callable:
    """`handler(page, ...)` as this page's event function (see ui.page.presented_like). Made
    here, the page's events are app's own (tests find them by their __module__)."""
    if inspect.isgeneratorfunction(handler):
        def event(*args):
            yield from handler(page, *args)
    else:
        def event(*args):
            return handler(page, *args)
    return presented_like(event, handler, without="page")


def wire_page_load(demo: gr.Blocks, page: Page, target: dict) -> None:
    """A reload or a second tab finds the user signed in, their jobs and running job shown, the target repo re-read."""
    box = page.sign_in
    sign_in_outputs = [c for c in (box.token_box, box.sign_in_button, box.sign_out_button) if c is not None]
    demo.load(bind(page, sign_in.on_load), {page.session, page.remembered},
              [page.session, page.remembered, box.user_html, *sign_in_outputs, page.job, *page.view_outputs],
              concurrency_limit=None, **QUIET).then(**target, **QUIET)


def wire_sign_in(page: Page) -> None:
    """Self-hosted: signing in and out with a token (a Space signs in with Hugging Face)."""
    box = page.sign_in
    if box.token_box is None:
        return
    outputs = [page.session, page.remembered, box.token_box, box.user_html, box.sign_in_button, box.sign_out_button,
               page.my_jobs.jobs_table, page.job_ids, page.destination.submit_html]
    handler = bind(page, sign_in.sign_in)
    box.sign_in_button.click(handler, {box.token_box}, outputs, **QUIET)
    box.token_box.submit(handler, {box.token_box}, outputs, **QUIET)
    box.sign_out_button.click(bind(page, sign_in.sign_out), {page.remembered}, outputs, **QUIET)


def on_change(event: dict, fields: list, **settings) -> dict:
    """Run `event` (fn, inputs, outputs) when any of `fields` changes (a text box: its last text)."""
    for field in fields:
        field.change(**event, **settings, **(TYPED if isinstance(field, gr.Textbox) else {}), **QUIET)
    return event


def wire_form_checks(page: Page) -> list[dict]:
    """Say at once, as the form is filled in: what the engine would refuse, what the sequence
    length means and which thresholds the tolerance gives; the package size of each Size
    choice; whether the target repo exists (a push replaces the package in it); why a gated or
    private model's copy is private. Returns these as events (fn, inputs, outputs), which also
    run once a model is read."""
    fields, chosen, where = page.options.fields, page.model, page.destination
    check = on_change({"fn": bind(page, form_checks.check),
                       "inputs": {page.summary, chosen.task_radio, page.options.runner, *fields.values()},
                       "outputs": [page.options.sequence_html, where.problem_html, page.options.tolerance_html,
                                   where.convert_button, page.options.runner,
                                   fields[form.TARGET], fields["format"], fields[form.LLM_BUNDLE],
                                   *(fields[name] for name in form.SPEECH_UNUSED)],
                       # In the order the browser sent them, after an edit or a model read alike (as the
                       # target lookup): side by side, a model read's check could start after the format
                       # change that followed it and show the old format's answer as the newest.
                       "concurrency_limit": 1, "concurrency_id": "option-check"},
                      [chosen.task_radio, *fields.values()])
    where.push.change(bind(page, form_checks.push_changed), {where.push}, [where.push_repo, where.visibility], **QUIET)
    # The Size field itself is no input: a change of its choices must not start this again.
    affecting = [fields[name] for name in form_checks.SIZE_INPUTS]
    sizes = on_change({"fn": bind(page, form_checks.sizes), "inputs": {page.summary, chosen.task_radio, *affecting},
                       "outputs": [chosen.size_radio]}, [chosen.task_radio, *affecting], concurrency_limit=None)
    naming = [fields[name] for name in form_checks.NAMING_OPTIONS]
    target = {"fn": bind(page, form_checks.announce),
              "inputs": {where.push, where.push_repo, page.summary, page.session, *naming},
              "outputs": [where.target_html, where.push_repo, where.remove_others, page.target],
              # One lookup at a time, in the order the browser sent them — after an edit, a model
              # read or a reload alike: run side by side, an earlier lookup could start after a
              # later one's and take the "newest" ticket from it (a full run under load showed
              # a model read's lookup of the default repo hiding the typed repo's note).
              "concurrency_limit": 1, "concurrency_id": "push-target"}
    for field in (where.push, *naming):
        field.change(**target, **QUIET)
    where.push_repo.change(**target, trigger_mode="multiple", show_progress="hidden", **QUIET)
    visibility = on_change({"fn": bind(page, form_checks.explain),
                            "inputs": {page.summary, where.visibility, where.confirm_public},
                            "outputs": [where.licence_html, where.confirm_public]},
                           [where.visibility], concurrency_limit=None)
    return [check, sizes, target, visibility]


def wire_model_choice(page: Page, checks: list[dict]) -> None:
    """Suggestions while typing, then the model's summary and tasks, then the form's checks for it."""
    chosen = page.model
    # Every key runs (each carries its own text); NewestQuery drops answers overtaken by a later key.
    chosen.model_box.key_up(bind(page, model_choice.suggest), {page.session}, [chosen.model_box],
                            trigger_mode="multiple", **POLLING)
    # The model's summary first, then the option checks and the expected sizes for it.
    push_repo, adapted_fields = page.destination.push_repo, [page.options.fields[name] for name in model_choice.ADAPTED_OPTIONS]
    page.adapted = gr.State({})  # what adapt_to_model changes, between the two steps
    read = chosen.model_box.change(
        bind(page, model_choice.inspect), {chosen.model_box, page.session, page.summary, push_repo, *adapted_fields},
        [page.summary, chosen.summary_html, chosen.task_radio, chosen.size_radio, page.destination.convert_button,
         page.options.tolerance_html, push_repo, page.adapted],
        concurrency_limit=None, trigger_mode="always_last", **QUIET,
    ).then(bind(page, model_choice.adapt), {page.adapted}, [push_repo, *adapted_fields], concurrency_limit=None, **QUIET)
    for event in checks:
        read.then(**{"concurrency_limit": None, **event}, **QUIET)  # the target lookup keeps its own queue


def wire_job(page: Page) -> None:
    """Convert (queue a job and show it), then poll it while it runs, or cancel it."""
    chosen, options, where = page.model, page.options, page.destination
    where.convert_button.click(
        bind(page, jobs.submit),
        {chosen.model_box, chosen.task_radio, *options.fields.values(), options.runner, options.push_anyway,
         where.push, where.push_repo, where.visibility, where.confirm_public, where.remove_others, page.summary,
         page.view, page.session},
        [where.submit_html, page.job, *page.view_outputs], concurrency_limit=None, cancels=[page.try_event], **QUIET,
    ).then(None, js=SCROLL_TO_JOB)  # the job view appears below the form: bring it into sight
    page.timer.tick(bind(page, jobs.poll), {page.job, page.view, page.session, page.target}, page.view_outputs, **POLLING)
    page.job_view.cancel_button.click(bind(page, jobs.cancel), {page.job, page.view, page.session}, page.view_outputs,
                                      concurrency_limit=None, **QUIET)


def wire_results(page: Page) -> None:
    """Try the package on your own text; convert again in float32; download the package as a zip."""
    shown, panel = page.results, page.results.try_it
    page.try_event = panel.run_button.click(
        bind(page, try_panel.try_package),
        {page.job, page.session, panel.text_box, panel.other_box, panel.photo, panel.clip},
        [panel.output_html], concurrency_limit=None, show_progress="hidden", **QUIET)
    shown.float32_button.click(
        bind(page, results.convert_in_float32), {page.job, page.view, page.session},
        [page.destination.submit_html, page.options.fields["precision"], page.job, *page.view_outputs],
        concurrency_limit=None, cancels=[page.try_event], **QUIET)
    # A big package takes a while to fetch and zip: the button itself says so meanwhile (the
    # page's progress marks sit far above it), and the progress shows on the button.
    shown.download_button.click(
        bind(page, results.preparing_download), None, [shown.download_button], concurrency_limit=None,
        show_progress="hidden", **QUIET,
    ).then(bind(page, results.download), {page.job, page.session},
           [shown.download_file, shown.download_button, shown.outcome_html],
           concurrency_limit=4, show_progress_on=[shown.download_button], **QUIET)


def wire_my_jobs(page: Page) -> None:
    """Refresh the list; click a row to show that job above."""
    table = page.my_jobs.jobs_table
    page.my_jobs.refresh_button.click(bind(page, jobs.refresh), {page.session},
                                      [table, page.job_ids, page.options.workers_html], concurrency_limit=None, **QUIET)
    table.select(bind(page, jobs.open_job), {page.job_ids, page.view, page.session},
                 [page.job, page.model.model_box, *page.view_outputs], concurrency_limit=None,
                 cancels=[page.try_event], **QUIET)


# ---------------------------------------------------------------------- running it


def _maintenance(stop: threading.Event) -> None:
    """Recover jobs of dead workers and sweep temp folders, even when nobody is watching a job."""
    while not stop.wait(MAINTENANCE_SECONDS):
        try:
            api.maintenance()
        except Exception:  # noqa: BLE001 - try again next time
            log.exception("maintenance failed")


def main() -> None:
    from worker.embedded import start_backend

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # request lines could carry query text
    backend = start_backend()
    log.info("job queue at %s (%s)", backend.redis_url.split("@")[-1],
             "embedded Redis and worker" if backend.embedded else "external Redis")
    threading.Thread(target=models.warm_up, name="warm-up", daemon=True).start()
    stop = threading.Event()
    threading.Thread(target=_maintenance, args=(stop,), name="maintenance", daemon=True).start()
    demo = build_demo()
    demo.queue(default_concurrency_limit=8)
    try:
        demo.launch(
            server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
            server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
            theme=theme(),
            css=render.CSS,
            ssr_mode=False,
            show_error=False,
            run_history=False,  # run history would keep form inputs (the token field) in the browser
            footer_links=["gradio", "settings"],
        )
    finally:
        stop.set()
        backend.stop()


if __name__ == "__main__":
    main()
