"""Core AI output (.aimodel, converters/backends/coreai/backend.py), validated by *running* the saved
model in coreai-core's own runtime (real execution on this CPU): float32, image inputs, the
LLM bundle's context (the bundle itself: tests/test_coreai/bundle.py), weight compression through
coreai-opt, `--format both`, metadata, the refusals, Try it, and real pretrained weights.
The whole registry is in tests/test_coreai_registry.py."""

from __future__ import annotations

import json

import pytest
from converters.backends.coreai import CoreAIBackend
from converters.errors import UserInputError
from converters.export import convert
from converters.metadata import PREFIX
from converters.options import ConversionOptions
from converters.backends.coreai.runtime import MODE, described
from tests.models import build_model

pytestmark = pytest.mark.slow

SEQ = 16


def _options(**given) -> ConversionOptions:
    return ConversionOptions.from_strings(**{"format": "coreai", "sequence_length": SEQ, **given})


def _passed(report: dict) -> None:
    validation = report["validation"]
    failed = [f"{r['mode']} {r['output']} ({r['inputs']}): {r['metric']} {r['value']} vs {r['threshold']}"
              for r in validation["checks"] if not r["passed"]]
    assert validation["passed"] is True, validation["message"] + "\n" + "\n".join(failed)


def test_an_image_model_takes_a_pixel_tensor_scaled_in_the_program(tiny_model, tmp_path):
    result = convert(str(tiny_model("vit")), "image-classification", tmp_path, _options())
    _passed(result.report_json)
    image = result.report_json["packages"][0]["inputs"][0]
    assert (image["name"], image["type"], image["shape"]) == ("image", "tensor", [1, 3, 32, 32])


@pytest.mark.parametrize("model_type,task", [("llama", "text-generation"), ("bert", "fill-mask"), ("t5", "text2text-generation")])
def test_float32_core_ai_packages_run_to_float32_tolerances(model_type, task, tiny_model, tmp_path):
    result = convert(str(tiny_model(model_type)), task, tmp_path, _options(precision="float32"))
    _passed(result.report_json)
    if task == "text-generation":  # Apple's LLM bundle: float32 compute and caches, float16 logits (what its engine reads)
        info = described(result.packages[0])
        assert info["outputs"][0]["dtype"] == "float16" and {s["dtype"] for s in info["states"]} == {"float32"}
        return
    assert all(described(p)["outputs"][0]["dtype"] == "float32" for p in result.packages)
    assert all(r["value"] <= 1e-3 for r in result.report_json["validation"]["checks"] if r["metric"] == "max_abs_diff")


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_a_stateful_kv_cache_sets_the_llm_bundles_context(precision, tiny_model, tmp_path):
    """Text generation in Core AI is always Apple's stateful LLM bundle (bundle.py); the
    stateful option's sequence length is its context (max_context_length, the cache's bound)."""
    import numpy as np

    options = _options(kv_cache="stateful", precision=precision)  # no iOS18 target needed: Core AI is 27+
    result = convert(str(tiny_model("llama")), "text-generation", tmp_path, options)
    _passed(result.report_json)
    package = result.report_json["packages"][0]
    assert [s["name"] for s in package["states"]] == ["keyCache", "valueCache"]
    assert [s["dtype"] for s in package["states"]] == [precision] * 2
    assert [i["name"] for i in package["inputs"]] == ["input_ids", "position_ids"]
    assert package["outputs"][0]["dtype"] == "float16"  # whatever the precision: Apple's engine reads float16 logits
    assert json.loads((result.packages[0].parent / "metadata.json").read_text())["language"]["max_context_length"] == SEQ
    runs = [run for run in result.report_json["validation"]["continuation"]["runs"] if run["mode"] == MODE]
    assert runs and all(run["passed"] for run in runs)
    # Prefill then one-token calls on one state give the logits of one whole call.
    runner = CoreAIBackend().runner(result.packages[0])
    try:
        ids = [5, 9, 11, 3]
        whole = runner.process(ids, runner.make_state())
        state = runner.make_state()
        runner.prefill(ids[:3], state)
        step = runner.process(ids[3:], state)
        assert np.abs(step[0, -1] - whole[0, -1]).max() < (5e-2 if precision == "float16" else 1e-2)
        with pytest.raises(ValueError, match="exceeds maximum 16"):  # the app's own limit (StateHandler+NDArray.swift:101-104)
            runner.prefill(list(range(3, 3 + SEQ + 1)), runner.make_state())
    finally:
        runner.close()


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory):
    """A llama wide enough that its layers pass the 2048-element floor below which weights stay
    float, and its plain float16 conversion: built once for the schemes below."""
    root = tmp_path_factory.mktemp("wide-llama")
    folder = build_model("llama", root / "llama", hidden_size=128, head_dim=32, intermediate_size=256)
    return folder, convert(str(folder), "text-generation", root / "float", _options(), validate=False)


