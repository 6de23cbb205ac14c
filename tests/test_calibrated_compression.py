"""Calibrated 4-bit compression (converters/transforms/calibrate.py): GPTQ on the decoder
layers of text-generation models before capture, for int4 and mixed.

The real-weight evidence (SmolLM2-135M, quality on the held-out passage) is in
test_compression.py (`real_mixed`) and, for int4 at the README's numbers, at the end of this file; here: which conversions calibrate, that every decoder
family's layers are found and calibrated, that a stateful int4 package with fused attention
converts, validates and is driven as swift-transformers drives it, per family, and that real
SmolLM2 forced into chunks of layers (calibrated a chunk at a time, calibrate_chunks.py) keeps the
whole-model GPTQ package's quality.
"""

from __future__ import annotations

import json

import pytest

from converters.configs import ARCHITECTURES
from converters.configs.text import DecoderConfig
from converters.export import convert
from converters.options import ConversionOptions
from converters.transforms import calibrate as calibration
from tests.models import MODELS, build_model

DECODERS = [m for m, cls in ARCHITECTURES.items() if issubclass(cls, DecoderConfig)]
CONTEXT = 16


class _Plan:
    def __init__(self, quantize: str, task: str = "text-generation", target: str = "iOS18"):
        self.options = ConversionOptions.from_strings(quantize=quantize, minimum_deployment_target=target)
        self.task = task


@pytest.mark.parametrize("scheme,task,target,expected", [
    ("int4", "text-generation", "iOS18", True), ("mixed", "text-generation", "macOS15", True),
    ("lut4", "text-generation", "iOS18", True), ("lut6", "text-generation", "iOS18", True),
    ("lut4", "text-generation", "iOS17", False),  # per-tensor tables below iOS18: data-free
    ("int8", "text-generation", "iOS18", False), ("lut8", "text-generation", "iOS18", False),
    ("none", "text-generation", "iOS18", False),
    ("int4", "fill-mask", "iOS18", False), ("mixed", "text-classification", "iOS18", False),
])
def test_low_bit_text_generation_on_ios18_is_calibrated(scheme, task, target, expected):
    assert calibration.calibrates(_Plan(scheme, task, target)) is expected


def test_the_calibration_text_is_real_prose_held_out_from_the_evaluation_passage():
    from converters.validation.quality import passage

    text = calibration.calibration_text()
    assert len(text.split()) > 1500 and "Pride and Prejudice" not in text
    sentences = {s.strip() for s in passage().split(".") if len(s.strip()) > 20}
    assert sentences and not any(s in text for s in sentences)


def _wide(model_type: str) -> dict:
    """Overrides giving a one-layer model MLP weights over the 2048-element threshold."""
    config = MODELS[model_type][0]()
    overrides = {"num_hidden_layers": 1} if hasattr(config, "num_hidden_layers") else {}
    if getattr(config, "layer_types", None):
        overrides["layer_types"] = config.layer_types[:1]
    if hasattr(config, "intermediate_size") and config.intermediate_size:
        overrides["intermediate_size"] = 128
    return overrides


@pytest.mark.parametrize("model_type", DECODERS)
def test_every_decoder_familys_layers_are_found(model_type, tmp_path):
    import torch

    factory, model_class, _ = MODELS[model_type]
    config = factory()
    model = model_class(config)
    name = calibration.decoder_layers(model, config.num_hidden_layers)
    import re

    matched = [n for n, _ in model.named_modules() if re.fullmatch(name, n)]
    assert len(matched) == config.num_hidden_layers
    assert all(isinstance(model.get_submodule(n), torch.nn.Module) for n in matched)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", DECODERS)
def test_stateful_int4_with_fused_attention_converts_validates_and_runs_as_swift_transformers(model_type, tmp_path):
    folder = build_model(model_type, tmp_path / "model", **_wide(model_type))
    options = ConversionOptions.from_strings(sequence_length=CONTEXT, minimum_deployment_target="iOS18",
                                             kv_cache="stateful", quantize="int4")
    result = convert(str(folder), "text-generation", tmp_path / "out", options)
    (entry,) = result.report_json["packages"]
    program, compression = entry["program"], entry["compression"]
    assert program["stateful"] and program["weight_bits"] < 16
    assert program["fused_attention"] == (model_type != "gemma2")  # Gemma 2 soft-caps its scores: eager
    calibrated = compression["calibration"]["weights"]
    if model_type == "gpt2":  # its layers are Conv1D, not nn.Linear: compressed data-free instead
        assert calibrated == 0 and "GPTQ" not in compression["method"]
    else:
        assert calibrated >= 2 and "GPTQ" in compression["method"]
    assert compression["weights_compressed"] >= 2 and compression["float_weights_left"] == 0
    # Every check but the passage's quality rows must pass: a tiny random model's next-token
    # distribution is nearly flat (no margin for 4-bit noise to respect on 15 passage tokens), so
    # its int4 quality verdict means nothing either way; the real LLM's is in test_compression.py.
    validation = result.report_json["validation"]
    failed = [row for row in validation["checks"] if not row["passed"]]
    assert all(row["inputs"].startswith("passage") for row in failed), failed
    assert any(row["inputs"].startswith("passage") for row in validation["checks"])
    runs = validation["continuation"]["runs"]
    assert {run["mode"] for run in runs} == {"fp32", "fp16"}
    assert all(run["passed"] and "stateful" in run["driven_as"] for run in runs)
    assert {row["inputs"] for row in validation["checks"] if "swift-transformers masks" in row["inputs"]}


