"""The page's handlers (ui/) called as plain functions, without a browser or a server: the
@signed_in decorator (who is asking, a required sign-in, errors shown with the token
redacted), what Gradio reads of an event function, and the handlers' error paths with the
job service stubbed."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

import app
from converters.errors import ConverterError, UserInputError
from ui import form, jobs, model_choice, render, results, sign_in, try_panel
from ui.identity import Who, signed_in
from worker.states import JobState
from worker.status import JobStatus, KeptPackage

TOKEN = "hf_secret_token_value"
SESSION = {"user": "alice", "token": TOKEN}
PROFILE = gr.OAuthProfile({"preferred_username": "carol", "name": "Carol", "profile": "", "picture": ""})
OAUTH = gr.OAuthToken(token="hf_oauth_token", scope="openid profile", expires_at=0)


# ---- the decorator, on a stand-in page: a handler only needs page.session as a key


STAND_IN = SimpleNamespace(session="session")


def said(page, data, text):
    return {"error": text}


def test_the_handler_gets_who_is_signed_in_and_oauth_comes_first():
    @signed_in()
    def whoami(page, data, who):
        return who

    assert whoami(STAND_IN, {"session": SESSION}, None, None) == Who("alice", TOKEN)
    assert whoami(STAND_IN, {"session": SESSION}, PROFILE, OAUTH) == Who("carol", "hf_oauth_token")
    assert whoami(STAND_IN, {"session": None}, None, None) == Who(None, None)


def test_a_required_sign_in_is_said_and_the_handler_does_not_run():
    ran = []

    @signed_in(said, required="Sign in first.")
    def act(page, data, who):
        ran.append(who)
        return {"done": True}

    assert act(STAND_IN, {"session": {}}, None, None) == {"error": "Sign in first."}
    assert not ran
    assert act(STAND_IN, {"session": SESSION}, None, None) == {"done": True}


def test_an_error_is_shown_with_the_token_redacted_and_other_errors_are_not_caught():
    @signed_in(said, catch=UserInputError)
    def act(page, data, who, kind):
        raise kind(f"The Hub refused {who.token} for alice/model")

    shown = act(STAND_IN, {"session": SESSION}, UserInputError, None, None)
    assert shown == {"error": "The Hub refused [token] for alice/model"}
    with pytest.raises(ConverterError):  # not the type asked for: Gradio's own error, as before
        act(STAND_IN, {"session": SESSION}, ConverterError, None, None)


def test_a_generator_handler_stays_one_and_yields_its_error():
    @signed_in(lambda page, data, text: f"<error>{text}</error>")
    def steps(page, data, who):
        yield "queued"
        raise ConverterError(f"gone ({who.token})")

    assert inspect.isgeneratorfunction(steps)
    assert list(steps(STAND_IN, {"session": SESSION}, None, None)) == ["queued", "<error>gone ([token])</error>"]


# ---- what Gradio reads of an event function, and the real handlers on a real page


@pytest.fixture(scope="module")
def page():
    with gr.Blocks():
        return app.lay_out_page(on_spaces=False)


def values(page) -> dict:
    """Every component's value as laid out, keyed by component (what a handler reads)."""
    found = {}

    def walk(item):
        if dataclasses.is_dataclass(item):
            for field in dataclasses.fields(item):
                walk(getattr(item, field.name))
        elif isinstance(item, dict):
            for value in item.values():
                walk(value)
        elif isinstance(item, gr.blocks.Block):
            found[item] = getattr(item, "value", None)

    walk(page)
    return found


def test_an_event_function_shows_gradio_the_handlers_name_and_what_to_inject(page):
    opened = app.bind(page, jobs.open_job)
    assert opened.__name__ == "open_job" and opened.__module__ == "app"
    parameters = inspect.signature(opened).parameters
    assert list(parameters) == ["data", "event", "profile", "oauth"]
    assert [p.annotation for p in parameters.values()] == [dict, gr.SelectData, gr.OAuthProfile | None,
                                                           gr.OAuthToken | None]
    assert list(inspect.signature(app.bind(page, sign_in.sign_in)).parameters) == ["data"]
    assert inspect.isgeneratorfunction(app.bind(page, try_panel.try_package))


