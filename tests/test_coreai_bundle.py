"""The Core AI LLM bundle (converters/backends/coreai/bundle.py): text generation with the Core AI
format becomes the folder Apple's `CoreAILanguageModel(resourcesAt:)` loads, and validation drives
its program as that class drives it (validation/runtime.CoreAILanguageModelEngine), in
coreai-core's own runtime. Apple's sources: apple/coreai-models at 86b363d (the lines are quoted
in backends/coreai/bundle.py and runtime.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.backends.coreai import bundle as bundle
from converters.export import convert
from converters.validate_package import validate_package
from converters.options import ConversionOptions
from converters.backends.coreai.runtime import MODE, CoreAILanguageModelEngine, apple_stop_ids, described
from tests.models import build_model

pytestmark = pytest.mark.slow


def _options(**given) -> ConversionOptions:
    return ConversionOptions.from_strings(**{"format": "coreai", "sequence_length": 16, **given})


@pytest.fixture(scope="module")
def tiny_bundle(tiny_model, tmp_path_factory):
    """A tiny Llama converted to a float16 LLM bundle, validated (once for this file)."""
    out = tmp_path_factory.mktemp("bundle")
    return convert(str(tiny_model("llama")), "text-generation", out, _options())


def test_the_bundle_is_apples_folder_with_every_field_its_exporter_writes(tiny_bundle):
    aimodel = tiny_bundle.packages[0]
    folder = aimodel.parent
    assert aimodel.name == "llama.aimodel" and folder.name == "llama"  # <name>/<name>.aimodel: export/pipeline.py:316-319
    assert (aimodel / "main.mlirb").is_file()
    assert {p.name for p in (folder / "tokenizer").iterdir()} >= {"tokenizer.json", "tokenizer_config.json"}
    meta = json.loads((folder / "metadata.json").read_text())
    # Apple's exporter, field by field (export/bundle.py:49-70).
    assert meta["metadata_version"] == "0.2"  # ModelBundle.swift:178-181: anything else throws
    assert meta["kind"] == "llm" and meta["name"] == "llama"  # LanguageBundle.swift:36; ModelBundle.swift:209-219
    assert meta["assets"] == {"main": "llama.aimodel"}  # LanguageBundle.swift:41-43
    language = meta["language"]  # LanguageConfig.swift:60-69: the first three are required
    assert language["tokenizer"] == "llama"  # the Hub repo the app would download it from, without tokenizer/
    assert language["vocab_size"] == 128  # = the logits' width: the engine reads batch × vocab_size values
    assert language["max_context_length"] == 512  # the model's max_position_embeddings (bundle.py:57)
    assert language["embedded_tokenizer"] is True and language["function_map"] == {"main": ["main"]}
    assert meta["source"] == {"model_definition": "torch", "hf_model_id": "llama"}
    assert meta["compression"] is None  # "none" is written as null (bundle.py:65)
    assert meta["compilation"]["targets"] == [] and meta["compilation"]["date"][:2] == "20"
    assert set(meta) == {"metadata_version", "kind", "name", "assets", "language", "source", "compression", "compilation"}
    assert bundle.problems(folder) == []


def test_the_loader_rules_catch_what_apples_loader_throws_on(tiny_bundle, tmp_path):
    folder = shutil.copytree(tiny_bundle.packages[0].parent, tmp_path / "llama")

    def broken(change) -> list[str]:
        meta = json.loads((folder / "metadata.json").read_text())
        change(meta)
        copy = shutil.copytree(folder, tmp_path / f"copy{len(list(tmp_path.iterdir()))}" / "llama")
        (copy / "metadata.json").write_text(json.dumps(meta))
        return bundle.problems(copy)

    assert "unsupportedVersion" in broken(lambda m: m.pop("metadata_version"))[0]  # missing = 0.1
    assert "kindMismatch" in broken(lambda m: m.update(kind="diffusion"))[0]
    assert "missingField" in broken(lambda m: m["assets"].pop("main"))[0]
    assert "missingAsset" in broken(lambda m: m["assets"].update(main="other.aimodel"))[0]
    assert "language.max_context_length" in broken(lambda m: m["language"].pop("max_context_length"))[0]
    assert "pointedAtModelAsset" in bundle.problems(folder / "llama.aimodel")[0]  # ModelBundle.swift:148-151
    assert bundle.cautions(folder) == []
    (folder / "tokenizer" / "tokenizer.json").unlink()  # loads, but the app would fetch the tokenizer from the Hub
    assert bundle.problems(folder) == [] and "coreai-models#233" in bundle.cautions(folder)[0]


def test_the_program_has_the_engines_interface(tiny_bundle):
    info = described(tiny_bundle.packages[0])
    assert [(i["name"], i["dtype"]) for i in info["inputs"]] == [("input_ids", "int32"), ("position_ids", "int32")]
    assert [(o["name"], o["dtype"]) for o in info["outputs"]] == [("logits", "float16")]
    # [layers, 1, kv_heads, S, head_dim], S a `?` axis up to the context (the app grows it from 256).
    assert [(s["name"], s["ranges"][3]) for s in info["states"]] == [("keyCache", [1, 512]), ("valueCache", [1, 512])]
    engine = CoreAILanguageModelEngine(tiny_bundle.packages[0], 512)
    try:
        assert engine.contract_problems() == []
        assert [engine.ids_name, engine.positions_name, engine.logits_name] == ["input_ids", "position_ids", "logits"]
    finally:
        engine.close()


def test_validation_drives_the_bundle_as_core_ai_language_model_does(tiny_bundle):
    validation = tiny_bundle.report_json["validation"]
    assert validation["passed"] is True, validation["message"]
    assert "driven as CoreAILanguageModel drives it" in validation["kind"]
    assert {row["mode"] for row in validation["checks"]} == {MODE}
    metrics = {row["metric"] for row in validation["checks"]}
    assert {"bundle_loads", "max_abs_diff", "top1_agreement", "continuation_match"} <= metrics
    run = validation["continuation"]["runs"][0]
    assert run["driven_as"].startswith("CoreAILanguageModel") and run["passed"] and run["matching_tokens"] == 8
    assert run["token_ids"] == validation["continuation"]["pytorch"]["token_ids"]


def test_the_validation_command_drives_a_saved_bundle_as_the_conversion_did(tiny_bundle, tiny_model):
    """`python -m converters.validate_package` on a bundle's .aimodel: the bundle's own checks
    (Apple's engine), not the Core ML input sets, which its program's interface would refuse."""
    checked = validate_package(tiny_bundle.packages[0], str(tiny_model("llama")), "text-generation")["validation"]
    assert checked["passed"] is True, checked["message"]
    assert "driven as CoreAILanguageModel drives it" in checked["kind"]
    assert {row["metric"] for row in checked["checks"]} == {row["metric"] for row in tiny_bundle.report_json["validation"]["checks"]}


def test_a_context_shorter_than_prompt_and_text_stops_where_the_app_would(tiny_model, tmp_path):
    result = convert(str(tiny_model("llama")), "text-generation", tmp_path, _options(kv_cache="stateful", sequence_length=8,
                                                                                     precision="float32"))
    validation = result.report_json["validation"]
    assert validation["passed"] is True, validation["message"]
    run = validation["continuation"]["runs"][0]
    prompt = len(validation["continuation"]["prompt_ids"])
    assert run["stopped"] == "length" and len(run["token_ids"]) == 8 - prompt + 1 and run["passed"]
    assert "context allowed only" in run["note"]


def test_a_long_prompt_is_prefilled_in_chunks_and_the_cache_grows(tmp_path):
    """Past 1024 tokens the engine sends 512-token chunks (ModelConfig.swift:129-143) and doubles the
    cache from 256 (StateHandler+NDArray.swift:99-123): the logits equal PyTorch's on the whole text."""
    import torch
    import transformers

    folder = build_model("llama", tmp_path / "long", max_position_embeddings=2048)
    result = convert(str(folder), "text-generation", tmp_path / "out", _options(precision="float32"), validate=False)
    assert json.loads((result.packages[0].parent / "metadata.json").read_text())["language"]["max_context_length"] == 2048
    engine = CoreAILanguageModelEngine(result.packages[0], 2048)
    calls = []
    process = engine.process
    engine.process = lambda tokens, state: calls.append((len(tokens), state.processed)) or process(tokens, state)
    ids = [int(i) for i in np.random.default_rng(0).integers(3, 128, 1100)]
    try:
        state = engine.make_state()
        assert state.capacity == 256
        got = engine.prefill(ids, state)[0]
        step = engine.process([7], state)[0, -1]
    finally:
        engine.close()
    assert calls == [(512, 0), (512, 512), (76, 1024), (1, 1100)]
    assert state.capacity == 2048 and state.processed == 1101
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        want = model(input_ids=torch.tensor([ids + [7]])).logits[0].numpy()
    assert np.abs(got - want[:-1]).max() < 0.02 and np.abs(step - want[-1]).max() < 0.02  # float16 logits
    assert (got.argmax(-1) == want[:-1].argmax(-1)).mean() > 0.99


def test_apples_stop_tokens_come_from_the_bundles_tokenizer_config(real_llm, tmp_path):
    """LanguageConfig.additionalStopTokenIds (LanguageConfig.swift:83-165) with SmolLM2's tokenizer:
    its own tokenizer_config.json names one EOS (<|im_end|>); each of Apple's four rules adds ids."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_llm)
    assert apple_stop_ids(tokenizer, Path(real_llm)) == {tokenizer.convert_tokens_to_ids("<|im_end|>")}
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<|im_start|>", "<|endoftext|>", "<repo_name>", "<filename>")}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "additional_special_tokens": [{"content": "<repo_name>"}, "not-a-token"],  # :97-120 (unknown: skipped)
        "eos_token": ["<|im_end|>", "<filename>"],  # :122-132
        "added_tokens_decoder": {str(ids["<|endoftext|>"]): {"content": "<|endoftext|>", "special": True},  # :134-150
                                 str(ids["<|im_start|>"]): {"content": "<|im_start|>", "special": True}},  # not a turn's end
        "eot_token": "<|im_start|>",  # :152-162
    }))
    got = {tokenizer.convert_ids_to_tokens(i) for i in apple_stop_ids(tokenizer, tmp_path)}
    assert got == {"<|im_end|>", "<repo_name>", "<filename>", "<|endoftext|>", "<|im_start|>"}
    assert apple_stop_ids(tokenizer, tmp_path / "none") == {tokenizer.eos_token_id}


def test_the_hub_push_takes_the_whole_bundle_folder(tmp_path):
    from worker import hub

    folder = tmp_path / "out" / "m"
    (folder / "m.aimodel").mkdir(parents=True)
    (folder / "m.aimodel" / "main.mlirb").write_bytes(b"x")
    (folder / "metadata.json").write_text("{}")
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "tokenizer.json").write_text("{}")
    plan = hub.upload_plan(tmp_path / "out", [folder / "m.aimodel"], None)
    assert sorted(plan) == ["m/m.aimodel/main.mlirb", "m/metadata.json", "m/tokenizer/tokenizer.json"]
    assert hub.package_roots(tmp_path / "out", [folder / "m.aimodel"]) == ["m/m.aimodel"]
    assert hub._bundle_parts("m/m.aimodel") == ["m/metadata.json", "m/tokenizer"]
    assert hub._bundle_parts("m.aimodel") == [] and hub._bundle_parts("coreai/x/y.aimodel") == []


def test_the_card_shows_core_ai_language_model_for_a_bundle_and_the_raw_api_otherwise():
    from worker import card

    report = {"task": "text-generation", "packages": [{"path": "out/m/m.aimodel", "format": "coreai", "inputs": [], "states": []}]}
    lines = "\n".join(card.core_ai_snippet(report, ["m/m.aimodel"], ["m/m.aimodel"]))
    assert "CoreAILanguageModel(resourcesAt: modelURL)" in lines and "import CoreAILanguageModels" in lines
    assert "session.respond(to:" in lines and "session.streamResponse(to:" in lines  # generate and stream
    assert '"m", withExtension: nil' in lines and "AIModel(contentsOf:" not in lines
    assert "macOS kind" in lines and "StaticShapeEngine" not in lines
    ios = "\n".join(card.core_ai_snippet({**report, "options": {"llm_bundle": "ios"}}, ["m/m.aimodel"], ["m/m.aimodel"]))
    assert "**iOS** kind" in ios and "driven as StaticShapeEngine drives it" in ios and "CoreAILanguageModel(resourcesAt:" in ios
    encoder = {"task": "feature-extraction", "packages": [{"path": "e.aimodel", "inputs": [], "states": []}]}
    lines = "\n".join(card.core_ai_snippet(encoder, ["e.aimodel"], ["e.aimodel"]))
    assert "AIModel(contentsOf: url)" in lines and "no embedder or encoder API" in lines


# Real pretrained weights (tests/real_models.py), float16: the package's precision, computed in software
# by coreai-core's Linux runtime (a few seconds a token for SmolLM2-135M), so one conversion, driven once.


def test_real_smollm2_float16_bundle_continues_like_pytorch_driven_as_apple_drives_it(real_llm, tmp_path):
    result = convert(str(real_llm), "text-generation", tmp_path, _options(sequence_length=128))
    validation = result.report_json["validation"]
    assert validation["passed"] is True, validation["message"]
    folder = result.packages[0].parent
    assert bundle.problems(folder) == []
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["language"]["vocab_size"] == 49152 and meta["language"]["max_context_length"] == 8192
    continuation = validation["continuation"]
    run = continuation["runs"][0]
    assert run["driven_as"].startswith("CoreAILanguageModel") and run["mode"] == MODE
    assert run["token_ids"] == continuation["pytorch"]["token_ids"] and len(run["token_ids"]) >= 8
    assert "Paris" in run["text"]
    rows = {(row["inputs"].split(",")[0], row["metric"]): row for row in validation["checks"]}
    assert rows[("prompt", "top1_agreement")]["value"] == 1.0


def test_real_smollm2_int4_bundle_passes_its_quality_bar_driven_as_apple_drives_it(real_llm, tmp_path):
    """Core AI int4 on real SmolLM2 (float32 compute: the Linux runtime's float16 is software): GPTQ
    onto coreai-opt's own grid, so coreai-opt's pass writes GPTQ's levels (test_lut_gptq.py), judged
    on the passage prefilled as the app prefills a prompt, by the int4 bar (perplexity 1.40x, KL
    ln 1.4, top-1 0.70). Before (GPTQ onto coremltools' grid, rounded again) it missed the KL bar."""
    result = convert(str(real_llm), "text-generation", tmp_path, _options(quantize="int4", precision="float32",
                                                                           sequence_length=128))
    validation = result.report_json["validation"]
    assert validation["passed"] is True, validation["message"]
    (entry,) = result.report_json["packages"]
    assert entry["compression"]["scheme"] == "int4" and "per block (32)" in entry["compression"]["granularity"]
    rows = {row["metric"]: row for row in validation["checks"] if row["inputs"].startswith("passage")}
    figures = {metric: rows[metric]["value"] for metric in ("perplexity_ratio", "mean_kl_divergence", "top1_agreement")}
    print("Core AI int4, real SmolLM2, the passage:", figures)
    assert all(row["passed"] for row in rows.values()) and len(rows) == 3, rows
    assert rows["mean_kl_divergence"]["threshold"] == pytest.approx(0.3365, abs=1e-4)
    # Measured 2026-12-05: perplexity 1.179x, KL 0.276, top-1 0.719 (the same as bench/coreai_int4.py's
    # torch-level figures); GPTQ onto coremltools' grid, rounded again by coreai-opt: 1.186x, KL 0.326
    assert figures["perplexity_ratio"] <= 1.22 and figures["mean_kl_divergence"] <= 0.30, figures


def test_a_mixture_of_experts_decoder_becomes_a_bundle_that_continues_like_pytorch(tmp_path):
    """A Qwen3-MoE decoder's routing (histc, sort) is evaluated densely while captured, as for the
    Core ML package (configs/moe.py): coreai-torch has neither op. The bundle loads by Apple's
    rules and continues as PyTorch does, driven as CoreAILanguageModel drives it."""
    import transformers as tf

    from tests.models import _like_trained_routers
    from tests.test_generic_architectures import UNLISTED

    model = tf.Qwen3MoeForCausalLM(UNLISTED["qwen3_moe"][0]()).eval()
    _like_trained_routers(model)
    model.save_pretrained(tmp_path / "source")
    result = convert(str(tmp_path / "source"), "text-generation", tmp_path / "out", _options())
    validation = result.report_json["validation"]
    assert validation["passed"] is True, validation["message"]
    assert validation["continuation"]["runs"] and all(run["passed"] for run in validation["continuation"]["runs"])
    assert bundle.problems(result.packages[0].parent) == []
