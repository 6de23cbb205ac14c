"""Every (model type, task) pair in the registry converts, and the saved package has the
inputs, outputs and metadata the contracts promise (shared/DESIGN.md, exporters' names)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from converters.configs import ARCHITECTURES, config_class_for
from converters.export import convert
from converters.metadata import PREFIX
from converters.options import ConversionOptions
from converters.package_info import describe_package
from converters.tasks import TASKS
from converters.source_tokenizer import ENCODES_NOTHING, NO_FILES, UNREADABLE
from tests.kind_models import KINDS  # image-text and depth: tests/test_vision_kinds.py
from tests.models import MODELS, VOCAB_SIZE, build_model, empty_tokenizer_first, without_tokenizer

SEQ = 16
OPTIONS = ConversionOptions.from_strings(sequence_length=SEQ)
SPEECH = {"whisper": "automatic-speech-recognition"}  # WhisperKit's three packages: tests/test_whisper.py


def _pairs():
    pairs = []
    for model_type in MODELS:
        factory = MODELS[model_type][0]
        for task in config_class_for(model_type).available_tasks(factory()):
            pairs.append((model_type, task))
    return pairs


PAIRS = _pairs()
# Their question-answering class keeps the decoder under another name (`transformer`, not the
# causal LM's `model`): a causal-LM checkpoint has none of its weights (and is refused: see
# tests/test_damaged_input.py), so these convert a checkpoint saved from that class.
OWN_CHECKPOINT = {("llama", "question-answering"), ("qwen2", "question-answering"), ("qwen3", "question-answering")}


def test_every_architecture_has_a_test_model():
    assert set(MODELS) | set(KINDS) | set(SPEECH) == set(ARCHITECTURES)


def test_every_task_is_served_by_some_architecture():
    assert {task for _, task in PAIRS} | {task for _, _, task in KINDS.values()} | set(SPEECH.values()) == set(TASKS)


def assert_validated_without_tokenizer(report: dict, model_type: str) -> None:
    """Said once, checked on synthetic ids, the continuation compared on ids and stopping only on an EOS inside the vocabulary."""
    # An empty tokenizer either loads and encodes to nothing or fails to load, by family.
    why = report["tokenizer_missing"]
    assert why in ((ENCODES_NOTHING, UNREADABLE) if empty_tokenizer_first(model_type) else (NO_FILES,))
    assert [w for w in report["warnings"] if "tokenizer" in w.lower()] == [
        f"No usable tokenizer in the repo ({why}): checks use synthetic token ids; the continuation is compared on ids."]
    continuation = report["validation"]["continuation"]
    assert continuation["prompt"] == "(no tokenizer: synthetic token ids)"
    assert len(continuation["prompt_ids"]) == 5 and all(3 <= i < VOCAB_SIZE for i in continuation["prompt_ids"])
    assert continuation["pytorch"]["token_ids"] and all(run["passed"] for run in continuation["runs"])


def _hidden(model_type):
    config = MODELS[model_type][0]()
    return getattr(config, "d_model", None) or getattr(config, "dim", None) or config.hidden_size


def _num_labels(model_type):
    return len(MODELS[model_type][0]().id2label)


def expected_packages(model_type: str, task: str) -> list[dict]:
    """{inputs: {name: (shape, dtype)}, outputs: {name: (shape, dtype)}} per package, from the contract."""
    text_in = {"input_ids": ([1, SEQ], "int32"), "attention_mask": ([1, SEQ], "int32")}
    image_in = {"image": ([1, 3, 32, 32], "image")}
    if task == "text-generation":
        return [{"inputs": {"inputIds": ([1, SEQ], "int32"), "attentionMask": ([1, SEQ], "int32")},
                 "outputs": {"logits": ([1, SEQ, VOCAB_SIZE], "float16")}}]
    if task == "text2text-generation":
        hidden = _hidden(model_type)
        return [
            {"inputs": text_in, "outputs": {"last_hidden_state": ([1, SEQ, hidden], "float16")}},
            {"inputs": {"decoder_input_ids": ([1, SEQ], "int32"), "decoder_attention_mask": ([1, SEQ], "int32"),
                        "encoder_last_hidden_state": ([1, SEQ, hidden], "float32"), "encoder_attention_mask": ([1, SEQ], "int32")},
             "outputs": {"logits": ([1, SEQ, VOCAB_SIZE], "float16")}},
        ]
    classifier = {"classLabel": ([], "string"), "probabilities": ([], "dictionary")}
    if task in ("text-classification", "image-classification"):
        return [{"inputs": image_in if task == "image-classification" else text_in, "outputs": classifier}]
    if task == "fill-mask":
        return [{"inputs": text_in, "outputs": {"token_scores": ([1, SEQ, VOCAB_SIZE], "float16")}}]
    if task == "token-classification":
        labels = _num_labels(model_type) if model_type not in ("gpt2", "gpt_neox", "gpt_bigcode", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "falcon") else 2
        return [{"inputs": text_in, "outputs": {"token_scores": ([1, SEQ, labels], "float16")}}]
    if task == "question-answering":
        return [{"inputs": text_in, "outputs": {"start_logits": ([1, SEQ], "float16"), "end_logits": ([1, SEQ], "float16")}}]
    if task == "multiple-choice":
        inputs = {"input_ids": ([1, 4, SEQ], "int32"), "attention_mask": ([1, 4, SEQ], "int32")}
        if (getattr(MODELS[model_type][0](), "type_vocab_size", 0) or 0) > 1:
            inputs["token_type_ids"] = ([1, 4, SEQ], "int32")
        return [{"inputs": inputs, "outputs": {"probabilities": ([1, 4], "float16")}}]
    if task == "semantic-segmentation":
        return [{"inputs": image_in, "outputs": {"classLabels": ([1, 32, 32], "int32")}}]
    if task == "object-detection":
        config = MODELS[model_type][0]()
        return [{"inputs": image_in, "outputs": {"logits": ([1, config.num_detection_tokens, _num_labels(model_type) + 1], "float16"),
                                                 "pred_boxes": ([1, config.num_detection_tokens, 4], "float16")}}]
    assert task == "feature-extraction"
    inputs = image_in if MODELS[model_type][2] == "vision" else text_in
    return [{"inputs": inputs, "outputs": None}]  # shapes differ per architecture; names checked below


@pytest.mark.slow
@pytest.mark.parametrize("model_type,task", PAIRS, ids=[f"{m}-{t}" for m, t in PAIRS])
def test_conversion_spec(model_type, task, tiny_model, tmp_path):
    folder = tiny_model(model_type)
    if task == "text-generation":
        # Weight-only repos (common on the Hub) are converted and validated on synthetic ids:
        # each decoder family without tokenizer files, or with one that encodes to nothing.
        folder = without_tokenizer(folder, tmp_path / "weights-only" / model_type, empty=empty_tokenizer_first(model_type))
    if (model_type, task) in OWN_CHECKPOINT:
        import transformers

        auto = getattr(transformers, TASKS[task].auto_class)
        model_class = auto._model_mapping[type(AutoConfig.from_pretrained(folder))]
        folder = build_model(model_type, tmp_path / "checkpoint", model_class=model_class)
    result = convert(str(folder), task, tmp_path, OPTIONS)
    report = result.report_json
    assert report["task"] == task
    expected = expected_packages(model_type, task)
    assert len(result.packages) == len(expected)

    for path, want in zip(result.packages, expected):
        assert path.exists() and path.suffix == ".mlpackage"
        info = describe_package(path)
        inputs = {i["name"]: (i["shape"], i["dtype"]) for i in info["inputs"]}
        assert inputs == want["inputs"]
        outputs = {o["name"]: (o["shape"], o["dtype"]) for o in info["outputs"]}
        if want["outputs"] is None:
            assert "last_hidden_state" in outputs
            assert set(outputs) <= {"last_hidden_state", "pooler_output"}
        else:
            assert outputs == want["outputs"]

        metadata = info["metadata"]
        architecture = AutoConfig.from_pretrained(folder).model_type
        assert architecture == model_type
        assert metadata[PREFIX + "name"] == folder.name
        assert metadata[PREFIX + "task"] == task
        assert metadata[PREFIX + "architecture"] == report["architecture"]["class"]
        assert metadata[PREFIX + "framework"] == "pytorch"
        assert metadata[PREFIX + "precision"] == "float16"
        assert metadata["transformers_version"] == report["versions"]["transformers"]
        assert metadata["coremltools_version"] == "9.0"
        assert json.loads(metadata["coreml_converter_options"])["sequence_length"] == str(SEQ)

    if task == "text-classification" or task == "image-classification":
        assert report["packages"][0]["outputs"][0]["name"] == "classLabel"

    validation = report["validation"]
    assert validation["passed"] is True, validation["message"]
    if task == "text-generation":
        assert_validated_without_tokenizer(report, model_type)
    rows = validation["checks"]
    parts = {p["part"] for p in report["packages"]}
    for mode in ("fp32", "fp16"):
        assert {r["package"] for r in rows if r["mode"] == mode} == parts, f"no {mode} checks for every package"
    assert all(r["passed"] for r in rows)
    # Numbers, or "inf" for a PSNR of identical outputs (e.g. argmax labels).
    assert all(isinstance(r["value"], float) or (r["value"] == "inf" and r["metric"] == "psnr_db") for r in rows)
    # A comparison with a constant reference proves nothing: the test models must be live.
    assert validation["notes"] == []
    if task in ("text-classification", "image-classification"):
        assert any(r["metric"] == "label_agreement" for r in rows)
    if task in ("text-generation", "fill-mask", "token-classification", "text2text-generation"):
        assert any(r["metric"] == "top1_agreement" for r in rows)
    if task == "feature-extraction":
        assert any(r["metric"] == "cosine_similarity" for r in rows)