@pytest.mark.parametrize("scheme", ["int8", "int4", "lut4", "mixed"])
def test_core_ai_weight_compression_through_coreai_opt(scheme, wide_llama, tmp_path):
    folder, plain = wide_llama
    result = convert(str(folder), "text-generation", tmp_path / scheme, _options(quantize=scheme))
    _passed(result.report_json)
    entry = result.report_json["packages"][0]["compression"]
    assert entry["scheme"] == scheme and "coreai-opt" in entry["method"]
    assert entry["size_after_bytes"] == result.report_json["packages"][0]["size_bytes"]
    # "Before" is the same program saved with float weights: the plain conversion's size (less its metadata).
    assert entry["size_before_bytes"] == pytest.approx(plain.report_json["packages"][0]["size_bytes"], rel=0.02)
    assert entry["size_ratio"] < {"int8": 0.75, "int4": 0.6, "lut4": 0.6, "mixed": 0.6}[scheme]
    if scheme in ("int4", "lut4", "mixed"):  # an LLM's embeddings and head as the Core ML schemes take them
        assert "embeddings and output head" in entry["granularity"]
    assert entry["bits_per_weight"] < 16


def test_format_both_makes_and_validates_a_package_of_each(tiny_model, tmp_path):
    options = ConversionOptions.from_strings(format="both", sequence_length=SEQ)
    result = convert(str(tiny_model("qwen3")), "text-generation", tmp_path, options)
    _passed(result.report_json)
    assert [p.suffix for p in result.packages] == [".mlpackage", ".aimodel"]
    assert [p["format"] for p in result.report_json["packages"]] == ["coreml", "coreai"]
    # <name>.mlpackage (swift-transformers' contract) beside the LLM bundle <name>/<name>.aimodel (Apple's)
    assert result.packages[0].stem == result.packages[1].stem == result.packages[1].parent.name
    assert [i["name"] for i in result.report_json["packages"][0]["inputs"]] == ["inputIds", "attentionMask"]
    assert [i["name"] for i in result.report_json["packages"][1]["inputs"]] == ["input_ids", "position_ids"]
    validation = result.report_json["validation"]
    assert set(validation["modes"]) == {"fp32", "fp16", MODE}
    assert {r["mode"] for r in validation["checks"]} == {"fp32", "fp16", MODE}
    assert "Core AI runtime" in validation["kind"] and "reference executor" in validation["kind"]
    assert {run["mode"] for run in validation["continuation"]["runs"]} == {"fp32", "fp16", MODE}


def test_exporters_naming_puts_the_aimodel_under_coreai(tiny_model, tmp_path):
    result = convert(str(tiny_model("bert")), "fill-mask", tmp_path, _options(naming="exporters"), validate=False)
    assert result.packages[0].relative_to(tmp_path).as_posix() == "coreai/fill-mask/float16_model.aimodel"


@pytest.mark.parametrize("given,reason", [
    (dict(sequence_length="16,32"), "Core AI output takes one sequence length or a range"),
])
def test_what_core_ai_cannot_take_is_refused_before_any_work(given, reason, tiny_model, tmp_path):
    with pytest.raises(UserInputError, match=reason):
        convert(str(tiny_model("llama")), "text-generation", tmp_path, _options(**given))
    assert not any(tmp_path.iterdir())


def test_a_model_converted_in_chunks_is_refused_for_core_ai(tiny_model, tmp_path):
    with pytest.raises(UserInputError, match="only Core ML output is made that way"):
        convert(str(tiny_model("llama")), "text-generation", tmp_path, _options(), layers_per_chunk=1)