def test_convert_without_a_sign_in_asks_for_one(page):
    shown = jobs.submit(page, {**values(page), page.session: {}}, None, None)
    assert shown == {page.destination.submit_html: render.message(jobs.SIGN_IN_FIRST, "error")}


def form_data(page) -> dict:
    return {**values(page), page.session: SESSION, page.model.model_box: "alice/tiny-bert",
            page.model.task_radio: "fill-mask", page.view: {}}


def test_convert_says_a_refusal_without_the_token(page, monkeypatch):
    def refuse(spec):
        raise UserInputError(f"Your token {spec.token} may not create alice/tiny-bert-coreml.")

    monkeypatch.setattr(jobs.api, "submit", refuse)
    shown = jobs.submit(page, form_data(page), None, None)
    assert shown == {page.destination.submit_html: render.message(
        "Your token [token] may not create alice/tiny-bert-coreml.", "error")}


def test_convert_says_plainly_when_the_job_service_fails_and_logs_no_token(page, monkeypatch, caplog):
    def down(spec):
        raise ConnectionError(f"Redis closed the connection (AUTH {TOKEN})")

    monkeypatch.setattr(jobs.api, "submit", down)
    with caplog.at_level(logging.ERROR):
        shown = jobs.submit(page, form_data(page), None, None)
    assert shown == {page.destination.submit_html: render.message(jobs.NOT_QUEUED, "error")}
    assert "Redis closed the connection" in caplog.text and TOKEN not in caplog.text


def test_polling_stops_at_another_users_job(page, monkeypatch):
    monkeypatch.setattr(jobs.api, "status", lambda job_id: JobStatus(job_id, JobState.RUNNING, user="bob"))
    updates = jobs.poll(page, {page.session: SESSION, page.job: "job-1", page.view: {}}, None, None)
    assert list(updates) == [page.timer] and updates[page.timer].active is False


def test_a_failed_download_is_said_above_the_outcome_without_the_token(page, monkeypatch):
    status = JobStatus("job-1", JobState.FINISHED, user="alice", pushed=True)
    monkeypatch.setattr(results.api, "status", lambda job_id: status)

    def refuse(status, token):
        raise UserInputError(f"The package files were not found (token {token}).")

    monkeypatch.setattr(results.package_zip, "build_zip", refuse)
    shown = results.download(page, {page.session: SESSION, page.job: "job-1"}, None, None)
    assert shown[page.results.outcome_html] == (render.message("The package files were not found (token [token]).",
                                                               "error") + render.outcome(status))
    assert shown[page.results.download_file]["visible"] is False
    assert shown[page.results.download_button]["value"] == results.DOWNLOAD_LABEL


def test_a_kept_package_is_served_to_its_owner_only(page, monkeypatch, tmp_path):
    """A push that failed after the checks passed: the zip the worker kept, to the job's owner."""
    kept_zip = tmp_path / "tiny-coreml.zip"
    kept_zip.write_bytes(b"PK zip")
    status = JobStatus("job-1", JobState.FAILED, user="bob", pushed=False,
                       kept_package=KeptPackage(kept_zip.name, size_bytes=6, expires_at="2026-11-25T12:00:00+00:00"))
    monkeypatch.setattr(results.api, "status", lambda job_id: status)
    monkeypatch.setattr(results.package_zip.kept, "path_for", lambda job_id: kept_zip if job_id == "job-1" else None)
    monkeypatch.setattr(results.package_zip, "build_zip", lambda *a: pytest.fail("a kept package is not fetched from the Hub"))
    data = {page.session: SESSION, page.job: "job-1"}
    assert results.download(page, data, None, None)[page.results.outcome_html] == render.message(
        "There is no package to download.", "error")  # alice asks for bob's job
    status.user = "alice"
    served = results.download(page, data, None, None)[page.results.download_file]
    assert served["visible"] is True and Path(served["value"]).read_bytes() == b"PK zip"
    assert Path(served["value"]).name == kept_zip.name and Path(served["value"]) != kept_zip


