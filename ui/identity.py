"""Who is asking, and how a handler for a signed-in person shows its errors.

`@signed_in` replaces what every such handler repeated: reading who is signed in (the
"Sign in with Hugging Face" OAuth sign-in on a Space, else the token sign-in kept in the
session state), and turning the error a request can meet into a message on the page,
with the token redacted from it.
"""

from __future__ import annotations

import inspect
import typing
from typing import Callable, NamedTuple

import gradio as gr

from converters.errors import ConverterError
from ui.page import Page, presented_like
from worker.progress import Redactor
from worker.status import JobStatus

# What Gradio passes last to a @signed_in handler: the OAuth sign-in (None when self-hosted).
SIGN_IN_PARAMETERS = (("profile", gr.OAuthProfile | None), ("oauth", gr.OAuthToken | None))


class Who(NamedTuple):
    user: str | None
    token: str | None


def identity(session: dict | None, profile, oauth) -> Who:
    """(user, token): from "Sign in with Hugging Face" on a Space, else from the token field."""
    if profile is not None and oauth is not None:
        return Who(profile.username, oauth.token)
    session = session or {}
    return Who(session.get("user"), session.get("token"))


def safe_text(error: BaseException | str, token: str | None) -> str:
    return Redactor(token)(str(error))


def owned(status: JobStatus, user: str | None) -> bool:
    """Whether `user` may see the job (a job with no user is anyone's)."""
    return status.owned_by(user)


# How a handler shows an error: (page, event inputs, the error's text) -> what to return (or yield).
ErrorView = Callable[[Page, dict, str], typing.Any]


def signed_in(errors: ErrorView | None = None, *, catch: type[Exception] = ConverterError,
              required: str | None = None):
    """Decorates a handler `fn(page, data, who, *extra)` into the event function Gradio calls,
    `fn(page, data, *extra, profile, oauth)` (extra: e.g. the event's data, the request):
    Gradio passes the OAuth sign-in (None when self-hosted, or not signed in) and the handler
    gets `who`, a Who(user, token).

    With `errors`, an error of type `catch` raised by the handler is shown: the handler's
    result is `errors(page, data, text)`, the error's text with the token redacted. With
    `required` too, a person with no token gets `required` shown that way and the handler
    does not run. A generator handler stays one (its error is yielded)."""

    assert errors is not None or not required, "a required sign-in is said where errors are"
    caught = catch if errors is not None else ()  # nothing is caught when nothing would show it

    def decorate(handler):
        if inspect.isgeneratorfunction(handler):
            def event(page, data, *rest):
                *extra, profile, oauth = rest
                who = identity(data[page.session], profile, oauth)
                if required and not who.token:
                    yield errors(page, data, required)
                    return
                try:
                    yield from handler(page, data, who, *extra)
                except caught as error:
                    yield errors(page, data, safe_text(error, who.token))
        else:
            def event(page, data, *rest):
                *extra, profile, oauth = rest
                who = identity(data[page.session], profile, oauth)
                if required and not who.token:
                    return errors(page, data, required)
                try:
                    return handler(page, data, who, *extra)
                except caught as error:
                    return errors(page, data, safe_text(error, who.token))

        event.handler = handler  # the undecorated handler
        return presented_like(event, handler, without="who", then=SIGN_IN_PARAMETERS)

    return decorate