def test_a_range_of_lengths_runs_at_both_ends(tiny_model, tmp_path):
    result = convert(str(tiny_model("bert")), "fill-mask", tmp_path, _options(sequence_length="4-32"))
    _passed(result.report_json)
    ids = result.report_json["packages"][0]["inputs"][0]
    assert ids["flexibility"] == "range" and ids["ranges"][-1] == [4, 32]
    assert {r["inputs"] for r in result.report_json["validation"]["checks"]} >= {"text, 4 tokens", "text, 32 tokens"}


def test_the_metadata_keys_match_the_core_ml_package(tiny_model, tmp_path):
    options = ConversionOptions.from_strings(format="both", sequence_length=SEQ)
    result = convert(str(tiny_model("bert")), "text-classification", tmp_path, options, validate=False)
    from converters.package_info import describe_package

    coreml, coreai = describe_package(result.packages[0])["metadata"], described(result.packages[1])["metadata"]
    ours = ("transformers_version", "coreml_converter_version", "torch_version", "coreml_converter_options")
    shared = {key for key in coreml if key.startswith(PREFIX) or key in ours}
    assert len(shared) == 9
    assert {key: coreai[key] for key in shared} == {key: coreml[key] for key in shared}
    assert json.loads(coreai["coreml_converter_class_labels"]) == ["negative", "neutral", "positive"]


def test_the_core_ai_backend_names_its_package_beside_core_mls():
    class Plan:
        class source:
            name = "tiny"

        class cfg:
            task, modality, supports_kv_cache = "fill-mask", "text", False
        task, parts = "fill-mask", ["model"]
        options = ConversionOptions.from_strings(format="coreai")

    assert CoreAIBackend().package_path(Plan, "model") == "tiny.aimodel"
    # Text generation: Apple's LLM bundle, the folder around its .aimodel (export/pipeline.py:316-319).
    Plan.task = Plan.cfg.task = "text-generation"
    Plan.cfg.supports_kv_cache = True
    assert CoreAIBackend().package_path(Plan, "model") == "tiny/tiny.aimodel"


# Real pretrained weights (tests/real_models.py). The real LLM is converted once, as the float16 LLM
# bundle an app loads, in tests/test_coreai/bundle.py (its continuation equals PyTorch's); the real
# encoder here is float32: coreai-core's Linux runtime computes float16 in software.


def test_real_encoder_converts_to_core_ai_and_embeds_like_pytorch(real_encoder, tmp_path):
    result = convert(str(real_encoder), "feature-extraction", tmp_path, _options(precision="float32", sequence_length=128))
    _passed(result.report_json)
    cosines = [row["value"] for row in result.report_json["validation"]["checks"] if row["metric"] == "cosine_similarity"]
    assert cosines and min(cosines) > 0.9999
    assert result.report_json["packages"][0]["outputs"][0]["name"] == "sentence_embedding"


@pytest.mark.slow
def test_real_smollm2_int8_bundle_is_a_quarter_of_float32_and_near_lossless(real_llm, tmp_path):
    """Core AI int8 (coreai-opt, per channel) on real SmolLM2 as the LLM bundle an app loads, float32
    compute (the Linux runtime's float16 is software), judged on the passage prefilled as the app
    prefills a prompt. Measured 6 December 2026: 0.253x the float32 program, perplexity 0.996x,
    KL 0.0045, top-1 96.7 %."""
    from converters.package_info import directory_size

    result = convert(str(real_llm), "text-generation", tmp_path, _options(quantize="int8", precision="float32",
                                                                           sequence_length=128))
    _passed(result.report_json)
    (entry,) = result.report_json["packages"]
    compression = entry["compression"]
    assert compression["scheme"] == "int8" and compression["granularity"] == "per channel"
    # the float32 program holds 4 bytes a parameter (134,515,008 of them); the int8 one about 1
    assert compression["size_before_bytes"] == pytest.approx(4 * 134_515_008, rel=0.01)
    assert entry["size_bytes"] == pytest.approx(directory_size(result.packages[0]), rel=0.01)
    assert 0.24 <= entry["size_bytes"] / compression["size_before_bytes"] <= 0.27
    rows = {row["metric"]: row for row in result.report_json["validation"]["checks"] if row["inputs"].startswith("passage")}
    assert len(rows) == 3 and all(row["passed"] for row in rows.values()), rows
    figures = {metric: rows[metric]["value"] for metric in ("perplexity_ratio", "mean_kl_divergence", "top1_agreement")}
    assert figures["perplexity_ratio"] <= 1.02 and figures["mean_kl_divergence"] <= 0.01, figures
    assert figures["top1_agreement"] >= 0.93, figures


