"""The model card's Swift snippet follows swift-transformers 1.3 as read in its source
(Package.swift product `Transformers`; modules Models/Generation/Tokenizers;
LanguageModel.loadCompiled(url:computeUnits:tokenizer:); generate(config:prompt:callback:)),
says what swift-transformers cannot run, and the card shows the continuation check."""

from __future__ import annotations

import re

import pytest

from converters import wording
from worker import card

OPTIONS = {"precision": "float16", "sequence_length": "128", "minimum_deployment_target": "iOS17",
           "naming": "swift-transformers", "kv_cache": "none", "tolerance": "default"}
CONTINUATION = {
    "prompt": "The capital of France is", "new_tokens": 8,
    "pytorch": {"text": " Paris. It is *the* <b>capital</b>", "token_ids": [1, 2]},
    "runs": [
        {"package": "model", "mode": "fp32", "driven_as": "swift-transformers, non-stateful",
         "text": " Paris. It is *the* <b>capital</b>", "token_ids": [1, 2], "matching_tokens": 8, "passed": True},
        {"package": "model", "mode": "fp16", "driven_as": "swift-transformers, non-stateful",
         "text": " Lyon\nand", "token_ids": [3], "matching_tokens": 2, "passed": False},
    ],
    "passed": False,
}


def report(options=None, validation=None) -> dict:
    return {
        "task": "text-generation", "tokenizer_repo": "bob/llama-coreml", "options": {**OPTIONS, **(options or {})},
        "packages": [{"path": "llama.mlpackage", "inputs": [{"name": "inputIds"}], "outputs": [{"name": "logits"}]}],
        "validation": validation or {"passed": True, "kind": "reference executor", "message": "ok", "checks": []},
    }


def body(rep: dict) -> str:
    return card.card_body(source_repo="meta/llama", revision="0123456789abcdef", source_url="http://hub/meta/llama",
                          report=rep, package_paths=["llama.mlpackage"])


def test_swift_snippet_is_the_swift_transformers_1_3_api():
    text = body(report()).split("## Use it in Swift", 1)[1]
    assert '.package(url: "https://github.com/huggingface/swift-transformers", from: "1.3.0")' in text
    assert '.product(name: "Transformers", package: "swift-transformers")' in text
    assert "import Models" in text and "import Generation" in text and "import Tokenizers" in text
    assert "import Transformers" not in text  # a product, not a module
    assert "@available(iOS 18.0, macOS 15.0, *)" in text
    assert 'Bundle.main.url(forResource: "llama", withExtension: "mlmodelc")!' in text
    assert "try LanguageModel.loadCompiled(url: url, computeUnits: .cpuAndGPU)" in text
    assert "GenerationConfig(maxNewTokens: 32)" in text and "must fit in 128 tokens" in text
    assert "return try await model.generate(config: config, prompt: prompt) { textSoFar in" in text
    assert "try await AutoTokenizer.from(modelFolder: tokenizerFolder)" in text
    assert "LanguageModel.loadCompiled(url: url, computeUnits: .cpuAndGPU, tokenizer: tokenizer)" in text
    assert "withExtension: \"mlpackage\"" not in text  # Xcode ships the compiled .mlmodelc, not the package
    # The one note on an iOS 17 package: why the snippet says iOS 18 (swift-transformers' own requirement).
    (note,) = [line for line in text.splitlines() if line.startswith("**Note:**")]
    assert "`LanguageModel` itself needs iOS 18 / macOS 15" in note and "runs from iOS17" in note
    assert "**Note:**" not in body(report({"minimum_deployment_target": "iOS18"})).split("## Use it in Swift", 1)[1]
    assert text.count("```") % 2 == 0


@pytest.mark.parametrize("options, note", [
    ({"sequence_length": "64"}, "pads every call to 128 tokens"),
    ({"sequence_length": "64,128"}, "always runs the first one, 64 tokens"),
    ({"naming": "exporters"}, "reads `inputIds`"),
])
def test_swift_snippet_says_what_swift_transformers_cannot_run(options, note):
    assert note in body(report(options)).split("## Use it in Swift", 1)[1]