def test_a_try_without_a_package_and_a_refused_try(page, monkeypatch):
    data = {page.session: SESSION, page.job: None, page.results.try_it.text_box: "",
            page.results.try_it.other_box: ""}
    assert list(try_panel.try_package(page, data, None, None)) == [
        render.message("There is no package to try: convert a model first.", "error")]

    monkeypatch.setattr(try_panel.api, "status", lambda job_id: JobStatus(job_id, user="alice"))
    monkeypatch.setattr(try_panel.render, "try_kind", lambda status: "fill-mask")
    monkeypatch.setattr(try_panel.render, "TRY_LABELS", {"fill-mask": ("Text", "Paris is the [MASK].", None)})

    def refuse(job_id, token, user, kind, inputs):
        raise UserInputError(f"That conversion is gone ({token}).")

    monkeypatch.setattr(try_panel.api, "submit_try", refuse)
    assert list(try_panel.try_package(page, {**data, page.job: "job-1"}, None, None)) == [
        render.message("That conversion is gone ([token]).", "error")]


def test_a_refused_token_is_said_without_it_and_the_field_emptied(page, monkeypatch):
    box = page.sign_in
    assert sign_in.sign_in(page, {box.token_box: "  "}) == {
        box.user_html: render.message("Paste a Hugging Face token first.", "error")}

    def refuse(token):
        raise UserInputError(f"The Hub rejected the token {token}: sign in again or give a valid token.")

    monkeypatch.setattr(sign_in.api, "whoami", refuse)
    shown = sign_in.sign_in(page, {box.token_box: TOKEN})
    assert shown[box.token_box] == "" and TOKEN not in shown[box.user_html]
    assert "The Hub rejected the token [token]" in shown[box.user_html]


def test_a_job_moving_on_says_the_workers_again_and_the_page_may_update_them(page, monkeypatch):
    """A page opened before its worker connected said "No worker is connected" under a job that
    ran (seen in issue 24's walk-through): showing a job that moves re-reads the workers."""
    monkeypatch.setattr(jobs.api, "recent_jobs", lambda user, limit: [])
    monkeypatch.setattr(jobs.api, "states", lambda ids: {})
    monkeypatch.setattr(jobs.api, "workers", lambda: [{"os": "Linux", "queues": "tries,default"}])
    status = JobStatus("job-1", JobState.RUNNING, user="alice", stage="convert")
    updates = jobs.show(page, status, {"state": "queued", "stage": "queued", "job_id": "job-1"}, "alice")
    assert "Connected: 1 Linux worker" in updates[page.options.workers_html]
    assert set(updates) <= set(page.view_outputs), "show() updates a component its events do not output"
    # Polled again at the same stage: nothing re-read.
    again = jobs.show(page, status, updates[page.view], "alice")
    assert page.options.workers_html not in again


def test_another_model_sets_back_the_size_and_the_target_chosen_for_the_previous_one(page):
    """Issue 24's walk-through: MiniLM chosen after an int4 stateful SmolLM2 job was converted in
    int4 for iOS18. The Size (picked from the LLM's sizes) and the target raised for it go back
    to the defaults, said under the model; the page applies what was said."""
    changes, notes = form.adapt_to_model("HuggingFaceTB/SmolLM2-135M-Instruct", "sentence-transformers/all-MiniLM-L6-v2",
                                         ["feature-extraction"], "stateful", "", "int4", "iOS18")
    assert changes == {"kv_cache": "none", "quantize": "none", "minimum_deployment_target": "iOS17"}
    assert notes[1].startswith("Size set back to Full: the size you chose was for HuggingFaceTB/SmolLM2-135M-Instruct")
    assert notes[2] == "Minimum deployment target set back to iOS17, the default: choose iOS18 again if your app needs it."
    assert not any("--" in note for note in notes)
    fields = page.options.fields
    assert model_choice.adapt(page, {page.adapted: changes}) == {
        fields["kv_cache"]: "none", fields["quantize"]: "none", fields["minimum_deployment_target"]: "iOS17"}
    # The same model read again, or a target chosen with nothing set back: kept.
    assert form.adapt_to_model("a/llama", "a/llama", ["text-generation"], "stateful", "", "int4", "iOS18") == ({}, [])
    assert form.adapt_to_model("a/llama", "a/qwen", ["text-generation"], "none", "", "none", "iOS18") == ({}, [])


