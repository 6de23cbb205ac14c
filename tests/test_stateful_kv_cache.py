"""Stateful KV cache for swift-transformers: keyCache/valueCache Core ML states, ranged
inputIds and causalMask, validated by prefill + cached steps against the uncached model."""

from __future__ import annotations

import pytest

from converters.configs import ARCHITECTURES, config_class_for
from converters.configs.text import DecoderConfig
from converters.export import convert
from converters.options import ConversionOptions
from converters.package_info import describe_package
from converters.source_tokenizer import ENCODES_NOTHING, NO_FILES, UNREADABLE
from tests.models import MODELS, empty_tokenizer_first, without_tokenizer
from tests.test_fused_attention import assert_fused_attention_program

CONTEXT = 32
OPTIONS = ConversionOptions.from_strings(sequence_length=CONTEXT, minimum_deployment_target="iOS18", kv_cache="stateful")
DECODERS = [m for m, cls in ARCHITECTURES.items() if issubclass(cls, DecoderConfig)]


def test_every_decoder_family_is_covered():
    assert len(DECODERS) == 11


@pytest.mark.slow
@pytest.mark.parametrize("model_type", DECODERS)
def test_stateful_package_matches_the_contract_and_validates(model_type, tiny_model, tmp_path):
    # A weight-only repo (no tokenizer files, or one that encodes to nothing: each family gets
    # the other case in tests/test_registry_conversions.py): validated on synthetic ids.
    empty = not empty_tokenizer_first(model_type)
    folder = without_tokenizer(tiny_model(model_type), tmp_path / "weights-only" / model_type, empty=empty)
    result = convert(str(folder), "text-generation", tmp_path, OPTIONS)
    assert result.report_json["tokenizer_missing"] in ((ENCODES_NOTHING, UNREADABLE) if empty else (NO_FILES,))
    info = describe_package(result.packages[0])
    inputs = {i["name"]: i for i in info["inputs"]}
    assert list(inputs) == ["inputIds", "causalMask"]
    assert inputs["inputIds"]["dtype"] == "int32" and inputs["inputIds"]["flexibility"] == "range"
    assert inputs["inputIds"]["ranges"] == [[1, 1], [1, CONTEXT]]
    assert inputs["causalMask"]["dtype"] == "float16"
    assert inputs["causalMask"]["ranges"] == [[1, 1], [1, 1], [1, CONTEXT], [1, CONTEXT]]  # query < end possible
    assert [o["name"] for o in info["outputs"]] == ["logits"]

    config = MODELS[model_type][0]()
    cfg = config_class_for(model_type)(config, "text-generation", OPTIONS)
    layers, batch, kv_heads, context, head_dim = cfg.states()[0].shape
    assert (layers, batch, context) == (config.num_hidden_layers, 1, CONTEXT)
    states = {s["name"]: s for s in info["states"]}
    assert set(states) == {"keyCache", "valueCache"}
    for state in states.values():
        assert state["shape"] == [layers, 1, kv_heads, CONTEXT, head_dim] and state["dtype"] == "float16"
    assert info["specification_version"] >= 9  # iOS 18
    assert_fused_attention_program(result, model_type, layers)

    validation = result.report_json["validation"]
    assert validation["passed"], validation["message"]
    # Driven as swift-transformers drives it (zeros [1, 1, 1, T + 1]) and the explicit way
    # (a triangle at the prefill, zeros [1, 1, 1, T] after): a prefill and 8 extends each.
    sets = {row["inputs"].split("-token prompt")[1] for row in validation["checks"] if row["metric"] == "top1_agreement"}
    assert sets == {" + 8 cached steps (swift-transformers masks)", " + 8 cached steps (explicit masks)"}
    assert {row["mode"] for row in validation["checks"]} == {"fp32", "fp16"}
    top1 = [row for row in validation["checks"] if row["metric"] == "top1_agreement"]
    assert len(top1) == 4 and all(row["value"] == 1.0 for row in top1)
    # The greedy continuation, driven as swift-transformers drives a stateful package.
    runs = validation["continuation"]["runs"]
    assert {run["mode"] for run in runs} == {"fp32", "fp16"}
    assert all(run["passed"] and "stateful" in run["driven_as"] for run in runs)
    # Ranged shapes (Apple's stateful Llama recipe too): the GPU or CPU, the Neural Engine at the default shape.
    assert validation["compute_units"]["model"]["units"] == {"cpu": "yes", "gpu": "yes", "neural_engine": "default_shape"}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--minimum-target", "iOS17"], "needs Core ML states: choose minimum deployment target iOS18 or macOS15"),
        (["--task", "feature-extraction"], "A stateful KV cache is for text-generation only"),
        (["--naming", "exporters"], "uses swift-transformers' names"),
        (["--sequence-length", "16,32"], "the sequence length is the context size"),
        (["--kv-cache", "paged"], "Unknown KV cache 'paged'. Choose one of: none, stateful"),
    ],
)
def test_stateful_option_errors(args, message, tiny_model, tmp_path, capsys):
    from converters.__main__ import main

    flags = {"--minimum-target": "iOS18", "--kv-cache": "stateful", "--sequence-length": "32", **dict(zip(args[::2], args[1::2]))}
    code = main([str(tiny_model("llama")), "--output", str(tmp_path / "out"), *[x for pair in flags.items() for x in pair]])
    assert code == 2
    assert message in capsys.readouterr().err