def test_a_stateful_package_says_what_to_send_and_its_context_as_budget():
    text = body(report({"kv_cache": "stateful", "sequence_length": "512", "minimum_deployment_target": "iOS18"}))
    swift = text.split("## Use it in Swift", 1)[1]
    # swift-transformers' mask is one slot longer than the tokens so far: 511 of them fit.
    assert "must fit in 511 tokens" in swift and "pads every call" not in swift
    assert "`causalMask` zeros [1, 1, 1, T + 1]" in swift and "[1, 1, n, n]" in swift


def test_other_tasks_keep_the_plain_core_ml_snippet():
    rep = {**report(), "task": "fill-mask"}
    swift = body(rep).split("## Use it in Swift", 1)[1]
    assert "MLModel(contentsOf: url, configuration: configuration)" in swift and "swift-transformers" not in swift


def declared_and_used(swift: str) -> tuple[set[str], set[str]]:
    """The Swift names a snippet declares (let x / parameter x:) and the ones its feature
    dictionary uses."""
    declared = set(re.findall(r"let (\w+) =", swift)) | set(re.findall(r"[(,] ?(\w+): CVPixelBuffer", swift))
    dictionary = re.search(r"dictionary: \[(.*)\]\)", swift).group(1)
    used = set(re.findall(r'": (?:MLFeatureValue\(pixelBuffer: )?(\w+)', dictionary))
    return declared, used


@pytest.mark.parametrize("task, inputs, units", [
    ("feature-extraction",
     [{"name": "input_ids", "type": "tensor", "dtype": "int32", "shape": [1, 128]},
      {"name": "attention_mask", "type": "tensor", "dtype": "int32", "shape": [1, 128]}],
     {"cpu": "yes", "gpu": "yes", "neural_engine": "yes"}),
    ("image-classification",
     [{"name": "pixel_values", "type": "image", "dtype": "image", "shape": [1, 3, 224, 224]}],
     {"cpu": "yes", "gpu": "yes", "neural_engine": "no"}),
])
def test_the_plain_snippet_declares_every_input_it_sends_and_fits_the_compute_units(task, inputs, units):
    rep = {**report(validation={"passed": True, "compute_units": {"model": {"units": units}}}), "task": task,
           "packages": [{"path": "m.mlpackage", "inputs": inputs, "outputs": [{"name": "logits"}]}]}
    swift = body(rep).split("## Use it in Swift", 1)[1]
    declared, used = declared_and_used(swift)
    assert used == {card._swift_name(i["name"]) for i in inputs} and used <= declared, swift
    expected = ".all" if units["neural_engine"] == "yes" else ".cpuAndGPU"
    assert f"configuration.computeUnits = {expected}" in swift
    if task == "feature-extraction":
        assert "MLMultiArray(shape: [1, 128], dataType: .int32)" in swift
    else:
        assert "a 224×224 image" in swift and "MLFeatureValue(pixelBuffer: pixelValues)" in swift


def test_a_range_shaped_llm_loads_on_the_gpu_and_the_card_shows_its_ranges_states_and_context():
    """Apple: a range-shaped model runs on the GPU or CPU, on the Neural Engine only at its default
    shape; so swift-transformers' load asks for .cpuAndGPU, and the card says so in words."""
    units = {"cpu": "yes", "gpu": "yes", "neural_engine": "default_shape"}
    rep = report({"kv_cache": "stateful", "sequence_length": "1-2048", "minimum_deployment_target": "iOS18"},
                 {"passed": True, "compute_units": {"model": {"units": units, "reasons": ["range shapes"]}}})
    rep["packages"][0].update(
        inputs=[{"name": "inputIds", "shape": [1, 1], "flexibility": "range", "ranges": [[1, 1], [1, 2048]]},
                {"name": "causalMask", "shape": [1, 1, 1, 1], "flexibility": "range",
                 "ranges": [[1, 1], [1, 1], [1, 2048], [1, 2048]]}],
        states=[{"name": "keyCache", "shape": [30, 1, 3, 2048, 64]}, {"name": "valueCache", "shape": [30, 1, 3, 2048, 64]}])
    text = body(rep)
    assert "`inputIds` [1, 1…2048]" in text and "`causalMask` [1, 1, 1…2048, 1…2048]" in text
    assert "`keyCache` [30, 1, 3, 2048, 64]" in text and "fit in **2047 tokens**" in text
    assert "| model | yes | yes | at the default shape only |" in text
    assert "computeUnits: .cpuAndGPU)" in text.split("## Use it in Swift", 1)[1]


