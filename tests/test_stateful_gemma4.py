"""A stateful Gemma 4 (issue 27, converters/configs/gemma4.py): its full-attention layers' keys and
values wider and with their own head count (a second pair of states), layers that reuse an
earlier layer's cache (no slot of their own), and sliding layers past their window — one
conversion, validated by the pipeline and driven as swift-transformers drives it, equal to
transformers; a reference whose shared layer reads another layer's cache fails the check."""

from __future__ import annotations

import numpy as np
import pytest

from converters.configs import config_class_for
from converters.errors import UserInputError
from converters.export import convert
from converters.options import ConversionOptions
from converters.package_info import describe_package
from tests.test_stateful_kv_cache import assert_validated_both_ways

WINDOW = 8
CONTEXT = 32  # four windows
S, F = "sliding_attention", "full_attention"
# Two sliding layers and a full one keep a cache; layer 3 (sliding) reuses layer 2's, layer 4 (full)
# layer 1's (transformers: the last earlier layer of its type). Full layers: 16 wide, 1 key/value
# head (attention_k_eq_v: their values are their keys); sliding ones: 8 wide, 2 heads.
_TINY = dict(hidden_size=32, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
             global_head_dim=16, attention_k_eq_v=True, num_global_key_value_heads=1, intermediate_size=64,
             vocab_size=128, vocab_size_per_layer_input=128, hidden_size_per_layer_input=8, max_position_embeddings=512,
             sliding_window=WINDOW, layer_types=[S, F, S, S, F], num_kv_shared_layers=2, pad_token_id=0, bos_token_id=1,
             eos_token_id=2)