def test_stateful_refused_for_an_encoder(tiny_model, tmp_path, capsys):
    from converters.__main__ import main

    code = main([str(tiny_model("bert")), "--kv-cache", "stateful", "--minimum-target", "iOS18", "--output", str(tmp_path / "o")])
    assert code == 2
    assert "A stateful KV cache is for decoder (text-generation) models; bert has none" in capsys.readouterr().err


# ------------------------------------------------------------------ sliding windows (issue 27)
# Contexts several times a small window: the package derives each sliding layer's banded mask
# from the one mask swift-transformers sends (configs/sliding.py).

WINDOW = 8
_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
             vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _sliding_model(kind: str, folder, max_positions: int = 512):
    """A weight-only tiny checkpoint: Gemma 3's shape (a sliding and a global layer, local and
    global RoPE) or Mistral v0.1's (every layer slides), window 8."""
    import torch
    import transformers as tf

    if kind == "gemma3":
        config = tf.Gemma3TextConfig(**_TINY, head_dim=8, sliding_window=WINDOW, max_position_embeddings=max_positions,
                                     layer_types=["sliding_attention", "full_attention"])
        cls = tf.Gemma3ForCausalLM
    else:
        config = tf.MistralConfig(**_TINY, sliding_window=WINDOW, max_position_embeddings=max_positions)
        cls = tf.MistralForCausalLM
    config.architectures = [cls.__name__]
    torch.manual_seed(0)
    model = cls(config).eval()
    model.save_pretrained(folder)
    return model



def assert_validated_both_ways(validation: dict) -> None:
    """A stateful package's validation passed with its prompt and 8 cached steps driven with
    swift-transformers' masks and with explicit ones, every step's top-1 PyTorch's."""
    assert validation["passed"], validation["message"]
    top1 = [row for row in validation["checks"] if row["metric"] == "top1_agreement"]
    assert {row["inputs"].split("-token prompt")[1] for row in top1} == {" + 8 cached steps (swift-transformers masks)",
                                                                        " + 8 cached steps (explicit masks)"}
    assert all(row["value"] == 1.0 for row in top1)


def assert_try_it_continues_as_generate(model, package, checkpoint, folder, new_tokens: int = 6) -> None:
    """Try it on a stateful `package` (the page's float16 emulation, driven as swift-transformers
    drives it) against transformers' own greedy `generate` of `model`: the same tokens. The
    checkpoint is copied to `folder` with a word-level tokenizer whose ids are in the tiny vocabulary."""
    import shutil

    import torch
    from transformers import AutoTokenizer

    from converters import try_it
    from tests.models import build_tokenizer

    shutil.copytree(checkpoint, folder)
    build_tokenizer(folder, "llama")
    prompt = "the quick brown fox jumps over the"
    tried = try_it.generate(package, folder, prompt, "fp16", new_tokens)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)[0, ids.shape[1]:]
    assert tried["package"]["tokens"] == tried["pytorch"]["tokens"] == len(generated) > 0
    assert tried["matching_tokens"] == len(generated)
    assert tried["package"]["text"] == tokenizer.decode(generated, skip_special_tokens=True)
    assert "stateful" in tried["package"]["driven_as"]

def _drive_as_swift_transformers(package, ids):
    """The package's next-token logits after each call: a 4-token prompt at once, then one token
    per call (continuation.stateful_feed: zeros causalMask [1, 1, 1, T + 1], as swift-transformers)."""
    import numpy as np

    from converters.validation import continuation
    from converters.backends.coreml.executor import ReferenceExecutor

    layout = continuation.layout(describe_package(package))
    executor = ReferenceExecutor(package)
    state, rows = executor.make_state(), []
    for total in range(4, len(ids) + 1):
        new = ids[:total] if total == 4 else ids[total - 1 : total]
        outputs = executor.predict(continuation.stateful_feed(layout, new, total), mode="fp32", state=state)
        rows.append(np.asarray(outputs["logits"])[0, len(new) - 1])
    return np.stack(rows)