def test_continuation_check_in_the_card():
    validation = {"passed": True, "kind": "reference executor", "message": "ok", "checks": [],
                  "continuation": CONTINUATION}
    section = body(report(validation=validation)).split("## Continuation check", 1)[1].split("\n## ", 1)[0]
    assert ("Continuation check FAILED: the prompt «The capital of France is» continued greedily by each package and "
            "by the PyTorch model: up to 8 new tokens; PyTorch wrote 2 and stopped at its end-of-text token.") in section
    fp32, fp16 = [line for line in section.splitlines() if line.startswith("- ")]
    assert fp32.startswith("- Core ML (fp32): the same 8 tokens — driven as swift-transformers, non-stateful. « Paris.")
    assert "« Paris. It is \\*the\\* &lt;b&gt;capital&lt;/b&gt;» / PyTorch: «" in fp32
    assert fp16.startswith("- Core ML (fp16): differs at token 3: the first 2 are the same") and "« Lyon⏎and» / PyTorch:" in fp16


def test_the_card_shows_what_the_continuation_counted():
    run = {"package": "model", "mode": "fp16", "text": " Paris. The answer is:", "token_ids": [1, 2, 3, 4, 5, 9],
           "matching_tokens": 5, "tokens_compared": 6, "passed": True, "same_text": " Paris. The",
           "own_rest": " answer is:", "pytorch_rest": " United States has"}
    validation = {"passed": True, "checks": [], "continuation": {**CONTINUATION, "runs": [run], "passed": True}}
    section = body(report(validation=validation)).split("## Continuation check", 1)[1].split("\n## ", 1)[0]
    (line,) = [line for line in section.splitlines() if line.startswith("- ")]
    assert "the same first 5 tokens; at token 6 PyTorch itself was torn" in line
    assert line.endswith("both « Paris. The», then the package « answer is:» / PyTorch « United States has»")


@pytest.mark.parametrize("validation", [
    {"passed": True, "kind": "reference executor", "message": "ok", "checks": []},  # older report
    {"passed": None, "skipped": True, "message": "validation was skipped (--no-validate)", "checks": []},
    {"passed": True, "checks": [], "continuation": {"prompt": "x", "runs": []}},
])
def test_no_continuation_section_without_runs(validation):
    assert "## Continuation check" not in body(report(validation=validation))


def test_continuation_label_names_real_core_ml_units_and_other_packages():
    assert wording.continuation_label({"mode": "coreml-CPU_AND_GPU"}) == "Core ML (CPU_AND_GPU)"
    assert wording.continuation_label({"package": "decoder", "mode": "fp16"}) == "Core ML (decoder, fp16)"
    assert wording.continuation_label({"mode": "coreai"}) == "Core AI (runtime)"


def test_a_run_that_failed_or_was_not_checked_says_why_in_the_card():
    runs = [
        {"package": "model", "mode": "fp16", "text": None, "token_ids": [], "matching_tokens": 0,
         "tokens_compared": 8, "passed": False, "error": "KeyError: 'inputIds'"},
        {"package": "model", "mode": "fp32", "text": "", "matching_tokens": 0, "tokens_compared": 0, "passed": None,
         "note": "the 9-token prompt does not fit the package: continuation not checked"},
    ]
    validation = {"passed": True, "checks": [], "continuation": {**CONTINUATION, "runs": runs, "passed": None}}
    section = body(report(validation=validation)).split("## Continuation check", 1)[1].split("\n## ", 1)[0]
    failed, unchecked = [line for line in section.splitlines() if line.startswith("- ")]
    assert "(no text)" in failed and "could not be run" in failed and "KeyError: 'inputIds'" in failed
    assert "the 9-token prompt does not fit the package: continuation not checked" in unchecked
    assert "Continuation check not run (nothing could be compared)" in section


