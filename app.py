"""Core ML Converter: the web UI (Gradio 6). Forms, polling and rendering only: jobs go
through worker.api, model checks are the engine's own (via ui/), HTML comes from ui/render.

    python app.py      # what `make run` and the Docker image run

Sign-in: "Sign in with Hugging Face" (OAuth) when running as a Space (SYSTEM=spaces);
a token field when self-hosted. With no REDIS_URL the app starts a private redis-server
and a worker next to itself (worker.embedded); with REDIS_URL it uses that Redis and the
workers connected to it. Tokens stay on the server (session state, encrypted in Redis
while a job needs them) and are never rendered back into the page or the logs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import gradio as gr

from converters.errors import ConverterError, UserInputError
from converters.options import OPTIONS, ConversionOptions
from ui import form, models, package_zip, render
from worker import api, sessions
from worker.progress import Redactor

log = logging.getLogger("app")

ON_SPACES = os.environ.get("SYSTEM") == "spaces"
POLL_SECONDS = float(os.environ.get("COREML_CONVERTER_POLL_SECONDS") or 1.0)
MAINTENANCE_SECONDS = 60
RECENT_JOBS = 15
DOWNLOAD_LABEL = "Download the package (.zip)"
SCROLL_TO_JOB = "() => document.querySelector('#job')?.scrollIntoView({behavior: 'smooth', block: 'start'})"
QUIET = {"api_visibility": "private"}  # the page's own events, not a public API
POLLING = {"concurrency_limit": None, "show_progress": "hidden", **QUIET}

INTRO = """# Core ML Converter
Turn a Hugging Face model into a **Core ML** package for iPhone, iPad and Mac apps. Every package is
checked against the PyTorch model before it is pushed to your Hugging Face account."""


# ---------------------------------------------------------------------- who is asking


def identity(session: dict | None, profile, oauth) -> tuple[str | None, str | None]:
    """(user, token): from "Sign in with Hugging Face" on a Space, else from the token field."""
    if profile is not None and oauth is not None:
        return profile.username, oauth.token
    session = session or {}
    return session.get("user"), session.get("token")


def safe_text(error: BaseException, token: str | None) -> str:
    return Redactor(token)(str(error))


# ---------------------------------------------------------------------- the page
# build_demo lays the page out section by section (each section function returns its
# components by name), then wires the events. Handlers take their inputs as one dict keyed
# by component (inputs given as a set) and return a dict keyed by component: a component
# left out of the returned dict is left as it is, and no handler depends on positions.


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
class Results:
    outcome_html: gr.HTML  # pushed where, or why not: the actions sit right under it
    results_html: gr.HTML
    float32_button: gr.Button  # the one action when only float16 failed validation
    download_button: gr.Button
    download_file: gr.File
    try_it: TryIt


@dataclass
class TryIt:
    """Run the pushed package on your own text (a worker runs it; see worker/try_it.py)."""

    group: gr.Accordion
    note_html: gr.HTML
    text_box: gr.Textbox
    other_box: gr.Textbox  # the second sentence of an embedder's similarity
    run_button: gr.Button
    output_html: gr.HTML


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
    # A running try's event: opening or starting another job cancels it, so no answer of an
    # earlier job's try lands in the panel of the job shown now.
    try_event: object = None

    @property
    def view_outputs(self) -> list:
        """What showing a job may update (see show())."""
        return [self.job_view.group, self.job_view.status_html, self.job_view.log_box, self.job_view.cancel_button,
                self.results.outcome_html, self.results.results_html, self.results.float32_button,
                self.results.download_button, self.results.download_file, self.timer,
                self.results.try_it.group, self.results.try_it.note_html, self.results.try_it.text_box,
                self.results.try_it.other_box, self.results.try_it.run_button, self.results.try_it.output_html,
                self.view, self.my_jobs.jobs_table, self.job_ids, self.destination.target_html]


def build_demo(on_spaces: bool = ON_SPACES) -> gr.Blocks:
    with gr.Blocks(title="Core ML Converter", delete_cache=(1800, 3600)) as demo:
        states = {name: gr.State(value) for name, value in
                  (("session", {}), ("summary", None), ("job", None), ("view", {}), ("job_ids", []))}
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
        my_jobs = my_jobs_section()
        page = Page(**states, remembered=remembered, timer=timer, sign_in=sign_in, model=model, options=options, destination=destination,
                    job_view=job_view, results=results, my_jobs=my_jobs)

        wire_page_load(demo, page)
        wire_sign_in(page)
        check = wire_options(page)
        sizes = wire_sizes(page)
        target = wire_target(page)
        visibility = wire_visibility(page)
        wire_model_choice(page, check, sizes, target, visibility)
        wire_results(page)  # first: the events below cancel its try
        wire_job(page)
        wire_my_jobs(page)
    return demo


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
                        fields[name] = option_component(name)
                        if name in OPTION_NOTES:
                            elem_id, content = OPTION_NOTES[name]
                            notes[name] = gr.HTML(content(), elem_id=elem_id)
        with gr.Row():
            with gr.Column():
                runner = gr.Radio(form.RUNNER_CHOICES, value="any", label="Compute units to validate on",
                                  info=form.HELP["runner"], elem_id="runner")
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
    remove_others = gr.Checkbox(False, label=form.REMOVE_OTHERS, elem_id="remove-others")
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
        try_it = try_it_section()
        results_html = gr.HTML(elem_id="job-evidence")
    return Results(outcome_html, results_html, float32_button, download_button, download_file, try_it)


def try_it_section() -> TryIt:
    from converters.try_it import MAX_CHARS

    with gr.Accordion("Try it", open=True, visible=False, elem_id="try-it") as group:
        note_html = gr.HTML(elem_id="try-note")
        text_box = gr.Textbox(label="Prompt", lines=2, max_length=MAX_CHARS, elem_id="try-text")
        other_box = gr.Textbox(label="Second sentence", lines=1, max_length=MAX_CHARS, visible=False, elem_id="try-other")
        run_button = gr.Button("Run", elem_id="try-run")
        output_html = gr.HTML(elem_id="try-output")
    return TryIt(group, note_html, text_box, other_box, run_button, output_html)


def my_jobs_section() -> MyJobs:
    with gr.Accordion("My jobs", open=True, elem_id="my-jobs"):
        with gr.Row():
            gr.Markdown("Your recent conversions. Click a row to show it above.")
            refresh_button = gr.Button("Refresh", scale=0, size="sm", elem_id="refresh-jobs")
        jobs_table = gr.Dataframe(headers=render.JOB_HEADERS, value=[], interactive=False, wrap=True,
                                  datatype=["str", "str", "str", "str", "markdown"], elem_id="jobs-table")
    return MyJobs(refresh_button, jobs_table)


# ---- shared by the handlers


def jobs_for(user: str | None) -> tuple[list, list]:
    """The "My jobs" rows and their job ids."""
    if not user:
        return [], []
    try:
        jobs = api.recent_jobs(user, RECENT_JOBS)
    except Exception:  # noqa: BLE001 - the list is secondary; the page must keep working
        log.exception("listing jobs failed")
        return [], []
    return render.job_rows(jobs), [j["job_id"] for j in jobs]


def workers_text() -> str:
    try:
        return render.workers_note(api.workers())
    except Exception:  # noqa: BLE001
        log.exception("listing workers failed")
        return render.message("Cannot reach the job queue right now.", "warning")


def owned(status: dict, user: str | None) -> bool:
    return not status.get("user") or status.get("user") == user


def show(page: Page, status: dict, view: dict | None, user: str | None, fresh: bool = False) -> dict:
    """The job view's updates for a job's status, by component (some of page.view_outputs):
    parts that did not change are left out."""
    view = dict(view or {})
    active = render.is_active(status)
    state = status.get("state")
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
    moved = fresh or view.get("state") != state or view.get("stage") != status.get("stage")
    listed = view.get("listed") or {}
    if moved or listed_changed(listed):
        updates[page.my_jobs.jobs_table], updates[page.job_ids] = jobs_for(user)
        listed = listed_states(updates[page.job_ids])
    if moved and state == "finished" and status.get("pushed") and status.get("push_kind") != form.PULL_REQUEST:
        # The repo exists now: converting again into it (the form still names it) is warned about at once.
        updates[page.destination.target_html] = render.message(form.existing_target_note(status["push_target"]), "warning")
    # A panel prepared for another job is emptied: its prompt and answer were that job's.
    switched = view.get("job_id") != status.get("job_id")
    if moved or switched:
        updates.update(try_it_setup(page.results.try_it, render.try_kind(status), fresh or switched,
                                    render.try_unavailable(status), status))
    view.update(state=state, stage=status.get("stage"), log=log_text, results=results, outcome=ended,
                listed=listed, job_id=status.get("job_id"))
    updates[page.view] = view
    # Polling goes on while this job or any listed one is active, so the list never shows a stale state.
    updates[page.timer] = gr.Timer(active=active or any(s in ACTIVE_STATES for s in listed.values()))
    return updates


ACTIVE_STATES = ("queued", "running")


def listed_states(job_ids: list[str]) -> dict[str, str]:
    try:
        return api.states(list(job_ids))
    except Exception:  # noqa: BLE001 - the list is secondary
        log.exception("reading the listed jobs' states failed")
        return {}


def listed_changed(listed: dict[str, str]) -> bool:
    return bool(listed) and listed_states(list(listed)) != listed


def try_it_setup(panel: TryIt, kind: str | None, fresh: bool, unavailable: str | None = None,
                 status: dict | None = None) -> dict:
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


# ---- events, by section


def wire_page_load(demo: gr.Blocks, page: Page) -> None:
    """A reload or a second tab finds the user signed in (a token sign-in's session, by the
    reference the browser kept), their jobs listed and their newest running job shown."""
    box = page.sign_in

    def on_load(data: dict, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None) -> dict:
        session, updates = data[page.session], {}
        reference = (data[page.remembered] or {}).get("session")
        if profile is None and not session.get("user") and reference and box.token_box is not None:
            restored = sessions.restore(api.connection(), reference)
            if restored:
                session = restored
                updates.update({page.session: restored, **signed_in_updates(page, restored["user"])})
            else:  # expired or signed out elsewhere
                updates[page.remembered] = {}
        user, _ = identity(session, profile, oauth)
        rows, ids = jobs_for(user)
        updates.update({box.user_html: render.signed_in(user, "Hugging Face" if profile is not None else ""),
                        page.options.workers_html: workers_text(), page.my_jobs.jobs_table: rows, page.job_ids: ids})
        running = next((s for s in map(api.status, ids) if render.is_active(s) and owned(s, user)), None)
        if running is not None:
            updates.update({page.job: running["job_id"], **show(page, running, {}, user, fresh=True)})
        return updates

    sign_in_outputs = [c for c in (box.token_box, box.sign_in_button, box.sign_out_button) if c is not None]
    demo.load(on_load, {page.session, page.remembered},
              [page.session, page.remembered, box.user_html, *sign_in_outputs, page.options.workers_html, page.job,
               *page.view_outputs], concurrency_limit=None, **QUIET)


def signed_in_updates(page: Page, user: str) -> dict:
    box = page.sign_in
    return {box.token_box: gr.update(value="", visible=False), box.user_html: render.signed_in(user),
            box.sign_in_button: gr.update(visible=False), box.sign_out_button: gr.update(visible=True)}


def wire_sign_in(page: Page) -> None:
    """Self-hosted: signing in and out with a token (a Space signs in with Hugging Face)."""
    box = page.sign_in
    if box.token_box is None:
        return
    outputs = [page.session, page.remembered, box.token_box, box.user_html, box.sign_in_button, box.sign_out_button,
               page.my_jobs.jobs_table, page.job_ids, page.destination.submit_html]

    def sign_in(data: dict) -> dict:
        token = (data[box.token_box] or "").strip()
        if not token:
            return {box.user_html: render.message("Paste a Hugging Face token first.", "error")}
        try:
            user = api.whoami(token)
        except ConverterError as error:  # a refused token, or the Hub unavailable
            return {box.token_box: "", box.user_html: render.message(safe_text(error, token), "error"),
                    box.sign_in_button: gr.update(visible=True), box.sign_out_button: gr.update(visible=False)}
        rows, ids = jobs_for(user)
        # The browser keeps a reference to this sign-in, so a reload or another tab needs no token again.
        reference = sessions.create(api.connection(), user, token)
        return {page.session: {"user": user, "token": token}, page.remembered: {"session": reference},
                **signed_in_updates(page, user), page.my_jobs.jobs_table: rows, page.job_ids: ids,
                page.destination.submit_html: ""}  # a "Sign in first" message is answered

    box.sign_in_button.click(sign_in, {box.token_box}, outputs, **QUIET)
    box.token_box.submit(sign_in, {box.token_box}, outputs, **QUIET)

    def sign_out(data: dict) -> dict:
        sessions.end(api.connection(), (data[page.remembered] or {}).get("session"))
        return {page.session: {}, page.remembered: {}, box.token_box: gr.update(value="", visible=True),
                box.user_html: render.signed_in(None), box.sign_in_button: gr.update(visible=True),
                box.sign_out_button: gr.update(visible=False), page.my_jobs.jobs_table: [], page.job_ids: []}

    box.sign_out_button.click(sign_out, {page.remembered}, outputs, **QUIET)


def wire_options(page: Page) -> dict:
    """Say at once what the engine would refuse, what the sequence length means and which
    thresholds the tolerance gives. Returns the check as an event (fn, inputs, outputs),
    which also runs once a model is read."""
    fields, notes = page.options.fields, page.options
    inputs = {page.summary, page.model.task_radio, *fields.values()}
    outputs = [notes.sequence_html, page.destination.problem_html, notes.tolerance_html, page.destination.convert_button]

    def check(data: dict) -> dict:
        summary, task = data[page.summary], data[page.model.task_radio]
        entered = {name: data[field] for name, field in fields.items()}
        level, note = form.sequence_note(entered["sequence_length"], summary.modality if summary is not None else "text",
                                         entered.get("kv_cache"))
        problem = None
        if level != "error" and summary is not None:
            try:
                problem = models.check_options(summary, task, form.FormValues("", task, entered).options())
            except UserInputError as error:
                problem = str(error)
        thresholds = models.tolerances(summary, entered["precision"], entered["tolerance"])
        # A request that cannot run is not queued: Convert waits until the form says yes.
        runnable = summary is not None and summary.convertible and level != "error" and not problem
        if problem and "equence length" in problem:
            note, level = "", "info"  # the refusal says it; a note describing the refused length would contradict it
        return {notes.sequence_html: render.message(note, level),
                page.destination.problem_html: render.message(problem, "error") if problem else "",
                notes.tolerance_html: render.tolerance(thresholds, entered["precision"]),
                page.destination.convert_button: gr.update(interactive=runnable)}

    page.model.task_radio.change(check, inputs, outputs, concurrency_limit=None, **QUIET)
    for field in fields.values():
        typed = {"trigger_mode": "always_last", "show_progress": "hidden"} if isinstance(field, gr.Textbox) else {}
        field.change(check, inputs, outputs, concurrency_limit=None, **typed, **QUIET)

    def push_changed(data: dict) -> dict:
        new_repo = data[page.destination.push] != form.PULL_REQUEST
        return {page.destination.push_repo: gr.update(visible=new_repo),
                page.destination.visibility: gr.update(visible=new_repo),
                page.destination.remove_others: gr.update(visible=new_repo)}

    page.destination.push.change(push_changed, {page.destination.push},
                                 [page.destination.push_repo, page.destination.visibility,
                                  page.destination.remove_others], **QUIET)
    return {"fn": check, "inputs": inputs, "outputs": outputs}


# The options that change the expected package sizes (with the model and the task).
SIZE_INPUTS = ("precision", "minimum_deployment_target", "block_size", "group_size")


def wire_sizes(page: Page) -> dict:
    """Show next to each Size choice the package size it gives the chosen model and task, and
    which choices the deployment target cannot run. Returns the event (fn, inputs, outputs),
    which also runs once a model is read. (The Size field itself is no input: a change of its
    choices must not start this again.)"""
    fields, size_radio = page.options.fields, page.model.size_radio
    affecting = {name: fields[name] for name in SIZE_INPUTS}
    inputs = {page.summary, page.model.task_radio, *affecting.values()}

    def sizes(data: dict):
        try:
            options = form.FormValues("", None, {name: data[f] for name, f in affecting.items()}).options()
        except UserInputError:  # a mistake the option check already shows
            return gr.skip()
        estimated = models.size_estimates(data[page.summary], data[page.model.task_radio], options)
        return {size_radio: gr.update(choices=form.size_choices(estimated, options.precision,
                                                                options.minimum_deployment_target))}

    page.model.task_radio.change(sizes, inputs, [size_radio], concurrency_limit=None, **QUIET)
    for field in affecting.values():
        typed = {"trigger_mode": "always_last", "show_progress": "hidden"} if isinstance(field, gr.Textbox) else {}
        field.change(sizes, inputs, [size_radio], concurrency_limit=None, **typed, **QUIET)
    return {"fn": sizes, "inputs": inputs, "outputs": [size_radio]}


def restricted(summary) -> bool:
    """Whether the model read is gated or private (its copy is then private by default)."""
    return bool(summary and (summary.gated or summary.private))


def wire_visibility(page: Page) -> dict:
    """Say before Convert why a gated or private model's copy is private, and ask for a
    confirmation when its copy is to be public. Also runs once a model is read."""
    where = page.destination

    def explain(data: dict) -> dict:
        summary = data[page.summary]
        note = form.restricted_note(summary.repo_id, summary.gated, summary.private, data[where.visibility]) \
            if restricted(summary) else None
        public = restricted(summary) and data[where.visibility] == form.PUBLIC
        return {where.licence_html: render.message(note, "warning" if public else "info") if note else "",
                where.confirm_public: gr.update(visible=public, value=False if not public else data[where.confirm_public])}

    inputs, outputs = {page.summary, where.visibility, where.confirm_public}, [where.licence_html, where.confirm_public]
    where.visibility.change(explain, inputs, outputs, concurrency_limit=None, **QUIET)
    return {"fn": explain, "inputs": inputs, "outputs": outputs}


# The options a default repo name carries (worker.spec.variant).
NAMING_OPTIONS = ("precision", "quantize", "kv_cache", "format")


def wire_target(page: Page) -> dict:
    """Say before Convert when the target repo exists: a push replaces the package in it.
    Returns the event (fn, inputs, outputs), which also runs once a model is read."""
    where = page.destination
    naming = {name: page.options.fields[name] for name in NAMING_OPTIONS}
    inputs = {where.push, where.push_repo, page.summary, page.session, *naming.values()}
    # Every edit is looked up with its own text, and only a session's newest answer is shown
    # (models.NewestQuery): Gradio's `always_last` re-sends a stale value for the run it defers.
    newest = models.NewestQuery()

    def announce(data: dict, request: gr.Request, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
        ticket = newest.begin(request.session_hash)
        user, token = identity(data[page.session], profile, oauth)
        summary = data[page.summary]
        note = ""
        try:
            options = ConversionOptions.from_strings(**{name: data[field] for name, field in naming.items()})
        except UserInputError:
            options = None  # the option check says what is wrong; name the repo by the defaults meanwhile
        name = summary.name if summary and summary.repo_id else None
        repo = form.push_target(data[where.push_repo], user, name, options)
        if data[where.push] != form.PULL_REQUEST and repo and models.repo_exists(repo, token):
            note = render.message(form.existing_target_note(repo), "warning")
        if not newest.is_newest(request.session_hash, ticket):
            return gr.skip()
        return {where.target_html: note, where.push_repo: gr.update(placeholder=form.default_push_repo(user, name, options))}

    # One lookup at a time, in the order the browser sent them: run side by side, an earlier
    # edit's lookup could start after a later one's and take the "newest" ticket from it.
    outputs = [where.target_html, where.push_repo]
    for field in (where.push, *naming.values()):
        field.change(announce, inputs, outputs, concurrency_limit=1, concurrency_id="push-target", **QUIET)
    where.push_repo.change(announce, inputs, outputs, concurrency_limit=1, concurrency_id="push-target",
                           trigger_mode="multiple", show_progress="hidden", **QUIET)
    return {"fn": announce, "inputs": inputs, "outputs": outputs}


def wire_model_choice(page: Page, check: dict, sizes: dict, target: dict, visibility: dict) -> None:
    """Suggestions while typing, then the model's summary and tasks, then the option check and
    the expected sizes."""
    chosen = page.model
    newest = models.NewestQuery()

    def suggest(data: dict, event: gr.KeyUpData, request: gr.Request,
                profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
        session = request.session_hash
        ticket = newest.begin(session)
        _, token = identity(data[page.session], profile, oauth)
        found = models.search_models(event.input_value, token)
        if not newest.is_newest(session, ticket):
            return gr.skip()
        choices = models.next_choices(newest.shown(session), found, event.input_value)
        if choices is None:
            return gr.skip()
        newest.show(session, choices)
        return {chosen.model_box: gr.update(choices=choices)}

    # Every key runs (each carries its own text); NewestQuery drops answers overtaken by a later key.
    chosen.model_box.key_up(suggest, {page.session}, [chosen.model_box], trigger_mode="multiple", **POLLING)

    def inspect(data: dict, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None) -> dict:
        user, token = identity(data[page.session], profile, oauth)
        text = (data[chosen.model_box] or "").strip()
        if not text:
            return {page.summary: None, chosen.summary_html: "",
                    chosen.task_radio: gr.update(choices=[], value=None, visible=False),
                    chosen.size_radio: gr.update(visible=False),
                    page.destination.convert_button: gr.update(interactive=False),
                    page.options.tolerance_html: render.tolerance(None, "float16"),
                    page.destination.push_repo: gr.update(placeholder=form.default_push_repo(user, None))}
        summary = models.inspect_model(text, token)
        if summary.error:
            summary.error = Redactor(token)(summary.error)
        previous = data[page.summary].repo_id if data[page.summary] else None
        changes, notes = form.adapt_to_model(previous, summary.repo_id, summary.tasks, data[kv_cache], data[push_repo])
        summary_html = render.model_summary(summary, render.tracker_url())
        if notes:  # said where the person is looking: under the model they just chose
            summary_html += render.message(" ".join(notes), "info", role="adapted")
        updates = {page.summary: summary, chosen.summary_html: summary_html,
                   chosen.task_radio: gr.update(choices=form.task_choices(summary.tasks, summary.default_task),
                                                value=summary.default_task, visible=summary.convertible),
                   chosen.size_radio: gr.update(visible=summary.convertible),
                   page.destination.convert_button: gr.update(interactive=summary.convertible),
                   push_repo: gr.update(placeholder=form.default_push_repo(user, summary.name if summary.repo_id else None))}
        updates[adapted] = changes
        return updates

    def adapt(data: dict) -> dict:
        """Applied once the new model's choices are on the page: a field changed here re-runs
        the option checks, which must see this model's tasks, not the previous one's."""
        changes = data[adapted] or {}
        updates = {kv_cache: changes["kv_cache"]} if "kv_cache" in changes else {}
        if "push_repo" in changes:
            updates[push_repo] = gr.update(value="")
        return updates or gr.skip()

    # The model's summary first, then the option checks and the expected sizes for it.
    kv_cache, push_repo = page.options.fields["kv_cache"], page.destination.push_repo
    adapted = gr.State({})  # what adapt_to_model changes, between the two steps
    read = chosen.model_box.change(
        inspect, {chosen.model_box, page.session, page.summary, kv_cache, push_repo},
        [page.summary, chosen.summary_html, chosen.task_radio, chosen.size_radio, page.destination.convert_button,
         page.options.tolerance_html, push_repo, adapted],
        concurrency_limit=None, trigger_mode="always_last", **QUIET,
    ).then(adapt, {adapted}, [kv_cache, push_repo], concurrency_limit=None, **QUIET)
    read.then(**check, concurrency_limit=None, **QUIET)
    read.then(**sizes, concurrency_limit=None, **QUIET)
    read.then(**target, concurrency_limit=None, **QUIET)
    read.then(**visibility, concurrency_limit=None, **QUIET)


def wire_job(page: Page) -> None:
    """Convert (queue a job and show it), then poll it while it runs, or cancel it."""
    chosen, options, where = page.model, page.options, page.destination

    def submit(data: dict, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None) -> dict:
        user, token = identity(data[page.session], profile, oauth)
        values = form.FormValues(
            model=data[chosen.model_box] or "", task=data[chosen.task_radio],
            option_values={name: data[field] for name, field in options.fields.items()},
            runner=data[options.runner], push=data[where.push], push_repo=data[where.push_repo],
            visibility=data[where.visibility], remove_others=data[where.remove_others],
            push_even_if_invalid=data[options.push_anyway],
            restricted=restricted(data[page.summary]), confirmed_public=data[where.confirm_public])
        try:
            if not token:
                raise UserInputError("Sign in first: the package is pushed to your Hugging Face account.")
            job_id = api.submit(values.to_spec(token, user))
            status = api.status(job_id)
        except ConverterError as error:  # a request to fix, or the Hub unavailable (try again)
            return {where.submit_html: render.message(safe_text(error, token), "error")}
        except Exception as error:  # noqa: BLE001 - say it plainly; the details go to the log
            log.error("submitting failed: %s", safe_text(error, token))
            return {where.submit_html: render.message(
                "The job could not be queued (the job service did not answer). Try again in a moment.", "error")}
        return {where.submit_html: "", page.job: job_id, **show(page, status, data[page.view], user, fresh=True)}

    where.convert_button.click(
        submit,
        {chosen.model_box, chosen.task_radio, *options.fields.values(), options.runner, options.push_anyway,
         where.push, where.push_repo, where.visibility, where.confirm_public, where.remove_others, page.summary,
         page.view, page.session},
        [where.submit_html, page.job, *page.view_outputs], concurrency_limit=None, cancels=[page.try_event], **QUIET,
    ).then(None, js=SCROLL_TO_JOB)  # the job view appears below the form: bring it into sight

    def stop_polling() -> dict:  # made when called: a Timer made while building would join the page
        return {page.timer: gr.Timer(active=False)}

    def poll(data: dict, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
        user, _ = identity(data[page.session], profile, oauth)
        if not data[page.job]:
            return stop_polling()
        try:
            status = api.status(data[page.job])
        except Exception:  # noqa: BLE001 - Redis hiccup: keep polling, say nothing new
            log.exception("status of %s failed", data[page.job])
            return gr.skip()
        if not owned(status, user):
            return stop_polling()
        return show(page, status, data[page.view], user)

    page.timer.tick(poll, {page.job, page.view, page.session}, page.view_outputs, **POLLING)

    def cancel(data: dict, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
        user, _ = identity(data[page.session], profile, oauth)
        if not data[page.job]:
            return gr.skip()
        try:
            return show(page, api.cancel(data[page.job], user=user), data[page.view], user)
        except UserInputError:  # not this user's job: nothing to show or change
            return gr.skip()

    page.job_view.cancel_button.click(cancel, {page.job, page.view, page.session}, page.view_outputs,
                                      concurrency_limit=None, **QUIET)


def wire_results(page: Page) -> None:
    """Download the finished package as a zip; convert again in float32 when only float16 failed."""
    shown, message = page.results, page.destination.submit_html
    precision = page.options.fields["precision"]

    def convert_in_float32(data: dict, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None) -> dict:
        user, token = identity(data[page.session], profile, oauth)
        try:
            job_id = api.resubmit(data[page.job], token, user, precision="float32")
            status = api.status(job_id)
        except ConverterError as error:  # said at the button, above the job's own outcome
            return {shown.outcome_html: render.message(safe_text(error, token), "error")
                    + render.outcome(api.status(data[page.job]))}
        return {message: "", precision: "float32", page.job: job_id,
                **show(page, status, data[page.view], user, fresh=True)}

    panel = shown.try_it

    def try_package(data: dict, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
        """Queue the try, then wait for its answer here (the worker runs it; this only polls)."""
        user, token = identity(data[page.session], profile, oauth)
        status = api.status(data[page.job]) if data[page.job] else None
        kind = render.try_kind(status) if status and owned(status, user) else None
        if kind is None:
            yield render.message("There is no package to try: convert a model first.", "error")
            return
        _, example, second = render.TRY_LABELS[kind]
        inputs = {"text": data[panel.text_box] or example}  # an empty box tries the shown example
        if second:
            inputs["other"] = data[panel.other_box] or second[1]
        try:
            try_id = api.submit_try(data[page.job], token, user, kind, inputs)
        except ConverterError as error:
            yield render.message(safe_text(error, token), "error")
            return
        deadline = time.monotonic() + api.TRY_TIMEOUT + 60
        while time.monotonic() < deadline:
            state = api.try_status(try_id, user)
            if state["state"] == "finished" and state.get("result"):
                yield render.try_result(state["result"], inputs)
                return
            if state["state"] in ("failed", "cancelled", "unknown"):
                yield render.message(safe_text(state.get("error") or "The try failed.", token), "error")
                return
            yield render.try_waiting(state)
            time.sleep(POLL_SECONDS)
        yield render.message("No worker answered in time: run it again in a moment.", "error")

    page.try_event = panel.run_button.click(try_package, {page.job, page.session, panel.text_box, panel.other_box},
                                            [panel.output_html], concurrency_limit=None, show_progress="hidden", **QUIET)

    shown.float32_button.click(
        convert_in_float32, {page.job, page.view, page.session}, [message, precision, page.job, *page.view_outputs],
        concurrency_limit=None, cancels=[page.try_event], **QUIET)

    def download(data: dict, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None) -> dict:
        user, token = identity(data[page.session], profile, oauth)
        job_id = data[page.job]
        status = api.status(job_id) if job_id else None
        ready = gr.update(value=DOWNLOAD_LABEL, interactive=True)
        if not status or not owned(status, user):
            return {shown.download_file: gr.update(visible=False), shown.download_button: ready,
                    shown.outcome_html: render.message("There is no package to download.", "error")}
        try:
            path = package_zip.build_zip(status, token)
        except UserInputError as error:
            # Said beside the button, above the job's own outcome (which stays).
            return {shown.download_file: gr.update(visible=False), shown.download_button: ready,
                    shown.outcome_html: render.message(safe_text(error, token), "error") + render.outcome(status)}
        return {shown.download_file: gr.update(value=str(path), visible=True), shown.download_button: ready}

    # A big package takes a while to fetch and zip: the button itself says so meanwhile (the
    # page's progress marks sit far above it), and the progress shows on the button.
    shown.download_button.click(
        lambda: gr.update(value="Preparing the zip… (a large package takes a minute)", interactive=False),
        None, [shown.download_button], concurrency_limit=None, show_progress="hidden", **QUIET,
    ).then(download, {page.job, page.session}, [shown.download_file, shown.download_button, shown.outcome_html],
           concurrency_limit=4, show_progress_on=[shown.download_button], **QUIET)


def wire_my_jobs(page: Page) -> None:
    """Refresh the list; click a row to show that job above."""
    jobs = page.my_jobs

    def refresh(data: dict, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None) -> dict:
        user, _ = identity(data[page.session], profile, oauth)
        rows, ids = jobs_for(user)
        return {jobs.jobs_table: rows, page.job_ids: ids, page.options.workers_html: workers_text()}

    jobs.refresh_button.click(refresh, {page.session}, [jobs.jobs_table, page.job_ids, page.options.workers_html],
                              concurrency_limit=None, **QUIET)

    def open_job(data: dict, event: gr.SelectData, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
        user, _ = identity(data[page.session], profile, oauth)
        ids = data[page.job_ids]
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        if row is None or row >= len(ids):
            return gr.skip()
        status = api.status(ids[row])
        if not owned(status, user):
            return gr.skip()
        # The form shows the reopened job's model (read again: its summary, tasks and sizes).
        return {page.job: ids[row], page.model.model_box: gr.update(value=status.get("model")),
                **show(page, status, data[page.view], user, fresh=True)}

    jobs.jobs_table.select(open_job, {page.job_ids, page.view, page.session},
                           [page.job, page.model.model_box, *page.view_outputs], concurrency_limit=None,
                           cancels=[page.try_event], **QUIET)


# ---------------------------------------------------------------------- running it


def theme() -> gr.themes.Base:
    # System fonts: the page must not need Google Fonts (self-hosted, offline networks).
    return gr.themes.Soft(
        font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


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
