"""Device fit (converters/device_fit.py): a package's memory while it runs — weights, KV cache,
largest activation — against what an app may use on each device class, from the config before
converting and from the report after, and the words the form, the result and the card say.
Pure Python: no conversion here (tests/test_ui_form.py checks the estimate against the engine's
packages).

    python -m pytest -q tests/test_device_fit.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from converters import device_fit as fit
from converters.formats import FORMATS
from converters.options import ConversionOptions

ROOT = Path(__file__).resolve().parent.parent

# SmolLM2-135M-Instruct's config.json (the real model tests/real_models.py builds), and the
# Llama 3.2 1B shape (tied 128 k vocabulary, grouped-query attention).
SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
           "max_position_embeddings": 8192, "tie_word_embeddings": True}
LLAMA_1B = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256}

# Qwen3.5-0.8B's text model (the values of its published config.json, as the Hub nests them):
# 24 layers, three linear to one full-attention (6 attention, 18 linear layers).
QWEN3_5_0_8B = {"model_type": "qwen3_5", "text_config": {
    "model_type": "qwen3_5_text", "hidden_size": 1024, "intermediate_size": 3584, "num_hidden_layers": 24,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256, "linear_num_key_heads": 16,
    "linear_num_value_heads": 16, "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4,
    "full_attention_interval": 4, "vocab_size": 248320, "max_position_embeddings": 262144}}


def stateful(context: int, **extra) -> ConversionOptions:
    return ConversionOptions.from_strings(kv_cache="stateful", sequence_length=str(context),
                                          minimum_deployment_target="iOS18", **extra)


def test_the_kv_cache_is_two_float16_states_over_the_whole_context():
    # keyCache and valueCache [30 layers, 1, 3 heads, 2048, 64], 2 bytes each
    assert fit.kv_cache_bytes(SMOLLM2, 2048) == 2 * 30 * 3 * 2048 * 64 * 2 == 47_185_920
    assert fit.kv_cache_bytes(SMOLLM2, 4096) == 2 * fit.kv_cache_bytes(SMOLLM2, 2048)
    # GPT-2's names, plain multi-head attention (the heads are the key/value heads)
    gpt2 = {"n_embd": 768, "n_head": 12, "n_layer": 12, "vocab_size": 50257}
    assert fit.kv_cache_bytes(gpt2, 1024) == 2 * 12 * 12 * 1024 * 64 * 2
    # multi-query attention: one key/value head
    assert fit.kv_cache_bytes({**gpt2, "multi_query": True}, 1024) == 2 * 12 * 1 * 1024 * 64 * 2
    # a multimodal config: its text_config
    assert fit.kv_cache_bytes({"model_type": "gemma3", "text_config": SMOLLM2}, 2048) == 47_185_920


def test_a_qwen3_5_cache_is_its_attention_layers_keys_and_values_and_its_linear_layers_states():
    """Issue 27: a Qwen3.5 package keeps keyCache/valueCache for its 6 full-attention layers only,
    and convState and recurrentState for its 18 linear ones, which do not grow with the context
    (docs/decoder-families.md: 33.6 MiB at 2048 tokens, where a slot per layer would be 96 MiB)."""
    attention = 2 * 6 * 2 * 2048 * 256 * 2  # keyCache and valueCache [6, 1, 2, 2048, 256]: 12 MiB each
    linear = 18 * 6144 * 3 * 2 + 18 * 16 * 128 * 128 * 2  # convState [18, 1, 6144, 3], recurrentState [18, 1, 16, 128, 128]
    at_2k = fit.kv_cache_bytes(QWEN3_5_0_8B, 2048)
    assert at_2k == attention + linear == 35_266_560 and round(at_2k / fit.MIB, 1) == 33.6
    assert fit.kv_cache_bytes(QWEN3_5_0_8B["text_config"], 2048) == at_2k  # a text model's own config.json
    assert fit.kv_cache_bytes(QWEN3_5_0_8B, 4096) == 2 * attention + linear  # only the attention part grows
    # the layer types as transformers saves them, or the interval alone: the same layers
    types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(24)]
    assert fit.kv_cache_bytes({**QWEN3_5_0_8B["text_config"], "layer_types": types}, 2048) == at_2k
    before = fit.from_config(QWEN3_5_0_8B, "text-generation", 10**9, stateful(2048))
    assert (before.kv_cache, before.context, before.stateful) == (at_2k, 2048, True)
    # other models as before: a slot per layer (Llama), Gemma 4's layers' own shapes (E2B: 36 MiB)
    assert fit.kv_cache_bytes(LLAMA_1B, 2048) == 2 * 16 * 8 * 2048 * 64 * 2
    e2b = {"model_type": "gemma4_text", "hidden_size": 1536, "num_hidden_layers": 35, "num_attention_heads": 8,
           "num_key_value_heads": 1, "head_dim": 256, "global_head_dim": 512, "num_kv_shared_layers": 20,
           "layer_types": ["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(35)]}
    assert fit.kv_cache_bytes({"model_type": "gemma4", "text_config": e2b}, 2048) == 37_748_736


def test_the_largest_activation_is_the_biggest_tensor_of_the_longest_call():
    # a 2048-token prompt: its logits (2048 x 49152) outgrow the attention scores (9 x 2048 x 2048)
    assert fit.activation_bytes(SMOLLM2, "text-generation", 2048, 2048, 2) == 2048 * 49152 * 2
    assert fit.activation_bytes(SMOLLM2, "text-generation", 2048, 2048, 2, 4) == 2048 * 49152 * 4  # float32 logits
    # without a vocabulary output (an embedder): the attention scores, in float16
    assert fit.activation_bytes(SMOLLM2, "feature-extraction", 2048, 2048, 2) == 9 * 2048 * 2048 * 2
    # short sequences: the feed-forward layer
    assert fit.activation_bytes(SMOLLM2, "feature-extraction", 8, 8, 4) == 8 * 1536 * 4
    # a ViT: 14 x 14 patches and the class token
    vit = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "image_size": 224, "patch_size": 16}
    assert fit.activation_bytes(vit, "image-classification", None, None, 2) == 197 * 3072 * 2
    # a ResNet: its stem's feature map
    resnet = {"embedding_size": 64, "hidden_sizes": [256, 512], "image_size": 224}
    assert fit.activation_bytes(resnet, "image-classification", None, None, 2) == 64 * 112 * 112 * 2


def test_the_footprint_before_converting_follows_the_chosen_context_and_precision():
    at_2k = fit.from_config(SMOLLM2, "text-generation", 269_000_000, stateful(2048))
    assert (at_2k.weights, at_2k.kv_cache, at_2k.context, at_2k.stateful) == (269_000_000, 47_185_920, 2048, True)
    assert at_2k.running == 269_000_000 + 47_185_920 + 2048 * 49152 * 2  # iOS18: float16 logits
    before_ios16 = ConversionOptions.from_strings(sequence_length="2048", minimum_deployment_target="iOS15")
    assert fit.from_config(SMOLLM2, "text-generation", 1, before_ios16).activation == 2048 * 49152 * 4
    at_4k = fit.from_config(SMOLLM2, "text-generation", 269_000_000, stateful(4096))
    assert at_4k.kv_cache == 2 * at_2k.kv_cache and at_4k.running > at_2k.running
    # no cache without a stateful package; float32 doubles the activations inside
    plain = fit.from_config(SMOLLM2, "feature-extraction", 100, ConversionOptions.from_strings(sequence_length="128"))
    exact = fit.from_config(SMOLLM2, "feature-extraction", 100,
                            ConversionOptions.from_strings(sequence_length="128", precision="float32"))
    assert plain.kv_cache == 0 and plain.context == 128 and not plain.stateful
    assert exact.activation == 2 * plain.activation
    # a vision model: no context
    vision = fit.from_config({"image_size": 224, "patch_size": 16, "hidden_size": 768, "num_attention_heads": 12},
                             "image-classification", 10**8, ConversionOptions(), modality="vision")
    assert vision.context is None and fit.context_words(vision) == ""
    # several image sizes: the largest one's patches (384: 24 x 24 and the class token), before and after
    vit = {"image_size": 224, "patch_size": 16, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12}
    sized = ConversionOptions.from_strings(image_size="224,384", minimum_deployment_target="iOS18")
    before = fit.from_config(vit, "image-classification", 10**8, sized, modality="vision")
    assert before.activation == 12 * 577 * 577 * 2 > fit.from_config(vit, "image-classification", 10**8, ConversionOptions(),
                                                                     modality="vision").activation
    report = {"task": "image-classification", "options": {"image_size": "224,384", "precision": "float16"},
              "packages": [{"format": "coreml", "size_bytes": 10**8, "inputs": [{"name": "image", "type": "image"}]}]}
    assert fit.from_report(report, vit).activation == before.activation


def test_each_device_is_judged_against_its_limit_then_the_entitled_one():
    iphone_8 = next(d for d in fit.DEVICES if d.key == "iphone-8")
    at = {level: fit.Footprint(weights) for level, weights in
          (("default", iphone_8.app_limit), ("entitled", iphone_8.app_limit + 1), ("beyond", iphone_8.entitled_limit + 1))}
    judged = {name: next(v for v in fit.verdicts(f) if v.device is iphone_8) for name, f in at.items()}
    assert (judged["default"].level, judged["default"].limit) == (fit.FITS, iphone_8.app_limit)
    assert (judged["entitled"].level, judged["entitled"].limit) == (fit.ENTITLED, iphone_8.entitled_limit)
    assert judged["beyond"].level == fit.TOO_LARGE
    # a Mac has no entitlement: past its GPU working set it is too large
    mac = next(d for d in fit.DEVICES if d.key == "mac-8")
    assert mac.entitled_limit is None
    assert next(v for v in fit.verdicts(fit.Footprint(mac.app_limit + 1)) if v.device is mac).level == fit.TOO_LARGE


def test_a_device_with_more_memory_never_gives_an_app_less():
    for family in ("iPhone", "iPad", "Mac"):
        members = sorted((d for d in fit.DEVICES if d.family == family), key=lambda d: d.ram_gb)
        for smaller, larger in zip(members, members[1:]):
            assert larger.app_limit >= smaller.app_limit and (larger.entitled_limit or 0) >= (smaller.entitled_limit or 0)
    for device in fit.DEVICES:
        assert device.app_limit < device.ram_gb * 2**30 and device.sources
        assert all(source.startswith("https://") for source in device.sources)


def test_the_sentence_says_what_fits_what_needs_the_entitlement_and_what_is_too_large():
    # 4.5 GB while running: over the 6 GB iPhone's entitled 4.2 GB, within the 8 GB iPhone's 6 GB
    text = fit.fit_sentence(fit.Footprint(4_000_000_000, 400_000_000, 100_000_000, 4096, True))
    assert text == ("Fits iPad Pro (16 GB) and Macs (8 and 16 GB); fits iPhone 15 Pro and newer (8 GB) and "
                    "iPad with M1 or later (8 GB) only with the increased memory limit entitlement; "
                    "too large for iPhone 15 (6 GB) at 4 k context.")
    small = fit.fit_sentence(fit.Footprint(300_000_000, 0, 1_000_000, 128))
    assert small == "Fits iPhones (6 and 8 GB), iPads (8 and 16 GB) and Macs (8 and 16 GB)."
    huge = fit.fit_sentence(fit.Footprint(15_000_000_000, 1_000_000_000, 0, 2048, True))
    assert huge == "Too large for iPhones (6 and 8 GB), iPads (8 and 16 GB) and Macs (8 and 16 GB) at 2 k context."
    # a Mac alone: "Macs with 16 GB"
    assert "Macs with 16 GB" in fit.fit_sentence(fit.Footprint(9_000_000_000))
    assert fit.context_words(fit.Footprint(1, context=128, stateful=True)) == "at 128-token context"
    assert fit.context_words(fit.Footprint(1, context=128)) == "at 128 tokens"


def test_the_summary_breaks_the_memory_down_and_says_when_the_neural_engine_cannot_take_it():
    footprint = fit.from_config(LLAMA_1B, "text-generation", 2_471_628_800, stateful(2048))
    text = fit.summary(footprint)
    assert text.startswith("Needs about 3.1 GB while it runs at 2 k context: weights 2.5 GB, KV cache 67 MB, "
                           "largest activation 525 MB (estimated). ")
    assert text.endswith("At 2.5 GB the package is larger than the Neural Engine takes (about 1 GB on iPhone and iPad, "
                         "2 GB on a Mac): Core ML runs it on the GPU.")
    assert fit.neural_engine_note(fit.Footprint(900_000_000, largest_package=900_000_000)) is None
    eight_bit = fit.neural_engine_note(fit.Footprint(1_236_892_160, largest_package=1_236_892_160))
    assert eight_bit == ("At 1.2 GB the package is larger than the Neural Engine takes on iPhone and iPad (about 1 GB): "
                         "Core ML runs it on the GPU there.")
    assert [row[0] for row in fit.table(footprint)] == [d.label for d in fit.DEVICES]
    assert [fit.gigabytes(n) for n in (50_000, 6_800_000, 85_000_000, 1_340_000_000, 14e9)] == [
        "0.05 MB", "6.8 MB", "85 MB", "1.3 GB", "14 GB"]


def engine_report(context: int, size: int, formats=("coreml",)) -> dict:
    """A stateful SmolLM2 report as converters/export.py writes it (package_info's features, as
    read from a converted package: a range-shaped output's spec has no shape)."""
    state = {"name": "keyCache", "type": "state", "shape": [30, 1, 3, context, 64], "dtype": "float16", "flexibility": "fixed"}
    package = {
        "part": "model", "size_bytes": size,
        "inputs": [{"name": "inputIds", "type": "tensor", "shape": [1, 1], "dtype": "int32", "flexibility": "range",
                    "ranges": [[1, 1], [1, context]]}],
        "outputs": [{"name": "logits", "type": "tensor", "shape": [], "dtype": "float16", "flexibility": "fixed"}],
        "states": [state, {**state, "name": "valueCache"}],
    }
    return {"task": "text-generation", "packages": [{**package, "format": f} for f in formats],
            "options": {"kv_cache": "stateful", "sequence_length": str(context), "minimum_deployment_target": "iOS18",
                        "precision": "float16"}}


def test_the_footprint_after_converting_reads_the_packages_states_and_outputs():
    before = fit.from_config(SMOLLM2, "text-generation", 270_000_000, stateful(2048))
    # with the model's config (the card, in the worker): the same numbers as before converting
    assert fit.from_report(engine_report(2048, 270_000_000), SMOLLM2) == before
    # from the report alone (the page): the same weights and cache; the logits' shape is not in
    # the package's spec, so the activation is the attention over the cache
    alone = fit.from_report(engine_report(2048, 270_000_000))
    assert (alone.weights, alone.kv_cache, alone.context, alone.stateful) == (270_000_000, before.kv_cache, 2048, True)
    assert alone.activation == 3 * 2048 * 2048 * 2
    # an .mlpackage and an .aimodel of the same model: an app loads one
    both = fit.from_report(engine_report(2048, 270_000_000, formats=("coreml", "coreai")))
    assert both.weights == 270_000_000
    # an encoder and a decoder are both loaded
    report = engine_report(128, 100)
    report["packages"].append({**report["packages"][0], "part": "decoder", "size_bytes": 50})
    assert fit.from_report(report).weights == 150 and fit.from_report(report).largest_package == 100
    assert fit.from_report({"packages": []}) is None and fit.from_report({}) is None
    # the context a stateful package holds is its cache's, whatever the options say (left to the model: "auto")
    auto = engine_report(2048, 270_000_000)
    auto["options"]["sequence_length"] = "auto"
    assert fit.from_report(auto).context == 2048 and fit.from_report(auto).kv_cache == before.kv_cache
    # a fixed-length package without states: its outputs, and its sequence length as context
    fixed = {"options": {"sequence_length": "128"}, "packages": [{"size_bytes": 10, "outputs": [
        {"name": "logits", "shape": [1, 128, 1000], "dtype": "float32", "flexibility": "fixed"}]}]}
    assert fit.from_report(fixed) == fit.Footprint(10, 0, 128 * 1000 * 4, 128, False, 10)


def qwen3_5_report(context: int, size: int) -> dict:
    """A stateful Qwen3.5-0.8B report as converters/export.py writes it: its four states
    (configs/qwen3_5.py), the linear layers' of a fixed size whatever the context."""
    def state(name, shape):
        return {"name": name, "type": "state", "shape": shape, "dtype": "float16", "flexibility": "fixed"}

    report = engine_report(context, size)
    report["packages"][0]["states"] = [
        state("keyCache", [6, 1, 2, context, 256]), state("valueCache", [6, 1, 2, context, 256]),
        state("convState", [18, 1, 6144, 3]), state("recurrentState", [18, 1, 16, 128, 128])]
    return report


@pytest.mark.parametrize("context", [64, 2048])
def test_after_converting_the_context_is_the_key_cache_s_and_every_state_counts(context):
    """Issue 27: recurrentState is 5-D too, its axis 3 its key size (128): at a 64-token context the
    package holds 64 positions, not 128; its bytes and convState's count with the caches' — what
    the estimate before converting counts."""
    before = fit.from_config(QWEN3_5_0_8B, "text-generation", 10**9, stateful(context))
    with_config = fit.from_report(qwen3_5_report(context, 10**9), QWEN3_5_0_8B)
    assert with_config == before and with_config.context == context
    alone = fit.from_report(qwen3_5_report(context, 10**9))
    assert (alone.context, alone.kv_cache) == (context, fit.kv_cache_bytes(QWEN3_5_0_8B, context))
    assert alone.kv_cache == 2 * 6 * 2 * context * 256 * 2 + 18 * 6144 * 3 * 2 + 18 * 16 * 128 * 128 * 2
    assert alone.activation == 2 * context * context * 2  # the attention over the key cache (2 heads)
    assert fit.context_words(alone) == {64: "at 64-token context", 2048: "at 2 k context"}[context]


DOC = ROOT / "docs" / "device-fit.md"
ROW = re.compile(r"^\| (?P<model>[^|]+) \| (?P<size>[^|]+) \| (?P<context>\d+) \| (?P<weights>\d[\d,]*) \|"
                 r"(?P<rest>.*)\|$")


def test_the_documented_table_is_what_the_module_says():
    """docs/device-fit.md's table: for each row's weights (the size estimate's bytes) and context,
    the module's memory and verdicts, cell for cell."""
    configs = {"SmolLM2-135M": SMOLLM2, "Llama 3.2 1B": LLAMA_1B,
               "Llama 3.2 3B": {**LLAMA_1B, "hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 24,
                                "head_dim": 128},
               "Llama 2 7B": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                              "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128, "vocab_size": 32000}}
    rows = [ROW.match(line) for line in DOC.read_text().splitlines()]
    rows = [row for row in rows if row and row["model"].strip() in configs]
    assert len(rows) >= 16
    for row in rows:
        footprint = fit.from_config(configs[row["model"].strip()], "text-generation", int(row["weights"].replace(",", "")),
                                    stateful(int(row["context"])))
        cells = [cell.strip() for cell in row["rest"].split("|")]
        words = {fit.FITS: "fits", fit.ENTITLED: "entitlement", fit.TOO_LARGE: "too large"}
        expected = [fit.gigabytes(footprint.kv_cache), fit.gigabytes(footprint.activation), fit.gigabytes(footprint.running),
                    *(words[v.level] for v in fit.verdicts(footprint))]
        assert cells == expected, row.group(0)


CORE_AI_ROW = re.compile(r"^\| (?P<model>[^|]+) \| (?P<size>[^|]+) \| (?P<cache>none|stateful, \d+) \| (?P<context>\d+) \| "
                         r"(?P<weights>\d[\d,]*) \|(?P<rest>.*)\|$")


def test_the_documented_core_ai_rows_are_what_the_module_says():
    """docs/device-fit.md's Core AI LLM bundles: a bundle always holds a KV cache, counted at the
    context it grows to — the model's maximum without a stateful choice — for each row's weights,
    cell for cell, and the doc says so in words."""
    text = DOC.read_text()
    flat = " ".join(text.split())
    assert "**always holds a KV cache**, with or without the stateful option" in flat
    assert "its memory is counted at that full context" in flat and "counts it at that **full context**" in flat
    configs = {"SmolLM2-135M": SMOLLM2, "Llama 3.2 1B": {**LLAMA_1B, "max_position_embeddings": 131072}}
    rows = [row for row in map(CORE_AI_ROW.match, text.splitlines()) if row]
    assert len(rows) == 4 and not any(ROW.match(row.group(0)) for row in rows)  # not read as the Core ML table
    words = {fit.FITS: "fits", fit.ENTITLED: "entitlement", fit.TOO_LARGE: "too large"}
    for row in rows:
        cache = row["cache"].split(", ")
        options = ConversionOptions.from_strings(
            format=next(name for name, each in FORMATS.items() if each.llm_cache),
            **({"kv_cache": "stateful", "sequence_length": cache[1]} if len(cache) == 2 else {}))
        footprint = fit.from_config(configs[row["model"]], "text-generation", int(row["weights"].replace(",", "")), options)
        assert footprint.grows and footprint.context == int(row["context"]), row.group(0)
        expected = [fit.gigabytes(footprint.kv_cache), fit.gigabytes(footprint.activation), fit.gigabytes(footprint.running),
                    *(words[v.level] for v in fit.verdicts(footprint))]
        assert [cell.strip() for cell in row["rest"].split("|")] == expected, row.group(0)


def test_the_module_imports_no_torch():
    code = "import sys, converters.device_fit; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("config", [{}, {"hidden_size": "x"}, {"image_size": [224, 224]}])
def test_a_config_without_the_usual_sizes_gives_no_cache_and_no_activation(config):
    assert fit.kv_cache_bytes(config, 128) == 0
    assert fit.activation_bytes(config, "text-generation", 128, 128, 2) == 0


def core_ai_report(context: int, size: int, options: dict | None = None) -> dict:
    """A Core AI LLM bundle's report as converters/backends/coreai/runtime.py describes it: its
    states' sequence axis a range up to the bundle's context (it grows from 256 slots as the text
    does), the logits range-shaped; the stateful option not asked for."""
    cache = [[30, 30], [1, 1], [3, 3], [1, context], [64, 64]]
    state = {"name": "keyCache", "type": "state", "shape": [r[1] for r in cache], "dtype": "float16",
             "flexibility": "range", "ranges": cache}
    package = {"part": "model", "format": "coreai", "size_bytes": size, "path": "SmolLM2/SmolLM2.aimodel",
               "states": [state, {**state, "name": "valueCache"}],
               "outputs": [{"name": "logits", "shape": [1, -1, 49152], "dtype": "float16", "flexibility": "range",
                            "ranges": [[1, 1], [1, -1], [49152, 49152]]}]}  # the .aimodel keeps no bound
    return {"task": "text-generation", "packages": [package],
            "options": options or {"format": "coreai", "kv_cache": "none", "sequence_length": "auto", "precision": "float16"}}


def test_a_core_ai_llm_counts_its_cache_at_the_context_it_grows_to():
    """Issue 24's walk-through: a Core AI SmolLM2 job's form showed no KV cache, and its result said
    "at 128 tokens" beside a 189 MB cache. A Core AI LLM bundle always holds a cache that grows up
    to its context (the model's 8192 positions): the form, the result and the card count it there,
    and say so; the largest call is Apple's engine's 1024-token prompt call, not the whole context."""
    from converters.formats import BOTH, CORE_AI

    options = ConversionOptions.from_strings(format=CORE_AI.name)
    form = fit.from_config(SMOLLM2, "text-generation", 270_000_000, options)
    full = fit.kv_cache_bytes(SMOLLM2, 8192)
    assert (form.kv_cache, form.context, form.stateful, form.grows) == (full, 8192, True, True) and full == 188_743_680
    assert form.activation == fit.activation_bytes(SMOLLM2, "text-generation", 1024, 8192, 2) == 9 * 1024 * 8192 * 2
    words = fit.summary(form)
    assert "at its full 8 k context (its KV cache grows with the text up to there)" in words and "KV cache 189 MB" in words
    # The result (from the report, with or without the model's config) says the same.
    assert fit.from_report(core_ai_report(8192, 270_000_000), SMOLLM2) == form
    alone = fit.from_report(core_ai_report(8192, 270_000_000))
    assert (alone.kv_cache, alone.context, alone.grows) == (full, 8192, True) and fit.summary(alone).count("full 8 k") == 1
    assert alone.activation == 3 * 1024 * 8192 * 2  # the attention of a 1024-token call over the whole cache
    # The Core ML package holds none unless a stateful cache is asked for; with both formats, the one needing more.
    assert fit.from_config(SMOLLM2, "text-generation", 270_000_000, ConversionOptions()).kv_cache == 0
    assert fit.from_config(SMOLLM2, "text-generation", 270_000_000, ConversionOptions.from_strings(format=BOTH.name)) == form
    # A stateful cache asked for sets the context; a config naming no maximum: 2048; a sliding window caps it.
    asked = fit.from_config(SMOLLM2, "text-generation", 1, stateful(512, format=CORE_AI.name))
    assert (asked.context, asked.kv_cache, asked.grows) == (512, fit.kv_cache_bytes(SMOLLM2, 512), True)
    assert fit.from_report(core_ai_report(512, 1, {**core_ai_report(1, 1)["options"], "kv_cache": "stateful",
                                                   "sequence_length": "512"}), SMOLLM2).kv_cache == asked.kv_cache
    no_maximum = {k: v for k, v in SMOLLM2.items() if k != "max_position_embeddings"}
    assert fit.from_config(no_maximum, "text-generation", 1, options).context == CORE_AI.llm_context == 2048
    assert fit.from_config({**SMOLLM2, "sliding_window": 4096}, "text-generation", 1, options).context == 4096
    # No bundle, no cache: an embedder, or a text generator whose family keeps no cache.
    assert fit.from_config(SMOLLM2, "feature-extraction", 1, options).kv_cache == 0
    assert fit.from_config(SMOLLM2, "text-generation", 1, options, keeps_cache=False).kv_cache == 0


# openai/whisper-large-v3's config.json (the sizes the speech figure reads).
WHISPER_LARGE_V3 = {"model_type": "whisper", "d_model": 1280, "encoder_layers": 32, "decoder_layers": 32,
                    "encoder_attention_heads": 20, "decoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                    "decoder_ffn_dim": 5120, "vocab_size": 51866, "num_mel_bins": 128, "max_source_positions": 1500,
                    "max_target_positions": 448}


def whisper_report(config: dict, sizes=(400_000, 1_270_000_000, 1_830_000_000)) -> dict:
    """A Whisper conversion's report: WhisperKit's three packages as written (configs/whisper.py)."""
    d, layers, slots = config["d_model"], config["decoder_layers"], config["max_target_positions"]
    tensor = lambda name, shape, dtype="float16": {"name": name, "shape": shape, "dtype": dtype, "flexibility": "fixed"}
    return {"task": "automatic-speech-recognition", "options": {"precision": "float16", "sequence_length": "auto"},
            "packages": [
                {"part": "MelSpectrogram", "size_bytes": sizes[0], "inputs": [tensor("audio", [480000], "float32")],
                 "outputs": [tensor("melspectrogram_features", [1, config["num_mel_bins"], 1, 3000])]},
                {"part": "AudioEncoder", "size_bytes": sizes[1], "inputs": [tensor("melspectrogram_features", [1, 128, 1, 3000])],
                 "outputs": [tensor("encoder_output_embeds", [1, d, 1, 1500])]},
                {"part": "TextDecoder", "size_bytes": sizes[2],
                 "inputs": [tensor("input_ids", [1], "int32"), tensor("cache_length", [1], "int32"),
                            tensor("key_cache", [1, d * layers, 1, slots]), tensor("value_cache", [1, d * layers, 1, slots]),
                            tensor("kv_cache_update_mask", [1, slots], "int32"), tensor("encoder_output_embeds", [1, d, 1, 1500]),
                            tensor("decoder_key_padding_mask", [1, slots])],
                 "outputs": [tensor("logits", [1, 1, config["vocab_size"]]), tensor("key_cache_updates", [1, d * layers, 1, 1]),
                             tensor("value_cache_updates", [1, d * layers, 1, 1])]}]}


def test_a_whisper_model_has_its_own_figure_not_a_text_models_tokens():
    """Issue 30: a Whisper job's fit said 'at 128 tokens' (a text model's sequence length). Its figure is
    the three packages' weights, the decoder's KV cache WhisperKit holds outside the package at its
    max target positions (448), and the encoder's largest activation over its 30 s window."""
    weights = 3_100_000_000
    form = fit.from_config(WHISPER_LARGE_V3, "automatic-speech-recognition", weights, ConversionOptions(), "audio")
    cache = 2 * 1280 * 32 * 448 * 2  # key_cache and value_cache, float16 [1, d_model·layers, 1, 448]
    assert (form.weights, form.kv_cache, form.context, form.audio_seconds) == (weights, cache, 448, 30.0)
    assert form.activation == 20 * 1500 * 1500 * 2  # the encoder's attention scores over its 1500 positions
    words = fit.summary(form)
    assert "on a 30 s clip, its decoder's cache at 448 tokens" in words and "KV cache 73 MB" in words
    assert "128 tokens" not in words and "runs at 448 tokens" not in words
    # The Neural Engine judges each package: the decoder's share of large-v3's weights (its 32 layers with
    # cross-attention and the 51866-token embedding: 1.8 of 3.1 GB), not all three together.
    assert fit.from_config(WHISPER_LARGE_V3, "auto", weights, ConversionOptions(), "audio") == form  # the form's task left to auto
    assert 0.55 < form.largest_package / weights < 0.6 and "larger than the Neural Engine takes on iPhone" in words
    # The result and the card: the packages as written, the same figure (with the config: the same activation).
    report = whisper_report(WHISPER_LARGE_V3)
    written = fit.from_report(report, WHISPER_LARGE_V3)
    assert (written.kv_cache, written.context, written.audio_seconds, written.activation) == (cache, 448, 30.0, form.activation)
    assert (written.weights, written.largest_package) == (sum(p["size_bytes"] for p in report["packages"]), 1_830_000_000)
    alone = fit.from_report(report)  # no config: the largest output written (the encoder's embeddings)
    assert alone.kv_cache == cache and alone.activation == 1280 * 1500 * 2 and "448 tokens" in fit.summary(alone)
    # A smaller decoder cache (a model with fewer target positions) is read from the packages, not assumed.
    tiny = {**WHISPER_LARGE_V3, "d_model": 64, "decoder_layers": 2, "max_target_positions": 64}
    assert fit.from_report(whisper_report(tiny), tiny).kv_cache == 2 * 64 * 2 * 64 * 2 == fit.speech_cache_bytes(tiny)