def test_an_aimodel_gets_its_own_core_ai_section_after_the_core_ml_one():
    rep = report(options={"format": "both", "kv_cache": "stateful"})
    rep["packages"].append({"path": "llama.aimodel", "format": "coreai",
                            "inputs": [{"name": "inputIds", "dtype": "int32", "shape": [1, 128], "flexibility": "range",
                                        "ranges": [[1, 1], [1, 128]]}],
                            "outputs": [{"name": "logits"}],
                            "states": [{"name": "keyCache", "shape": [30, 1, 3, 128, 64]},
                                       {"name": "valueCache", "shape": [30, 1, 3, 128, 64]}]})
    text = card.card_body(source_repo="meta/llama", revision="0123456789abcdef", source_url="http://hub/meta/llama",
                          report=rep, package_paths=["llama.mlpackage", "llama.aimodel"])
    core_ml, core_ai = text.index("## Use it in Swift\n"), text.index("## Use it in Swift with Core AI (iOS/macOS 27)")
    assert core_ml < core_ai
    section = text[core_ai:]
    assert "needs iOS 27 / macOS 27" in section and "https://developer.apple.com/documentation/coreai" in section
    assert 'AIModel(contentsOf: url)' in section and 'loadFunction(named: "main")' in section
    assert '@available(iOS 27.0, macOS 27.0, *)' in section and "`keyCache`, `valueCache`" in section
    assert "`llama.aimodel`" in text.split("## Options used")[0]  # listed among the packages
    # Core AI alone: no Core ML snippet, and the card is tagged for it.
    only = card.card_body(source_repo="meta/llama", revision="0123456789abcdef", source_url="http://hub/meta/llama",
                          report={**rep, "packages": rep["packages"][1:]}, package_paths=["llama.aimodel"])
    assert "## Use it in Swift\n" not in only and "LanguageModel.loadCompiled" not in only
    card_text = card.model_card(source_repo="meta/llama", revision="0123456789abcdef", source_url="http://hub/meta/llama",
                                report={**rep, "packages": rep["packages"][1:]}, package_paths=["llama.aimodel"])
    front = card_text.split("\n---\n", 1)[0]
    assert "- coreai" in front and "- coreml" not in front  # a repo of .aimodel files only is not a Core ML repo
    both = card.model_card(source_repo="meta/llama", revision="0123456789abcdef", source_url="http://hub/meta/llama",
                           report=rep, package_paths=["llama.mlpackage", "llama.aimodel"]).split("\n---\n", 1)[0]
    assert "- coreml" in both and "- coreai" in both


def test_the_card_says_which_devices_the_package_fits(tmp_path):
    """A stateful SmolLM2 package at 2 k context: its size and cache as written, the largest
    activation (its logits for a 2 k-token prompt) from the config.json of the job's snapshot."""
    (tmp_path / "config.json").write_text(
        '{"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, '
        '"num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152}')
    state = {"type": "state", "shape": [30, 1, 3, 2048, 64], "dtype": "float16", "flexibility": "fixed"}
    rep = report({"kv_cache": "stateful", "sequence_length": "2048", "minimum_deployment_target": "iOS18"})
    rep["packages"][0].update(size_bytes=270_131_271, states=[{**state, "name": "keyCache"}, {**state, "name": "valueCache"}])
    rep["source"] = {"path": str(tmp_path)}
    text = body(rep)
    section = text[text.index("## Device fit"):].split("\n## ")[0]
    assert ("Needs about 519 MB while it runs at 2 k context: weights 270 MB, KV cache 47 MB, largest activation 201 MB "
            "(estimated). Fits iPhones (6 and 8 GB), iPads (8 and 16 GB) and Macs (8 and 16 GB).") in section
    assert "| iPhone 15 (6 GB) | 3.0 GB | 4.2 GB | fits |" in section and "| Mac (8 GB) | 5.7 GB | — | fits |" in section
    assert "os_proc_available_memory()" in section and "`com.apple.developer.kernel.increased-memory-limit`" in section
    # the snapshot gone: the activation the report shows (the attention over the cache)
    rep["source"] = {"path": str(tmp_path / "gone")}
    assert "largest activation 25 MB" in body(rep)
    assert "## Device fit" not in body(report())  # no package size: nothing to say
