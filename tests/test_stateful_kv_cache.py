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
    assert result.report["tokenizer_missing"] in ((ENCODES_NOTHING, UNREADABLE) if empty else (NO_FILES,))
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

    validation = result.report["validation"]
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
