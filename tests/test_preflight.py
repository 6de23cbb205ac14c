"""One preflight and one rule for the `auto` task (converters/preflight.py), used by the
form (ui/models.py), the worker's resolve stage and the engine: for the same model all three
pick the same task, including a model whose pipeline tag disagrees with its architecture."""

from __future__ import annotations

import shutil

import pytest

from converters.configs import model_tasks
from converters.errors import UnsupportedArchitecture, UserInputError
from converters.export import convert
from converters.options import ConversionOptions
from converters.preflight import preflight
from converters.source import HubReference
from converters.tasks import automatic_task
from tests.conftest import OWNER, OWNER_TOKEN
from ui import models
from worker.resolve import resolve
from worker.spec import JobSpec

# BertForMaskedLM checkpoints (weights for fill-mask) whose model cards name another task.
SENTENCE_SIMILARITY = f"{OWNER}/mlm-tagged-sentence-similarity"  # embeddings: the base model is there
TEXT_CLASSIFICATION = f"{OWNER}/mlm-tagged-text-classification"  # no classifier head in the weights


@pytest.fixture(scope="module")
def hub(local_hub, tiny_model, tmp_path_factory):
    folders = {}
    for repo, tag in ((SENTENCE_SIMILARITY, "sentence-similarity"), (TEXT_CLASSIFICATION, "text-classification")):
        folder = tmp_path_factory.mktemp("tagged") / repo.split("/")[1]
        shutil.copytree(tiny_model("bert"), folder)
        (folder / "README.md").write_text(f"---\npipeline_tag: {tag}\nlicense: mit\n---\n\nA tiny BERT.\n")
        if repo not in local_hub.repo_ids():
            local_hub.add_repo_from_folder(repo, folder)
        folders[repo] = folder
    with pytest.MonkeyPatch.context() as patch:
        for key, value in local_hub.client_env().items():
            patch.setenv(key, value)
        yield folders


@pytest.mark.parametrize("available, architectures, tag, expected", [
    (["feature-extraction", "fill-mask", "text-classification"], ["BertForMaskedLM"], "sentence-similarity",
     "feature-extraction"),  # the base model serves the tag
    (["feature-extraction", "fill-mask", "text-classification"], ["BertForMaskedLM"], "text-classification",
     "fill-mask"),  # the tag's head is not in the checkpoint: the architecture's task
    (["feature-extraction", "fill-mask", "text-classification"], ["BertModel"], "text-classification",
     "text-classification"),  # the architecture names no task: the tag is all there is
    (["text-generation", "feature-extraction"], ["GPT2LMHeadModel"], "text-generation", "text-generation"),
    (["feature-extraction", "text2text-generation"], ["T5ForConditionalGeneration"], "translation",
     "text2text-generation"),
    (["feature-extraction", "fill-mask"], ["BertForQuestionAnswering"], None, "feature-extraction"),
])
def test_the_automatic_task_rule(available, architectures, tag, expected):
    assert automatic_task(available, architectures, tag) == expected


def test_tasks_come_from_the_config():
    tasks = model_tasks({"model_type": "bert", "architectures": ["BertForMaskedLM"]})
    assert tasks.automatic == "fill-mask" and {"feature-extraction", "fill-mask"} <= set(tasks.available)
    assert tasks.choose("auto") == "fill-mask" and tasks.choose("masked-lm") == "fill-mask"
    with pytest.raises(UserInputError, match="not available for bert models"):
        tasks.choose("text-generation")
    with pytest.raises(UnsupportedArchitecture, match="'wav2vec2' cannot be converted: it is a speech or audio model"):
        model_tasks({"model_type": "wav2vec2", "architectures": ["Wav2Vec2ForCTC"]})


@pytest.mark.parametrize("repo, expected", [
    (SENTENCE_SIMILARITY, "feature-extraction"),
    (TEXT_CLASSIFICATION, "fill-mask"),
    (f"{OWNER}/tiny-bert", "fill-mask"),  # no card: the Hub's tag comes from the architecture
])
def test_the_form_the_worker_and_the_engine_pick_the_same_task(hub, repo, expected, tmp_path):
    summary = models.inspect_model(repo)
    assert summary.convertible and summary.default_task == expected
    spec = JobSpec.build(repo, token=OWNER_TOKEN, task="auto", options={"sequence_length": "8"})
    assert resolve(spec, OWNER_TOKEN, tmp_path / "resolve").task == expected
    eight = ConversionOptions.from_strings(sequence_length="8")
    engine = convert(repo, "auto", tmp_path / "hub", eight, validate=False).report_json
    assert (engine["requested_task"], engine["task"]) == ("auto", expected)
    if repo in hub:  # the same model as a local folder: the task named in its README's card
        local = convert(str(hub[repo]), "auto", tmp_path / "local", eight, validate=False).report_json
        assert local["task"] == expected


def test_the_preflight_refuses_what_a_job_would(hub, tmp_path):
    ref = HubReference(f"{OWNER}/tiny-bert")
    model = preflight(ref, task="auto", options=ConversionOptions.from_strings(sequence_length="8"))
    assert (model.model_type, model.task, model.modality) == ("bert", "fill-mask", "text")
    assert model.parameters and model.weight_bytes and model.sha
    with pytest.raises(UserInputError, match="beyond this model's maximum of 512"):
        preflight(ref, task="fill-mask", options=ConversionOptions.from_strings(sequence_length="4096"))
    with pytest.raises(UserInputError, match="too large for this worker"):
        preflight(ref, max_parameters=1000)
    with pytest.raises(UserInputError, match="pickle"):
        preflight(HubReference(f"{OWNER}/pickle-bert"))