def test_try_it_runs_an_aimodel_in_core_ai_s_runtime(tiny_model, tmp_path):
    from converters import try_it

    folder = tiny_model("llama")
    package = convert(str(folder), "text-generation", tmp_path / "llm", _options(), validate=False).packages[0]
    result = try_it.run("generate", package, folder, {"text": "the quick brown fox", "new_tokens": 4}, "fp16")
    assert result["mode"] == MODE and result["package"]["tokens"] == 4
    assert result["matching_tokens"] == 4  # greedy, as PyTorch

    # A classifier with its head saved (the tiny checkpoints are masked-LM ones, whose head would be
    # random again at each load) and scaled x100 so its label is decided: the try equals PyTorch's.
    from tests.test_compressed_validation import _tiny_classifier

    classifier = _tiny_classifier(tmp_path / "classifier")
    package = convert(str(classifier), "text-classification", tmp_path / "cls", _options(), validate=False).packages[0]
    result = try_it.run("classify", package, classifier, {"text": "the quick brown fox"}, "fp16")
    ours, theirs = dict(result["package"]["scores"]), dict(result["pytorch"]["scores"])
    assert set(ours) == set(theirs) == {"negative", "neutral", "positive"}
    assert result["package"]["label"] == result["pytorch"]["label"] and max(theirs.values()) > 0.6
    assert all(abs(ours[label] - theirs[label]) < 0.01 for label in ours), (ours, theirs)
    assert sum(ours.values()) == pytest.approx(1.0, abs=0.01)  # probabilities, not re-softmaxed


def test_a_slow_float16_validation_is_announced_with_the_float32_alternative(real_llm, real_encoder):
    from converters.backends.coreai.backend import check_validation_time as _check_core_ai_validation_time
    from converters.plan import make_plan
    from converters.source import open_source
    from converters.backends.coreai.runtime import validation_seconds

    def plan(folder, task, **given):
        return make_plan(open_source(str(folder)), task, _options(**given))

    # An LLM bundle is driven once (a short prompt, then one token per call): fast enough in float16.
    parameters = 134_515_008  # SmolLM2-135M
    llm = plan(real_llm, "text-generation", sequence_length=128)
    assert validation_seconds(llm.cfg, parameters, bundle=True) < 2 * 60
    _check_core_ai_validation_time(llm, parameters, 3600)
    assert not any("takes about" in warning for warning in llm.warnings)
    # A big float16 encoder runs its input sets whole: 1 B parameters x 128 tokens at the measured speed
    # (one 8-token SmolLM2 float16 call 42 s; one 128-token float32 call 7.2 s).
    parameters = 1_000_000_000
    slow, fast = plan(real_encoder, "feature-extraction", sequence_length=128), plan(real_encoder, "feature-extraction", sequence_length=128, precision="float32")
    assert 75 * 60 < validation_seconds(slow.cfg, parameters) < 90 * 60
    assert validation_seconds(fast.cfg, parameters) < 60
    _check_core_ai_validation_time(slow, parameters, None)  # the command line: no limit, a warning
    assert slow.warnings[-1] == ("Validating the float16 .aimodel takes about 83 minutes here: Apple's Linux runtime "
                                 "computes float16 in software. A float32 .aimodel validates in about 1 minute(s).")
    _check_core_ai_validation_time(fast, parameters, 3600)
    assert not any("takes about" in warning for warning in fast.warnings)
    # A job (one hour): refused before any work, saying what would fit.
    with pytest.raises(UserInputError, match="beyond this worker's 60-minute job limit. Choose float32 "):
        _check_core_ai_validation_time(plan(real_encoder, "feature-extraction", sequence_length=128), parameters, 3600)


def test_the_validation_command_checks_a_saved_aimodel(tiny_model, tmp_path):
    from converters.validate_package import validate_package

    folder = tiny_model("bert")
    package = convert(str(folder), "fill-mask", tmp_path, _options(), validate=False).packages[0]
    result = validate_package(package, str(folder), "fill-mask")
    assert result["validation"]["passed"] is True and result["validation"]["modes"] == [MODE]
    with pytest.raises(UserInputError, match="not a Core AI model"):
        validate_package(tmp_path / "missing.aimodel", str(folder), "fill-mask")