def test_a_model_not_found_names_no_target_repo(page, monkeypatch):
    """Issue 24's walk-through: a misspelt model's form offered "alice/SmolLM2-135M-Instrukt-coreml"."""
    from ui.models import ModelSummary

    typo = "HuggingFaceTB/SmolLM2-135M-Instrukt"
    monkeypatch.setattr(model_choice.models, "inspect_model", lambda text, token: ModelSummary(
        typo, repo_id=typo, error=f"The model '{typo}' was not found on the Hub: check the spelling."))
    data = {**values(page), page.session: SESSION, page.model.model_box: typo, page.summary: None}
    updates = model_choice.inspect(page, data, None, None)
    assert updates[page.destination.push_repo]["placeholder"] == "alice/<model>-coreml"
    assert updates[page.destination.convert_button]["interactive"] is False


def test_convert_refuses_what_the_form_refuses_even_before_the_forms_check_answers(page, monkeypatch):
    """Issue 24's walk-through: Convert pressed right after choosing a stateful cache (the form's
    check not back yet, the button still enabled) queued a job for iOS17 that failed at once."""
    from ui.models import ModelSummary

    def queue(spec):
        raise AssertionError("a request the form refuses was queued")

    monkeypatch.setattr(jobs.api, "submit", queue)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000,
              "max_position_embeddings": 256}
    summary = ModelSummary("alice/llama", repo_id="alice/llama", model_type="llama", tasks=["text-generation"],
                           default_task="text-generation", config=config)
    fields = page.options.fields
    data = {**form_data(page), page.model.model_box: "alice/llama", page.model.task_radio: "text-generation",
            page.summary: summary, fields["kv_cache"]: "stateful", fields["minimum_deployment_target"]: "iOS17"}
    shown = jobs.submit(page, data, None, None)
    assert shown == {page.destination.submit_html: render.message(
        "A stateful KV cache needs Core ML states: choose minimum deployment target iOS18 or macOS15.", "error")}


def test_the_target_note_and_its_clean_up_box_follow_the_repo_the_form_names_now(page, monkeypatch):
    """Issue 24's walk-through: the box offering to remove a repo's other packages showed under a
    repo that did not exist; and a page reloaded while a job ran (its form naming no repo) was told,
    when the job ended, that the job's repo already existed. The note and the box are read from the
    Hub for the repo the form names, at each edit, on load, and when a job's push lands there."""
    from ui import form_checks
    from ui.models import ModelSummary

    held = {"alice/tiny-bert-coreml": ["tiny-bert.mlpackage", "tiny-bert/tiny-bert.aimodel"],
            "alice/mine": ["tiny-bert.mlpackage"]}
    asked = []
    monkeypatch.setattr(form_checks.models, "repo_packages", lambda repo, token: asked.append(repo) or held.get(repo))
    where = page.destination
    summary = ModelSummary("alice/tiny-bert", repo_id="alice/tiny-bert", model_type="bert", tasks=["fill-mask"],
                           default_task="fill-mask")
    request = SimpleNamespace(session_hash="reloaded-page")

    def announce(**entered):
        data = {**values(page), page.session: SESSION, page.summary: summary, where.push: form.NEW_REPO,
                where.push_repo: "", **{getattr(where, name): value for name, value in entered.items()}}
        return form_checks.announce(page, data, request, None, None)

    # A new repo: nothing to say, no box (and a box left ticked is unticked: it would remove nothing anyway).
    new = announce(push_repo="alice/new-one")
    assert new[where.target_html] == "" and new[where.remove_others] == gr.update(visible=False, value=False)
    assert new[page.target] == "alice/new-one"
    # The default repo holds this model's .mlpackage and an .aimodel bundle: a Core ML push replaces the first.
    held_others = announce()
    assert "alice/tiny-bert-coreml already exists" in held_others[where.target_html]
    assert "(tiny-bert/tiny-bert.aimodel) stays" in held_others[where.target_html]
    assert held_others[where.remove_others] == gr.update(visible=True) and held_others[page.target] == "alice/tiny-bert-coreml"
    # A repo holding only what this push replaces: the note, no box.
    own = announce(push_repo="mine")
    assert "alice/mine already exists" in own[where.target_html] and "stay" not in own[where.target_html]
    assert own[where.remove_others]["visible"] is False
    # A pull request: no repo of ours is named, nothing read.
    asked.clear()
    pull = announce(push=form.PULL_REQUEST)
    assert pull[where.target_html] == "" and pull[page.target] is None and not asked

    # A job's push landing: said only when the form names that repo (a reloaded page names none).
    monkeypatch.setattr(jobs.api, "recent_jobs", lambda user, limit: [])
    monkeypatch.setattr(jobs.api, "states", lambda ids: {})
    monkeypatch.setattr(jobs.api, "workers", lambda: [{"os": "Linux", "queues": "tries,default"}])
    landed = JobStatus("job-9", JobState.FINISHED, user="alice", stage="done", model="alice/tiny-bert", pushed=True,
                       push_kind=form.NEW_REPO, push_target="alice/mine")
    running = {"state": "running", "stage": "push", "job_id": "job-9"}
    reloaded = jobs.show(page, landed, running, "alice", named=None, token=TOKEN)
    assert where.target_html not in reloaded and where.remove_others not in reloaded
    named = jobs.show(page, landed, running, "alice", named="alice/mine", token=TOKEN)
    assert "alice/mine already exists" in named[where.target_html] and named[where.remove_others]["visible"] is False
    assert set(named) <= set(page.view_outputs), "show() updates a component its events do not output"
    elsewhere = jobs.show(page, landed, running, "alice", named="alice/other", token=TOKEN)
    assert where.target_html not in elsewhere


