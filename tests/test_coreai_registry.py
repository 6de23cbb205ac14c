"""Core AI output for the whole registry (converters/backends/coreai/backend.py): every (model type,
task) pair Core AI can take converts and passes validation by *running* the saved .aimodel in
coreai-core's own runtime (real execution on this CPU); the rest are refused, each with its
reason. The other Core AI tests are in tests/test_coreai.py (a file of its own, so the suite's
two workers share them)."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from converters.backends.coreai import bundle as bundle
from converters.backends.coreai import NOT_CONVERTED
from converters.configs import config_class_for
from converters.errors import UserInputError
from converters.export import convert
from converters.metadata import PREFIX
from converters.options import ConversionOptions
from converters.tasks import TASKS
from converters.backends.coreai.runtime import MODE, described
from tests.models import MODELS, build_model
from tests.test_coreai import SEQ, _options, _passed

pytestmark = pytest.mark.slow

OWN_CHECKPOINT = {("llama", "question-answering"), ("qwen2", "question-answering"), ("qwen3", "question-answering")}
PAIRS = [(model_type, task) for model_type in MODELS for task in config_class_for(model_type).available_tasks(MODELS[model_type][0]())]
CONVERTED = [pair for pair in PAIRS if pair not in NOT_CONVERTED]
REFUSED = [pair for pair in PAIRS if pair in NOT_CONVERTED]


def _source(tiny_model, model_type: str, task: str, tmp_path):
    folder = tiny_model(model_type)
    if (model_type, task) in OWN_CHECKPOINT:  # as in test_registry_conversions.py
        import transformers

        auto = getattr(transformers, TASKS[task].auto_class)
        folder = build_model(model_type, tmp_path / "checkpoint", model_class=auto._model_mapping[type(AutoConfig.from_pretrained(folder))])
    return folder


@pytest.mark.parametrize("model_type,task", CONVERTED, ids=[f"{m}-{t}" for m, t in CONVERTED])
def test_every_registry_pair_converts_to_core_ai_and_runs_right(model_type, task, tiny_model, tmp_path):
    folder = _source(tiny_model, model_type, task, tmp_path)
    result = convert(str(folder), task, tmp_path / "out", _options())
    report = result.report_json
    assert all(path.suffix == ".aimodel" and (path / "main.mlirb").is_file() for path in result.packages)
    assert [p["format"] for p in report["packages"]] == ["coreai"] * len(report["packages"])
    _passed(report)
    rows = report["validation"]["checks"]
    # Every package was run in the Core AI runtime, and only there (no Core ML emulation rows).
    assert {r["mode"] for r in rows} == {MODE}
    assert {r["package"] for r in rows} == {p["part"] for p in report["packages"]}
    for path, package in zip(result.packages, report["packages"]):
        info = described(path)
        assert [i["name"] for i in info["inputs"]] == [i["name"] for i in package["inputs"]]
        assert all(i["dtype"] in ("int32", "float16") for i in info["inputs"])  # int32 ids; pixels a float16 tensor
        metadata = info["metadata"]
        assert metadata[PREFIX + "name"] == folder.name
        assert metadata[PREFIX + "task"] == task
        assert metadata[PREFIX + "precision"] == "float16"
        assert metadata["coreai_torch_version"] == "0.4.3" and metadata["coreai_core_version"] == "1.0.0b3"
        assert info["minimum_os"] == "27.0"
        if task == "text-generation":  # Apple's LLM bundle, driven as CoreAILanguageModel drives it (test_coreai/bundle.py)
            assert bundle.problems(path.parent) == [] and [i["name"] for i in info["inputs"]] == ["input_ids", "position_ids"]
            assert report["validation"]["continuation"]["runs"][0]["driven_as"].startswith("CoreAILanguageModel")


@pytest.mark.parametrize("model_type,task", REFUSED, ids=[f"{m}-{t}" for m, t in REFUSED])
def test_the_pairs_core_ai_cannot_take_are_refused_with_their_reason(model_type, task, tiny_model, tmp_path):
    with pytest.raises(UserInputError, match=f"Core AI output is not available for {model_type} {task}: .*Choose the Core ML format"):
        convert(str(tiny_model(model_type)), task, tmp_path, _options())
    assert not any(tmp_path.iterdir()), "a refused request must leave nothing behind"
    # ... and the reason holds: torch.export cannot capture it (Core ML converts it by tracing).
    result = convert(str(tiny_model(model_type)), task, tmp_path / "coreml", ConversionOptions.from_strings(sequence_length=SEQ), validate=False)
    assert result.report_json["packages"][0]["exporter"] == "torch.jit.trace"