def test_validation_judges_against_the_original_weights(tiny_model, tmp_path, monkeypatch):
    """Calibration rewrites the model's weights in place: the pipeline loads the model again for
    validation, so the reference is the checkpoint, not GPTQ's weights."""
    import converters.export as export

    loads = []
    real_load = export.load
    monkeypatch.setattr(export, "load", lambda plan: loads.append(plan.options.quantize) or real_load(plan))
    folder = build_model("llama", tmp_path / "m", intermediate_size=128)
    options = ConversionOptions.from_strings(sequence_length=CONTEXT, minimum_deployment_target="iOS18", quantize="int4")
    calls = []
    result = convert(str(folder), "text-generation", tmp_path / "out", options, progress=lambda *call: calls.append(call))
    assert loads == ["int4", "int4"] and result.report_json["validation"]["checks"]
    assert result.report_json["timings"]["calibrate"] > 0
    _calibration_says_each_layer(calls, json.loads((folder / "config.json").read_text())["num_hidden_layers"])
    loads.clear()
    convert(str(folder), "text-generation", tmp_path / "out8",
            ConversionOptions.from_strings(sequence_length=CONTEXT, minimum_deployment_target="iOS18", quantize="int8"),
            validate=False)
    assert loads == ["int8"]


def test_gptq_results_are_kept_by_what_made_them_and_taken_again(tmp_path):
    """calibration_cache.py: a second calibration of the same weights with the same settings (mixed
    calibrates the layers as int4 does) takes the kept result, the weights and GPTQ's metadata
    buffers exactly as the walk leaves them; other settings or other weights walk anew; and the
    pipeline passes its directory down and says the result was reused."""
    import torch

    from converters.capture import load
    from converters.export import _calibration_tokenizer
    from converters.plan import make_plan
    from converters.source import open_source

    cache = tmp_path / "cache"

    def calibrated(scheme: str, folder, cache=cache):
        plan = make_plan(open_source(str(folder)), "text-generation",
                         ConversionOptions.from_strings(quantize=scheme, minimum_deployment_target="iOS18"))
        model = load(plan)
        entry = calibration.calibrate(plan, model, _calibration_tokenizer(plan), cache=cache)
        return entry, {name: tensor.clone() for name, tensor in model.state_dict().items()}

    folder = build_model("llama", tmp_path / "m", intermediate_size=128)
    walked, first = calibrated("int4", folder)
    assert "reused" not in walked and walked["weights"] >= 2 and len(list(cache.glob("*.safetensors"))) == 1
    assert any("_COREML_" in name for name in first)
    reused, again = calibrated("mixed", folder)
    assert reused["reused"] is True and reused["walked_seconds"] == walked["seconds"]
    assert {k: v for k, v in reused.items() if k not in ("reused", "walked_seconds", "seconds")} == \
        {k: v for k, v in walked.items() if k != "seconds"}
    assert again.keys() == first.keys() and all(torch.equal(first[name], again[name]) for name in first)
    _, uncached = calibrated("mixed", folder, cache=None)  # what the walk itself gives: what was kept
    assert all(torch.equal(first[name], uncached[name]) for name in first)
    assert "reused" not in calibrated("lut6", folder)[0]  # other settings
    moved = build_model("llama", tmp_path / "moved", intermediate_size=128)  # the same model in another folder
    assert calibrated("int4", moved)[0]["reused"] is True
    other = build_model("llama", tmp_path / "other", intermediate_size=128, rms_norm_eps=1e-5)
    assert "reused" not in calibrated("int4", other)[0]  # the same weights, another epsilon: other activations
    import safetensors.torch

    weights = safetensors.torch.load_file(str(moved / "model.safetensors"))
    weights["model.norm.weight"][0] += 1e-3  # one value of another tensor than GPTQ's own
    safetensors.torch.save_file(weights, str(moved / "model.safetensors"), metadata={"format": "pt"})
    assert "reused" not in calibrated("int4", moved)[0]
    assert len(list(cache.glob("*.safetensors"))) == 4

    result = convert(str(folder), "text-generation", tmp_path / "out", validate=False, calibration_cache=cache,
                     options=ConversionOptions.from_strings(quantize="mixed", minimum_deployment_target="iOS18",
                                                            sequence_length=CONTEXT))
    (entry,) = result.report_json["packages"]
    assert entry["compression"]["calibration"]["reused"] is True and "GPTQ" in entry["compression"]["method"]


