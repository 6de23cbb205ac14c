"""What the form shows about a model (ui/models.py), read from the local Hub through
huggingface_hub and HF_ENDPOINT: search suggestions, architecture, size, tasks with the
model's own preselected, and the reason when it cannot be converted."""

from __future__ import annotations

import pytest

from converters.options import ConversionOptions
from tests.conftest import OTHER_TOKEN, OWNER, OWNER_TOKEN
from tests.e2e import repos
from ui import models


@pytest.fixture
def hub(worker_repos, monkeypatch):
    for key, value in worker_repos.client_env().items():
        monkeypatch.setenv(key, value)
    return worker_repos


def test_search_suggests_matching_models_from_the_configured_hub(hub):
    found = models.search_models("tiny-b")
    assert f"{OWNER}/tiny-bert" in found and all("tiny-b" in f for f in found)
    assert f"{OWNER}/secret-bert" not in models.search_models("secret")
    assert f"{OWNER}/secret-bert" in models.search_models("secret", OWNER_TOKEN)
    assert models.search_models(f"{hub.url}/{OWNER}/tiny-bert") == [f"{OWNER}/tiny-bert"]
    assert models.search_models("t") == []


def test_search_is_quiet_when_the_hub_is_down(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert models.search_models("anything") == []


def test_a_supported_model_shows_architecture_size_and_tasks(hub):
    summary = models.inspect_model(f"{hub.url}/{OWNER}/tiny-bert")
    assert summary.error is None and summary.convertible
    assert summary.repo_id == f"{OWNER}/tiny-bert" and summary.model_type == "bert"
    assert summary.architectures == ["BertForMaskedLM"] and summary.pipeline_tag == "fill-mask"
    assert summary.parameters and summary.weight_bytes > 0
    assert "fill-mask" in summary.tasks and "feature-extraction" in summary.tasks
    assert summary.default_task == "fill-mask" and summary.modality == "text"


@pytest.mark.parametrize("model, token, expected", [
    (f"{OWNER}/nope", None, "was not found on the Hub"),
    (f"{OWNER}/secret-bert", None, "was not found on the Hub"),
    (f"{OWNER}/gated-bert", OTHER_TOKEN, "is gated"),
    (f"{OWNER}/pickle-bert", None, "pickle"),
    (f"{OWNER}/remote-code", None, "custom code"),
    (repos.SPEECH, None, "The architecture 'wav2vec2' cannot be converted: it is a speech or audio model"),
    (repos.NO_CONFIG, None, "has no config.json"),
    (repos.BAD_CONFIG, None, "not valid JSON"),
    ("not a model id", None, "not a valid Hub model ID"),
])
def test_why_a_model_cannot_be_converted(hub, model, token, expected):
    summary = models.inspect_model(model, token)
    assert not summary.convertible
    assert expected in summary.error


def test_a_private_model_is_read_with_the_token(hub):
    summary = models.inspect_model(f"{OWNER}/secret-bert", OWNER_TOKEN)
    assert summary.convertible and summary.private


def test_an_unsupported_model_still_says_what_it_is(hub):
    summary = models.inspect_model(repos.SPEECH)
    assert summary.model_type == "wav2vec2" and summary.architectures == ["Wav2Vec2ForCTC"]


@pytest.mark.parametrize("tasks, tag, architectures, expected", [
    (["feature-extraction", "fill-mask"], "fill-mask", [], "fill-mask"),
    (["feature-extraction", "fill-mask"], None, ["BertForMaskedLM"], "fill-mask"),
    (["feature-extraction", "fill-mask"], "sentence-similarity", ["BertForMaskedLM"], "feature-extraction"),
    (["text-generation", "feature-extraction"], "text-to-image", ["GPT2LMHeadModel"], "text-generation"),
    (["feature-extraction", "semantic-segmentation"], "image-segmentation", [], "semantic-segmentation"),
    (["feature-extraction", "fill-mask"], None, [], "feature-extraction"),
])
def test_the_models_own_task_is_preselected(tasks, tag, architectures, expected):
    assert models.default_task(tasks, tag, architectures) == expected


def test_options_the_engine_would_refuse_are_reported_before_submitting(hub):
    summary = models.inspect_model(f"{OWNER}/tiny-bert")
    assert models.check_options(summary, "fill-mask", ConversionOptions.from_strings(sequence_length="16")) is None
    too_long = models.check_options(summary, "fill-mask", ConversionOptions.from_strings(sequence_length="4096"))
    assert "beyond this model's maximum of 512" in too_long
    enumerated = ConversionOptions.from_strings(sequence_length="8,16")
    assert "iOS18" in models.check_options(summary, "fill-mask", enumerated)
    ok = ConversionOptions.from_strings(sequence_length="8,16", minimum_deployment_target="iOS18")
    assert models.check_options(summary, "fill-mask", ok) is None


def test_tolerances_come_from_the_architecture(hub):
    from converters.configs import config_class_for

    summary = models.inspect_model(f"{OWNER}/tiny-bert")
    expected = config_class_for("bert").tolerances
    assert models.tolerances(summary, "float16")["atol"] == expected.atol["float16"]
    assert models.tolerances(summary, "float32")["min_psnr"] == expected.min_psnr["float32"]
    assert models.tolerances(None, "float16") is None


def test_core_ml_repos_are_not_suggested_and_are_refused_for_what_they_are(hub):
    """A converted package's repo (ours: <model>-coreml, tagged coreml) holds config.json and
    the package's weights/weight.bin: it must not be offered as a source, nor refused as a
    pickle-only model."""
    import json
    import uuid

    package = "tiny.mlpackage/Data/com.apple.CoreML"
    files = {"config.json": json.dumps({"model_type": "bert"}), f"{package}/model.mlmodel": b"spec",
             f"{package}/weights/weight.bin": b"\0" * 64, "tiny.mlpackage/Manifest.json": "{}"}
    name = f"coreml-{uuid.uuid4().hex[:8]}"
    hub.add_repo(f"{OWNER}/{name}-coreml", files)
    hub.add_repo(f"{OWNER}/{name}-tagged", {**files, "README.md": "---\ntags:\n- coreml\n---\n"})
    assert models.search_models(name) == []
    for repo in (f"{OWNER}/{name}-coreml", f"{OWNER}/{name}-tagged"):
        summary = models.inspect_model(repo)
        assert not summary.convertible and "pickle" not in summary.error
        assert "is a Core ML repo (it holds tiny.mlpackage), not a transformers model" in summary.error
        assert "base_model" in summary.error


def test_the_default_target_repo_never_doubles_the_suffix():
    from ui.form import default_push_repo

    assert default_push_repo("alice", "tiny-coreml") == "alice/tiny-coreml"


def test_only_the_newest_query_of_a_session_is_answered():
    """Keys are searched as typed; an answer overtaken by a later key of the same session is dropped,
    other sessions are independent, and the table forgets the oldest sessions beyond its bound."""
    newest = models.NewestQuery(sessions=2)
    first = newest.begin("a")
    other = newest.begin("b")
    second = newest.begin("a")
    assert not newest.is_newest("a", first) and newest.is_newest("a", second)
    assert newest.is_newest("b", other)
    newest.begin("c")  # a third session: "b", the least recently typed in, is forgotten
    assert not newest.is_newest("b", other) and newest.is_newest("a", second)


def test_the_target_repo_is_named_as_the_job_will_and_its_existence_read_from_the_hub(hub):
    from ui import form

    assert form.push_target("", OWNER, "tiny-bert") == f"{OWNER}/tiny-bert-coreml"
    assert form.push_target("mine", OWNER, "tiny-bert") == f"{OWNER}/mine"
    assert form.push_target("org/x", None, None) == "org/x" and form.push_target("", None, "tiny-bert") is None
    assert models.repo_exists(f"{OWNER}/tiny-bert", None) is True
    assert models.repo_exists(f"{OWNER}/no-such-repo", None) is False
    assert models.repo_exists(f"{OWNER}/secret-bert", None) is False  # private: unseen without the token
    assert models.repo_exists(f"{OWNER}/secret-bert", OWNER_TOKEN) is True


def test_the_target_repos_packages_are_read_and_those_a_push_would_not_replace_named(hub):
    """The clean-up box shows only for an existing repo holding packages this push would not
    replace (issue 24's walk-through: it showed under a repo that did not exist)."""
    from converters.formats import BOTH, CORE_AI
    from ui import form

    held = f"{OWNER}/ui-held-coreml"
    if held not in hub.repo_ids():
        hub.add_repo(held, {"tiny-bert.mlpackage/Manifest.json": "{}", "tiny-bert.mlpackage/Data/weight.bin": "w",
                            "tiny-bert/tiny-bert.aimodel": "x", "tiny-bert/metadata.json": "{}",
                            "older-bert-encoder.mlpackage/Manifest.json": "{}", "README.md": "card"},
                     owner_token=OWNER_TOKEN)
    packages = models.repo_packages(held, None)
    assert packages == ["older-bert-encoder.mlpackage", "tiny-bert.mlpackage", "tiny-bert/tiny-bert.aimodel"]
    assert models.repo_packages(f"{OWNER}/tiny-bert", None) == []  # exists, holds no package
    assert models.repo_packages(f"{OWNER}/no-such-repo", None) is None
    assert models.repo_packages(f"{OWNER}/secret-bert", None) is None  # private: unseen without the token
    # What each push replaces: the package named after its model, in the format(s) it writes.
    assert form.other_packages(packages, "tiny-bert") == ["older-bert-encoder.mlpackage", "tiny-bert/tiny-bert.aimodel"]
    core_ai = ConversionOptions.from_strings(format=CORE_AI.name)
    assert form.other_packages(packages, "tiny-bert", core_ai) == ["older-bert-encoder.mlpackage", "tiny-bert.mlpackage"]
    both = ConversionOptions.from_strings(format=BOTH.name)
    assert form.other_packages(packages, "tiny-bert", both) == ["older-bert-encoder.mlpackage"]
    assert form.other_packages(packages, "older-bert", both) == ["tiny-bert.mlpackage", "tiny-bert/tiny-bert.aimodel"]
    exporters = ConversionOptions.from_strings(naming="exporters")
    assert form.other_packages(["coreml/fill-mask/float16_model.mlpackage", *packages], "tiny-bert", exporters) == packages
    note = form.existing_target_note(held, form.other_packages(packages, "tiny-bert"))
    assert "Its other packages (older-bert-encoder.mlpackage, tiny-bert/tiny-bert.aimodel) stay" in note
    assert "other package" not in form.existing_target_note(held, [])
    # A Core AI push into a repo holding only the Core ML package adds its own beside it.
    added = form.existing_target_note(held, ["tiny-bert.mlpackage"], replaced=False)
    assert "replaces its model card, and adds this package" in added and "the new card lists it, unless" in added


def test_suggestions_never_leave_the_box_a_filtered_index_past_their_end():
    """Gradio's dropdown renders new choices with the indices of the old ones that contain the
    typed text; the list sent must reach every such index (or nothing is sent)."""
    shown = ["alice/job-llama", "alice/job-bert"]
    # Typing on narrows within what is shown: the box's own filter does it, nothing is sent.
    assert models.next_choices(shown, ["alice/job-bert"], "job-b") is None
    assert models.next_choices(shown, [], "job-x") is None
    # New names: sent, padded so that index 1 (job-bert, which contains "bert") still exists.
    sent = models.next_choices(shown, ["bob/bert-base"], "bert")
    assert sent == ["bob/bert-base", "alice/job-llama"] and len(sent) >= 2
    # Nothing shown contains the text: the found list alone.
    assert models.next_choices(shown, ["carol/vit"], "vit") == ["carol/vit"]
    for typed, found in (("job", ["x/job-1"]), ("l", ["y/l"]), ("JOB-B", ["z/job-b"])):
        sent = models.next_choices(shown, found, typed)
        reach = max((i + 1 for i, c in enumerate(shown) if typed.lower() in c.lower()), default=0)
        assert sent is None or len(sent) >= reach
