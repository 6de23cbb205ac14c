"""Signing in: with a token when self-hosted (a Space signs in with Hugging Face), signing
out, and on page load finding the person signed in again (by the reference the browser kept),
their jobs listed and their newest running job shown.
"""

from __future__ import annotations

import gradio as gr

from converters.errors import ConverterError
from ui import render
from ui.identity import identity, owned, safe_text
from ui.jobs import awaiting_workers, jobs_for, show, workers_text
from ui.page import Page
from worker import api, sessions


def signed_in_updates(page: Page, user: str) -> dict:
    box = page.sign_in
    return {box.token_box: gr.update(value="", visible=False), box.user_html: render.signed_in(user),
            box.sign_in_button: gr.update(visible=False), box.sign_out_button: gr.update(visible=True)}


def sign_in(page: Page, data: dict) -> dict:
    box = page.sign_in
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


def sign_out(page: Page, data: dict) -> dict:
    box = page.sign_in
    sessions.end(api.connection(), (data[page.remembered] or {}).get("session"))
    return {page.session: {}, page.remembered: {}, box.token_box: gr.update(value="", visible=True),
            box.user_html: render.signed_in(None), box.sign_in_button: gr.update(visible=True),
            box.sign_out_button: gr.update(visible=False), page.my_jobs.jobs_table: [], page.job_ids: []}


def on_load(page: Page, data: dict, profile: gr.OAuthProfile | None, oauth: gr.OAuthToken | None) -> dict:
    """A reload or a second tab finds the user signed in (a token sign-in's session restored
    first, hence no @signed_in here), their jobs listed and their newest running job shown."""
    box = page.sign_in
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
        updates.update({page.job: running.job_id, **show(page, running, {}, user, fresh=True)})
    elif awaiting_workers():  # the service is starting: the workers note is said again once they connect
        updates[page.timer] = gr.Timer(active=True)
    return updates
