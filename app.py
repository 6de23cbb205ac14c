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

import gradio as gr

from converters.errors import UserInputError
from ui import form, models, package_zip, render
from worker import api
from worker.progress import Redactor

log = logging.getLogger("app")

ON_SPACES = os.environ.get("SYSTEM") == "spaces"
POLL_SECONDS = float(os.environ.get("COREML_CONVERTER_POLL_SECONDS") or 1.0)
MAINTENANCE_SECONDS = 60
RECENT_JOBS = 15
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


def build_demo(on_spaces: bool = ON_SPACES) -> gr.Blocks:
    with gr.Blocks(title="Core ML Converter", delete_cache=(1800, 3600)) as demo:
        session = gr.State({})  # {"user", "token"}: server-side only, never sent to the browser
        summary_state = gr.State(None)  # ui.models.ModelSummary of the chosen model
        job_state = gr.State(None)  # the job shown in the job view
        view_state = gr.State({})  # what the job view shows now (to skip unchanged updates)
        job_ids_state = gr.State([])  # job ids of the "My jobs" rows
        timer = gr.Timer(POLL_SECONDS, active=False)

        gr.Markdown(INTRO)

        # ---- sign-in
        with gr.Row(elem_id="signin"):
            if on_spaces:
                gr.LoginButton(value="Sign in with Hugging Face", size="md", scale=0, min_width=320)
                token_box = sign_in_button = sign_out_button = None
            else:
                token_box = gr.Textbox(
                    label="Hugging Face token", type="password", placeholder="hf_…", scale=4, elem_id="token",
                    info="A token with write access (Hub settings → Access Tokens). It stays on this server.")
                sign_in_button = gr.Button("Sign in", scale=0, min_width=140, elem_id="sign-in")
            user_html = gr.HTML(render.signed_in(None), elem_id="user")
            if not on_spaces:
                sign_out_button = gr.Button("Sign out", scale=0, min_width=120, size="sm", visible=False,
                                            elem_id="sign-out")

        # ---- 1. the model
        gr.Markdown("### 1. Choose a model")
        model_box = gr.Dropdown(
            label="Model", info=form.HELP["model"], choices=[], value=None, allow_custom_value=True,
            filterable=True, elem_id="model")
        model_html = gr.HTML(elem_id="model-summary")
        task_radio = gr.Radio(label="Task", info=form.HELP["task"], choices=[], value=None, visible=False,
                              elem_id="task")

        # ---- 2. options
        with gr.Accordion("2. Options: the defaults suit most apps", open=False, elem_id="options"):
            with gr.Row():
                precision = gr.Radio(form.PRECISION_CHOICES, value="float16", label="Precision",
                                     info=form.HELP["precision"], elem_id="precision")
                with gr.Column():
                    sequence = gr.Textbox(form.DEFAULT_SEQUENCE_LENGTH, label="Sequence length",
                                          info=form.HELP["sequence_length"], elem_id="sequence-length")
                    sequence_html = gr.HTML(render.message(form.sequence_note(form.DEFAULT_SEQUENCE_LENGTH)[1]),
                                            elem_id="sequence-note")
            with gr.Row():
                with gr.Column():
                    runner = gr.Radio(form.RUNNER_CHOICES, value="any", label="Compute units to validate on",
                                      info=form.HELP["runner"], elem_id="runner")
                    workers_html = gr.HTML(elem_id="workers")
                target = gr.Dropdown(list(form.DEPLOYMENT_TARGETS), value=form.DEFAULT_TARGET,
                                     label="Minimum deployment target", info=form.HELP["target"], elem_id="target")
            with gr.Row():
                with gr.Column():
                    gr.Markdown(f"**Validation tolerance**  \n<span class='cm-info'>{form.HELP['tolerance']}</span>")
                    tolerance = gr.Radio(form.TOLERANCE_CHOICES, value="default", show_label=False,
                                         elem_id="tolerance-choice")
                    tolerance_html = gr.HTML(render.tolerance(None, "float16"), elem_id="tolerance")
                    push_anyway = gr.Checkbox(False, label="Push even if validation fails",
                                              info=form.HELP["push_anyway"], elem_id="push-anyway")
                with gr.Column():
                    naming = gr.Radio(form.NAMING_CHOICES, value="swift-transformers", label="Naming",
                                      info=form.HELP["naming"], elem_id="naming")
                    kv_cache = gr.Radio(form.KV_CACHE_CHOICES, value="none", label="KV cache",
                                        info=form.HELP["kv_cache"], elem_id="kv-cache")

        # ---- 3. where the result goes
        gr.Markdown("### 3. Where the result goes")
        with gr.Row():
            push = gr.Radio(form.PUSH_CHOICES, value=form.NEW_REPO, label="Push to", info=form.HELP["push"],
                            elem_id="push")
            push_repo = gr.Textbox(label="Repo name", placeholder=form.default_push_repo(None, None),
                                   info=form.HELP["push_repo"], elem_id="push-repo")
            private = gr.Checkbox(False, label="Private repo", info=form.HELP["private"], elem_id="private")
        options_html = gr.HTML(elem_id="option-check")
        convert_button = gr.Button("Convert", variant="primary", interactive=False, elem_id="convert")
        submit_html = gr.HTML(elem_id="submit-message")

        # ---- the job view
        with gr.Group(visible=False, elem_id="job") as job_group:
            status_html = gr.HTML(elem_id="job-status")
            log_box = gr.HTML(elem_id="job-log")
            cancel_button = gr.Button("Cancel this job", variant="stop", visible=False, elem_id="cancel")
            results_html = gr.HTML(elem_id="job-results")
            with gr.Row():
                download_button = gr.Button("Download the package (.zip)", visible=False, elem_id="download")
                download_file = gr.File(label="Package", visible=False, interactive=False, elem_id="download-file")

        # ---- my jobs
        with gr.Accordion("My jobs", open=True, elem_id="my-jobs"):
            with gr.Row():
                gr.Markdown("Your recent conversions. Click a row to show it above.")
                refresh_button = gr.Button("Refresh", scale=0, size="sm", elem_id="refresh-jobs")
            jobs_table = gr.Dataframe(headers=render.JOB_HEADERS, value=[], interactive=False, wrap=True,
                                      datatype=["str", "str", "str", "str", "markdown"], elem_id="jobs-table")

        # ================================================================== handlers

        def jobs_for(user):
            if not user:
                return [], []
            try:
                jobs = api.recent_jobs(user, RECENT_JOBS)
            except Exception:  # noqa: BLE001 - the list is secondary; the page must keep working
                log.exception("listing jobs failed")
                return [], []
            return render.job_rows(jobs), [j["job_id"] for j in jobs]

        def workers_text():
            try:
                return render.workers_note(api.workers())
            except Exception:  # noqa: BLE001
                log.exception("listing workers failed")
                return render.message("Cannot reach the job queue right now.", "warning")

        def on_load(session, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
            user, _ = identity(session, profile, oauth)
            rows, ids = jobs_for(user)
            how = "Hugging Face" if profile is not None else ""
            return render.signed_in(user, how), workers_text(), rows, ids

        demo.load(on_load, [session], [user_html, workers_html, jobs_table, job_ids_state], concurrency_limit=None,
                  **QUIET)

        # ---- sign-in with a token (self-hosted)
        if token_box is not None:
            def sign_in(token, session):
                token = (token or "").strip()
                if not token:
                    return (session, gr.update(), render.message("Paste a Hugging Face token first.", "error"),
                            gr.update(), gr.update(), gr.skip(), gr.skip())
                try:
                    user = api.whoami(token)
                except UserInputError as error:
                    return (session, "", render.message(safe_text(error, token), "error"), gr.update(visible=True),
                            gr.update(visible=False), gr.skip(), gr.skip())
                session = {"user": user, "token": token}
                rows, ids = jobs_for(user)
                return (session, gr.update(value="", visible=False), render.signed_in(user), gr.update(visible=False),
                        gr.update(visible=True), rows, ids)

            sign_in_outputs = [session, token_box, user_html, sign_in_button, sign_out_button, jobs_table,
                               job_ids_state]
            sign_in_button.click(sign_in, [token_box, session], sign_in_outputs, **QUIET)
            token_box.submit(sign_in, [token_box, session], sign_in_outputs, **QUIET)

            def sign_out():
                return ({}, gr.update(value="", visible=True), render.signed_in(None), gr.update(visible=True),
                        gr.update(visible=False), [], [])

            sign_out_button.click(sign_out, None, [session, token_box, user_html, sign_in_button, sign_out_button,
                                                   jobs_table, job_ids_state], **QUIET)

        # ---- the model: suggestions while typing, then its summary
        def suggest(data: gr.KeyUpData, session, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
            _, token = identity(session, profile, oauth)
            found = models.search_models(data.input_value, token)
            return gr.update(choices=found) if found else gr.skip()

        model_box.key_up(suggest, [session], [model_box], trigger_mode="always_last", **POLLING)

        def inspect(text, session, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
            user, token = identity(session, profile, oauth)
            text = (text or "").strip()
            if not text:
                return (None, "", gr.update(choices=[], value=None, visible=False), gr.update(interactive=False),
                        render.tolerance(None, "float16"), gr.update(placeholder=form.default_push_repo(user, None)))
            summary = models.inspect_model(text, token)
            if summary.error:
                summary.error = Redactor(token)(summary.error)
            task_update = gr.update(choices=form.task_choices(summary.tasks, summary.default_task),
                                    value=summary.default_task, visible=summary.convertible)
            return (summary, render.model_summary(summary, render.tracker_url()), task_update,
                    gr.update(interactive=summary.convertible), gr.skip(),
                    gr.update(placeholder=form.default_push_repo(user, summary.name if summary.repo_id else None)))

        # ---- options: say at once what the engine would refuse
        def check(summary, task, precision_value, sequence_text, target_value, naming_value, kv_cache_value,
                  tolerance_value):
            modality = summary.modality if summary is not None else "text"
            level, note = form.sequence_note(sequence_text, modality)
            problem = None
            if level != "error" and summary is not None:
                try:
                    options = form.FormValues("", task, precision_value, sequence_text, "any", target_value,
                                              naming_value, kv_cache=kv_cache_value,
                                              tolerance=tolerance_value).options()
                    problem = models.check_options(summary, task, options)
                except UserInputError as error:
                    problem = str(error)
            thresholds = models.tolerances(summary, precision_value, tolerance_value)
            return (render.message(note, level), render.message(problem, "error") if problem else "",
                    render.tolerance(thresholds, precision_value))

        option_inputs = [summary_state, task_radio, precision, sequence, target, naming, kv_cache, tolerance]
        option_outputs = [sequence_html, options_html, tolerance_html]
        for component in (task_radio, precision, target, naming, kv_cache, tolerance):
            component.change(check, option_inputs, option_outputs, concurrency_limit=None, **QUIET)
        sequence.change(check, option_inputs, option_outputs, concurrency_limit=None, trigger_mode="always_last",
                        show_progress="hidden", **QUIET)
        # The model's summary first, then the option checks against it.
        model_box.change(
            inspect, [model_box, session],
            [summary_state, model_html, task_radio, convert_button, tolerance_html, push_repo],
            concurrency_limit=None, trigger_mode="always_last", **QUIET,
        ).then(check, option_inputs, option_outputs, concurrency_limit=None, **QUIET)

        def push_changed(kind):
            new_repo = kind != form.PULL_REQUEST
            return gr.update(visible=new_repo), gr.update(visible=new_repo)

        push.change(push_changed, [push], [push_repo, private], **QUIET)

        # ---- the job view
        view_outputs = [job_group, status_html, log_box, cancel_button, results_html, download_button,
                        download_file, timer, view_state, jobs_table, job_ids_state]

        def show(status, view, user, fresh=False):
            """Outputs for view_outputs from a status; unchanged parts are skipped."""
            view = dict(view or {})
            active = render.is_active(status)
            state = status.get("state")
            log_text = render.log_html(status)
            ended_now = not active and (fresh or view.get("state") != state)
            results = render.results(status, render.report_url(status) if state == "failed" else None)
            outputs = [
                gr.update(visible=True),
                render.job_status(status),
                log_text if fresh or log_text != view.get("log") else gr.skip(),
                gr.update(visible=active),
                results if fresh or results != view.get("results") else gr.skip(),
                gr.update(visible=package_zip.can_download(status)),
                gr.update(value=None, visible=False) if fresh else gr.skip(),
                gr.Timer(active=active),
            ]
            view.update(state=state, log=log_text, results=results)
            if ended_now or fresh:
                rows, ids = jobs_for(user)
                outputs += [view, rows, ids]
            else:
                outputs += [view, gr.skip(), gr.skip()]
            return outputs

        def owned(status, user) -> bool:
            return not status.get("user") or status.get("user") == user

        def submit(model_text, task, precision_value, sequence_text, runner_value, target_value, naming_value,
                   push_value, push_repo_value, private_value, push_anyway_value, kv_cache_value, tolerance_value,
                   view, session,
                   profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
            user, token = identity(session, profile, oauth)
            values = form.FormValues(model_text or "", task, precision_value, sequence_text, runner_value,
                                     target_value, naming_value, push_value, push_repo_value, private_value,
                                     push_anyway_value, kv_cache_value, tolerance_value)
            try:
                if not token:
                    raise UserInputError("Sign in first: the package is pushed to your Hugging Face account.")
                job_id = api.submit(values.to_spec(token, user))
                status = api.status(job_id)
            except UserInputError as error:
                return [render.message(safe_text(error, token), "error"), gr.skip()] + [gr.skip()] * len(view_outputs)
            except Exception as error:  # noqa: BLE001 - say it plainly; the details go to the log
                log.error("submitting failed: %s", safe_text(error, token))
                return ([render.message("The job could not be queued (the job service did not answer). "
                                        "Try again in a moment.", "error"), gr.skip()]
                        + [gr.skip()] * len(view_outputs))
            return ["", job_id] + show(status, view, user, fresh=True)

        convert_button.click(
            submit,
            [model_box, task_radio, precision, sequence, runner, target, naming, push, push_repo, private,
             push_anyway, kv_cache, tolerance, view_state, session],
            [submit_html, job_state] + view_outputs, concurrency_limit=None, **QUIET)

        def poll(job_id, view, session, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
            user, _ = identity(session, profile, oauth)
            if not job_id:
                return [gr.skip()] * 7 + [gr.Timer(active=False)] + [gr.skip()] * 3
            try:
                status = api.status(job_id)
            except Exception:  # noqa: BLE001 - Redis hiccup: keep polling, say nothing new
                log.exception("status of %s failed", job_id)
                return [gr.skip()] * len(view_outputs)
            if not owned(status, user):
                return [gr.skip()] * 7 + [gr.Timer(active=False)] + [gr.skip()] * 3
            return show(status, view, user)

        timer.tick(poll, [job_state, view_state, session], view_outputs, **POLLING)

        def cancel(job_id, view, session, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
            user, _ = identity(session, profile, oauth)
            if not job_id:
                return [gr.skip()] * len(view_outputs)
            try:
                return show(api.cancel(job_id, user=user), view, user)
            except UserInputError:  # not this user's job: nothing to show or change
                return [gr.skip()] * len(view_outputs)

        cancel_button.click(cancel, [job_state, view_state, session], view_outputs, concurrency_limit=None,
                            **QUIET)

        def download(job_id, session, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
            user, token = identity(session, profile, oauth)
            status = api.status(job_id) if job_id else None
            if not status or not owned(status, user):
                return gr.update(visible=False), render.message("There is no package to download.", "error")
            try:
                path = package_zip.build_zip(status, token)
            except UserInputError as error:
                return gr.update(visible=False), render.message(safe_text(error, token), "error")
            return gr.update(value=str(path), visible=True), ""

        download_button.click(download, [job_state, session], [download_file, submit_html], concurrency_limit=4,
                              **QUIET)

        # ---- my jobs
        def refresh(session, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None):
            user, _ = identity(session, profile, oauth)
            rows, ids = jobs_for(user)
            return rows, ids, workers_text()

        refresh_button.click(refresh, [session], [jobs_table, job_ids_state, workers_html], concurrency_limit=None,
                             **QUIET)

        def open_job(ids, view, session, event: gr.SelectData, profile: gr.OAuthProfile | None,
                     oauth: gr.OAuthToken | None):
            user, _ = identity(session, profile, oauth)
            row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
            if row is None or row >= len(ids):
                return [gr.skip()] * (1 + len(view_outputs))
            status = api.status(ids[row])
            if not owned(status, user):
                return [gr.skip()] * (1 + len(view_outputs))
            return [ids[row]] + show(status, view, user, fresh=True)

        jobs_table.select(open_job, [job_ids_state, view_state, session], [job_state] + view_outputs,
                          concurrency_limit=None, **QUIET)
    return demo


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