def _calibration_says_each_layer(calls: list[tuple], count: int) -> None:
    """GPTQ's minutes move the job view's bar layer by layer, between its start and end fractions."""
    from converters.export import CALIBRATION_SPAN

    converting = [(fraction, message) for stage, fraction, message in calls if stage != "validate"]
    assert all(a[0] <= b[0] for a, b in zip(converting, converting[1:])), converting
    steps = [(f, m) for f, m in converting if m.startswith("Calibrating 4-bit weights (GPTQ): layer")]
    assert count >= 2 and [m for _, m in steps] == [
        f"Calibrating 4-bit weights (GPTQ): layer {i} of {count}" for i in range(1, count + 1)], converting
    start, end = CALIBRATION_SPAN
    assert steps[0][0] == start and all(start <= f < end for f, _ in steps)
    assert any(f == end and m.startswith("Converting model") for f, m in converting)  # conversion starts where GPTQ ends


@pytest.mark.parametrize("model_type", DECODERS)
def test_the_walk_runs_a_decoder_layer_on_all_samples_at_once_with_the_same_outputs(model_type):
    """calibrate.batched: the first layer's inputs, caught per sample by coremltools' cacher, as one
    batch, the keyword arguments (mask, rotary tables) broadcast over it: each family's layer gives
    each sample what it gives it alone, bit for bit; `unbatched` hands them back one per sample."""
    import torch
    from coremltools.optimize.torch.layerwise_compression.input_cacher import GPTFirstLayerInputCacher

    factory, model_class, _ = MODELS[model_type]
    config = factory()
    config.use_cache = False
    torch.manual_seed(0)
    model = model_class(config).eval()
    stack = calibration._decoder_stack(model, config.num_hidden_layers)[1]
    samples = [torch.randint(3, 60, (1, 12), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    with torch.no_grad():
        inputs, kwargs = GPTFirstLayerInputCacher(model, [stack[0]]).cache(samples, len(samples), "cpu")
        (batch,), batch_kwargs = calibration.batched(inputs, kwargs)

        def first(output):
            return output[0] if isinstance(output, tuple) else output

        assert first(batch).shape[0] == 3 and batch_kwargs is kwargs
        alone = [first(stack[0](*args, **kwargs)) for args in inputs]
        together = calibration.unbatched([stack[0](*(batch if isinstance(batch, tuple) else (batch,)), **kwargs)],
                                         len(samples))
    assert len(together) == 3
    for one, other in zip(alone, together):
        assert torch.equal(first(one), other)


@pytest.mark.slow
def test_real_llm_int4_with_gptq_meets_the_readmes_numbers(real_llm, real_float16, run_folder, tmp_path):
    """The README's int4 row on the suite's SmolLM2 (a Q4_1 GGUF dequantized: see docs/compression.md):
    GPTQ-calibrated layers, embeddings and head per block of 8, 0.30x the float16 package at 1.11x
    perplexity. The package is judged as validation judges a compressed package on the held-out
    passage (quality.passage_checks, fp32 and fp16 emulation, its scheme's bar), without the
    continuation and input-set rows the other real-model tests cover."""
    from converters.backends import backend_for_package
    from converters.capture import load
    from converters.package_info import directory_size
    from converters.plan import make_plan
    from converters.source import open_source
    from converters.source_tokenizer import load_tokenizer
    from converters.validation import quality

    options = ConversionOptions.from_strings(quantize="int4", minimum_deployment_target="iOS18", sequence_length="128")
    # GPTQ's result kept for this run: mixed (test_compression.py) calibrates the layers the same way
    result = convert(str(real_llm), "text-generation", tmp_path, options, validate=False,
                     calibration_cache=run_folder / "calibrations")
    (entry,) = result.report_json["packages"]
    compression = entry["compression"]
    assert compression["scheme"] == "int4" and "GPTQ" in compression["method"], compression
    assert compression["calibration"]["weights"] == 30 * 7 and compression["float_weights_left"] == 0
    assert "embeddings and output head" in compression["granularity"]
    ratio = entry["size_bytes"] / directory_size(real_float16)
    assert ratio == pytest.approx(0.30, abs=0.01), ratio  # README: 0.30x
    plan = make_plan(open_source(str(real_llm)), "text-generation", options)
    module = plan.cfg.reference_module(load(plan), "model").eval()
    executor = backend_for_package(result.packages[0]).runner(result.packages[0])
    rows, numbers = quality.passage_checks(plan.cfg, "model", module, executor, load_tokenizer(real_llm, plan.cfg.attributes.vocab_size),
                                           ("fp32", "fp16"), quality.bar_for(plan.cfg), "int4", "logits")
    assert rows and all(row.passed for row in rows), [vars(row) for row in rows]
    print("int4 GPTQ on the passage:", numbers)
    for mode, measured in numbers.items():
        assert measured["perplexity_ratio"] <= 1.15, (mode, measured)  # README: 1.11x (data-free: 1.29x)
