"""app.py's page as built, without a browser: sign-in by OAuth on a Space and by token
when self-hosted, polling that never waits behind other users, no public API, no run
history (it would keep the token field's value in the browser)."""

from __future__ import annotations

import gradio as gr
import pytest

import app
from ui import identity


def components(demo, kind):
    return [b for b in demo.blocks.values() if isinstance(b, kind)]


def handler(demo, name):
    return next(f for f in demo.fns.values() if f.name == name)


@pytest.fixture(scope="module")
def self_hosted():
    return app.build_demo(on_spaces=False)


@pytest.fixture(scope="module")
def space():
    """The page as a Space builds it: SYSTEM=spaces and the OAuth variables the Hub sets
    for `hf_oauth: true` (gradio reads them at import, hence the patching)."""
    import gradio.oauth

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYSTEM", "spaces")
        patch.setenv("SPACE_ID", "me/coreml-converter")
        patch.setattr(gradio.oauth, "OAUTH_CLIENT_ID", "client-id")
        patch.setattr(gradio.oauth, "OAUTH_CLIENT_SECRET", "client-secret")
        patch.setattr(gradio.oauth, "OAUTH_SCOPES", "openid profile read-repos write-repos manage-repos write-discussions")
        patch.setattr(gradio.oauth, "OPENID_PROVIDER_URL", "https://huggingface.co")
        yield app.build_demo(on_spaces=True)


def test_a_space_signs_in_with_hugging_face(space):
    assert space.expects_oauth
    assert [b.value for b in components(space, gr.LoginButton)] == ["Sign in with Hugging Face"]
    assert not [b for b in components(space, gr.Textbox) if b.type == "password"]
    paths = {getattr(route, "path", None) for route in space.app.routes}
    assert {"/login/huggingface", "/login/callback", "/logout"} <= paths


def test_self_hosted_signs_in_with_a_token_field(self_hosted):
    assert not self_hosted.expects_oauth
    (token,) = [b for b in components(self_hosted, gr.Textbox) if b.type == "password"]
    assert token.label == "Hugging Face token"
    assert handler(self_hosted, "sign_in").outputs  # the field is cleared and hidden by sign_in


def test_polling_and_job_handlers_are_never_queued_behind_other_users(self_hosted):
    (timer,) = components(self_hosted, gr.Timer)
    assert not timer.active  # started when a job is shown
    for name in ("poll", "submit", "cancel", "suggest", "inspect", "on_load", "refresh", "open_job"):
        assert handler(self_hosted, name).concurrency_limit is None, name
    assert handler(self_hosted, "poll").show_progress == "hidden"


def test_no_event_is_a_public_api(self_hosted, space):
    for demo in (self_hosted, space):
        ours = [f for f in demo.fns.values() if f.fn is None or f.fn.__module__ == "app"]
        assert ours and {f.api_visibility for f in ours} == {"private"}


def test_identity_prefers_the_oauth_sign_in():
    profile = gr.OAuthProfile({"preferred_username": "alice", "name": "Alice", "profile": "", "picture": ""})
    oauth = gr.OAuthToken(token="hf_oauth_token", scope="openid profile", expires_at=0)
    assert identity.identity({"user": "bob", "token": "hf_bob"}, profile, oauth) == ("alice", "hf_oauth_token")
    assert identity.identity({"user": "bob", "token": "hf_bob"}, None, None) == ("bob", "hf_bob")
    assert identity.identity(None, None, None) == (None, None)


def test_error_texts_never_carry_the_token():
    assert identity.safe_text(RuntimeError("bad header Bearer hf_secret_value"), "hf_secret_value") == "bad header Bearer [token]"


def test_launch_settings(monkeypatch):
    """What main() passes to launch(): the port and host from the environment (the Docker
    image sets GRADIO_SERVER_PORT=7860 and GRADIO_SERVER_NAME=0.0.0.0), no run history."""
    import inspect

    source = inspect.getsource(app.main)
    assert 'os.environ.get("GRADIO_SERVER_PORT", "7860")' in source
    assert 'os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")' in source
    assert "run_history=False" in source and "start_backend()" in source


def test_a_page_load_reads_the_target_repo_again_and_the_clean_up_box_starts_hidden(self_hosted):
    """Issue 24's walk-through: after a reload, what the page had said about the target repo was
    not read again; the box removing a repo's other packages showed before any repo was read.
    The load (which restores the sign-in) is followed by the target's lookup, for the form as it
    is now; the box shows only once a lookup finds other packages."""
    fns = list(self_hosted.fns.values())
    load = next(i for i, f in enumerate(fns) if f.name == "on_load")
    assert any(f.name == "announce" and f.trigger_after == fns[load]._id for f in fns), "no lookup follows the load"
    (box,) = [b for b in components(self_hosted, gr.Checkbox) if b.elem_id == "remove-others"]
    assert box.visible is False