def test_no_worker_is_said_only_once_the_service_has_had_time_to_start_its_workers(page, monkeypatch):
    """Issue 24's walk-through: "No worker is connected" for the first seconds after the service
    started, while its worker was still loading. Until STARTING_SECONDS after the web process
    started, the page says the service is starting — and polls, to say the workers once they connect."""
    workers: list[dict] = []
    monkeypatch.setattr(jobs.api, "workers", lambda: workers)
    monkeypatch.setattr(jobs.api, "recent_jobs", lambda user, limit: [])
    monkeypatch.setattr(jobs.api, "states", lambda ids: {})
    monkeypatch.setattr(sign_in.api, "workers", lambda: workers)
    monkeypatch.setattr(sign_in, "jobs_for", lambda user: ([], []))
    just_started = jobs.time.monotonic()
    monkeypatch.setattr(jobs, "STARTED_AT", just_started)
    data = {**values(page), page.session: {}, page.remembered: {}, page.job: None, page.view: {}}
    loaded = sign_in.on_load(page, data, None, None)
    assert "The service is starting" in loaded[page.options.workers_html] and "No worker" not in loaded[page.options.workers_html]
    assert loaded[page.timer].active is True
    # A job queued meanwhile says the same, not "No worker is running".
    queued = JobStatus("job-1", JobState.QUEUED, user="alice", note="No worker is running: the job waits until one starts.")
    html = jobs.show(page, queued, {}, "alice", fresh=True)[page.job_view.status_html]
    assert "No worker" not in html and render.STARTING_JOB in html
    # Polled with no job shown: said again, still polling; once a worker connects, said and stopped.
    polled = jobs.poll(page, data, None, None)
    assert "starting" in polled[page.options.workers_html] and page.timer not in polled
    workers.append({"os": "Linux", "queues": "tries,default"})
    polled = jobs.poll(page, data, None, None)
    assert "Connected: 1 Linux worker" in polled[page.options.workers_html] and polled[page.timer].active is False
    # A minute on with no worker: now it is news.
    workers.clear()
    monkeypatch.setattr(jobs, "STARTED_AT", just_started - jobs.STARTING_SECONDS - 1)
    assert "No worker is connected" in jobs.workers_text()
    assert "No worker is running" in jobs.show(page, queued, {}, "alice", fresh=True)[page.job_view.status_html]
    assert page.timer not in sign_in.on_load(page, data, None, None)


