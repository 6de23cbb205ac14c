"""The form's option parsing (ui/form.py): what is entered becomes a checked JobSpec, the
sequence-length note warns about CPU-only ranges, and mistakes come back as messages."""

from __future__ import annotations

import pytest

from converters.errors import UserInputError
from converters.options import OPTIONS
from ui import form
from worker.spec import NEW_REPO, PULL_REQUEST

TOKEN = "hf_alice_write_token"


def values(**overrides) -> form.FormValues:
    base = dict(model="alice/tiny-bert", task="fill-mask")
    base.update(overrides)
    option_values = {name: base.pop(name) for name in list(base) if name in OPTIONS}
    return form.FormValues(**base, option_values=option_values)


def test_defaults_make_the_default_job():
    spec = values().to_spec(TOKEN, "alice")
    assert spec.repo_id == "alice/tiny-bert" and spec.task == "fill-mask" and spec.user == "alice"
    assert spec.options.precision == "float16" and str(spec.options.sequence_length) == "128"
    assert spec.options.minimum_deployment_target == "iOS17" and spec.options.naming == "swift-transformers"
    assert spec.push.kind == NEW_REPO and spec.push.repo_id is None and not spec.push.private
    assert spec.runner == "any" and not spec.push_even_if_invalid
    assert spec.push_repo_id == "alice/tiny-bert-coreml"
    assert TOKEN not in repr(spec) and TOKEN not in str(spec.to_json())


def test_every_option_reaches_the_spec():
    spec = values(model="https://huggingface.co/alice/tiny-bert/tree/v1", precision="float32", sequence_length=" 64, 128 ",
                  runner="macos", minimum_deployment_target="iOS18", naming="exporters", push_repo=" alice/custom ", private=True,
                  push_even_if_invalid=True).to_spec(TOKEN, "alice")
    assert spec.repo_id == "alice/tiny-bert" and spec.revision == "v1"
    assert spec.options.precision == "float32" and spec.options.sequence_length.sizes == (64, 128)
    assert spec.options.minimum_deployment_target == "iOS18" and spec.options.naming == "exporters"
    assert spec.runner == "macos" and spec.queue_name == "macos"
    assert spec.push.repo_id == "alice/custom" and spec.push.private and spec.push_even_if_invalid


def test_a_pull_request_ignores_the_repo_name_field():
    spec = values(push=PULL_REQUEST, push_repo="alice/ignored", private=True).to_spec(TOKEN, "alice")
    assert spec.push.kind == PULL_REQUEST and spec.push.repo_id is None and not spec.push.private
    assert spec.push_repo_id == "alice/tiny-bert"


def test_an_empty_sequence_length_means_the_default():
    assert str(values(sequence_length="  ").options().sequence_length) == "128"


@pytest.mark.parametrize("overrides, expected", [
    ({"model": ""}, "Enter a model first"),
    ({"task": None}, "Pick a task"),
    ({"sequence_length": "lots"}, "Sequence length 'lots' is not understood"),
    ({"sequence_length": "512-1"}, "from a smaller to a larger number"),
    ({"model": "not a model"}, "not a valid Hub model ID"),
    ({"push_repo": "https://evil/x"}, "must be a plain Hub ID"),
    ({"task": "juggling"}, "Unknown task 'juggling'"),
])
def test_mistakes_come_back_as_messages(overrides, expected):
    with pytest.raises(UserInputError, match=expected):
        values(**overrides).to_spec(TOKEN, "alice")


def test_no_token_asks_to_sign_in():
    with pytest.raises(UserInputError, match="token is needed"):
        values().to_spec(None, None)


def test_sequence_notes():
    level, text = form.sequence_note("1-512")
    assert level == "warning" and "CPU only" in text and "64,128,256" in text
    assert form.sequence_note("64,128")[0] == "info" and "exactly these lengths" in form.sequence_note("64,128")[1]
    assert form.sequence_note("128") == ("info", "The package takes exactly 128 tokens; shorter inputs are padded.")
    assert form.sequence_note("abc")[0] == "error"
    assert form.sequence_note("1-512", "vision")[0] == "info"


def test_task_choices_mark_the_models_own_task():
    choices = form.task_choices(["feature-extraction", "fill-mask"], "fill-mask")
    assert choices == [("feature-extraction: hidden states (embeddings)", "feature-extraction"),
                       ("fill-mask: scores for a masked token (the model's own task)", "fill-mask")]


def test_choices_cover_what_the_engine_accepts():
    from converters.options import DEPLOYMENT_TARGETS, KV_CACHES, NAMINGS, PRECISIONS, TOLERANCES
    from worker.spec import PUSH_KINDS, RUNNERS

    assert [v for _, v in form.option_field("precision")["choices"]] == list(PRECISIONS)
    assert [v for _, v in form.option_field("naming")["choices"]] == list(NAMINGS)
    assert [v for _, v in form.option_field("kv_cache")["choices"]] == list(KV_CACHES)
    assert [v for _, v in form.option_field("tolerance")["choices"]] == list(TOLERANCES)
    assert [v for _, v in form.RUNNER_CHOICES] == list(RUNNERS)
    assert [v for _, v in form.PUSH_CHOICES] == list(PUSH_KINDS)
    assert form.option_field("minimum_deployment_target")["value"] in DEPLOYMENT_TARGETS
    assert all(len(text) < 160 for text in form.HELP.values()), "help must stay one line"


def test_default_push_repo():
    assert form.default_push_repo("alice", "tiny-bert") == "alice/tiny-bert-coreml"
    assert form.default_push_repo(None, None) == "<you>/<model>-coreml"