STATEFUL = ConversionOptions.from_strings(sequence_length=CONTEXT, minimum_deployment_target="iOS18", kv_cache="stateful")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(the transformers model, the conversion's result): a weight-only tiny checkpoint converted
    stateful at four windows, validated by the pipeline."""
    import torch
    import transformers as tf

    folder = tmp_path_factory.mktemp("gemma4")
    config = tf.Gemma4TextConfig(**_TINY)
    config.architectures = ["Gemma4ForCausalLM"]
    torch.manual_seed(0)
    model = tf.Gemma4ForCausalLM(config).eval()
    model.save_pretrained(folder / "model")
    result = convert(str(folder / "model"), "text-generation", folder / "out", STATEFUL)
    return model, result


def _tampered(model):
    """The model with its shared sliding layer (3) reading layer 0's keys and values instead of layer 2's."""
    import copy

    tampered = copy.deepcopy(model)
    tampered.model.layers[0].self_attn.store_full_length_kv = True
    tampered.model.layers[2].self_attn.store_full_length_kv = False
    return tampered


def test_the_package_keeps_one_pair_of_states_per_shape_for_the_layers_that_compute_keys(converted):
    _, result = converted
    info = describe_package(result.packages[0])
    assert [i["name"] for i in info["inputs"]] == ["inputIds", "causalMask"]
    states = {s["name"]: (s["shape"], s["dtype"]) for s in info["states"]}
    assert states == {
        "keyCache": ([2, 1, 2, CONTEXT, 8], "float16"), "valueCache": ([2, 1, 2, CONTEXT, 8], "float16"),  # layers 0, 2
        "globalKeyCache": ([1, 1, 1, CONTEXT, 16], "float16"), "globalValueCache": ([1, 1, 1, CONTEXT, 16], "float16"),
    }
    validation = result.report_json["validation"]
    assert_validated_both_ways(validation)
    assert all(run["passed"] and "stateful" in run["driven_as"] for run in validation["continuation"]["runs"])


def test_driven_as_swift_transformers_past_the_window_it_computes_what_transformers_computes(converted):
    """A 4-token prompt, then one token per call (zeros causalMask [1, 1, 1, T + 1]) up to four
    windows: every step's logits are transformers' own; with layer 3 reading layer 0's cache
    they would not be."""
    import torch

    from tests.test_stateful_kv_cache import _drive_as_swift_transformers

    model, result = converted
    ids = [int(i) for i in np.random.default_rng(1).integers(3, 128, CONTEXT - 1)]
    got = _drive_as_swift_transformers(result.packages[0], ids)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0, 3:].float().numpy()
        wrong = _tampered(model)(torch.tensor([ids])).logits[0, 3:].float().numpy()
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(wrong - want).max() > 0.05 * scale  # the shared layer's source changes the logits: the check can fail
    assert np.abs(got - want).max() < 0.01 * scale, np.abs(got - want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_the_continuation_check_fails_when_a_shared_layer_reads_another_layers_cache(converted):
    """The pipeline's continuation check (swift-transformers' loop, 16 new tokens, past the
    window): it passes against transformers and fails against the tampered model."""
    from converters.backends.coreml.executor import ReferenceExecutor
    from converters.validation import continuation

    model, result = converted
    package = result.packages[0]
    info, executor = describe_package(package), ReferenceExecutor(package)
    # A prompt whose tampered continuation parts clearly (a random tiny model has near-ties: from
    # rng(0)'s prompt the two part at step 3 by 0.0006, which the check rightly calls a tie).
    prompt = [int(i) for i in np.random.default_rng(4).integers(3, 128, 5)]
    runs = {}
    for name, reference_model in (("transformers", model), ("tampered", _tampered(model))):
        tokens, scores = continuation.pytorch_greedy(reference_model, prompt, 16, eos=set())
        reference = continuation.Reference(None, prompt, set(), tokens, scores, 16)
        runs[name] = continuation.run_package(reference, executor, info, "model", "fp32", atol=1e-3)
    assert runs["transformers"]["passed"] and runs["transformers"]["matching_tokens"] == 16, runs["transformers"]
    assert runs["tampered"]["passed"] is False, runs["tampered"]


def test_state_bytes_of_real_gemma4_shapes_and_the_padded_alternative():
    """The layout of transformers' default Gemma 4 config and of E2B's and E4B's (the values of
    their published config.json files), its float16 bytes at 2048 tokens as device_fit estimates them before
    converting, against one keyCache/valueCache padded to the widest head."""
    import transformers as tf

    from converters.configs.gemma4 import cache_bytes, cache_layout
    from converters.device_fit import kv_cache_bytes

    def pattern(period: int, count: int) -> list[str]:
        return [F if (i + 1) % period == 0 else S for i in range(count)]

    shapes = {
        "default": {},
        "E2B": dict(hidden_size=1536, num_hidden_layers=35, num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                    global_head_dim=512, num_kv_shared_layers=20, layer_types=pattern(5, 35), sliding_window=512),
        "E4B": dict(hidden_size=2560, num_hidden_layers=42, num_attention_heads=8, num_key_value_heads=2, head_dim=256,
                    global_head_dim=512, num_kv_shared_layers=18, layer_types=pattern(6, 42), sliding_window=512),
    }
    measured = {}
    for name, values in shapes.items():
        layout = cache_layout(tf.Gemma4TextConfig(**values))
        exact = cache_bytes(layout, 2048)
        slots = sum(len(group.layers) for group in layout.groups)
        widest = max(group.kv_heads for group in layout.groups) * max(group.head_dim for group in layout.groups)
        padded = 2 * slots * widest * 2048 * 2
        config = tf.Gemma4TextConfig(**values)
        if values:  # the Hub's config.json (global_head_dim) and transformers' saved one (per_layer_config)
            assert kv_cache_bytes({"model_type": "gemma4", "text_config": {"model_type": "gemma4_text", **values}}, 2048) == exact
        assert kv_cache_bytes(config.to_dict(), 2048) == exact
        measured[name] = (exact, padded, [(len(g.layers), g.kv_heads, g.head_dim) for g in layout.groups])
    assert measured == {
        "default": (293_601_280, 503_316_480, [(25, 4, 256), (5, 4, 512)]),  # 280 MiB against 480
        "E2B": (37_748_736, 62_914_560, [(12, 1, 256), (3, 1, 512)]),  # 36 MiB against 60
        "E4B": (117_440_512, 201_326_592, [(20, 2, 256), (4, 2, 512)]),  # 112 MiB against 192
    }


def test_a_gemma4_whose_attention_is_bidirectional_is_refused_a_stateful_package_before_any_work():
    import transformers as tf

    hf_config = tf.Gemma4TextConfig(**_TINY, use_bidirectional_attention="all")
    with pytest.raises(UserInputError) as refused:
        config_class_for("gemma4_text")(hf_config, "text-generation", STATEFUL).check_options()
    assert "A stateful KV cache is not supported for gemma4_text yet: its attention is bidirectional" in str(refused.value)
    assert "Set the KV cache to none" in str(refused.value)


def test_within_the_window_the_wrapper_computes_what_transformers_computes():
    """The suite's Gemma 4 (tests/models.py: no shared layers, its MoE block on, window 512) at a
    32-token context, inside its window (one mask for every layer): the stateful wrapper run in
    PyTorch as swift-transformers calls the package, a prompt then one token per call, gives
    transformers' logits at every step (the conversion of this path is the test above's)."""
    import torch
    import transformers as tf

    from tests.models import UNLISTED, _like_trained_routers

    hf_config = UNLISTED["gemma4_text"][0]()
    torch.manual_seed(0)
    model = tf.Gemma4ForCausalLM(hf_config).eval()
    _like_trained_routers(model)
    options = ConversionOptions.from_strings(sequence_length=32, minimum_deployment_target="iOS18", kv_cache="stateful")
    cfg = config_class_for("gemma4_text")(hf_config, "text-generation", options)
    cfg.check_options()
    assert [(s.name, s.shape) for s in cfg.states()] == [
        ("keyCache", (1, 1, 2, 32, 8)), ("valueCache", (1, 1, 2, 32, 8)),
        ("globalKeyCache", (1, 1, 2, 32, 16)), ("globalValueCache", (1, 1, 2, 32, 16))]
    wrapper = cfg.wrap(model)
    ids = torch.randint(3, 128, (1, 12), generator=torch.Generator().manual_seed(2))
    rows = []
    with torch.no_grad():
        for total in range(4, 13):
            new = ids[:, :total] if total == 4 else ids[:, total - 1 : total]
            rows.append(wrapper(new, torch.zeros(1, 1, 1, total + 1))[0][0, -1])
        want = model(ids).logits[0, 3:]
    got = torch.stack(rows)
    assert torch.allclose(got, want, atol=1e-4 * max(1.0, float(want.abs().max()))), (got - want).abs().max()


def test_a_core_ai_llm_bundle_of_gemma4_is_refused_before_any_work(tmp_path):
    """Apple's LLM bundle keeps one cache shape for every layer (CoreAILanguageModel): Gemma 4's
    wider full-attention layers and shared layers are refused at plan time, naming the Core ML
    format that holds them, and nothing is written. (Before: the capture failed minutes in, on
    transformers' per-layer head_dim.)"""
    import transformers as tf

    config = tf.Gemma4TextConfig(**_TINY)
    config.architectures = ["Gemma4ForCausalLM"]
    tf.Gemma4ForCausalLM(config).save_pretrained(tmp_path / "model")
    with pytest.raises(UserInputError) as refused:
        convert(str(tmp_path / "model"), "text-generation", tmp_path / "out",
                ConversionOptions.from_strings(format="coreai", sequence_length=CONTEXT))
    assert "Core AI output is not available for this gemma4_text model: its layers' keys and values differ" in str(refused.value)
    assert "Choose the Core ML format" in str(refused.value) and not (tmp_path / "out").exists()


def test_try_it_continues_a_prompt_as_transformers_generate_does(converted, tmp_path):
    """Try it on the package, as the page runs it, against transformers' own greedy `generate`."""
    from tests.test_stateful_kv_cache import assert_try_it_continues_as_generate

    model, result = converted
    assert_try_it_continues_as_generate(model, result.packages[0], result.packages[0].parent.parent / "model", tmp_path / "model")