def test_only_the_newest_option_check_and_size_estimate_of_a_session_are_shown(page, monkeypatch):
    """The sequence length typed right after a model was read kept the note of the one before:
    the first checks for a model take seconds (its sizes and device fit), run side by side with
    the check of the length typed, and finished after it, saying "exactly 128 tokens" under "8"
    (seen in the browser test of a reload, run alone on a fresh service). An answer overtaken by
    a later check of the same page is dropped; another page's checks are its own. The Size
    choices' estimates likewise."""
    import threading

    from ui import form_checks
    from ui.models import ModelSummary

    summary = ModelSummary("alice/tiny-bert", repo_id="alice/tiny-bert", model_type="bert", tasks=["fill-mask"],
                           default_task="fill-mask", modality="text",
                           config={"model_type": "bert", "max_position_embeddings": 512})
    fields, note, size_radio = page.options.fields, page.options.sequence_html, page.model.size_radio
    slow, reached = threading.Event(), threading.Event()

    def held(answer):  # the first call with the form's first values waits until the later one has answered
        def call(summary, task, options):
            if options.minimum_deployment_target == "iOS17" and not slow.is_set():
                reached.set()
                slow.wait(30)
            return answer
        return call

    monkeypatch.setattr(form_checks.models, "check_options", held(None))
    sizes = {"none": 200_000_000, "int8": 100_000_000}
    monkeypatch.setattr(form_checks.models, "size_estimates", held(sizes))

    def data(length, target="iOS17"):
        return {**form_data(page), page.summary: summary, fields["sequence_length"]: length,
                fields["minimum_deployment_target"]: target}

    def raced(handler, first_data, later_data):
        slow.clear(), reached.clear()
        request, answers = SimpleNamespace(session_hash="typing-page"), {}
        first = threading.Thread(target=lambda: answers.update(first=handler(page, first_data, request)))
        first.start()
        assert reached.wait(30)
        later = handler(page, later_data, request)
        slow.set()
        first.join(30)
        return answers["first"], later

    older, newer = raced(form_checks.check, data("auto"), data("8", "iOS18"))
    assert "exactly 8 tokens" in newer[note]
    assert older == gr.skip(), "an older check's note replaced the newer one's"
    # Another page's check at the same time is answered: it is its own newest.
    other = SimpleNamespace(session_hash="other-page")
    assert "exactly 8 tokens" in form_checks.check(page, data("8"), other)[note]
    older, newer = raced(form_checks.sizes, data("auto"), data("auto", "iOS18"))
    assert size_radio in newer and older == gr.skip(), "an older estimate replaced the newer one's"
    # An .aimodel has no deployment target: no Size choice needs iOS18 for it (a Core ML package's does).
    labels = {format_name: dict((v, label) for label, v in form_checks.sizes(
        page, {**data("auto"), fields["format"]: format_name}, other)[size_radio]["choices"]) for format_name in ("coreml", "coreai")}
    assert labels["coreml"]["int4"].endswith("needs iOS18") and "needs" not in labels["coreai"]["int4"]


def test_the_core_ai_llm_bundle_choice_is_shown_only_where_it_applies(page, monkeypatch):
    """Which of Apple's engines the bundle is for (macOS or iOS) is asked of a text generator
    converted to Core AI (alone or beside Core ML), not of a Core ML package or an encoder; the
    page starts with it hidden."""
    from ui import form_checks
    from ui.models import ModelSummary

    monkeypatch.setattr(form_checks.models, "check_options", lambda summary, task, options: None)
    monkeypatch.setattr(form_checks.models, "size_estimates", lambda summary, task, options: {})
    fields, bundle = page.options.fields, page.options.fields["llm_bundle"]
    assert bundle.visible is False
    llm = ModelSummary("alice/tiny-llama", repo_id="alice/tiny-llama", model_type="llama", tasks=["text-generation"],
                       default_task="text-generation", modality="text", config={"model_type": "llama"})
    shown = {}
    for format_name in ("coreml", "coreai", "both"):
        for task in ("text-generation", "feature-extraction"):
            data = {**form_data(page), page.summary: llm, page.model.task_radio: task, fields["format"]: format_name,
                    bundle: "ios"}
            shown[format_name, task] = form_checks.check(page, data, SimpleNamespace(session_hash=f"{format_name}-{task}"))[bundle]
    assert {key for key, update in shown.items() if update["visible"]} == {("coreai", "text-generation"), ("both", "text-generation")}
    # Hidden, an iOS choice made for Core AI goes back to macOS: it must not refuse a Core ML job unseen.
    assert all(update.get("value") == "macos" for update in shown.values() if not update["visible"])
    assert all("value" not in update for update in shown.values() if update["visible"])