@pytest.mark.slow
@pytest.mark.parametrize("kind,context", [("gemma3", None), ("mistral", 64)], ids=["gemma3-default-context", "mistral-64"])
def test_a_stateful_package_longer_than_the_sliding_window_computes_what_transformers_computes(kind, context, tmp_path):
    """Gemma 3's shape at the default context (2048: the model allows 4096) and Mistral v0.1's
    (every layer slides) at 64, window 8: driven as swift-transformers drives it, a prompt
    then one token per call up to five windows, every step's logits are transformers' own."""
    import numpy as np
    import torch

    folder = tmp_path / kind
    model = _sliding_model(kind, folder, max_positions=4096)
    options = ConversionOptions.from_strings(minimum_deployment_target="iOS18", kv_cache="stateful",
                                             sequence_length=context)
    # The pipeline's validation once (Gemma 3: its prefills and extends pass the window too);
    # the drive below is the check for both.
    validate = kind == "gemma3"
    result = convert(str(folder), "text-generation", tmp_path / "out", options, validate=validate)
    expected_context = context or 2048  # auto: min(2048, the model's 4096)
    assert result.report_json["options"]["sequence_length"] == str(expected_context)
    states = {s["name"]: s["shape"] for s in describe_package(result.packages[0])["states"]}
    assert states["keyCache"] == [2, 1, 2, expected_context, 8]
    if validate:
        validation = result.report_json["validation"]
        assert validation["passed"], validation["message"]

    ids = [int(i) for i in np.random.default_rng(1).integers(3, 128, 5 * WINDOW)]
    got = _drive_as_swift_transformers(result.packages[0], ids)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0, 3:].float().numpy()  # rows after the prompt, then each token
        model.config.layer_types = ["full_attention"] * 2  # no window at all: what a package without bands computes
        if kind == "mistral":
            model.config.sliding_window = None
        unbanded = model(torch.tensor([ids])).logits[0, 3:].float().numpy()
    beyond = slice(WINDOW, None)  # steps whose query is past the window
    assert np.abs(unbanded[beyond] - want[beyond]).max() > 0.1  # the window changes the logits: the check can fail
    assert np.abs(got - want).max() < 0.01 * max(1.0, np.abs(want).max()), np.abs(got - want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.slow
def test_a_padded_package_longer_than_the_sliding_window_continues_as_transformers(tmp_path):
    """Without a cache the same bands come from the padded call's positions: the continuation
    (a 5-token prompt and 8 new tokens, past the window of 8) matches PyTorch's."""
    folder = tmp_path / "gemma3"
    _sliding_model("gemma3", folder)
    result = convert(str(folder), "text-generation", tmp_path / "out", ConversionOptions.from_strings(sequence_length=24))
    validation = result.report_json["validation"]
    assert validation["passed"], validation["message"]
    runs = validation["continuation"]["runs"]
    assert runs and all(run["passed"] and run["matching_tokens"] == 8 for run in runs)


def test_which_layers_slide():
    import transformers as tf

    from converters.configs.sliding import UnknownLayerTypes, sliding_of

    gemma3 = sliding_of(tf.Gemma3TextConfig(**_TINY, head_dim=8, sliding_window=WINDOW,
                                            layer_types=["sliding_attention", "full_attention"]))
    assert (gemma3.window, gemma3.layers, gemma3.by_layer_type) == (WINDOW, (0,), True)
    mistral = sliding_of(tf.MistralConfig(**_TINY, sliding_window=WINDOW))
    assert (mistral.layers, mistral.by_layer_type, mistral.every_layer) == ((0, 1), False, True)
    # A sliding_window that no layer uses (SmolLM3, Qwen2 with use_sliding_window off) is no window.
    assert sliding_of(tf.SmolLM3Config(**_TINY, sliding_window=WINDOW)) is None
    assert sliding_of(tf.MistralConfig(**_TINY, sliding_window=None)) is None
    with pytest.raises(UnknownLayerTypes, match="linear_attention"):
        sliding_of(tf.Gemma3TextConfig(**_TINY, head_dim=8, sliding_window=WINDOW,
                                       layer_types=["sliding_attention", "linear_attention"]))


def test_the_stateful_context_defaults_to_2048_or_the_models_maximum():
    stateful = ConversionOptions.from_strings(kv_cache="stateful", minimum_deployment_target="iOS18")
    assert str(stateful.sequence_length) == "auto"
    assert stateful.for_model(32768).sequence_length.sizes == (2048,)
    assert stateful.for_model(512).sequence_length.sizes == (512,)
    assert ConversionOptions().for_model(32768).sequence_length.sizes == (128,)  # without a cache: 128 per call
    assert ConversionOptions.from_strings(sequence_length="64").for_model(32768).sequence_length.sizes == (64,)
